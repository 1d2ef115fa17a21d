package faketarget

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"strconv"
	"strings"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// errLoginEnded ends login after a failure status or a hook's request.
var errLoginEnded = errors.New("faketarget: login ended")

// loginState is the target side of one login (RFC 7143, Sections 6 and 11.12).
type loginState struct {
	c         *Conn
	first     bool
	sent      map[string]bool // keys the initiator sent so far
	declared  bool            // our MaxRecvDataSegmentLength went out
	extraSent bool
	pending   map[string]bool // our proposals not yet answered
	opRounds  int
	authDone  bool
	chapStep  int
	chapID    byte
	chapChal  []byte
	p         Params
}

// SendLoginStatus answers the current Login Request with a failure (or
// redirect) status and the given keys (TargetAddress for a redirect); the
// target closes the connection once the OnLogin hook returns.
func (c *Conn) SendLoginStatus(req *pdu.LoginRequest, class, detail uint8, kvs ...pdu.KV) error {
	resp := &pdu.LoginResponse{Header: pdu.Header{ITT: req.ITT}, ISID: req.ISID, StatusClass: class, StatusDetail: detail}
	c.mu.Lock()
	c.closeAfter = true
	c.mu.Unlock()
	return c.Send(resp, pdu.AppendText(nil, kvs...))
}

// SendLoginResponse sends resp (StatSN and window filled in) with kvs; for
// hooks that script a login step themselves.
func (c *Conn) SendLoginResponse(resp *pdu.LoginResponse, kvs ...pdu.KV) error {
	return c.Send(resp, pdu.AppendText(nil, kvs...))
}

func (c *Conn) login() error {
	cfg := &c.t.cfg
	l := &loginState{c: c, first: true, sent: map[string]bool{}, pending: map[string]bool{}, authDone: cfg.CHAPSecret == ""}
	l.p = Params{
		InitiatorMaxRecvDSL: 8192, TargetMaxRecvDSL: 8192,
		FirstBurstLength: min(65536, cfg.FirstBurstLength), MaxBurstLength: min(262144, cfg.MaxBurstLength),
		InitialR2T: true, ImmediateData: !cfg.NoImmediateData, MaxOutstandingR2T: 1,
	}
	var text []byte
	for {
		var b pdu.BHS
		if err := c.r.ReadHeader(&b); err != nil {
			return err
		}
		if b.Opcode() != pdu.OpLoginReq {
			c.t.violate("%v during login", b.Opcode())
			return errLoginEnded
		}
		var req pdu.LoginRequest
		if err := req.UnmarshalBHS(&b); err != nil {
			c.t.violate("Login Request: %v", err)
			c.SendLoginStatus(&req, 2, 0x00)
			return err
		}
		data, err := c.r.ReadDataAlloc(&b)
		if err != nil {
			return err
		}
		text = append(text, data...)
		if req.Continue {
			// Acknowledge a partial text with an empty response (Section 6.2).
			resp := &pdu.LoginResponse{Header: pdu.Header{ITT: req.ITT}, CSG: req.CSG, ISID: req.ISID}
			if err := c.Send(resp, nil); err != nil {
				return err
			}
			continue
		}
		keys, err := pdu.ParseText(text)
		text = nil
		if err != nil {
			c.t.violate("Login Request text: %v", err)
			c.SendLoginStatus(&req, 2, 0x00)
			return err
		}
		c.mu.Lock()
		c.logins = append(c.logins, LoginRecord{Req: req, Keys: keys})
		if l.first {
			c.isid, c.cid, c.expCmdSN, c.tsih = req.ISID, req.CID, req.CmdSN, req.TSIH
		}
		exp := c.expCmdSN
		c.mu.Unlock()
		if req.CmdSN != exp {
			c.t.violate("Login Request CmdSN %d, the leading request had %d", req.CmdSN, exp)
		}
		for _, kv := range keys {
			if l.sent[kv.Key] {
				c.t.violate("initiator sent login key %s again after it was negotiated", kv.Key)
			}
			l.sent[kv.Key] = true
		}
		if cfg.OnLogin != nil && cfg.OnLogin(c, &req, keys) {
			c.mu.Lock()
			end := c.closeAfter
			c.mu.Unlock()
			if end {
				return errLoginEnded
			}
			l.first = false
			continue
		}
		done, err := l.step(&req, keys)
		l.first = false
		if err != nil || done {
			return err
		}
	}
}

// step answers one complete Login Request; done is true once the
// connection is in full feature phase.
func (l *loginState) step(req *pdu.LoginRequest, keys []pdu.KV) (done bool, err error) {
	c := l.c
	cfg := &c.t.cfg
	fail := func(class, detail uint8) (bool, error) {
		c.SendLoginStatus(req, class, detail)
		return false, errLoginEnded
	}
	if req.VersionMin != 0 {
		return fail(2, 0x05)
	}
	var ans []pdu.KV
	m := map[string]string{}
	for _, kv := range keys {
		m[kv.Key] = kv.Value
	}
	switch req.CSG {
	case pdu.StageSecurity:
		if l.first {
			if m["InitiatorName"] == "" {
				return fail(2, 0x07)
			}
			st := m["SessionType"]
			if st != "Discovery" {
				if m["TargetName"] != cfg.TargetName {
					return fail(2, 0x03)
				}
				ans = append(ans, pdu.KV{Key: "TargetPortalGroupTag", Value: strconv.Itoa(cfg.PortalGroupTag)})
				if cfg.Alias != "" {
					ans = append(ans, pdu.KV{Key: "TargetAlias", Value: cfg.Alias})
				}
			}
		}
		if v, ok := m["AuthMethod"]; ok {
			offered := strings.Split(v, ",")
			switch {
			case cfg.CHAPSecret != "" && contains(offered, "CHAP"):
				ans = append(ans, pdu.KV{Key: "AuthMethod", Value: "CHAP"})
				l.chapStep = 1
			case cfg.CHAPSecret == "" && contains(offered, "None"):
				ans = append(ans, pdu.KV{Key: "AuthMethod", Value: "None"})
			default:
				return fail(2, 0x01)
			}
		}
		if l.chapStep == 1 && m["CHAP_A"] != "" {
			if !contains(strings.Split(m["CHAP_A"], ","), "5") {
				return fail(2, 0x01)
			}
			var id [1]byte
			rand.Read(id[:])
			l.chapID = id[0]
			l.chapChal = make([]byte, 16)
			rand.Read(l.chapChal)
			ans = append(ans, pdu.KV{Key: "CHAP_A", Value: "5"}, pdu.KV{Key: "CHAP_I", Value: strconv.Itoa(int(l.chapID))},
				pdu.KV{Key: "CHAP_C", Value: pdu.EncodeHex(l.chapChal)})
			l.chapStep = 2
		} else if l.chapStep == 2 && m["CHAP_R"] != "" {
			r, err := pdu.DecodeBinary(m["CHAP_R"], 1024)
			want := chapMD5(l.chapID, cfg.CHAPSecret, l.chapChal)
			if err != nil || m["CHAP_N"] != cfg.CHAPUser || subtle.ConstantTimeCompare(r, want) != 1 {
				return fail(2, 0x01)
			}
			if m["CHAP_C"] != "" {
				id, err1 := strconv.ParseUint(m["CHAP_I"], 0, 8)
				chal, err2 := pdu.DecodeBinary(m["CHAP_C"], 1024)
				if err1 != nil || err2 != nil || cfg.TargetCHAPSecret == "" {
					return fail(2, 0x01)
				}
				ans = append(ans, pdu.KV{Key: "CHAP_N", Value: cfg.TargetCHAPUser},
					pdu.KV{Key: "CHAP_R", Value: pdu.EncodeHex(chapMD5(byte(id), cfg.TargetCHAPSecret, chal))})
			}
			l.authDone = true
			l.chapStep = 3
		}
	case pdu.StageOperational:
		if !l.authDone {
			return fail(2, 0x01) // "security negotiation skipped" while CHAP is required
		}
		l.opRounds++
		for _, kv := range keys {
			if l.pending[kv.Key] {
				delete(l.pending, kv.Key) // an answer to our proposal
				continue
			}
			if a, ok := l.negotiate(kv.Key, kv.Value); ok {
				ans = append(ans, a)
			}
		}
		if !l.declared {
			l.declared = true
			ans = append(ans, pdu.KV{Key: "MaxRecvDataSegmentLength", Value: strconv.Itoa(cfg.MaxRecvDataSegmentLength)})
			l.p.TargetMaxRecvDSL = cfg.MaxRecvDataSegmentLength
		}
		if !l.extraSent {
			l.extraSent = true
			for _, kv := range cfg.ExtraLoginKeys {
				ans = append(ans, kv)
				switch kv.Key {
				case "TargetAlias", "TargetPortalGroupTag", "TargetAddress", "MaxRecvDataSegmentLength":
				default:
					if !l.sent[kv.Key] {
						l.pending[kv.Key] = true
					}
				}
			}
		}
		if len(l.pending) > 0 && l.opRounds > 3 {
			c.t.violate("initiator never answered the target's proposals %v", l.pending)
			clear(l.pending)
		}
	default:
		return fail(2, 0x0b)
	}

	resp := &pdu.LoginResponse{Header: pdu.Header{ITT: req.ITT}, CSG: req.CSG, ISID: req.ISID, TSIH: req.TSIH}
	ready := l.authDone && len(l.pending) == 0
	if req.CSG == pdu.StageSecurity && l.chapStep > 0 && l.chapStep < 3 {
		ready = false
	}
	if req.Transit && ready {
		resp.Transit, resp.NSG = true, req.NSG
	}
	if resp.Transit && resp.NSG == pdu.StageFullFeature {
		if req.TSIH == 0 {
			resp.TSIH = c.t.allocTSIH()
		}
		if l.p.FirstBurstLength > l.p.MaxBurstLength {
			l.p.FirstBurstLength = l.p.MaxBurstLength
		}
		if l.opRounds == 0 {
			l.p.TargetMaxRecvDSL = 8192
		}
		c.mu.Lock()
		c.params = l.p
		c.tsih = resp.TSIH
		c.mu.Unlock()
		if cfg.sessions() {
			c.mu.Lock()
			c.cid = req.CID
			cmdSN := c.expCmdSN
			c.mu.Unlock()
			if !c.joinSession(req.ISID, resp.TSIH, req.TSIH == 0, cmdSN) {
				return fail(2, 0x0a) // session does not exist
			}
		}
	}
	if err := c.SendLoginResponse(resp, ans...); err != nil {
		return false, err
	}
	if resp.Transit && resp.NSG == pdu.StageFullFeature {
		// Digests start with the first full feature phase PDU.
		c.wmu.Lock()
		c.w.HeaderDigest, c.w.DataDigest = l.p.HeaderDigest, l.p.DataDigest
		c.wmu.Unlock()
		c.r.HeaderDigest, c.r.DataDigest = l.p.HeaderDigest, l.p.DataDigest
		return true, nil
	}
	return false, nil
}

// negotiate answers one operational key offered by the initiator
// (RFC 7143, Section 13).
func (l *loginState) negotiate(k, v string) (pdu.KV, bool) {
	cfg := &l.c.t.cfg
	ans := func(val string) (pdu.KV, bool) { return pdu.KV{Key: k, Value: val}, true }
	num := func() int {
		n, err := strconv.Atoi(v)
		if err != nil {
			l.c.t.violate("login key %s=%q is not a number", k, v)
		}
		return n
	}
	switch k {
	case "InitiatorName", "InitiatorAlias", "TargetName", "SessionType", "AuthMethod":
		return pdu.KV{}, false
	case "HeaderDigest", "DataDigest":
		offered := strings.Split(v, ",")
		want := cfg.HeaderDigest
		if k == "DataDigest" {
			want = cfg.DataDigest
		}
		choice := ""
		switch {
		case want && contains(offered, "CRC32C"):
			choice = "CRC32C"
		case contains(offered, "None"):
			choice = "None"
		case contains(offered, "CRC32C"):
			choice = "CRC32C"
		default:
			return ans("Reject")
		}
		if k == "HeaderDigest" {
			l.p.HeaderDigest = choice == "CRC32C"
		} else {
			l.p.DataDigest = choice == "CRC32C"
		}
		return ans(choice)
	case "MaxRecvDataSegmentLength":
		l.p.InitiatorMaxRecvDSL = num()
		return pdu.KV{}, false // declarative; ours goes out once
	case "FirstBurstLength":
		l.p.FirstBurstLength = min(num(), cfg.FirstBurstLength)
		return ans(strconv.Itoa(l.p.FirstBurstLength))
	case "MaxBurstLength":
		l.p.MaxBurstLength = min(num(), cfg.MaxBurstLength)
		return ans(strconv.Itoa(l.p.MaxBurstLength))
	case "MaxOutstandingR2T":
		l.p.MaxOutstandingR2T = min(num(), cfg.MaxOutstandingR2T)
		return ans(strconv.Itoa(l.p.MaxOutstandingR2T))
	case "InitialR2T":
		l.p.InitialR2T = v == "Yes" || cfg.InitialR2T
		return ans(yesNo(l.p.InitialR2T))
	case "ImmediateData":
		l.p.ImmediateData = v == "Yes" && !cfg.NoImmediateData
		return ans(yesNo(l.p.ImmediateData))
	case "MaxConnections":
		return ans(strconv.Itoa(max(min(num(), cfg.MaxConnections), 1)))
	case "DataPDUInOrder", "DataSequenceInOrder":
		return ans("Yes")
	case "DefaultTime2Wait":
		return ans(strconv.Itoa(max(num(), cfg.Time2Wait)))
	case "DefaultTime2Retain":
		return ans(strconv.Itoa(min(num(), cfg.retain())))
	case "ErrorRecoveryLevel":
		// Minimum function, capped by Config.ErrorRecoveryLevel.
		l.p.ErrorRecoveryLevel = max(min(num(), cfg.ErrorRecoveryLevel), 0)
		return ans(strconv.Itoa(l.p.ErrorRecoveryLevel))
	case "IFMarker", "OFMarker":
		return ans("No")
	case "IFMarkInt", "OFMarkInt":
		return ans("Irrelevant")
	}
	return ans("NotUnderstood")
}

func chapMD5(id byte, secret string, chal []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(chal)
	return h.Sum(nil)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.TrimSpace(x) == s {
			return true
		}
	}
	return false
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}
