package initiator_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// loginOnly logs in to a target built from tcfg through dial (tg.Dial when
// nil) and returns the session or the error; the session is closed at the
// end of the test.
func loginOnly(t *testing.T, tg *faketarget.Target, dial func(context.Context, string, string) (net.Conn, error)) (*initiator.Session, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), confTimeout)
	defer cancel()
	if dial == nil {
		dial = tg.Dial
	}
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: confIQN, TargetName: tg.Name(), Portal: "a.example:3260",
		Dial: dial, LoginTimeout: 3 * time.Second, NopInterval: -1, NoRecovery: true})
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

func newTarget(t *testing.T, cfg faketarget.Config) *faketarget.Target {
	t.Helper()
	t.Cleanup(faketarget.LeakCheck(t))
	tg := faketarget.New(cfg)
	t.Cleanup(func() { tg.Close() })
	return tg
}

// RFC 7143 11.13.5: a login refused with a status gives *LoginError whose
// text names the status.
func TestConformanceLoginFailureStatus(t *testing.T) {
	cases := []struct {
		class, detail uint8
		text          string
		auth, retry   bool
	}{
		{2, 0x01, "authentication failure (0x0201)", true, false},
		{2, 0x02, "authorization failure: no access to this target (0x0202)", false, false},
		{2, 0x03, "target not found (0x0203)", false, false},
		{2, 0x07, "missing parameter (0x0207)", false, false},
		{3, 0x01, "service unavailable (0x0301)", false, true},
		{3, 0x02, "target out of resources (0x0302)", false, true},
		{2, 0x7e, "initiator error (0x027e)", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.text, func(t *testing.T) {
			tg := newTarget(t, faketarget.Config{OnLogin: func(c *faketarget.Conn, req *pdu.LoginRequest, _ []pdu.KV) bool {
				c.SendLoginStatus(req, tc.class, tc.detail)
				return true
			}})
			_, err := loginOnly(t, tg, nil)
			var le *initiator.LoginError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v (%T), want *initiator.LoginError", err, err)
			}
			if le.Class != tc.class || le.Detail != tc.detail || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("err = %q, want it to contain %q", err, tc.text)
			}
			if errors.Is(err, initiator.ErrAuth) != tc.auth || le.Retryable() != tc.retry {
				t.Errorf("ErrAuth %v Retryable %v, want %v %v", errors.Is(err, initiator.ErrAuth), le.Retryable(), tc.auth, tc.retry)
			}
		})
	}
}

// RFC 7143 11.13.5 class 1: a redirect is followed to TargetAddress; a
// redirect loop ends with an error.
func TestConformanceLoginRedirect(t *testing.T) {
	b := newTarget(t, faketarget.Config{})
	a := newTarget(t, faketarget.Config{OnLogin: func(c *faketarget.Conn, req *pdu.LoginRequest, _ []pdu.KV) bool {
		c.SendLoginStatus(req, 1, 0x01, pdu.KV{Key: "TargetAddress", Value: "b.example:3260,1"})
		return true
	}})
	var dialed []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed = append(dialed, addr)
		if strings.HasPrefix(addr, "b.example") {
			return b.Dial(ctx, network, addr)
		}
		return a.Dial(ctx, network, addr)
	}
	s, err := loginOnly(t, a, dial)
	if err != nil {
		t.Fatalf("redirected login: %v", err)
	}
	if len(dialed) != 2 || dialed[1] != "b.example:3260" {
		t.Errorf("dialed %v", dialed)
	}
	if _, err := s.Do(context.Background(), tur()); err != nil {
		t.Errorf("command on the redirected session: %v", err)
	}
	if len(b.Conns()) != 1 {
		t.Errorf("target b served %d connections", len(b.Conns()))
	}
	// A target redirecting to itself forever.
	loop := newTarget(t, faketarget.Config{OnLogin: func(c *faketarget.Conn, req *pdu.LoginRequest, _ []pdu.KV) bool {
		c.SendLoginStatus(req, 1, 0x02, pdu.KV{Key: "TargetAddress", Value: "a.example:3260,1"})
		return true
	}})
	_, err = loginOnly(t, loop, nil)
	var le *initiator.LoginError
	if !errors.As(err, &le) || le.Class != 1 || !strings.Contains(err.Error(), "target moved permanently") {
		t.Errorf("redirect loop: %v", err)
	}
	if n := len(loop.Conns()); n > 5 {
		t.Errorf("%d attempts at a redirect loop", n)
	}
}

// RFC 7143 6.2: the target proposes keys of its own (an X- key, an unknown
// key, an obsolete marker key): the initiator answers NotUnderstood / No,
// tolerates X- keys, and does not send again any key already negotiated.
func TestConformanceLoginTargetProposals(t *testing.T) {
	tg := newTarget(t, faketarget.Config{ExtraLoginKeys: []pdu.KV{
		{Key: "X-com.example.Vendor", Value: "yes"},
		{Key: "FutureKey", Value: "42"},
		{Key: "OFMarker", Value: "Yes"},
	}})
	s, err := loginOnly(t, tg, nil)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	c := tg.Conns()[0]
	var op []faketarget.LoginRecord
	for _, l := range c.Logins() {
		if l.Req.CSG == pdu.StageOperational {
			op = append(op, l)
		}
	}
	if len(op) < 2 {
		t.Fatalf("%d operational requests, want the answers in a second one", len(op))
	}
	got := map[string]string{}
	for _, kv := range op[1].Keys {
		got[kv.Key] = kv.Value
	}
	want := map[string]string{"X-com.example.Vendor": "NotUnderstood", "FutureKey": "NotUnderstood", "OFMarker": "No"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("answer %s=%q, want %q (second request: %v)", k, got[k], v, op[1].Keys)
		}
	}
	if len(got) != len(want) {
		t.Errorf("second operational request %v carries more than the answers", op[1].Keys)
	}
	if _, err := s.Do(context.Background(), tur()); err != nil {
		t.Error(err)
	}
	for _, v := range tg.Violations() { // includes "sent login key again"
		t.Errorf("target saw a violation: %s", v)
	}
}

// RFC 7143 6.3: a key the target sends twice in one negotiation fails the
// login (the initiator drops the connection).
func TestConformanceLoginDuplicateKey(t *testing.T) {
	tg := newTarget(t, faketarget.Config{ExtraLoginKeys: []pdu.KV{{Key: "MaxBurstLength", Value: "65536"}}})
	_, err := loginOnly(t, tg, nil)
	if !errors.Is(err, initiator.ErrProtocol) || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("err = %v, want a protocol error naming the repeated key", err)
	}
}

// RFC 7143 4.2.4: anything but a Login Response during login, or garbage,
// ends the login with a clear error instead of a hang.
func TestConformanceLoginGarbage(t *testing.T) {
	cases := map[string]func(c *faketarget.Conn, req *pdu.LoginRequest){
		"nop-in": func(c *faketarget.Conn, req *pdu.LoginRequest) {
			c.SendNopIn(pdu.ReservedTag, 0, nil)
		},
		"wrong-itt": func(c *faketarget.Conn, req *pdu.LoginRequest) {
			c.SendLoginResponse(&pdu.LoginResponse{Header: pdu.Header{ITT: req.ITT + 7}, Transit: true, NSG: 1, ISID: req.ISID})
		},
		"bad-stage": func(c *faketarget.Conn, req *pdu.LoginRequest) {
			c.SendLoginResponse(&pdu.LoginResponse{Header: pdu.Header{ITT: req.ITT}, Transit: true, CSG: 1, NSG: 0, ISID: req.ISID})
		},
		"garbage": func(c *faketarget.Conn, req *pdu.LoginRequest) {
			c.SendRaw([]byte(strings.Repeat("HTTP/1.1 400 Bad Request\r\n", 2)))
		},
		"version": func(c *faketarget.Conn, req *pdu.LoginRequest) {
			c.SendLoginResponse(&pdu.LoginResponse{Header: pdu.Header{ITT: req.ITT}, ISID: req.ISID, VersionActive: 3})
		},
		"close": func(c *faketarget.Conn, req *pdu.LoginRequest) { c.Close() },
	}
	for name, inject := range cases {
		t.Run(name, func(t *testing.T) {
			tg := newTarget(t, faketarget.Config{OnLogin: func(c *faketarget.Conn, req *pdu.LoginRequest, _ []pdu.KV) bool {
				inject(c, req)
				return true
			}})
			start := time.Now()
			_, err := loginOnly(t, tg, nil)
			if err == nil {
				t.Fatal("login succeeded")
			}
			if el := time.Since(start); el > 4*time.Second {
				t.Errorf("login failed only after %v: %v", el, err)
			}
			t.Logf("%s: %v", name, err)
		})
	}
}

// CHAP (RFC 7143 12.1.3) against the target's MD5 CHAP, one-way and
// mutual, and a wrong secret.
func TestConformanceLoginCHAP(t *testing.T) {
	tg := newTarget(t, faketarget.Config{CHAPUser: "u", CHAPSecret: "initiator-secret", TargetCHAPUser: "t", TargetCHAPSecret: "the-target-secret"})
	ctx, cancel := context.WithTimeout(context.Background(), confTimeout)
	defer cancel()
	for _, c := range []struct {
		chap *initiator.CHAP
		ok   bool
	}{
		{&initiator.CHAP{User: "u", Secret: "initiator-secret", Algorithms: []int{5}}, true},
		{&initiator.CHAP{User: "u", Secret: "initiator-secret", TargetUser: "t", TargetSecret: "the-target-secret"}, true},
		{&initiator.CHAP{User: "u", Secret: "not-the-secret!!"}, false},
		{&initiator.CHAP{User: "u", Secret: "initiator-secret", TargetSecret: "a-wrong-target-secret"}, false},
	} {
		s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: confIQN, TargetName: tg.Name(), Portal: "x", Dial: tg.Dial, CHAP: c.chap, NopInterval: -1, NoRecovery: true})
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, initiator.ErrAuth)) {
			t.Errorf("CHAP %+v: %v", c.chap, err)
		}
		if err == nil {
			s.Close()
		}
	}
}

// The initiator declares MaxRecvDataSegmentLength 1 MiB unless told
// otherwise, so a target may answer a 1 MiB read with one Data-In PDU
// (open-iscsi and libiscsi declare 262144: four PDUs, four sends); values
// outside RFC 7143's 512..16777215 are refused before dialing.
func TestMaxRecvDataSegmentLengthDeclared(t *testing.T) {
	for _, tc := range []struct {
		set, want int
	}{{0, 1 << 20}, {8192, 8192}, {1<<24 - 1, 1<<24 - 1}} {
		e := newEnv(t, faketarget.Config{MaxBurstLength: 1 << 20}, func(c *initiator.Config) { c.MaxRecvDataSegmentLength = tc.set })
		if got := e.c.Params().InitiatorMaxRecvDSL; got != tc.want {
			t.Errorf("set %d: the target saw MaxRecvDataSegmentLength %d, want %d", tc.set, got, tc.want)
		}
		if got := e.s.Params().MaxRecvDSL; got != tc.want {
			t.Errorf("set %d: session reports MaxRecvDSL %d, want %d", tc.set, got, tc.want)
		}
		// A 1 MiB read in PDUs of up to the declared size arrives whole.
		if _, err := e.s.Do(e.ctx, read10(0, 2048)); err != nil {
			t.Fatalf("set %d: 1 MiB read: %v", tc.set, err)
		}
		e.noViolations()
	}
	for _, bad := range []int{100, 511, 1 << 24} {
		_, err := initiator.Dial(context.Background(), initiator.Config{InitiatorName: confIQN, TargetName: "iqn.x:y", Portal: "fake:3260",
			MaxRecvDataSegmentLength: bad})
		if err == nil || !strings.Contains(err.Error(), "MaxRecvDataSegmentLength") {
			t.Errorf("MaxRecvDataSegmentLength %d: Dial said %v", bad, err)
		}
	}
}
