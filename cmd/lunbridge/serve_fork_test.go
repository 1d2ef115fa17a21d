package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestServeCLIFork: serve --fork prints the URI and exits 0 once
// listening; the server runs on in its own session under the pid in
// --pid-file, and SIGTERM ends it cleanly (socket and pid file removed).
// A server that cannot start makes --fork fail with the reason.
func TestServeCLIFork(t *testing.T) {
	img, _ := serveImage(t, 1<<20)
	dir := t.TempDir()
	sock, pidf := filepath.Join(dir, "s.sock"), filepath.Join(dir, "pid")
	r := lbRun(t, 20*time.Second, nil, "serve", "--fork", "--pid-file", pidf, "--listen", "unix:"+sock, "--persistent", "file://"+img)
	r.mustOK(t, "serve --fork")
	if want := "nbd+unix:///?socket=" + sock + "\n"; r.stdout != want {
		t.Fatalf("printed %q, want %q", r.stdout, want)
	}
	b, err := os.ReadFile(pidf)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		t.Errorf("server %d is not a session leader (sid %d, %v)", pid, sid, err)
	}
	info := toolOut(t, "nbdinfo", strings.TrimSpace(r.stdout))
	if !strings.Contains(info, "export-size: 1048576") {
		t.Fatalf("nbdinfo:\n%s", info)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(15 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("server %d still running 15s after SIGTERM", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, f := range []string{sock, pidf} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
	r = lbRun(t, 20*time.Second, nil, "serve", "--fork", "--listen", "unix:"+sock, "file://"+filepath.Join(dir, "missing.img"))
	if r.code == 0 || !strings.Contains(r.stderr, "missing.img") {
		t.Errorf("serve --fork of a missing image: exit %d, stderr %q", r.code, r.stderr)
	}
}
