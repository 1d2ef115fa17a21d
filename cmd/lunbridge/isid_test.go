package main

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

func TestParseISID(t *testing.T) {
	for in, want := range map[string]string{
		"80a1b2c3d4e5":      "80a1b2c3d4e5",
		"80-a1-b2-c3-d4-e5": "80a1b2c3d4e5",
		"0x00023D000001":    "00023d000001",
		"80:a1:b2:c3:d4:e5": "80a1b2c3d4e5",
	} {
		id, err := parseISID(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if got := hex.EncodeToString(id[:]); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"", "80a1b2", "80a1b2c3d4e5f6", "zz0000000000", "000000000000", "c0a1b2c3d4e5"} {
		if _, err := parseISID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A second owner of the same ISID on this host is refused, naming the first
// and the way out (--instance); the lock goes with the process.
func TestLockISIDRefusesSecondOwner(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("LUNBRIDGE_ISID_LOCK_DIR", dir)
	id := [6]byte{0x80, 1, 2, 3, 4, 5}
	path := filepath.Join(dir, "800102030405.lock")
	if err := os.WriteFile(path, []byte("lunbridge pid 4242 (lunbridge serve iscsi://x/y/0)\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other, err := os.Open(path) // another open file description: another process's flock
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	u, _ := discovery.ParseURL("iscsi://192.0.2.1/iqn.2026-12.org.example:t/0")
	defer func(d time.Duration) { isidLockWait = d }(isidLockWait)
	isidLockWait = 200 * time.Millisecond
	start := time.Now()
	err = lockISID(id, u, "")
	if waited := time.Since(start); waited < isidLockWait {
		t.Errorf("refused after %v, before waiting %v for an exiting owner", waited, isidLockWait)
	}
	if err == nil || !strings.Contains(err.Error(), "pid 4242") || !strings.Contains(err.Error(), "--instance") {
		t.Fatalf("second owner: %v; want a refusal naming pid 4242 and --instance", err)
	}
	other.Close() // the first owner exits
	if err := lockISID(id, u, ""); err != nil {
		t.Fatalf("after the first owner left: %v", err)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "pid ") || strings.Contains(string(b), "4242") {
		t.Fatalf("lock file names %q, want this process", b)
	}
}

var isidInLog = regexp.MustCompile(`ISID ([0-9a-f]{12})`)

func loggedISID(t *testing.T, p *serveProc) string {
	t.Helper()
	// stderr is copied by a goroutine of exec: give it a moment.
	var m []string
	for end := time.Now().Add(5 * time.Second); m == nil && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		m = isidInLog.FindStringSubmatch(p.stderr.String())
	}
	stderr := p.stderr.String()
	if m == nil {
		t.Fatalf("no ISID in the debug log:\n%s", stderr)
	}
	return m[1]
}

// serve gets the same ISID after a restart (so its login ends the dead
// process's session), a second serve of the same LUN is refused while the
// first runs, and --instance gives a second one its own ISID.
func TestServeStableISIDCLI(t *testing.T) {
	srv := targets.StartTgtd(t, targets.Target{LUNs: []targets.LUN{{Size: 4 << 20}}})
	url := srv.URL(0, 0)
	dir := t.TempDir()
	env := []string{"LUNBRIDGE_ISID_LOCK_DIR=" + filepath.Join(dir, "locks")}
	serve := func(sock string, extra ...string) *serveProc {
		args := append([]string{"--log-level", "debug"}, extra...)
		return startServe(t, env, append(args, "serve", "--listen", "unix:"+filepath.Join(dir, sock), url)...)
	}
	p1 := serve("a.sock")
	isid1 := loggedISID(t, p1)

	r := lbRun(t, 30*time.Second, env, "serve", "--listen", "unix:"+filepath.Join(dir, "b.sock"), url)
	if r.code != ExitFailure || !strings.Contains(r.stderr, "already in use") || !strings.Contains(r.stderr, "--instance") {
		t.Fatalf("second serve of the same LUN: exit %d, stderr:\n%s", r.code, r.stderr)
	}

	p2 := serve("c.sock", "--instance", "backup")
	if isid2 := loggedISID(t, p2); isid2 == isid1 {
		t.Fatalf("--instance backup logged in with the default instance's ISID %s", isid1)
	}
	p2.cmd.Process.Signal(syscall.SIGTERM)
	p2.wait(t, 15*time.Second)

	p1.cmd.Process.Kill() // a crash: the restart must reinstate its session
	p1.wait(t, 15*time.Second)
	p3 := serve("d.sock")
	if isid3 := loggedISID(t, p3); isid3 != isid1 {
		t.Fatalf("restarted serve logged in with ISID %s, the crashed one with %s", isid3, isid1)
	}

	if r := lbRun(t, 30*time.Second, env, "--isid", "nothex", "info", url); r.code != ExitUsage {
		t.Fatalf("--isid nothex: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}
