package mirror

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// faultyWWID gives a faulty test leg a SCSI identity.
type faultyWWID struct {
	*faulty
	wwid string
}

func (d faultyWWID) Identity() blockdev.Identity {
	return blockdev.Identity{WWID: d.wwid, Size: d.Size(), Block: d.BlockSize()}
}

// reopener is an Options.Reopen for leg B that fails while down and
// otherwise returns next().
type reopener struct {
	down  atomic.Bool
	calls atomic.Int64
	mu    sync.Mutex
	next  func() blockdev.Device
}

func (r *reopener) reopen(ctx context.Context, leg int) (blockdev.Device, error) {
	r.calls.Add(1)
	if leg != 1 || r.down.Load() {
		return nil, blockdev.ErrUnavailable
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next(), nil
}

func (r *reopener) set(f func() blockdev.Device) {
	r.mu.Lock()
	r.next = f
	r.mu.Unlock()
}

func readdOpts(r *reopener) Options {
	o := testOpts()
	o.Reopen = r.reopen
	o.ProbeInterval = 20 * time.Millisecond
	o.ProbeMaxInterval = 100 * time.Millisecond
	return o
}

// waitFor polls cond (bounded) and fails with the mirror's status.
func waitFor(t *testing.T, m *Mirror, d time.Duration, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := m.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; status %+v", what, d, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func bothInSync(st Status) bool {
	return st.Legs[0].State == "in-sync" && st.Legs[1].State == "in-sync" && st.Resync != nil && st.Resync.DoneChunks == st.Resync.TotalChunks
}

// TestAutoReadd (issue 20 item 3, review #9): leg B's device fails for a
// while under a write load and then answers again. The mirror degrades,
// reopens B by itself, resyncs only the chunks written meanwhile, and the
// legs are identical again, writes never stopping.
func TestAutoReadd(t *testing.T) {
	ctx := context.Background()
	a, b := newLegs()
	r := &reopener{}
	r.set(func() blockdev.Device { return wrap(b) })
	fb := wrap(b)
	m, err := Create(ctx, wrap(a), fb, CreateOptions{Options: readdOpts(r), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	md := newModel(m.Size())
	// Writers stay in the first 8 chunks; the rest of the disk is never
	// written, so a full resync would copy ~60 chunks.
	const region = 8 * testChunk
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var nWrites int64
	var werrs []error
	wg.Add(1)
	go func() {
		defer wg.Done()
		nWrites, werrs = md.workload(ctx, m, 4, region, stop)
	}()
	time.Sleep(100 * time.Millisecond)
	r.down.Store(true)
	fb.dead.Store(true)
	waitFor(t, m, 5*time.Second, "leg B failed", func(st Status) bool { return st.Legs[1].State == "failed" && st.State == "degraded" })
	time.Sleep(300 * time.Millisecond) // outage under writes, several probes
	if c := r.calls.Load(); c < 2 {
		t.Fatalf("leg B reopened %d times during the outage, want several (backoff from 20 ms)", c)
	}
	r.down.Store(false)
	st := waitFor(t, m, 10*time.Second, "leg B back in sync by itself", bothInSync)
	time.Sleep(100 * time.Millisecond) // writes go on after the re-add
	close(stop)
	wg.Wait()
	if len(werrs) > 0 {
		t.Fatalf("writes failed during the outage: %v", werrs)
	}
	if nWrites == 0 {
		t.Fatal("no writes")
	}
	if st.Legs[1].ReAdds != 1 {
		t.Fatalf("leg B re-adds %d, want 1", st.Legs[1].ReAdds)
	}
	if st.Resync.Mode != "incremental" || st.Resync.TotalChunks > region/testChunk {
		t.Fatalf("resync %+v: want incremental of at most %d chunks", st.Resync, region/testChunk)
	}
	if st.BytesResynced > region || st.BytesResynced == 0 {
		t.Fatalf("resynced %d bytes, want 0 < n <= %d (only dirty chunks)", st.BytesResynced, region)
	}
	waitSync(t, m)
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sameData(t, a, b, m.Size())
	if got := readAll(t, b, m.Size()); !bytes.Equal(got, md.data) {
		t.Fatal("leg B does not hold what the writers were told is written")
	}
	t.Logf("%d writes; resync %s of %d chunks, %d bytes", nWrites, st.Resync.Mode, st.Resync.TotalChunks, st.BytesResynced)
}

// TestAutoReaddRefusesOtherDevice: a leg that comes back as another disk
// (another mirror's leg, a blank disk, another WWID) is refused, logged,
// and not probed again until the operator adds it.
func TestAutoReaddRefusesOtherDevice(t *testing.T) {
	ctx := context.Background()
	other := func(t *testing.T) *blockdevtest.Mem {
		x, y := newLegs()
		om, err := Create(ctx, wrap(x), wrap(y), CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
		if err != nil {
			t.Fatal(err)
		}
		om.Close()
		return y
	}
	cases := []struct {
		name string
		dev  func(b *blockdevtest.Mem) blockdev.Device
		want string
	}{
		{"other mirror", func(*blockdevtest.Mem) blockdev.Device { return faultyWWID{wrap(other(t)), "naa.B"} }, "of mirror"},
		{"no metadata", func(*blockdevtest.Mem) blockdev.Device {
			return faultyWWID{wrap(blockdevtest.NewMem(testSize, 512)), "naa.B"}
		}, "metadata"},
		{"other WWID", func(b *blockdevtest.Mem) blockdev.Device { return faultyWWID{wrap(b), "naa.C"} }, "WWID naa.C"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newLegs()
			r := &reopener{}
			r.set(func() blockdev.Device { return tc.dev(b) })
			fb := faultyWWID{wrap(b), "naa.B"}
			m, err := Create(ctx, faultyWWID{wrap(a), "naa.A"}, fb, CreateOptions{Options: readdOpts(r), ChunkSize: testChunk, AssumeClean: true})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			fb.dead.Store(true)
			if err := m.WriteAt(ctx, make([]byte, 4096), 0, false); err != nil {
				t.Fatal(err)
			}
			st := waitFor(t, m, 5*time.Second, "returning device refused", func(st Status) bool { return st.Legs[1].Held != "" })
			if !strings.Contains(st.Legs[1].Held, "refused") || !strings.Contains(st.Legs[1].Held, tc.want) {
				t.Fatalf("held %q, want a refusal mentioning %q", st.Legs[1].Held, tc.want)
			}
			if st.Legs[1].State != "failed" || st.State != "degraded" {
				t.Fatalf("after refusal: %+v", st)
			}
			calls := r.calls.Load()
			time.Sleep(300 * time.Millisecond)
			if c := r.calls.Load(); c != calls {
				t.Fatalf("refused leg probed again: %d reopen calls, then %d", calls, c)
			}
			// The operator puts the right disk back and adds it.
			r.set(func() blockdev.Device { return faultyWWID{wrap(b), "naa.B"} })
			if err := m.AddLeg(ctx, "B"); err != nil {
				t.Fatal(err)
			}
			st = waitSync(t, m)
			if st.Legs[1].State != "in-sync" || st.Resync.Mode != "incremental" {
				t.Fatalf("after add: %+v", st)
			}
		})
	}
}

// TestManageLeg: FailLeg holds a leg out of automatic re-add, RemoveLeg
// closes it, AddLeg brings it back incrementally.
func TestManageLeg(t *testing.T) {
	ctx := context.Background()
	a, b := newLegs()
	r := &reopener{}
	var closes atomic.Int64
	r.set(func() blockdev.Device { return wrap(b) })
	cb := &closeCounter{faulty: wrap(b), n: &closes}
	m, err := Create(ctx, wrap(a), cb, CreateOptions{Options: readdOpts(r), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.RemoveLeg(ctx, "B"); err == nil {
		t.Fatal("removed an active leg")
	}
	if err := m.FailLeg(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteAt(ctx, bytes.Repeat([]byte{7}, 4096), 3*testChunk, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if c := r.calls.Load(); c != 0 {
		t.Fatalf("leg failed by the operator reopened %d times", c)
	}
	if st := m.Status(); st.Legs[1].State != "failed" || st.Legs[1].Held != heldFailed {
		t.Fatalf("after fail: %+v", st.Legs[1])
	}
	if err := m.RemoveLeg(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	if closes.Load() != 1 {
		t.Fatalf("remove closed the leg %d times", closes.Load())
	}
	if st := m.Status(); st.Legs[1].State != "removed" {
		t.Fatalf("after remove: %+v", st.Legs[1])
	}
	if err := m.AddLeg(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	st := waitSync(t, m)
	if st.Legs[1].State != "in-sync" || st.Resync.Mode != "incremental" || st.Resync.TotalChunks != 1 {
		t.Fatalf("after add: %+v %+v", st.Legs[1], st.Resync)
	}
	sameData(t, a, b, m.Size())
}

type closeCounter struct {
	*faulty
	n *atomic.Int64
}

func (c *closeCounter) Close() error { c.n.Add(1); return nil }

// TestCloseDoesNotWaitForStuckReopen: Close returns promptly while a
// reopen hangs in a dial that ignores its context.
func TestCloseDoesNotWaitForStuckReopen(t *testing.T) {
	ctx := context.Background()
	a, b := newLegs()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	o := testOpts()
	o.ProbeInterval = 10 * time.Millisecond
	o.Reopen = func(ctx context.Context, leg int) (blockdev.Device, error) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release // ignores ctx
		return nil, errors.New("gave up")
	}
	fb := wrap(b)
	m, err := Create(ctx, wrap(a), fb, CreateOptions{Options: o, ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	fb.dead.Store(true)
	m.WriteAt(ctx, make([]byte, 512), 0, false)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no reopen")
	}
	start := time.Now()
	m.Close()
	close(release)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v with a reopen stuck", d)
	}
}
