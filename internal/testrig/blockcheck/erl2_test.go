package blockcheck

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// erl2MCSConnKill: every client has an ErrorRecoveryLevel 2 session of 4
// connections (MC/S) to the fake target, through a fault proxy that
// resets one connection at a time (a random one of all the sessions'),
// every ~700 ms. Neither real target here can host it: istgt does MC/S
// but only ErrorRecoveryLevel 0, tgtd negotiates ErrorRecoveryLevel 2
// but implements no recovery and one connection per session
// (docs/architecture.md, internal/testrig/targets TestERLOffers); LIO
// does both, in the VM lab (TestLIOERL2ConnectionRecovery). Besides the
// history check, every session that negotiated ErrorRecoveryLevel 2
// must have kept its TSIH: connection recovery, not reinstatement.
func erl2MCSConnKill(t *testing.T) {
	r := scenario(t, "ERL 2 MC/S, connections killed one at a time", "device", "fake")
	tg := faketarget.New(faketarget.Config{
		NoRecord:           true,
		ErrorRecoveryLevel: 2,
		LUNs:               []faketarget.LUNConfig{{Number: 0, Blocks: lunBytes / BlockSize, BlockSize: BlockSize}},
	})
	addr, err := tg.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	px := newProxy(t, addr)
	var (
		mu   sync.Mutex
		seen []*sessionCheck
	)
	open := lunOpener(func(c *initiator.Config) {
		c.ErrorRecoveryLevel = 2
		c.MaxConnections = 4
	}, faketarget.DefaultTargetName, px.Addr(), 0)
	cfg := Config{Duration: runTime(8 * time.Second), Open: func(ctx context.Context, i int) (Target, error) {
		tgt, err := open(ctx, i)
		if err != nil {
			return nil, err
		}
		s := tgt.(*initiator.LUN).Session()
		sc := &sessionCheck{client: i, tsih: s.TSIH(), erl: s.Params().ErrorRecoveryLvl, conns: s.Connections()}
		t.Logf("client %d: session TSIH %d, ErrorRecoveryLevel %d, %d connections", i, sc.tsih, sc.erl, sc.conns)
		mu.Lock()
		seen = append(seen, sc)
		mu.Unlock()
		return &checkedLUN{Target: tgt, s: s, sc: sc}, nil
	}}
	check(t, r, cfg, func(ctx context.Context, h *History) {
		every(ctx, 700*time.Millisecond, func() {
			if px.ResetOne() {
				h.Fault()
			}
		})
	})
	mu.Lock()
	defer mu.Unlock()
	for _, sc := range seen {
		t.Logf("client %d: TSIH %d at the end (%d at login), %d reconnects", sc.client, sc.endTSIH, sc.tsih, sc.reconnects)
		if sc.erl == 2 && sc.conns > 1 && sc.closed && sc.endTSIH != sc.tsih {
			t.Errorf("client %d: the ErrorRecoveryLevel 2 session was reinstated (TSIH %d, then %d)", sc.client, sc.tsih, sc.endTSIH)
		}
	}
}

// sessionCheck is what erl2MCSConnKill learns of one client's session.
type sessionCheck struct {
	client     int
	tsih       uint16
	erl        int
	conns      int
	closed     bool
	endTSIH    uint16
	reconnects int64
}

// checkedLUN records the session's state when the workload closes it.
type checkedLUN struct {
	Target
	s  *initiator.Session
	sc *sessionCheck
}

func (c *checkedLUN) Close() error {
	c.sc.closed, c.sc.endTSIH, c.sc.reconnects = true, c.s.TSIH(), c.s.Recovery().Reconnects
	return c.Target.Close()
}
