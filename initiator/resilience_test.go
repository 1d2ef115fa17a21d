package initiator_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// stamper is a continuous write-then-verify workload. Each writer owns a
// disjoint region and rewrites random block runs in it; every block written
// carries (writer, sequence, block index), so a read that returns an older
// stamp — a lost write or a ghost write of an earlier command landing late —
// is a mismatch. The model is what the caller was told is on the target.
type stamper struct {
	dev     blockdev.Device
	bs      int64
	writers int
	region  int64 // bytes per writer
	model   [][]byte

	ios, errs, mismatches atomic.Int64
	firstErr              atomic.Value
}

func newStamper(dev blockdev.Device, writers int) *stamper {
	st := &stamper{dev: dev, bs: int64(dev.BlockSize()), writers: writers}
	st.region = dev.Size() / int64(writers)
	st.region -= st.region % st.bs
	// The model starts from what the device holds now.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < writers; i++ {
		m := make([]byte, st.region)
		if err := dev.ReadAt(ctx, m, int64(i)*st.region); err != nil {
			panic(fmt.Sprintf("stamper: initial read: %v", err))
		}
		st.model = append(st.model, m)
	}
	return st
}

func (st *stamper) fail(err error) {
	st.errs.Add(1)
	st.firstErr.CompareAndSwap(nil, err)
}

// run writes and verifies until ctx ends.
func (st *stamper) run(ctx context.Context) {
	var wg sync.WaitGroup
	for w := 0; w < st.writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w) + 7))
			base := int64(w) * st.region
			nblocks := st.region / st.bs
			for seq := uint64(1); ctx.Err() == nil; seq++ {
				n := 1 + rng.Int63n(min(64, nblocks))
				first := rng.Int63n(nblocks - n + 1)
				buf := make([]byte, n*st.bs)
				for b := int64(0); b < n; b++ {
					blk := buf[b*st.bs : (b+1)*st.bs]
					binary.BigEndian.PutUint64(blk[0:], uint64(w))
					binary.BigEndian.PutUint64(blk[8:], seq)
					binary.BigEndian.PutUint64(blk[16:], uint64(first+b))
					rng.Read(blk[24:64])
				}
				off := base + first*st.bs
				// The I/O itself runs without the workload's deadline:
				// stopping the workload must not cancel a write.
				ioctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				err := st.dev.WriteAt(ioctx, buf, off, false)
				if err == nil {
					copy(st.model[w][first*st.bs:], buf)
					got := make([]byte, len(buf))
					err = st.dev.ReadAt(ioctx, got, off)
					if err == nil && !bytes.Equal(got, buf) {
						st.mismatches.Add(1)
						st.firstErr.CompareAndSwap(nil, fmt.Errorf("writer %d seq %d: read back differs", w, seq))
					}
				}
				cancel()
				if err != nil {
					st.fail(fmt.Errorf("writer %d seq %d: %w", w, seq, err))
					return
				}
				st.ios.Add(2)
			}
		}(w)
	}
	wg.Wait()
}

// verify compares the model with the device and with the backing file.
func (st *stamper) verify(t *testing.T, backing string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	for w := 0; w < st.writers; w++ {
		got := make([]byte, st.region)
		if err := st.dev.ReadAt(ctx, got, int64(w)*st.region); err != nil {
			t.Fatalf("final read: %v", err)
		}
		if i := firstDiff(got, st.model[w]); i < len(got) {
			t.Fatalf("writer %d: device differs from the acknowledged writes at byte %d (block stamp %x)", w, i, got[i-i%int(st.bs):][:24])
		}
		if !bytes.Equal(f[int64(w)*st.region:int64(w+1)*st.region], st.model[w]) {
			t.Fatalf("writer %d: backing file differs from the acknowledged writes", w)
		}
	}
}

func resilienceConfig(srv *targets.Server, portal string) initiator.Config {
	cfg := config(srv, 0, variant{})
	cfg.Portal = portal
	cfg.NopInterval, cfg.NopTimeout = 500*time.Millisecond, 1*time.Second
	cfg.ReplacementTimeout = 60 * time.Second
	return cfg
}

// Under a continuous write-then-verify workload: connection resets, a
// black hole longer than the NOP timeout, and a full target restart.
// Acceptance: 0 I/O errors to the caller, 0 mismatches, ISID unchanged.
func TestResilienceRealTargets(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.Short(t)
	for _, kind := range []string{targets.KindTgtd, targets.KindIstgt} {
		t.Run(kind, func(t *testing.T) {
			requireKind(t, kind)
			srv := startKind(t, kind, targets.Target{Name: "iqn.2026-11.org.lunbridge.test:resilience", LUNs: []targets.LUN{{Size: 32 << 20}}})
			px, err := faultproxy.New(srv.Portal)
			if err != nil {
				t.Fatal(err)
			}
			defer px.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			s, l := openLUN(t, ctx, srv, 0, 0, resilienceConfig(srv, px.Addr()))
			defer s.Close()
			isid := s.ISID()

			st := newStamper(l, 8)
			wctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { st.run(wctx); close(done) }()

			// progress waits until the workload completed n more I/Os.
			progress := func(n int64, what string) {
				t.Helper()
				start := st.ios.Load()
				deadline := time.Now().Add(90 * time.Second)
				for st.ios.Load() < start+n {
					if st.errs.Load() > 0 {
						t.Fatalf("after %s: I/O error reached the caller: %v", what, st.firstErr.Load())
					}
					if time.Now().After(deadline) {
						t.Fatalf("after %s: no progress (%d I/Os)", what, st.ios.Load()-start)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			progress(200, "start")

			resets := 100
			if kind == targets.KindIstgt {
				resets = 25 // each istgt login takes about a second
			}
			var worst time.Duration
			for i := 0; i < resets; i++ {
				before := s.Recovery().Reconnects
				px.ResetAll()
				t0 := time.Now()
				for s.Recovery().Reconnects == before {
					if time.Since(t0) > 30*time.Second {
						t.Fatalf("reset %d: no recovery (proxy conns %d, recovering %v, ios %d)", i, px.Conns(), s.Recovery().Recovering, st.ios.Load())
					}
					time.Sleep(2 * time.Millisecond)
				}
				progress(20, fmt.Sprintf("reset %d", i))
				worst = max(worst, time.Since(t0))
			}
			t.Logf("%d connection resets: worst fault-to-resumed-I/O %v, last recovery %v", resets, worst.Round(time.Millisecond), s.Recovery().LastDuration.Round(time.Millisecond))

			// A stall (black hole) longer than NOP interval + timeout.
			before := s.Recovery().Reconnects
			t0 := time.Now()
			px.BlackHole(true)
			time.Sleep(3 * time.Second)
			px.ResetAll() // the stalled TCP connections would linger otherwise
			px.BlackHole(false)
			progress(200, "black hole")
			if s.Recovery().Reconnects == before {
				t.Fatalf("black hole was not detected as a dead link")
			}
			t.Logf("black hole of 3s: I/O resumed %v after the stall began", time.Since(t0).Round(time.Millisecond))

			// A full target restart with the same backing file.
			t0 = time.Now()
			srv.Restart(t)
			progress(200, "target restart")
			t.Logf("target restart: I/O resumed %v after the stop began (recovery %v)", time.Since(t0).Round(time.Millisecond), s.Recovery().LastDuration.Round(time.Millisecond))

			stop()
			<-done
			if st.errs.Load() != 0 || st.mismatches.Load() != 0 {
				t.Fatalf("%d errors, %d mismatches: %v", st.errs.Load(), st.mismatches.Load(), st.firstErr.Load())
			}
			if s.ISID() != isid {
				t.Fatalf("ISID changed")
			}
			if err := l.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			st.verify(t, srv.BackingFile(0, 0))
			if kind == targets.KindIstgt {
				// The target's own log names the ISID of every login.
				re := regexp.MustCompile(`Login from iqn.2026-11.org.lunbridge:interop .*ISID=([0-9a-f]+)`)
				ids := map[string]int{}
				for _, m := range re.FindAllStringSubmatch(srv.LogTail(100000), -1) {
					ids[m[1]]++
				}
				if len(ids) != 1 {
					t.Fatalf("istgt saw logins with ISIDs %v, want one", ids)
				}
				t.Logf("istgt saw %v", ids)
			}
			t.Logf("%d I/Os verified, %d recoveries", st.ios.Load(), s.Recovery().Reconnects)
		})
	}
}

// With the target gone longer than the replacement timeout, pending and new
// I/O fail with a clear error within the timeout plus a small bound; once
// the target is back, a new command works.
func TestResilienceReplacementTimeout(t *testing.T) {
	testenv.RequireRoot(t)
	requireKind(t, targets.KindTgtd)
	srv := startKind(t, targets.KindTgtd, targets.Target{Name: "iqn.2026-11.org.lunbridge.test:gone", LUNs: []targets.LUN{{Size: 8 << 20}}})
	px, err := faultproxy.New(srv.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := resilienceConfig(srv, px.Addr())
	cfg.ReplacementTimeout = 2 * time.Second
	s, l := openLUN(t, ctx, srv, 0, 0, cfg)
	defer s.Close()
	buf := make([]byte, 4096)
	px.RefuseNew(true)
	px.ResetAll()
	t0 := time.Now()
	err = l.ReadAt(ctx, buf, 0)
	el := time.Since(t0)
	if !errors.Is(err, blockdev.ErrUnavailable) || !strings.Contains(err.Error(), "replacement timeout") {
		t.Fatalf("want ErrUnavailable, got %v", err)
	}
	if el > cfg.ReplacementTimeout+time.Second {
		t.Fatalf("failed after %v, timeout %v", el, cfg.ReplacementTimeout)
	}
	t.Logf("pending I/O failed after %v: %v", el.Round(time.Millisecond), err)
	// New I/O while still gone fails at once.
	t0 = time.Now()
	if err := l.ReadAt(ctx, buf, 0); !errors.Is(err, blockdev.ErrUnavailable) || time.Since(t0) > 100*time.Millisecond {
		t.Fatalf("new I/O while gone: %v after %v", err, time.Since(t0))
	}
	px.RefuseNew(false)
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := l.ReadAt(ctx, buf, 0)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("target back, but I/O still fails: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("I/O works again after the target came back (%d recoveries)", s.Recovery().Reconnects)
}
