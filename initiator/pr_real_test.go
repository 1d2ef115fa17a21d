package initiator_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// TestPersistentReservationFencesOtherWriters (issue 20 item 1): session
// 1 registers and takes Write Exclusive – Registrants Only; a write from
// session 2 (another ISID, unregistered) fails with RESERVATION CONFLICT
// while its reads succeed; after Release session 2 writes again. Session
// 2 can preempt the reservation with session 1's key (a forced takeover).
func TestPersistentReservationFencesOtherWriters(t *testing.T) {
	testenv.RequireRoot(t)
	for _, kind := range []string{targets.KindTgtd, targets.KindIstgt} {
		t.Run(kind, func(t *testing.T) {
			requireKind(t, kind)
			srv := startKind(t, kind, targets.Target{LUNs: []targets.LUN{{Size: 4 << 20}}})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cfg := config(srv, 0, variant{})
			cfg.NoRecovery = true
			s1, l1 := openLUN(t, ctx, srv, 0, 0, cfg)
			defer s1.Close()
			s2, l2 := openLUN(t, ctx, srv, 0, 0, cfg)
			defer s2.Close()
			const k1, k2 = 0x4c42000000000001, 0x4c42000000000002
			l1.Release(ctx, k1) // leftovers of an earlier run
			if err := l1.Register(ctx, k1); err != nil {
				t.Fatalf("register: %v", err)
			}
			if err := l1.Reserve(ctx, k1, 0); err != nil {
				t.Fatalf("reserve: %v", err)
			}
			r, err := l2.PRReadReservation(ctx)
			if err != nil || !r.Held || r.Key != k1 || r.Type != scsi.PRTypeWriteExclusiveRegsOnly {
				t.Fatalf("READ RESERVATION: %v %+v", err, r)
			}
			keys, err := l2.PRReadKeys(ctx)
			if err != nil || len(keys.Keys) != 1 || keys.Keys[0] != k1 {
				t.Fatalf("READ KEYS: %v %+v", err, keys)
			}
			p := bytes.Repeat([]byte{0x11}, 4096)
			if err := l1.WriteAt(ctx, p, 0, true); err != nil {
				t.Fatalf("holder's write: %v", err)
			}
			err = l2.WriteAt(ctx, bytes.Repeat([]byte{0x22}, 4096), 0, true)
			if !scsi.IsReservationConflict(err) {
				t.Fatalf("unregistered session's write: %v, want RESERVATION CONFLICT (0x18)", err)
			}
			t.Logf("second session's write: %v", err)
			got := make([]byte, 4096)
			if err := l2.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, p) {
				t.Fatalf("unregistered session's read: %v equal=%v", err, bytes.Equal(got, p))
			}
			if err := l1.Release(ctx, k1); err != nil {
				t.Fatalf("release: %v", err)
			}
			if r, err := l2.PRReadReservation(ctx); err != nil || r.Held {
				t.Fatalf("after release: %v %+v", err, r)
			}
			if k, err := l2.PRReadKeys(ctx); err != nil || len(k.Keys) != 0 {
				t.Fatalf("keys after release: %v %+v", err, k)
			}
			if err := l2.WriteAt(ctx, bytes.Repeat([]byte{0x22}, 4096), 0, true); err != nil {
				t.Fatalf("write after release: %v", err)
			}
			// A forced takeover: session 2 preempts session 1's reservation.
			if err := l1.Register(ctx, k1); err != nil {
				t.Fatal(err)
			}
			if err := l1.Reserve(ctx, k1, 0); err != nil {
				t.Fatal(err)
			}
			if err := l2.Register(ctx, k2); err != nil {
				t.Fatal(err)
			}
			if err := l2.Reserve(ctx, k2, 0); !scsi.IsReservationConflict(err) {
				t.Fatalf("reserve over another holder: %v", err)
			}
			if err := l2.Reserve(ctx, k2, k2+1); !scsi.IsReservationConflict(err) {
				t.Fatalf("takeover naming the wrong holder: %v", err)
			}
			if err := l2.Reserve(ctx, k2, k1); err != nil {
				t.Fatalf("takeover: %v", err)
			}
			if err := l1.WriteAt(ctx, p, 0, true); !scsi.IsReservationConflict(err) {
				t.Fatalf("preempted session's write: %v", err)
			}
			if r, err := l1.PRReadReservation(ctx); err != nil || !r.Held || r.Key != k2 {
				t.Fatalf("after the takeover: %v %+v", err, r)
			}
			if err := l2.Release(ctx, k2); err != nil {
				t.Fatalf("release after preempt: %v", err)
			}
		})
	}
}
