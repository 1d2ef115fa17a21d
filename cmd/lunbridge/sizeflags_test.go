package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

// TestSizeFlagsAcceptSuffixes: serve --max-request and
// --max-recv-data-segment-length take sizes with suffixes (1M, 256k,
// 32MiB) as the other size flags do; a bad or out-of-range value is a
// usage error (exit 2) before any connection (the URL's portal is dead).
func TestSizeFlagsAcceptSuffixes(t *testing.T) {
	img, _ := serveImage(t, 2<<20)
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	p := startServe(t, nil, "serve", "--listen", "unix:"+sock, "--persistent", "--max-request", "1MiB", "file://"+img)
	info := toolOut(t, "nbdinfo", "--json", p.line)
	if !strings.Contains(info, `"block_size_maximum": 1048576`) {
		t.Fatalf("serve --max-request 1MiB: nbdinfo:\n%s", info)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("serve exit %d; stderr: %s", code, p.stderr)
	}

	srv := targets.StartTgtd(t, targets.Target{LUNs: []targets.LUN{{Size: 4 << 20}}})
	r := lbRun(t, 30*time.Second, nil, "--max-recv-data-segment-length", "256k", "info", srv.URL(0, 0))
	r.mustOK(t, "info --max-recv-data-segment-length 256k")

	dead := "iscsi://127.0.0.1:1/iqn.2026-12.org.lunbridge.test:none/1"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--listen", "unix:" + filepath.Join(dir, "x.sock"), "--max-request", "lots", dead}, "--max-request"},
		{[]string{"serve", "--listen", "unix:" + filepath.Join(dir, "y.sock"), "--max-request", "1G", dead}, "want 4k to 256M"},
		{[]string{"serve", "--listen", "unix:" + filepath.Join(dir, "z.sock"), "--max-request", "1k", dead}, "want 4k to 256M"},
		{[]string{"--max-recv-data-segment-length", "1.5x", "info", dead}, "--max-recv-data-segment-length"},
		{[]string{"--max-recv-data-segment-length", "16M", "info", dead}, "16777216: want 512 to 16777215"},
	} {
		r := lbRun(t, 30*time.Second, nil, tc.args...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stderr, "connect") {
			t.Errorf("%v: exit %d, want 2 before connecting with %q; stderr: %s", tc.args, r.code, tc.want, r.stderr)
		}
	}
}
