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
// history check, every four-connection ErrorRecoveryLevel 2 session must
// have kept its TSIH and never been reinstated (connection recovery),
// and the connections lost must have been recovered inside the sessions.
func erl2MCSConnKill(t *testing.T) {
	r := scenario(t, "ERL 2 MC/S, connections killed one at a time", "device", "fake")
	tg := faketarget.New(faketarget.Config{
		NoRecord:           true,
		ErrorRecoveryLevel: 2,
		MaxConnections:     4,
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
	var recovered int64
	for _, sc := range seen {
		t.Logf("client %d: TSIH %d at the end (%d at login), %d connection recoveries, %d session reinstatements", sc.client, sc.endTSIH, sc.tsih, sc.connRecoveries, sc.reconnects)
		if sc.erl != 2 || sc.conns != 4 {
			t.Errorf("client %d: ErrorRecoveryLevel %d with %d connections, want 2 with 4", sc.client, sc.erl, sc.conns)
		}
		if !sc.closed {
			continue
		}
		if sc.endTSIH != sc.tsih || sc.reconnects != 0 {
			t.Errorf("client %d: the ErrorRecoveryLevel 2 session was reinstated (TSIH %d, then %d; %d reinstatements)", sc.client, sc.tsih, sc.endTSIH, sc.reconnects)
		}
		recovered += sc.connRecoveries
	}
	if r.Faults > 0 && recovered == 0 {
		t.Errorf("%d connections reset, none recovered inside its session", r.Faults)
	}
}

// sessionCheck is what erl2MCSConnKill learns of one client's session.
type sessionCheck struct {
	client         int
	tsih           uint16
	erl            int
	conns          int
	closed         bool
	endTSIH        uint16
	reconnects     int64
	connRecoveries int64
}

// checkedLUN records the session's state when the workload closes it.
type checkedLUN struct {
	Target
	s  *initiator.Session
	sc *sessionCheck
}

func (c *checkedLUN) Close() error {
	rs := c.s.Recovery()
	c.sc.closed, c.sc.endTSIH, c.sc.reconnects, c.sc.connRecoveries = true, c.s.TSIH(), rs.Reconnects, rs.ConnRecoveries
	return c.Target.Close()
}
