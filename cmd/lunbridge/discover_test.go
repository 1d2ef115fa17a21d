package main

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

// fakePortal starts a fake target on 127.0.0.1 and returns its address.
func fakePortal(t *testing.T, cfg faketarget.Config) (*faketarget.Target, string) {
	t.Helper()
	tg := faketarget.New(cfg)
	addr, err := tg.Listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg, addr
}

// craftedSendTargets answers SendTargets with text split over several Text
// Response PDUs (C bit, Target Transfer Tag), cut in the middle of keys and
// values.
func craftedSendTargets(text string, chunk int) func(c *faketarget.Conn, p pdu.PDU, data []byte) bool {
	var mu sync.Mutex
	pending := map[uint32]string{}
	return func(c *faketarget.Conn, p pdu.PDU, data []byte) bool {
		q, ok := p.(*pdu.TextRequest)
		if !ok {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		rest := text
		if q.TTT != pdu.ReservedTag {
			rest = pending[q.TTT]
			delete(pending, q.TTT)
		}
		resp := &pdu.TextResponse{Header: pdu.Header{ITT: q.ITT, LUN: q.LUN, Final: true}, TTT: pdu.ReservedTag}
		if len(rest) > chunk {
			ttt := c.NewTTT()
			pending[ttt] = rest[chunk:]
			rest = rest[:chunk]
			resp.Final, resp.Continue, resp.TTT = false, true, ttt
		}
		c.Send(resp, []byte(rest))
		return true
	}
}

func TestDiscoverMultiPDUFake(t *testing.T) {
	text := "TargetName=iqn.2026-11.org.example:alpha\x00TargetAddress=127.0.0.1:3260,1\x00TargetAddress=[::1]:3260,1\x00" +
		"TargetAddress=[fe80::1%eth0]:3260,2\x00TargetAlias=alpha disk\x00" +
		"TargetName=iqn.2026-11.org.example:beta\x00TargetAddress=169.254.7.7:3260,3\x00TargetAddress=192.0.2.10,4\x00TargetAddress=[2001:db8::5],5\x00" +
		"TargetName=iqn.2026-11.org.example:gamma\x00"
	tg, addr := fakePortal(t, faketarget.Config{OnPDU: craftedSendTargets(text, 37)})
	r := lbRun(t, 20*time.Second, nil, "discover", "--json", addr)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got []discoverTarget
	decodeStrict(t, r.stdout, &got)
	dp := func(addr string, tag int, target string) discoverPortal {
		return discoverPortal{Portal: discovery.Portal{Address: addr, Tag: tag}, URL: "iscsi://" + addr + "/" + target}
	}
	const alpha, beta, gamma = "iqn.2026-11.org.example:alpha", "iqn.2026-11.org.example:beta", "iqn.2026-11.org.example:gamma"
	want := []discoverTarget{
		{Name: alpha, Portals: []discoverPortal{dp("127.0.0.1:3260", 1, alpha), dp("[::1]:3260", 1, alpha)}},
		{Name: beta, Portals: []discoverPortal{dp("192.0.2.10:3260", 4, beta), dp("[2001:db8::5]:3260", 5, beta)}},
		{Name: gamma, Portals: []discoverPortal{}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	// The skipped link-local portals are logged (warning level, the default).
	for _, p := range []string{"fe80::1", "169.254.7.7"} {
		if !strings.Contains(r.stderr, p) {
			t.Errorf("no log line about skipped portal %s:\n%s", p, r.stderr)
		}
	}
	// Table form of the same answer.
	r = lbRun(t, 20*time.Second, nil, "discover", addr)
	rows := tableRows(t, r.stdout, "TARGET", "PORTAL", "TPGT", "URL")
	wantRows := [][]string{
		{alpha, "127.0.0.1:3260", "1", "iscsi://127.0.0.1:3260/" + alpha}, {alpha, "[::1]:3260", "1", "iscsi://[::1]:3260/" + alpha},
		{beta, "192.0.2.10:3260", "4", "iscsi://192.0.2.10:3260/" + beta}, {beta, "[2001:db8::5]:3260", "5", "iscsi://[2001:db8::5]:3260/" + beta},
		{gamma, "-", "-", "-"},
	}
	if !reflect.DeepEqual(rows, wantRows) {
		t.Errorf("table rows %q, want %q", rows, wantRows)
	}
	// The initiator never offered digests on the discovery session.
	for _, c := range tg.Conns() {
		for _, l := range c.Logins() {
			for _, kv := range l.Keys {
				if (kv.Key == "HeaderDigest" || kv.Key == "DataDigest") && kv.Value != "None" {
					t.Errorf("discovery session offered %s=%s", kv.Key, kv.Value)
				}
			}
		}
	}
	for _, v := range tg.Violations() {
		t.Errorf("protocol violation: %s", v)
	}
}

func TestDiscoverIstgtDoesNotHang(t *testing.T) {
	s := targets.StartIstgt(t, targets.Target{LUNs: []targets.LUN{{Size: 1 << 20}}}, targets.Target{LUNs: []targets.LUN{{Size: 1 << 20}}})
	for i := 0; i < 3; i++ { // repeated: a hang would show up as lbRun's timeout
		r := lbRun(t, 15*time.Second, nil, "--timeout", "5s", "discover", "--json", s.Portal)
		r.mustOK(t, "discover istgt")
		var got []discoverTarget
		decodeStrict(t, r.stdout, &got)
		if len(got) != 2 || got[0].Name != s.Targets[0].Name || got[1].Name != s.Targets[1].Name {
			t.Fatalf("discover istgt: %+v", got)
		}
	}
}

func TestDiscoverCHAPFake(t *testing.T) {
	const user, secret, tuser, tsecret = "disc-user", "disc-secret-123", "portal-user", "portal-secret-456"
	dir := t.TempDir()
	tfile := filepath.Join(dir, "portal.secret")
	if err := os.WriteFile(tfile, []byte(tsecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mutual := range []bool{false, true} {
		cfg := faketarget.Config{CHAPUser: user, CHAPSecret: secret}
		args := []string{"discover", "--discovery-chap-user", user}
		if mutual {
			cfg.TargetCHAPUser, cfg.TargetCHAPSecret = tuser, tsecret
			args = append(args, "--discovery-target-chap-user", tuser, "--discovery-target-chap-secret-file", tfile)
		}
		_, addr := fakePortal(t, cfg)
		r := lbRun(t, 20*time.Second, []string{"LUNBRIDGE_DISCOVERY_CHAP_SECRET=" + secret}, append(args, addr)...)
		r.mustOK(t, "discovery CHAP")
		if !strings.Contains(r.stdout, faketarget.DefaultTargetName) {
			t.Errorf("mutual=%v: %s", mutual, r.stdout)
		}
		// Session CHAP is not used for discovery.
		r = lbRun(t, 20*time.Second, []string{"LUNBRIDGE_CHAP_SECRET=" + secret}, "--chap-user", user, "discover", addr)
		if r.code != ExitLogin {
			t.Errorf("mutual=%v: session CHAP used for discovery? exit %d %s", mutual, r.code, r.stderr)
		}
		if mutual {
			// The portal answers with the wrong secret: refused.
			bad := filepath.Join(dir, "bad.secret")
			os.WriteFile(bad, []byte("not-the-portal-secret\n"), 0o600)
			r = lbRun(t, 20*time.Second, []string{"LUNBRIDGE_DISCOVERY_CHAP_SECRET=" + secret}, "discover", "--discovery-chap-user", user,
				"--discovery-target-chap-user", tuser, "--discovery-target-chap-secret-file", bad, addr)
			checkOneLineError(t, r, ExitLogin, "mutual CHAP, wrong portal secret")
		}
	}
}

// checkOneLineError checks a failure: the exit code, exactly one line on
// stderr starting with "lunbridge: ", no stack trace or log noise.
func checkOneLineError(t *testing.T, r lbResult, code int, what string) {
	t.Helper()
	msg := strings.TrimRight(r.stderr, "\n")
	if r.code != code || msg == "" || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "lunbridge: ") ||
		strings.Contains(msg, "goroutine") || strings.Contains(msg, "panic") || strings.Contains(msg, "level=") {
		t.Errorf("%s: want exit %d and one line on stderr; got exit %d, stderr:\n%s", what, code, r.code, r.stderr)
		return
	}
	t.Logf("%s: exit %d: %s", what, r.code, msg)
}

func TestExitCodesAndErrors(t *testing.T) {
	s := targets.StartTgtd(t,
		targets.Target{Name: "iqn.2026-11.org.lunbridge.test:err", LUNs: []targets.LUN{{Size: 1 << 20}}},
		targets.Target{Name: "iqn.2026-11.org.lunbridge.test:err-chap", LUNs: []targets.LUN{{Size: 1 << 20}}, CHAPUser: "carol", CHAPSecret: "carol-secret-12"},
	)
	_, chapPortal := fakePortal(t, faketarget.Config{CHAPUser: "disc", CHAPSecret: "right-secret-123"})

	// A port that refuses connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	// A black hole: accepts and never answers.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()

	// Another service on the port: SSH greets first.
	ssh, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ssh.Close()
	go func() {
		for {
			c, err := ssh.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n\x00\x00\x04\x1c\x0a\x14 key exchange ...."))
			c.Close()
		}
	}()

	lunURL := "iscsi://" + s.Portal + "/iqn.2026-11.org.lunbridge.test:err/"
	cases := []struct {
		name string
		env  []string
		args []string
		code int
		want string // in the message
	}{
		{"wrong discovery secret", []string{"LUNBRIDGE_DISCOVERY_CHAP_SECRET=wrong-secret-123"}, []string{"discover", "--discovery-chap-user", "disc", chapPortal}, ExitLogin, "authentication"},
		{"wrong session secret", []string{"LUNBRIDGE_CHAP_SECRET=wrong-secret-123"}, []string{"--chap-user", "carol", "info", "iscsi://" + s.Portal + "/iqn.2026-11.org.lunbridge.test:err-chap/1"}, ExitLogin, "authentication"},
		{"missing session CHAP", nil, []string{"info", "iscsi://" + s.Portal + "/iqn.2026-11.org.lunbridge.test:err-chap/1"}, ExitLogin, "CHAP"},
		{"connection refused (discover)", nil, []string{"discover", refused}, ExitConnect, "refused"},
		{"connection refused (info)", nil, []string{"info", "iscsi://" + refused + "/iqn.2026-11.org.lunbridge.test:err/1"}, ExitConnect, "refused"},
		{"black hole (discover)", nil, []string{"--timeout", "2s", "discover", hole.Addr().String()}, ExitConnect, hole.Addr().String()},
		{"black hole (info)", nil, []string{"--timeout", "2s", "info", "iscsi://" + hole.Addr().String() + "/iqn.2026-11.org.lunbridge.test:err/1"}, ExitConnect, "--timeout"},
		{"SSH on the port (info)", nil, []string{"info", "iscsi://" + ssh.Addr().String() + "/iqn.2026-11.org.lunbridge.test:err/1"}, ExitConnect, "not an iSCSI target"},
		{"SSH on the port (discover)", nil, []string{"discover", ssh.Addr().String()}, ExitConnect, "is the port right?"},
		{"black hole (ls)", nil, []string{"--timeout", "2s", "ls", hole.Addr().String()}, ExitConnect, hole.Addr().String()},
		{"unknown target", nil, []string{"info", "iscsi://" + s.Portal + "/iqn.2026-11.org.lunbridge.test:nope/1"}, ExitLogin, "target not found"},
		{"LUN does not exist", nil, []string{"info", lunURL + "9"}, ExitSCSI, "LUN 9 does not exist"},
		{"LUN is the controller", nil, []string{"info", lunURL + "0"}, ExitSCSI, "not a disk"},
		{"URL typo: scheme", nil, []string{"info", "iscsci://" + s.Portal + "/iqn.2026-11.org.lunbridge.test:err/1"}, ExitUsage, "scheme"},
		{"URL typo: LUN", nil, []string{"info", lunURL + "l"}, ExitUsage, "LUN"},
		{"URL typo: port", nil, []string{"ls", "127.0.0.1:32600000"}, ExitUsage, "port"},
		{"URL typo: target", nil, []string{"info", "iscsi://" + s.Portal + "/qn.2026-11.org.lunbridge.test:err/1"}, ExitUsage, "iqn."},
		{"URL without LUN", nil, []string{"info", "iscsi://" + s.Portal + "/iqn.2026-11.org.lunbridge.test:err"}, ExitUsage, "no LUN"},
		{"unknown command", nil, []string{"lss", s.Portal}, ExitUsage, "did you mean"},
		{"unknown flag", nil, []string{"ls", "--jsn", s.Portal}, ExitUsage, "jsn"},
		{"missing argument", nil, []string{"info"}, ExitUsage, "one URL"},
		{"queue depth 0", nil, []string{"--queue-depth", "0", "info", lunURL + "1"}, ExitUsage, "--queue-depth"},
		{"connections 0", nil, []string{"--connections", "0", "info", lunURL + "1"}, ExitUsage, "--connections"},
		{"timeout 0", nil, []string{"--timeout", "0s", "info", lunURL + "1"}, ExitUsage, "--timeout"},
		{"bogus policy", nil, []string{"pull", "--policy", "bogus", "--path", lunURL + "1", lunURL + "1", "-"}, ExitUsage, "--policy"},
		{"bogus failback", nil, []string{"pull", "--failback", "sometimes", lunURL + "1", "-"}, ExitUsage, "--failback"},
		{"prefer C", nil, []string{"pull", "--prefer", "C", lunURL + "1", "-"}, ExitUsage, "--prefer"},
		{"global flag after the URL", nil, []string{"info", "iscsi://" + hole.Addr().String() + "/iqn.2026-11.org.lunbridge.test:err/1", "--timeout", "2s"}, ExitConnect, "within 2s"},
		{"misspelled flag", nil, []string{"info", "--timout", "2s", lunURL + "1"}, ExitUsage, "did you mean --timeout?"},
		{"misspelled command flag", nil, []string{"pull", lunURL + "1", "-", "--chekcsum", "none"}, ExitUsage, "did you mean --checksum?"},
		{"bad log level", nil, []string{"--log-level", "loud", "ls", s.Portal}, ExitUsage, "log-level"},
	}
	for _, c := range cases {
		r := lbRun(t, 20*time.Second, c.env, c.args...)
		checkOneLineError(t, r, c.code, c.name)
		if !strings.Contains(strings.ToLower(r.stderr), strings.ToLower(c.want)) {
			t.Errorf("%s: message does not mention %q: %s", c.name, c.want, r.stderr)
		}
		if (strings.HasPrefix(c.name, "black hole") || strings.HasPrefix(c.name, "global flag")) && r.elapsed > 8*time.Second {
			t.Errorf("%s: took %v with --timeout 2s", c.name, r.elapsed)
		}
	}
}
