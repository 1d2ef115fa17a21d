package initiator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// maxLoginText bounds the key=value text of one login exchange we accept
// (RFC 7143 Section 6.1: at least 8192, 64 KiB with long auth items).
const maxLoginText = 64 << 10

// maxLoginRounds bounds the request/response pairs in one stage.
const maxLoginRounds = 16

// loginConn runs the login phase on one TCP connection; it reads as a
// straight list of steps (security, operational, full feature phase).
type loginConn struct {
	s   *Session
	cfg *Config
	nc  net.Conn
	r   *pdu.Reader
	w   *pdu.Writer

	req       pdu.LoginRequest
	statSN    uint32
	gotStatSN bool
	stage     uint8

	neg *negotiator
	// answered: a Login Response arrived on this connection; until then
	// a peer that sends something else is not an iSCSI target at all.
	answered bool
	// results
	params             Params
	tsih               uint16
	expCmdSN, maxCmdSN uint32
}

// login performs the whole login on nc. cmdSN is the session's current
// CmdSN (initial for a leading login); tsih is 0 for a new session or a
// reinstatement.
func (s *Session) login(ctx context.Context, nc net.Conn, cid uint16, tsih uint16, cmdSN uint32) (*loginConn, error) {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
		defer nc.SetDeadline(time.Time{})
	}
	l := &loginConn{s: s, cfg: &s.cfg, nc: nc, r: pdu.NewReader(nc), w: pdu.NewWriter(nc)}
	l.r.MaxData = max(8192, s.cfg.MaxRecvDataSegmentLength)
	l.r.RejectAHS = true
	l.neg = newNegotiator(&s.cfg, s.discovery)
	if tsih != 0 {
		// An added connection (MC/S) negotiates only connection-only keys;
		// the session-wide ones stay as the leading login set them.
		l.neg.addedConn(s.Params())
	}
	l.req = pdu.LoginRequest{ISID: s.isid, TSIH: tsih, CID: cid, CmdSN: cmdSN}
	l.req.ITT = s.allocLoginITT()

	if err := l.security(); err != nil {
		return nil, err
	}
	if l.stage == pdu.StageOperational {
		if err := l.operational(); err != nil {
			return nil, err
		}
	}
	if l.stage != pdu.StageFullFeature {
		return nil, protoErr("login ended in stage %d", l.stage)
	}
	return l, nil
}

// exchange sends one Login Request with kvs (split with the C bit when
// longer than 8192 bytes) and returns the target's response with its
// reassembled keys.
func (l *loginConn) exchange(transit bool, csg, nsg uint8, kvs []pdu.KV) (*pdu.LoginResponse, []pdu.KV, error) {
	text := pdu.AppendText(nil, kvs...)
	for {
		chunk := text
		more := len(text) > 8192
		if more {
			chunk = text[:8192]
		}
		text = text[len(chunk):]
		l.req.Transit, l.req.Continue = transit && !more, more
		l.req.CSG, l.req.NSG = csg, nsg
		if !l.req.Transit {
			l.req.NSG = 0
		}
		if l.gotStatSN {
			l.req.ExpStatSN = l.statSN + 1
		}
		if err := l.w.WritePDU(&l.req, chunk); err != nil {
			return nil, nil, err
		}
		l.logKVs("->", kvs, more)
		if !more {
			break
		}
		// The target answers each C=1 PDU with an empty response.
		if _, _, err := l.readResponse(); err != nil {
			return nil, nil, err
		}
	}
	var all []byte
	for {
		resp, data, err := l.readResponse()
		if err != nil {
			return nil, nil, err
		}
		all = append(all, data...)
		if len(all) > maxLoginText {
			return nil, nil, protoErr("login text longer than %d bytes", maxLoginText)
		}
		if !resp.Continue {
			keys, err := pdu.ParseText(all)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			l.logKVs("<-", keys, false)
			return resp, keys, nil
		}
		// "Answer a PDU with C=1 with an empty data segment" (Section 6.2).
		l.req.Transit, l.req.Continue, l.req.NSG = false, false, 0
		l.req.ExpStatSN = l.statSN + 1
		if err := l.w.WritePDU(&l.req, nil); err != nil {
			return nil, nil, err
		}
	}
}

func (l *loginConn) readResponse() (*pdu.LoginResponse, []byte, error) {
	var b pdu.BHS
	if err := l.r.ReadHeader(&b); err != nil {
		var fe pdu.FormatError
		if !l.answered && (errors.As(err, &fe) || errors.Is(err, pdu.ErrDataTooLong)) {
			return nil, nil, notTarget(&b)
		}
		return nil, nil, fmt.Errorf("reading login response: %w", err)
	}
	if !l.answered && !targetOpcode(b.Opcode()) {
		return nil, nil, notTarget(&b)
	}
	if b.Opcode() != pdu.OpLoginResp {
		// "an initiator that receives any PDU other than a Login Response
		// MUST terminate the connection" (Section 4.2.4).
		return nil, nil, protoErr("%v during login", b.Opcode())
	}
	var resp pdu.LoginResponse
	if err := resp.UnmarshalBHS(&b); err != nil {
		if !l.answered {
			return nil, nil, notTarget(&b)
		}
		return nil, nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	l.answered = true
	data, err := l.r.ReadDataAlloc(&b)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusClass != 0 {
		le := &LoginError{Class: resp.StatusClass, Detail: resp.StatusDetail}
		if kvs, err := pdu.ParseText(data); err == nil {
			for _, kv := range kvs {
				if kv.Key == "TargetAddress" {
					le.TargetAddress = kv.Value
				}
			}
		}
		return nil, nil, le
	}
	if resp.ITT != l.req.ITT {
		return nil, nil, protoErr("Login Response for ITT %#x, sent %#x", resp.ITT, l.req.ITT)
	}
	if resp.VersionActive != 0 {
		return nil, nil, protoErr("unsupported version %d", resp.VersionActive)
	}
	if l.gotStatSN && resp.StatSN != l.statSN+1 && resp.StatSN != l.statSN {
		return nil, nil, protoErr("login StatSN %d, expected %d", resp.StatSN, l.statSN+1)
	}
	l.statSN, l.gotStatSN = resp.StatSN, true
	l.expCmdSN, l.maxCmdSN = resp.ExpCmdSN, resp.MaxCmdSN
	if resp.Transit {
		l.tsih = resp.TSIH
	}
	return &resp, data, nil
}

func (l *loginConn) logKVs(dir string, kvs []pdu.KV, more bool) {
	log := l.s.log
	if !log.Logger.IsLevelEnabled(4 /* debug */) {
		return
	}
	for _, kv := range kvs {
		v := kv.Value
		if kv.Key == "CHAP_R" || kv.Key == "CHAP_C" {
			v = "<" + fmt.Sprint(len(v)) + " chars>"
		}
		log.Debugf("login %s %s=%s", dir, kv.Key, v)
	}
}

func keyMap(kvs []pdu.KV) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// security runs the security negotiation stage (RFC 7143, Section 6.3;
// CHAP per Section 12.1.3).
func (l *loginConn) security() error {
	cfg := l.cfg
	kvs := []pdu.KV{kv("InitiatorName", cfg.InitiatorName)}
	if cfg.InitiatorAlias != "" {
		kvs = append(kvs, kv("InitiatorAlias", cfg.InitiatorAlias))
	}
	if l.s.discovery {
		kvs = append(kvs, kv("SessionType", "Discovery"))
	} else {
		kvs = append(kvs, kv("SessionType", "Normal"), kv("TargetName", cfg.TargetName))
	}
	mutual := cfg.CHAP != nil && cfg.CHAP.TargetSecret != ""
	switch {
	case cfg.CHAP == nil:
		kvs = append(kvs, kv("AuthMethod", "None"))
	case l.s.discovery && !mutual:
		// tgtd answers None on discovery without a discovery account.
		kvs = append(kvs, kv("AuthMethod", "CHAP,None"))
	default:
		kvs = append(kvs, kv("AuthMethod", "CHAP"))
	}
	// Without CHAP we are ready to leave the stage at once; with CHAP
	// the exchange needs several steps first.
	resp, keys, err := l.exchange(cfg.CHAP == nil, pdu.StageSecurity, pdu.StageOperational, kvs)
	if err != nil {
		return err
	}
	m := keyMap(keys)
	if err := l.declaratives(keys); err != nil {
		return err
	}
	method := m["AuthMethod"]
	if method == "" && resp.Transit {
		method = "None" // target skipped the question
	}
	switch method {
	case "None":
		if mutual {
			return fmt.Errorf("%w: mutual CHAP configured but the target chose AuthMethod=None; refusing an unauthenticated target", ErrAuth)
		}
		return l.leaveSecurity(resp)
	case "CHAP":
		if cfg.CHAP == nil {
			return fmt.Errorf("%w: target %s requires CHAP; give --chap-user and a secret", ErrAuth, cfg.TargetName)
		}
	case "Reject", "":
		return fmt.Errorf("%w: target rejected every offered AuthMethod", ErrAuth)
	default:
		return fmt.Errorf("%w: target chose AuthMethod=%s, which was not offered", ErrAuth, method)
	}

	x := &chapExchange{cfg: cfg.CHAP}
	_, keys, err = l.exchange(false, pdu.StageSecurity, 0, []pdu.KV{kv("CHAP_A", cfg.CHAP.offerA())})
	if err != nil {
		return err
	}
	answer, err := x.respond(keyMap(keys))
	if err != nil {
		return err
	}
	resp, keys, err = l.exchange(true, pdu.StageSecurity, pdu.StageOperational, answer)
	if err != nil {
		return err
	}
	if mutual {
		if err := x.verifyTarget(keyMap(keys)); err != nil {
			return err
		}
	}
	return l.leaveSecurity(resp)
}

// leaveSecurity keeps sending T=1 until the target moves on (Section 6.3.3).
func (l *loginConn) leaveSecurity(resp *pdu.LoginResponse) error {
	for i := 0; !resp.Transit; i++ {
		if i == maxLoginRounds {
			return protoErr("target never left the security stage")
		}
		var err error
		if resp, _, err = l.exchange(true, pdu.StageSecurity, pdu.StageOperational, nil); err != nil {
			return err
		}
	}
	l.stage = resp.NSG
	if l.stage == pdu.StageFullFeature {
		// The target skipped operational negotiation: defaults hold.
		var err error
		l.neg.p.MaxRecvDSL = 8192
		l.params, err = l.neg.finish()
		return err
	}
	return nil
}

// declaratives records keys that may come in any stage.
func (l *loginConn) declaratives(keys []pdu.KV) error {
	for _, k := range keys {
		switch k.Key {
		case "TargetAlias", "TargetPortalGroupTag":
			if _, err := l.neg.handle(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// operational runs the operational negotiation stage (Sections 6.2, 13).
func (l *loginConn) operational() error {
	kvs := l.neg.proposals()
	for round := 0; ; round++ {
		if round == maxLoginRounds {
			return protoErr("operational negotiation did not converge")
		}
		resp, keys, err := l.exchange(true, pdu.StageOperational, pdu.StageFullFeature, kvs)
		if err != nil {
			return err
		}
		kvs = nil
		for _, k := range keys {
			if l.neg.answered[k.Key] && (k.Key == "TargetAlias" || k.Key == "TargetPortalGroupTag") {
				continue // declared again in the operational stage; harmless
			}
			ans, err := l.neg.handle(k)
			if err != nil {
				return err
			}
			if ans != nil && !resp.Transit {
				kvs = append(kvs, *ans)
			}
		}
		if resp.Transit {
			l.stage = resp.NSG
			p, err := l.neg.finish()
			if err != nil {
				return err
			}
			l.params = p
			return nil
		}
	}
}

// targetOpcode reports whether op is one a target sends (RFC 7143 11.1.1).
func targetOpcode(op pdu.Opcode) bool {
	switch op {
	case pdu.OpNopIn, pdu.OpSCSIResponse, pdu.OpTaskMgmtResp, pdu.OpLoginResp, pdu.OpTextResp,
		pdu.OpDataIn, pdu.OpLogoutResp, pdu.OpR2T, pdu.OpAsyncMessage, pdu.OpReject:
		return true
	}
	return false
}

// notTarget is the error for a peer whose first answer to a Login Request
// is not an iSCSI PDU: another service on that port (SSH, HTTP, ...). It
// quotes what the peer sent, as text when it reads as text.
func notTarget(b *pdu.BHS) error {
	n := 0
	for n < len(b) && n < 40 && b[n] >= 0x20 && b[n] < 0x7f {
		n++
	}
	what := fmt.Sprintf("bytes % x", b[:8])
	if n >= 4 {
		what = fmt.Sprintf("%q", b[:n])
	}
	return fmt.Errorf("%w: it answered the login with %s; is the port right? (iSCSI targets usually listen on 3260)", ErrNotTarget, what)
}
