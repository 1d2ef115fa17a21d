package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
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

// dialLUN logs in to srv's first LUN (random ISID) for test setup.
func dialLUN(t *testing.T, srv *targets.Server) blockdev.Device {
	t.Helper()
	u, err := discovery.ParseURL(srv.URL(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: "iqn.2026-12.org.lunbridge:readd-setup", TargetName: u.Target, Portal: u.Portal})
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

// nbdWriter writes through one NBD connection (simple replies).
type nbdWriter struct {
	c      net.Conn
	handle uint64
}

func (w *nbdWriter) write(p []byte, off int64) error {
	w.handle++
	req := binary.BigEndian.AppendUint32(nil, 0x25609513)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, 1) // NBD_CMD_WRITE
	req = binary.BigEndian.AppendUint64(req, w.handle)
	req = binary.BigEndian.AppendUint64(req, uint64(off))
	req = binary.BigEndian.AppendUint32(req, uint32(len(p)))
	w.c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := w.c.Write(append(req, p...)); err != nil {
		return err
	}
	rep := make([]byte, 16)
	if _, err := io.ReadFull(w.c, rep); err != nil {
		return err
	}
	if e := binary.BigEndian.Uint32(rep[4:]); e != 0 || binary.BigEndian.Uint64(rep[8:]) != w.handle {
		return fmt.Errorf("NBD write at %d: error %d", off, e)
	}
	return nil
}

func liveMirror(t *testing.T, ctl string) *mirrorView {
	t.Helper()
	raw, err := readControl(ctl)
	if err != nil {
		t.Fatal(err)
	}
	var st controlStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("status %s: %v", raw, err)
	}
	if st.Mirror == nil {
		t.Fatalf("the control socket publishes no mirror: %s", raw)
	}
	return st.Mirror
}

// TestServeMirrorReaddRealTargets (issue 20 item 3, review #9): serve
// --mirror over tgtd (leg A) and istgt (leg B) under a 4k random-write
// load; leg B's target is stopped for 8 s and started again. serve re-adds
// B by itself (incremental), the control socket and metrics show it, and
// the legs' backing files are identical afterwards, serve never restarted.
func TestServeMirrorReaddRealTargets(t *testing.T) {
	const lunSize = 256 << 20
	srvA := targets.StartTgtd(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}}})
	srvB := targets.StartIstgt(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}}})
	ctx := context.Background()
	m, err := mirror.Create(ctx, dialLUN(t, srvA), dialLUN(t, srvB), mirror.CreateOptions{AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	size, chunk := m.Size(), m.ChunkSize()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "control.sock")
	metricsAddr := freeLoopbackAddr(t)
	p := startServe(t, []string{"XDG_RUNTIME_DIR=" + dir, "LUNBRIDGE_ISID_LOCK_DIR=" + filepath.Join(dir, "isid")},
		"--metrics-listen", metricsAddr, "serve", "--listen", "unix:"+sock, "--persistent", "--control-socket", ctl,
		"--readd-interval", "500ms", "--readd-max-interval", "2s", "--mirror", srvB.URL(0, 0), srvA.URL(0, 0))
	nc := nbdHold(t, "unix", sock)
	defer nc.Close()
	if v := liveMirror(t, ctl); v.State != "clean" && v.State != "active" {
		t.Fatalf("mirror at start: %+v", v.Status)
	}

	// One writer, 4 KiB random writes in the first 64 MiB; model is exact.
	const region = 64 << 20
	model := make([]byte, region)
	w := &nbdWriter{c: nc}
	var mu sync.Mutex
	var written, outageBytes int64
	inOutage := false
	outageChunks := map[int64]bool{}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewSource(1))
		buf := make([]byte, 4096)
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			off := rng.Int63n(region/4096) * 4096
			rng.Read(buf)
			if err := w.write(buf, off); err != nil {
				done <- err
				return
			}
			copy(model[off:], buf)
			mu.Lock()
			written += 4096
			if inOutage {
				outageBytes += 4096
				outageChunks[off/chunk] = true
			}
			mu.Unlock()
		}
	}()
	time.Sleep(time.Second)

	t.Log("stopping leg B's target (istgt) for 8 s under writes")
	mu.Lock()
	inOutage = true
	mu.Unlock()
	srvB.Stop()
	time.Sleep(8 * time.Second)
	v := liveMirror(t, ctl)
	if v.Legs[1].State != "failed" || v.State != "degraded" {
		t.Fatalf("after 8 s without leg B: %+v", v.Status)
	}
	if v.Legs[1].NextProbe.IsZero() || v.Legs[1].ProbeAttempts == 0 {
		t.Fatalf("leg B is not being probed: %+v", v.Legs[1].LegStatus)
	}
	resyncedBefore := v.BytesResynced
	if err := srvB.RestartErr(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	mu.Lock()
	inOutage = false
	outB, outC := outageBytes, int64(len(outageChunks))
	mu.Unlock()
	var back time.Duration
	for {
		v = liveMirror(t, ctl)
		if v.Legs[0].State == "in-sync" && v.Legs[1].State == "in-sync" && v.State != "resyncing" {
			back = time.Since(restarted)
			break
		}
		if time.Since(restarted) > 60*time.Second {
			t.Fatalf("leg B not back in sync 60 s after its target restarted: %+v\n%+v\nstderr: %s", v.Status, v.Legs[1].LegStatus, p.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The CLI views of the same state.
	r := lbRun(t, 20*time.Second, nil, "status", "--socket", ctl)
	if r.code != 0 || !strings.Contains(r.stdout, "mirror "+v.Mirror.String()) || !strings.Contains(r.stdout, "in-sync") {
		t.Fatalf("lunbridge status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = lbRun(t, 20*time.Second, nil, "mirror", "status", "--json", "--control-socket", ctl)
	if r.code != 0 || !strings.Contains(r.stdout, `"re_adds": 1`) {
		t.Fatalf("lunbridge mirror status --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"lunbridge_mirror_degraded{", `lunbridge_mirror_leg_readds_total{device=`, `leg="B",state="in-sync"} 1`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
	time.Sleep(time.Second) // writes go on after the re-add
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("writes through serve failed: %v", err)
	}
	st := v.Status
	copied := st.BytesResynced - resyncedBefore
	t.Logf("%d bytes written in all; during the outage %d bytes in %d chunks (%d bytes of chunks)", written, outB, outC, outC*chunk)
	t.Logf("leg B back in sync %v after its target restarted; resync %s copied %d bytes (%d chunks of %d) at %.1f MB/s",
		back.Round(time.Millisecond), st.Resync.Mode, copied, st.Resync.TotalChunks, st.Chunks, st.Resync.MBPerSec)
	if st.Resync.Mode != "incremental" || copied <= 0 || copied > region+chunk {
		t.Fatalf("resync not incremental: copied %d, %+v", copied, st.Resync)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("serve exit %d; stderr: %s", code, p.stderr)
	}
	if _, err := os.Stat(ctl); err == nil {
		t.Error("control socket left behind after serve exited")
	}
	sameBacking(t, srvA.BackingFile(0, 0), srvB.BackingFile(0, 0), size)
	a, err := os.ReadFile(srvA.BackingFile(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a[:region], model) {
		t.Fatal("leg A does not hold what the NBD client was told is written")
	}
}

func sameBacking(t *testing.T, a, b string, n int64) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(x)) < n || int64(len(y)) < n {
		t.Fatalf("backing files of %d and %d bytes, mirror of %d", len(x), len(y), n)
	}
	if !bytes.Equal(x[:n], y[:n]) {
		for i := int64(0); i < n; i++ {
			if x[i] != y[i] {
				t.Fatalf("leg backing files differ at byte %d", i)
			}
		}
	}
}
