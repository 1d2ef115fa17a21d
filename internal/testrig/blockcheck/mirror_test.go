package blockcheck

import (
	"context"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// shared hands the same device to every client; Close is a no-op.
type shared struct{ Target }

func (shared) Close() error { return nil }

// mirrorLegDown: all clients share one RAID-1 mirror over two tgtd
// targets, each leg through its own proxy. Mid-run leg B's proxy resets
// its connection and refuses new ones for 4 s (the leg's session gives up
// after its 3 s replacement timeout and the mirror fails the leg), then
// heals. The mirror does not re-add a failed leg yet, so what is checked
// is that every acknowledged write is on the surviving leg A: the reads
// during the run and the final read go through the mirror, which reads
// leg A only once B has failed.
func mirrorLegDown(t *testing.T) {
	r := scenario(t, "leg B down, back", "mirror", "tgtd")
	requireRealTargets(t)
	lun := targets.LUN{Size: 16 << 20, BlockSize: BlockSize}
	srv := targets.StartWith(t, targets.KindTgtd, targets.Options{}, targets.Target{LUNs: []targets.LUN{lun}}, targets.Target{LUNs: []targets.LUN{lun}})
	pa, pb := newProxy(t, srv.Portal), newProxy(t, srv.Portal)
	mod := func(c *initiator.Config) { c.ReplacementTimeout = 3 * time.Second }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := lunOpener(mod, srv.Targets[0].Name, pa.Addr(), uint64(srv.LUNNumber(0)))(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := lunOpener(mod, srv.Targets[1].Name, pb.Addr(), uint64(srv.LUNNumber(0)))(ctx, 1)
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	m, err := mirror.Create(ctx, a.(*initiator.LUN), b.(*initiator.LUN), mirror.CreateOptions{AssumeClean: true})
	if err != nil {
		a.Close()
		b.Close()
		t.Fatal(err)
	}
	defer m.Close()
	if m.Size() < 256*BlockSize {
		t.Fatalf("mirror of %d bytes", m.Size())
	}
	cfg := Config{Duration: runTime(10 * time.Second), Open: func(ctx context.Context, i int) (Target, error) { return shared{m}, nil }}
	check(t, r, cfg, func(ctx context.Context, h *History) {
		defer pb.RefuseNew(false)
		if !sleepCtx(ctx, 2*time.Second) {
			return
		}
		pb.RefuseNew(true)
		pb.ResetAll()
		h.Fault()
		sleepCtx(ctx, 4*time.Second)
		pb.RefuseNew(false)
	})
	t.Logf("mirror status after the run: %+v", m.Status())
}
