package initiator_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// A login with the ISID of a live session ends that session (RFC 7143
// 6.3.5, session reinstatement): this is what a stable ISID buys a
// restarted serve/attach/mount (review #15). Session 1 stays logged in
// (its process hung, say); session 2 logs in with the same StableISID and
// session 1's next command fails, while a session with another ISID (a
// random one, or another --instance) leaves session 1 alone.
func TestStableISIDEndsOldSession(t *testing.T) {
	testenv.RequireRoot(t)
	for _, kind := range []string{targets.KindTgtd, targets.KindIstgt} {
		t.Run(kind, func(t *testing.T) {
			requireKind(t, kind)
			srv := startKind(t, kind, targets.Target{LUNs: []targets.LUN{{Size: 4 << 20}}})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			lun := uint64(srv.LUNNumber(0))
			cfg := config(srv, 0, variant{})
			cfg.NoRecovery = true
			cfg.ISID = initiator.StableISID(cfg.InitiatorName, cfg.TargetName, cfg.Portal, lun, "")
			s1, l1 := openLUN(t, ctx, srv, 0, 0, cfg)
			defer s1.Close()
			buf := make([]byte, 4096)
			if err := l1.ReadAt(ctx, buf, 0); err != nil {
				t.Fatalf("session 1 read: %v", err)
			}

			// Another instance: its own ISID, both sessions live.
			other := cfg
			other.ISID = initiator.StableISID(cfg.InitiatorName, cfg.TargetName, cfg.Portal, lun, "second")
			s3, l3 := openLUN(t, ctx, srv, 0, 0, other)
			if err := l3.WriteAt(ctx, bytes.Repeat([]byte{3}, 4096), 0, false); err != nil {
				t.Fatalf("second instance write: %v", err)
			}
			if err := l1.ReadAt(ctx, buf, 0); err != nil {
				t.Fatalf("a session with another ISID ended session 1: %v", err)
			}
			s3.Close()

			// The restarted process: same inputs, same ISID.
			again := initiator.StableISID(cfg.InitiatorName, cfg.TargetName, cfg.Portal, lun, "")
			if again != cfg.ISID {
				t.Fatalf("StableISID changed between calls: %x, %x", cfg.ISID, again)
			}
			s2, l2 := openLUN(t, ctx, srv, 0, 0, cfg)
			defer s2.Close()
			if err := l2.WriteAt(ctx, bytes.Repeat([]byte{2}, 4096), 0, false); err != nil {
				t.Fatalf("session 2 write: %v", err)
			}
			// The target closed session 1's connection at the login;
			// its next command must not run.
			deadline := time.Now().Add(5 * time.Second)
			for {
				err := l1.WriteAt(ctx, bytes.Repeat([]byte{1}, 4096), 0, false)
				if err != nil {
					t.Logf("session 1 after the reinstating login: %v", err)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: session 1 still writes 5 s after a login with its ISID", kind)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := l2.ReadAt(ctx, buf, 0); err != nil || buf[0] != 2 || buf[4095] != 2 {
				t.Fatalf("session 2 reads %d..%d (%v), want its own write (2)", buf[0], buf[4095], err)
			}
		})
	}
}

// A process dies while its write is in the target's backend; the next
// process (same ISID: a restart) opens the LUN and writes the same block.
// The block must hold the newer write. On tgtd the old write lands ~2 s
// after the reinstating login was answered (TestReinstatementTargetGuarantee),
// so only OpenLUN's ORDERED barrier keeps the newer write from being
// overwritten by the dead process's ghost.
func TestRestartNoGhostWrite(t *testing.T) {
	testenv.RequireRoot(t)
	for _, kind := range []string{targets.KindTgtd, targets.KindIstgt} {
		t.Run(kind, func(t *testing.T) {
			file, srv, px := ghostSetup(t, kind)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			lun := uint64(srv.LUNNumber(0))
			cfg := config(srv, 0, variant{})
			cfg.Portal = px.Addr()
			cfg.NoRecovery = true
			cfg.ISID = initiator.StableISID(cfg.InitiatorName, cfg.TargetName, srv.Portal, lun, "")
			s1, l1 := openLUN(t, ctx, srv, 0, 0, cfg)
			t0, errA := holdAndReset(t, ctx, file, px, l1) // the process dies: its connection goes
			<-errA
			s1.Close()

			s2, l2 := openLUN(t, ctx, srv, 0, 0, cfg) // the restarted process
			defer s2.Close()
			var r ghostRun
			r.login = time.Since(t0)
			if err := l2.WriteAt(ctx, ghostB, ghostOff, false); err != nil {
				t.Fatalf("write B: %v", err)
			}
			r.ackB = time.Since(t0)
			r.finish(t, ctx, file, t0)
			t.Logf("%s: %v", kind, r)
			got := make([]byte, len(ghostB))
			if err := l2.ReadAt(ctx, got, ghostOff); err != nil {
				t.Fatalf("read back: %v", err)
			}
			if r.final != 'B' || !bytes.Equal(got, ghostB) {
				t.Fatalf("%s: the dead process's write landed after the new process's acknowledged write (ghost write): %v", kind, r)
			}
		})
	}
}
