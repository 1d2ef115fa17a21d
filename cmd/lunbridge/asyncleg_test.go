package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev/filedev"
	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// TestMirrorAsyncCLIUsage: bad --mirror-async values are usage errors
// (exit 2) before anything is opened.
func TestMirrorAsyncCLIUsage(t *testing.T) {
	exe, _ := os.Executable()
	sock := "unix:" + filepath.Join(t.TempDir(), "s.sock")
	for _, args := range [][]string{
		{"serve", "--listen", sock, "--mirror-async", "file:///nonexistent-b", "--max-lag", "soon", "file:///nonexistent-a"},
		{"serve", "--listen", sock, "--mirror-async", "file:///nonexistent-b", "--max-lag", "5s,12parsecs", "file:///nonexistent-a"},
		{"serve", "--listen", sock, "--mirror-async", "file:///nonexistent-b", "--max-lag", "-1s", "file:///nonexistent-a"},
		{"serve", "--listen", sock, "--mirror-async", "file:///nonexistent-b", "--max-lag", "5s,4k", "file:///nonexistent-a"},
		{"serve", "--listen", sock, "--mirror-async", "file:///nonexistent-b", "--on-lag", "panic", "file:///nonexistent-a"},
		{"serve", "--listen", sock, "--max-lag", "5s,64MiB", "file:///nonexistent-a"},
		{"pull", "--mirror-async", "file:///nonexistent-b", "file:///nonexistent-a", filepath.Join(t.TempDir(), "out")},
	} {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), "LUNBRIDGE_SERVETEST_MAIN=1")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != ExitUsage {
			t.Errorf("%v: %v, want exit %d\n%s", args, err, ExitUsage, out)
		}
	}
	for _, tc := range []struct {
		in   string
		d    time.Duration
		size int64
	}{{"5s,64MiB", 5 * time.Second, 64 << 20}, {"250ms", 250 * time.Millisecond, 0}, {",1G", 0, 1 << 30}} {
		d, n, err := parseMaxLag(tc.in)
		if err != nil || d != tc.d || n != tc.size {
			t.Errorf("parseMaxLag(%q) = %v, %d, %v", tc.in, d, n, err)
		}
	}
}

// TestServeMirrorAsyncFiles: serve --mirror-async with file legs: the
// control socket shows the async leg (mode, lag, consistent), writes
// reach the remote, and after SIGTERM the remote equals the main image
// and its metadata says clean and consistent.
func TestServeMirrorAsyncFiles(t *testing.T) {
	const size = 8 << 20
	dir := t.TempDir()
	main, remote := filepath.Join(dir, "main.img"), filepath.Join(dir, "remote.img")
	for _, f := range []string{main, remote} {
		if err := os.WriteFile(f, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sock, ctl := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "control.sock")
	p := startServe(t, []string{"XDG_RUNTIME_DIR=" + dir}, "serve", "--listen", "unix:"+sock, "--control-socket", ctl,
		"--mirror-async", "file://"+remote, "--mirror-async-init", "--max-lag", "2s,8MiB", "file://"+main)
	waitAsyncMode(t, ctl, mirror.AsyncJournal) // the first full copy
	nc := nbdHold(t, "unix", sock)
	w := &nbdWriter{c: nc}
	rng := rand.New(rand.NewSource(1))
	buf := make([]byte, 4096)
	for i := 0; i < 500; i++ {
		rng.Read(buf)
		if err := w.write(buf, rng.Int63n(size/2/4096)*4096); err != nil {
			t.Fatal(err)
		}
	}
	var st controlStatus
	for end := time.Now().Add(20 * time.Second); ; {
		raw, err := readControl(ctl)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &st); err != nil || st.Async == nil {
			t.Fatalf("status %s: %v", raw, err)
		}
		if st.Async.Mode == mirror.AsyncJournal && st.Async.JournalEntries == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("async leg not caught up: %+v", st.Async)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !st.Async.Consistent || st.Async.LagBytes != 0 || st.Async.Sequence == 0 {
		t.Fatalf("async leg after the writes: %+v", st.Async)
	}
	r := lbRun(t, 20*time.Second, nil, "mirror", "status", "--control-socket", ctl)
	if r.code != 0 || !strings.Contains(r.stdout, "async leg") || !strings.Contains(r.stdout, "mode=journal consistent") {
		t.Fatalf("mirror status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	nc.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("serve exit %d: %s", code, p.stderr)
	}
	a, _ := os.ReadFile(main)
	b, _ := os.ReadFile(remote)
	d, err := filedev.Open(remote, 512, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	info, err := mirror.InspectAsync(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Consistent || !info.Clean || info.Dirty != 0 {
		t.Fatalf("remote metadata after SIGTERM: %+v", info)
	}
	if !bytes.Equal(a[:info.Exported], b[:info.Exported]) {
		t.Fatal("remote image differs from the main image after a clean stop")
	}
	r = lbRun(t, 20*time.Second, nil, "mirror", "status", "--async", "file://"+remote)
	if r.code != 0 || !strings.Contains(r.stdout, "CONSISTENT: a crash-consistent image") {
		t.Fatalf("mirror status --async: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestServeMirrorAsyncThreeLegs: main + --mirror (synchronous) +
// --mirror-async: the status document shows both, mirror status prints
// the async leg under the mirror, and after SIGTERM the three images hold
// the same data.
func TestServeMirrorAsyncThreeLegs(t *testing.T) {
	const size = 8 << 20
	dir := t.TempDir()
	imgs := []string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img"), filepath.Join(dir, "c.img")}
	for _, f := range imgs {
		if err := os.WriteFile(f, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if r := lbRun(t, 30*time.Second, nil, "mirror", "create", "--yes", "file://"+imgs[0], "file://"+imgs[1]); r.code != 0 {
		t.Fatalf("mirror create: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	sock, ctl := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "control.sock")
	p := startServe(t, []string{"XDG_RUNTIME_DIR=" + dir}, "serve", "--listen", "unix:"+sock, "--control-socket", ctl,
		"--mirror", "file://"+imgs[1], "--mirror-async", "file://"+imgs[2], "--mirror-async-init", "file://"+imgs[0])
	nc := nbdHold(t, "unix", sock)
	w := &nbdWriter{c: nc}
	rng := rand.New(rand.NewSource(2))
	buf := make([]byte, 4096)
	for i := 0; i < 300; i++ {
		rng.Read(buf)
		if err := w.write(buf, rng.Int63n(size/2/4096)*4096); err != nil {
			t.Fatal(err)
		}
	}
	var st controlStatus
	for end := time.Now().Add(20 * time.Second); ; {
		raw, err := readControl(ctl)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &st); err != nil || st.Async == nil || st.Mirror == nil {
			t.Fatalf("status %s: %v", raw, err)
		}
		if st.Async.Mode == mirror.AsyncJournal && st.Async.JournalEntries == 0 && st.Mirror.State != "resyncing" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("not settled: async %+v mirror %s", st.Async, st.Mirror.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := lbRun(t, 20*time.Second, nil, "mirror", "status", "--json", "--control-socket", ctl)
	var v mirrorView
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil || v.Async == nil || v.Legs[1].State != "in-sync" {
		t.Fatalf("mirror status --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	nc.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("serve exit %d: %s", code, p.stderr)
	}
	d, err := filedev.Open(imgs[2], 512, true)
	if err != nil {
		t.Fatal(err)
	}
	info, err := mirror.InspectAsync(context.Background(), d)
	d.Close()
	if err != nil || !info.Consistent || !info.Clean {
		t.Fatalf("async leg after SIGTERM: %+v %v", info, err)
	}
	var data [3][]byte
	for i, f := range imgs {
		data[i], _ = os.ReadFile(f)
		data[i] = data[i][:info.Exported]
	}
	if !bytes.Equal(data[0], data[1]) || !bytes.Equal(data[0], data[2]) {
		t.Fatal("the three images differ after a clean stop")
	}
}

func waitAsyncMode(t *testing.T, ctl, mode string) *mirror.AsyncStatus {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); ; {
		var st controlStatus
		raw, err := readControl(ctl)
		if err == nil && json.Unmarshal(raw, &st) == nil && st.Async != nil && st.Async.Mode == mode {
			return st.Async
		}
		if time.Now().After(end) {
			t.Fatalf("async leg not in mode %s: %s %v", mode, raw, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeMirrorAsyncReaddRealTargets (issue 20 item 6): serve with the
// main LUN on tgtd and --mirror-async on istgt behind a fault proxy, under
// NBD writes. The async leg's link is cut for 4 s (connections reset, new
// ones refused): no write fails, the leg shows failed with dirty chunks;
// after the heal it is reopened, resynced from the bitmap and back in
// journal mode, consistent; the Prometheus gauges show the lag; after
// SIGTERM the remote's backing file equals the main one.
func TestServeMirrorAsyncReaddRealTargets(t *testing.T) {
	const lunSize = 64 << 20
	srvA := targets.StartTgtd(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}}})
	srvB := targets.StartIstgt(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}}})
	px, err := faultproxy.New(srvB.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	urlB := fmt.Sprintf("iscsi://%s/%s/%d", px.Addr(), srvB.Targets[0].Name, srvB.LUNNumber(0))
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "control.sock")
	metricsAddr := freeLoopbackAddr(t)
	p := startServe(t, []string{"XDG_RUNTIME_DIR=" + dir, "LUNBRIDGE_ISID_LOCK_DIR=" + filepath.Join(dir, "isid")},
		"--metrics-listen", metricsAddr, "serve", "--listen", "unix:"+sock, "--persistent", "--control-socket", ctl,
		"--readd-interval", "500ms", "--readd-max-interval", "1s",
		"--mirror-async", urlB, "--mirror-async-init", "--max-lag", "2s,16MiB", srvA.URL(0, 0))
	waitAsyncMode(t, ctl, mirror.AsyncJournal)
	nc := nbdHold(t, "unix", sock)
	defer nc.Close()
	w := &nbdWriter{c: nc}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewSource(3))
		buf := make([]byte, 4096)
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			rng.Read(buf)
			if err := w.write(buf, rng.Int63n(32<<20/4096)*4096); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(time.Second)
	px.RefuseNew(true)
	px.ResetAll()
	time.Sleep(4 * time.Second)
	var st controlStatus
	raw, _ := readControl(ctl)
	if err := json.Unmarshal(raw, &st); err != nil || st.Async == nil || st.Async.Mode != mirror.AsyncFailed || st.Async.DirtyChunks == 0 {
		t.Fatalf("after 4 s without the async leg's link: %s %v", raw, err)
	}
	px.RefuseNew(false)
	healed := time.Now()
	for {
		raw, _ = readControl(ctl)
		st = controlStatus{} // absent fields (omitempty) must not keep old values
		if json.Unmarshal(raw, &st) == nil && st.Async != nil && st.Async.Mode == mirror.AsyncJournal && st.Async.ReAdds == 1 {
			break
		}
		if time.Since(healed) > 40*time.Second {
			t.Fatalf("async leg not back 40 s after the heal: %s\n%s", raw, p.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("async leg back in journal mode %v after the heal: %+v", time.Since(healed).Round(time.Millisecond), st.Async)
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"lunbridge_mirror_async_lag_seconds{", "lunbridge_mirror_async_lag_bytes{", `lunbridge_mirror_async_mode{device=`, "lunbridge_mirror_async_consistent{"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
	time.Sleep(time.Second)
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("a write failed while the async leg was away: %v", err)
	}
	nc.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("serve exit %d; stderr: %s", code, p.stderr)
	}
	sameBacking(t, srvA.BackingFile(0, 0), srvB.BackingFile(0, 0), 32<<20)
}
