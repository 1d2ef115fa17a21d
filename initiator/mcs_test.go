package initiator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// MC/S against istgt (which supports MaxConnections up to 4): the session
// opens N connections with one ISID and TSIH, spreads commands over them,
// verifies data, and survives one connection being reset mid-I/O.
func TestMCSIstgt(t *testing.T) {
	testenv.RequireRoot(t)
	requireKind(t, targets.KindIstgt)
	srv := startKind(t, targets.KindIstgt,
		targets.Target{Name: "iqn.2026-11.org.lunbridge.test:mcs2", LUNs: []targets.LUN{{Size: 32 << 20}}, Params: map[string]string{"MaxConnections": "4"}},
		targets.Target{Name: "iqn.2026-11.org.lunbridge.test:mcs4", LUNs: []targets.LUN{{Size: 32 << 20}}, Params: map[string]string{"MaxConnections": "4"}})
	for ti, n := range []int{2, 4} {
		t.Run(fmt.Sprintf("%dconns", n), func(t *testing.T) {
			px, err := faultproxy.New(srv.Portal)
			if err != nil {
				t.Fatal(err)
			}
			defer px.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cfg := resilienceConfig(srv, px.Addr())
			cfg.TargetName = srv.Targets[ti].Name
			cfg.MaxConnections = n
			s, l := openLUN(t, ctx, srv, ti, 0, cfg)
			defer s.Close()
			if got := s.Connections(); got != n || s.Params().MaxConnections != n {
				t.Fatalf("%d connections (negotiated MaxConnections %d), want %d", got, s.Params().MaxConnections, n)
			}
			if px.Conns() != n {
				t.Fatalf("proxy sees %d TCP connections, want %d", px.Conns(), n)
			}
			want := workload(t, ctx, l, int64(n), 4<<20)
			compareFile(t, srv.BackingFile(ti, 0), want)

			// One connection reset under load: ERL 0 recovers the session
			// (all connections) and the workload sees no error.
			st := newStamper(l, 8)
			wctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { st.run(wctx); close(done) }()
			time.Sleep(300 * time.Millisecond)
			before := s.Recovery().Reconnects
			if !px.ResetOne() {
				t.Fatal("no connection to reset")
			}
			deadline := time.Now().Add(30 * time.Second)
			for s.Recovery().Reconnects == before && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			ios := st.ios.Load()
			for st.ios.Load() < ios+100 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			stop()
			<-done
			if err := l.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if st.errs.Load() != 0 || st.mismatches.Load() != 0 {
				t.Fatalf("%d errors, %d mismatches: %v", st.errs.Load(), st.mismatches.Load(), st.firstErr.Load())
			}
			if s.Connections() != n {
				t.Fatalf("after recovery: %d connections, want %d", s.Connections(), n)
			}
			st.verify(t, srv.BackingFile(ti, 0))
			t.Logf("%d connections: recovered in %v, %d I/Os verified", n, s.Recovery().LastDuration.Round(time.Millisecond), st.ios.Load())
		})
	}
}
