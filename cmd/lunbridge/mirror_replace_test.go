package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// dialLUNAt logs in to LUN index lun of srv's first target (random ISID).
func dialLUNAt(t *testing.T, srv *targets.Server, lun int) blockdev.Device {
	t.Helper()
	u, err := discovery.ParseURL(srv.URL(0, lun))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: "iqn.2026-12.org.lunbridge:replace-setup", TargetName: u.Target, Portal: u.Portal})
	if err != nil {
		t.Fatal(err)
	}
	l, err := initiator.OpenLUN(ctx, s, u.LUN)
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	l.SetOwnsSession(true)
	return l
}

// TestServeMirrorReplaceRealTargets (issue 20 item 4): serve --mirror with
// leg A on istgt and leg B on tgtd LUN 1, under 4 KiB random writes
// through NBD. `mirror replace B` of the healthy leg is refused (fail it
// first), and so is leg A's own URL; after `mirror fail B`, `mirror
// replace --wait B` with tgtd LUN 2 (filled with garbage) returns once the
// new leg is in sync; `mirror status` says so, with the new leg's WWID; the
// new LUN's exported range equals leg A's and what the NBD client was told,
// and the old LUN is no longer written.
func TestServeMirrorReplaceRealTargets(t *testing.T) {
	const lunSize = 64 << 20
	srvA := targets.StartIstgt(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}}})
	srvB := targets.StartTgtd(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}, {Size: lunSize}}})
	ctx := context.Background()
	m, err := mirror.Create(ctx, dialLUNAt(t, srvA, 0), dialLUNAt(t, srvB, 0), mirror.CreateOptions{ChunkSize: 1 << 20, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	size := m.Size()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	// The new LUN holds garbage: only a full copy makes it equal.
	junk := make([]byte, lunSize)
	rand.New(rand.NewSource(7)).Read(junk)
	if err := os.WriteFile(srvB.BackingFile(0, 1), junk, 0o600); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	env := []string{"XDG_RUNTIME_DIR=" + dir, "LUNBRIDGE_ISID_LOCK_DIR=" + filepath.Join(dir, "isid")}
	sock, ctl := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "control.sock")
	p := startServe(t, env, "serve", "--listen", "unix:"+sock, "--persistent", "--control-socket", ctl,
		"--mirror", srvB.URL(0, 0), srvA.URL(0, 0))
	nc := nbdHold(t, "unix", sock)
	defer nc.Close()

	const region = 32 << 20
	w := &nbdWriter{c: nc}
	img := make([]byte, size)
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewSource(1))
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			off := rng.Int63n(region/4096) * 4096
			buf := make([]byte, 4096)
			rng.Read(buf)
			if err := w.write(buf, off); err != nil {
				done <- err
				return
			}
			mu.Lock()
			copy(img[off:], buf)
			mu.Unlock()
		}
	}()
	time.Sleep(500 * time.Millisecond)
	newURL := srvB.URL(0, 1)

	r := lbRun(t, 60*time.Second, env, "mirror", "replace", "--control-socket", ctl, "B", newURL)
	if r.code != 1 || !strings.Contains(r.stderr, "fail it first") {
		t.Fatalf("replace of the healthy leg B: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r = lbRun(t, 60*time.Second, env, "mirror", "fail", "--control-socket", ctl, "B"); r.code != 0 {
		t.Fatalf("mirror fail B: exit %d\n%s", r.code, r.stderr)
	}
	r = lbRun(t, 60*time.Second, env, "mirror", "replace", "--control-socket", ctl, "B", srvA.URL(0, 0))
	if r.code != 1 || !strings.Contains(r.stderr, "is leg A's LUN") {
		t.Fatalf("replace of B by leg A's URL: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if v := liveMirror(t, ctl); v.Legs[0].State != "in-sync" || v.Legs[1].State != "failed" {
		t.Fatalf("after the refusals: %+v", v.Status)
	}
	oldB, err := os.ReadFile(srvB.BackingFile(0, 0))
	if err != nil {
		t.Fatal(err)
	}

	time.Sleep(300 * time.Millisecond)
	r = lbRun(t, 120*time.Second, env, "mirror", "replace", "--wait", "--json", "--control-socket", ctl, "B", newURL)
	var rep controlReply
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil || !rep.OK {
		t.Fatalf("mirror replace --wait B: exit %d, %v\n%s\n%s\nserve: %s", r.code, err, r.stdout, r.stderr, p.stderr)
	}
	if !strings.Contains(r.stderr, "resync replace of leg B") {
		t.Logf("no progress line (the copy was quick): %s", r.stderr)
	}
	time.Sleep(300 * time.Millisecond) // writes go on to both legs

	r = lbRun(t, 30*time.Second, env, "mirror", "status", "--json", "--control-socket", ctl)
	var v mirrorView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("mirror status: %v\n%s", err, r.stdout)
	}
	if v.Legs[0].State != "in-sync" || v.Legs[1].State != "in-sync" || v.Resync == nil || v.Resync.Mode != "replace" || v.Resync.DoneChunks != v.Chunks {
		t.Fatalf("mirror status after replace: %s", r.stdout)
	}

	// Leg B now reopens through the new URL: fail it and add it back,
	// an incremental re-add (the old LUN would be refused as another
	// leg).
	if r = lbRun(t, 60*time.Second, env, "mirror", "fail", "--control-socket", ctl, "B"); r.code != 0 {
		t.Fatalf("mirror fail B after the replace: exit %d\n%s", r.code, r.stderr)
	}
	time.Sleep(200 * time.Millisecond)
	if r = lbRun(t, 60*time.Second, env, "mirror", "add", "--control-socket", ctl, "B"); r.code != 0 {
		t.Fatalf("mirror add B after the replace: exit %d\n%s\n%s\nserve: %s", r.code, r.stdout, r.stderr, p.stderr)
	}
	for start := time.Now(); ; {
		v := liveMirror(t, ctl)
		if v.Legs[1].State == "in-sync" && v.State != "resyncing" {
			if v.Resync == nil || v.Resync.Mode != "incremental" || v.Legs[1].ReAdds == 0 {
				t.Fatalf("re-add of the replaced leg: %+v", v.Status)
			}
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("leg B not back in sync: %+v", v.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("writes through serve failed: %v", err)
	}
	ids := [2]string{}
	for i := range ids {
		d := dialLUNAt(t, srvB, i)
		ids[i] = d.(blockdev.Identifier).Identity().WWID
		d.Close()
	}
	if v.Legs[1].WWID != ids[1] || ids[0] == ids[1] {
		t.Fatalf("leg B's WWID %q, want the new LUN's %q (old %q)", v.Legs[1].WWID, ids[1], ids[0])
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("serve exit %d; stderr: %s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "replaced by "+newURL) {
		t.Errorf("serve did not log the replace: %s", p.stderr)
	}
	sameBacking(t, srvA.BackingFile(0, 0), srvB.BackingFile(0, 1), size)
	a, err := os.ReadFile(srvA.BackingFile(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a[:size], img) {
		t.Fatal("leg A does not hold what the NBD client was told is written")
	}
	if b, err := os.ReadFile(srvB.BackingFile(0, 0)); err != nil || !bytes.Equal(b, oldB) {
		t.Fatalf("the replaced LUN was written after the replace (%v)", err)
	}
}
