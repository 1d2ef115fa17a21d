package blockcheck

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/multipath"
)

// deviceBlackHole: the proxy stops forwarding (both directions, nothing
// closed) for 3 s, then heals, every ~5 s. The keepalive declares the
// link dead and the session recovers once the path heals.
func deviceBlackHole(t *testing.T, kind string) {
	r := scenario(t, "black-hole", "device", kind)
	srv := startTarget(t, kind)
	px := newProxy(t, srv.Portal)
	cfg := Config{Duration: runTime(12 * time.Second), Open: lunOpener(nil, srv.Targets[0].Name, px.Addr(), uint64(srv.LUNNumber(0)))}
	check(t, r, cfg, func(ctx context.Context, h *History) {
		defer px.BlackHole(false)
		for {
			if !sleepCtx(ctx, 2*time.Second) {
				return
			}
			px.BlackHole(true)
			h.Fault()
			sleepCtx(ctx, 3*time.Second)
			px.BlackHole(false)
		}
	})
}

// deviceLUNReset: a second initiator (its own session) sends LOGICAL UNIT
// RESET to the LUN every ~1 s while the clients work.
func deviceLUNReset(t *testing.T, kind string) {
	r := scenario(t, "lun-reset (2nd initiator)", "device", kind)
	srv := startTarget(t, kind)
	cfg := Config{Duration: runTime(8 * time.Second), Open: lunOpener(nil, srv.Targets[0].Name, srv.Portal, uint64(srv.LUNNumber(0)))}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	icfg := iscsiConfig(srv.Targets[0].Name, srv.Portal)
	icfg.InitiatorName = initiatorName + "-resetter"
	s, err := initiator.Dial(ctx, icfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lun := uint64(srv.LUNNumber(0))
	check(t, r, cfg, func(ctx context.Context, h *History) {
		every(ctx, time.Second, func() {
			c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.TaskManagement(c, pdu.TMFLogicalUnitReset, lun); err != nil {
				t.Logf("LUN reset: %v", err)
				return
			}
			h.Fault()
		})
	})
}

// multipathFlap: each client opens a multipath device over two portals
// (two fault proxies); one path at a time is black-holed for 3 s, then
// healed, alternating.
func multipathFlap(t *testing.T, kind string) {
	r := scenario(t, "path flap", "multipath", kind)
	requireRealTargets(t)
	srv := startTarget(t, kind)
	srv.AddPortal(t, "127.0.0.2")
	pa, pb := newProxy(t, srv.Portal), newProxy(t, srv.ExtraPortals[0])
	name, lun := srv.Targets[0].Name, uint64(srv.LUNNumber(0))
	open := func(ctx context.Context, i int) (Target, error) {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		cfgs := []initiator.Config{iscsiConfig(name, pa.Addr()), iscsiConfig(name, pb.Addr())}
		return multipath.Open(ctx, cfgs, lun, multipath.Options{Policy: multipath.PolicyRoundRobin, CheckInterval: time.Second, NoPathTimeout: 30 * time.Second})
	}
	cfg := Config{Duration: runTime(12 * time.Second), Open: open}
	check(t, r, cfg, func(ctx context.Context, h *History) {
		defer pa.BlackHole(false)
		defer pb.BlackHole(false)
		for i := 0; ; i++ {
			if !sleepCtx(ctx, 2*time.Second) {
				return
			}
			p := []*faultproxy.Proxy{pa, pb}[i%2]
			p.BlackHole(true)
			h.Fault()
			sleepCtx(ctx, 3*time.Second)
			p.BlackHole(false)
		}
	})
}

// fakeStorm: the scripted fake target answers bursts of READ/WRITE
// commands with BUSY or TASK ABORTED (without doing them) for 300 ms of
// every second. Failed commands (ErrBusy, EIO) are "maybe" writes; only
// wrong data is an anomaly.
func fakeStorm(t *testing.T) {
	r := scenario(t, "BUSY/TASK ABORTED storm", "device", "fake")
	var storm atomic.Bool
	var n atomic.Int64
	tg := faketarget.New(faketarget.Config{
		NoRecord: true,
		LUNs:     []faketarget.LUNConfig{{Number: 0, Blocks: 1024, BlockSize: BlockSize}},
		OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, data []byte) bool {
			op := cmd.CDB[0]
			if !storm.Load() || (op != 0x28 && op != 0x88 && op != 0x2a && op != 0x8a) {
				return false
			}
			if cmd.Write && len(data) < int(cmd.EDTL) {
				return false // keep the R2T dance simple: only whole immediate commands
			}
			if rand.IntN(2) == 0 {
				return false
			}
			n.Add(1)
			st := uint8(faketarget.StatusBusy)
			if rand.IntN(2) == 0 {
				st = 0x40 // TASK ABORTED
			}
			c.SendStatus(cmd.ITT, st, nil)
			return true
		},
	})
	addr, err := tg.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	cfg := Config{Duration: runTime(8 * time.Second), Open: lunOpener(nil, faketarget.DefaultTargetName, addr, 0)}
	check(t, r, cfg, func(ctx context.Context, h *History) {
		defer storm.Store(false)
		for {
			if !sleepCtx(ctx, 700*time.Millisecond) {
				return
			}
			storm.Store(true)
			h.Fault()
			sleepCtx(ctx, 300*time.Millisecond)
			storm.Store(false)
		}
	})
	t.Logf("%d commands answered BUSY/TASK ABORTED", n.Load())
}
