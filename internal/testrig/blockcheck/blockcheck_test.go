package blockcheck

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// lunBytes is the LUN size of every scenario: the checked space (256
// blocks of 4 KiB) with room to spare.
const lunBytes = 4 << 20

// TestHistory runs every fault scenario against every layer it applies
// to and checks the history of each (short: a few seconds per scenario;
// BLOCKCHECK_SOAK_TIME=10m for the soak). BLOCKCHECK_SEED replays a seed.
func TestHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("real targets skipped in -short")
	}
	t.Run("device/conn-reset/tgtd", func(t *testing.T) { deviceConnReset(t, targets.KindTgtd) })
	t.Run("device/conn-reset/istgt", func(t *testing.T) { deviceConnReset(t, targets.KindIstgt) })
	t.Run("device/ss-kill/tgtd", func(t *testing.T) { deviceSSKill(t, targets.KindTgtd) })
	t.Run("device/ss-kill/istgt", func(t *testing.T) { deviceSSKill(t, targets.KindIstgt) })
	t.Run("device/target-restart/tgtd", func(t *testing.T) { deviceRestart(t, targets.KindTgtd) })
	t.Run("device/black-hole/tgtd", func(t *testing.T) { deviceBlackHole(t, targets.KindTgtd) })
	t.Run("device/lun-reset/tgtd", func(t *testing.T) { deviceLUNReset(t, targets.KindTgtd) })
	t.Run("device/lun-reset/istgt", func(t *testing.T) { deviceLUNReset(t, targets.KindIstgt) })
	t.Run("multipath/path-flap/tgtd", func(t *testing.T) { multipathFlap(t, targets.KindTgtd) })
	t.Run("device/busy-storm/fake", fakeStorm)
	t.Run("device/erl2-mcs-conn-kill/fake", erl2MCSConnKill)
	t.Run("mirror/leg-down/tgtd", mirrorLegDown)
	t.Run("fuse/conn-reset/tgtd", func(t *testing.T) { fuseConnReset(t, targets.KindTgtd) })
	t.Run("nbd/kill-9/tgtd", func(t *testing.T) { nbdKill9(t, targets.KindTgtd) })
	t.Run("nbd/kill-9/istgt", func(t *testing.T) { nbdKill9(t, targets.KindIstgt) })
	t.Run("nbd/conn-reset/tgtd", func(t *testing.T) { nbdConnReset(t, targets.KindTgtd) })
	t.Run("nbd/conn-reset/istgt", func(t *testing.T) { nbdConnReset(t, targets.KindIstgt) })
}

// startTarget starts a real target with one 4 KiB-block LUN.
func startTarget(t *testing.T, kind string) *targets.Server {
	requireRealTargets(t)
	return targets.StartWith(t, kind, targets.Options{}, targets.Target{LUNs: []targets.LUN{{Size: lunBytes, BlockSize: BlockSize}}})
}

func newProxy(t *testing.T, to string) *faultproxy.Proxy {
	p, err := faultproxy.New(to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// deviceConnReset: one initiator session per client through a fault
// proxy that resets every connection, or the newest one, every ~700 ms
// (2 s on istgt).
func deviceConnReset(t *testing.T, kind string) {
	r := scenario(t, "conn-reset", "device", kind)
	srv := startTarget(t, kind)
	px := newProxy(t, srv.Portal)
	cfg := Config{Duration: runTime(8 * time.Second), Open: lunOpener(nil, srv.Targets[0].Name, px.Addr(), uint64(srv.LUNNumber(0)))}
	n := 0
	period := 700 * time.Millisecond
	if kind == targets.KindIstgt {
		// istgt 0.4 wedges its acceptor for seconds when a connection
		// is reset during login: reset established sessions only, less
		// often.
		period = 3 * time.Second
	}
	check(t, r, cfg, func(ctx context.Context, h *History) {
		every(ctx, period, func() {
			n++
			if n%3 == 0 || kind == targets.KindIstgt {
				px.ResetAll()
			} else {
				px.ResetOne()
			}
			h.Fault()
		})
	})
}

// deviceSSKill: the initiator's own TCP sockets to the target are
// destroyed by the kernel (`ss -K`, SOCK_DESTROY), no proxy in between,
// every ~1 s (3 s on istgt, see deviceConnReset): the socket dies under
// the initiator with whatever it had queued, as when an administrator or
// a firewall kills it.
func deviceSSKill(t *testing.T, kind string) {
	testenv.RequireTool(t, "ss")
	r := scenario(t, "ss -K", "device", kind)
	srv := startTarget(t, kind)
	host, port, err := net.SplitHostPort(srv.Portal)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Duration: runTime(6 * time.Second), Open: lunOpener(nil, srv.Targets[0].Name, srv.Portal, uint64(srv.LUNNumber(0)))}
	period := time.Second
	if kind == targets.KindIstgt {
		period = 3 * time.Second
	}
	check(t, r, cfg, func(ctx context.Context, h *History) {
		every(ctx, period, func() {
			out, err := exec.CommandContext(ctx, "ss", "-K", "-t", "dst", host, "dport", "=", port).CombinedOutput()
			if err != nil && ctx.Err() == nil {
				t.Errorf("ss -K: %v: %s", err, out)
				return
			}
			// One line per destroyed socket after the header.
			if strings.Count(strings.TrimSpace(string(out)), "\n") > 0 {
				h.Fault()
			}
		})
	})
}

// deviceRestart: the target daemon restarts (same port, same backing
// file) every ~3 s.
func deviceRestart(t *testing.T, kind string) {
	r := scenario(t, "target-restart", "device", kind)
	srv := startTarget(t, kind)
	cfg := Config{Duration: runTime(10 * time.Second), Open: lunOpener(nil, srv.Targets[0].Name, srv.Portal, uint64(srv.LUNNumber(0)))}
	check(t, r, cfg, func(ctx context.Context, h *History) {
		every(ctx, 3*time.Second, func() {
			if err := srv.RestartErr(); err != nil {
				t.Errorf("restart %s: %v", kind, err)
				return
			}
			h.Fault()
		})
	})
}
