package mirror

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// countLeg is an asyncLeg that counts the I/O reaching it.
type countLeg struct {
	asyncLeg
	reads, writes atomic.Int64
	busy          atomic.Int64 // writes started and not ended
}

func (c *countLeg) ReadAt(ctx context.Context, p []byte, off int64) error {
	c.reads.Add(1)
	return c.asyncLeg.ReadAt(ctx, p, off)
}

func (c *countLeg) StartReadAt(p []byte, off int64, done func(error)) {
	c.reads.Add(1)
	c.asyncLeg.StartReadAt(p, off, done)
}

// WriteAt takes up to 200 µs, as StartWriteAt does (a LUN's latency):
// writes overlap the barrier's drain like on a real leg.
func (c *countLeg) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	c.writes.Add(1)
	c.busy.Add(1)
	defer c.busy.Add(-1)
	time.Sleep(time.Duration(rand.Intn(200)) * time.Microsecond)
	return c.asyncLeg.WriteAt(ctx, p, off, fua)
}

func (c *countLeg) StartWriteAt(p []byte, off int64, fua bool, done func(error)) {
	c.writes.Add(1)
	c.busy.Add(1)
	c.asyncLeg.StartWriteAt(p, off, fua, func(err error) {
		c.busy.Add(-1)
		done(err)
	})
}

func (c *countLeg) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	c.writes.Add(1)
	return c.asyncLeg.WriteZeroes(ctx, off, n, mayTrim)
}

// Flush takes 2 ms, like a SYNCHRONIZE CACHE: long enough for writes
// that ignored a barrier to be in flight when it ends.
func (c *countLeg) Flush(ctx context.Context) error {
	c.writes.Add(1)
	time.Sleep(2 * time.Millisecond)
	return c.asyncLeg.Flush(ctx)
}

// splitWrite is one write of a splitWriter with the ticks (a global
// counter) taken before it was issued and after it was acknowledged.
type splitWrite struct {
	off        int64
	data       []byte
	issue, ack uint64
}

// splitWriter writes random ranges of its own small hot area [lo, hi) of
// the mirror, one at a time, through WriteAt or (async) the non-blocking
// path, logging every write.
type splitWriter struct {
	lo, hi int64
	async  bool
	rng    *rand.Rand
	log    []splitWrite
}

func (w *splitWriter) run(m *Mirror, tick *atomic.Uint64, stop <-chan struct{}) error {
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		n := (w.rng.Int63n(64) + 1) * 512
		off := w.lo + w.rng.Int63n((w.hi-w.lo-n)/512)*512
		p := make([]byte, n)
		w.rng.Read(p)
		issue := tick.Add(1)
		var err error
		if w.async {
			done := make(chan error, 1)
			m.StartWriteAt(p, off, false, func(err error) { done <- err })
			err = <-done
		} else {
			err = m.WriteAt(context.Background(), p, off, w.rng.Intn(8) == 0)
		}
		if err != nil {
			return err
		}
		w.log = append(w.log, splitWrite{off, p, issue, tick.Add(1)})
	}
}

// replay applies the writer's first k writes to img (the whole mirror).
func (w *splitWriter) replay(img []byte, from, to int) {
	for _, wr := range w.log[from:to] {
		copy(img[wr.off:], wr.data)
	}
}

// TestSplitFrozenImageWhileWriting (issue 20 item 5): writers run
// continuously on both write paths; Split B at a write barrier; leg B,
// read alone through OpenReadOnly beside the running owner (what pull
// --mirror-leg does), holds exactly the mirror's content at the barrier:
// every write acknowledged before Split was called, none issued after it
// returned, and nothing reaches B (nor is read from it) until Rejoin, while
// writes go on to A. Rejoin resyncs exactly the chunks written since the
// split (the whole disk was dirty before it) with writes continuing, and
// the legs end identical and equal to every acknowledged write.
func TestSplitFrozenImageWhileWriting(t *testing.T) {
	ctx := context.Background()
	a0, b0 := newAsyncLegs()
	a, b := &countLeg{asyncLeg: a0}, &countLeg{asyncLeg: b0}
	o := testOpts()
	o.BitmapIdle = time.Hour // every chunk written before the split stays dirty
	o.ResyncRate = 40 << 20  // a rejoin long enough for writes to overlap it
	m, err := Create(ctx, a, b, CreateOptions{Options: o, ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	size := m.Size()

	// The whole disk written first: every chunk dirty in the bitmap.
	full := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(full)
	for off := int64(0); off < size; off += 1 << 20 {
		if err := m.WriteAt(ctx, full[off:min(off+1<<20, size)], off, false); err != nil {
			t.Fatal(err)
		}
	}
	if st := m.Status(); st.DirtyChunks != st.Chunks {
		t.Fatalf("dirty chunks before the split: %d, want all %d", st.DirtyChunks, st.Chunks)
	}

	// At the barrier no write is in flight on either leg, and leg A is
	// the mirror's content of the split instant.
	var snap []byte
	m.splitHook = func() {
		if n, k := a.busy.Load(), b.busy.Load(); n != 0 || k != 0 {
			t.Errorf("at the split barrier %d writes are in flight on leg A, %d on leg B", n, k)
		}
		snap = make([]byte, size)
		if err := a0.Mem.ReadAt(ctx, snap, 0); err != nil {
			t.Error(err)
		}
	}

	// Six writers, half of them on the non-blocking path, each in a hot
	// area of 1.5 chunks inside its own sixth of the disk.
	const nw = 6
	per := size / nw / testChunk * testChunk
	ws := make([]*splitWriter, nw)
	for k := range ws {
		ws[k] = &splitWriter{lo: int64(k) * per, hi: int64(k)*per + testChunk*3/2, async: k%2 == 1,
			rng: rand.New(rand.NewSource(int64(k) + time.Now().UnixNano()))}
	}
	var tick atomic.Uint64
	runWriters := func(stop chan struct{}) *sync.WaitGroup {
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := w.run(m, &tick, stop); err != nil {
					t.Errorf("write: %v", err)
				}
			}()
		}
		return &wg
	}
	stop := make(chan struct{})
	wg := runWriters(stop)
	time.Sleep(100 * time.Millisecond)

	t0 := time.Now()
	before := tick.Add(1)
	if err := m.Split(ctx, "B"); err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	after := tick.Add(1)
	t1 := time.Now()
	bWrites, bReads := b.writes.Load(), b.reads.Load()
	st := m.Status()
	if st.Legs[1].State != "split" || st.Legs[1].SplitSince.Before(t0) || st.Legs[1].SplitSince.After(t1) || st.Legs[0].State != "in-sync" {
		t.Errorf("status after split: leg A %q, leg B %q since %v (split between %v and %v)", st.Legs[0].State, st.Legs[1].State, st.Legs[1].SplitSince, t0, t1)
	}
	time.Sleep(50 * time.Millisecond) // writes go on to A only

	// Reads of the mirror no longer use B.
	buf := make([]byte, 64<<10)
	for k := 0; k < 32; k++ {
		if err := m.ReadAt(ctx, buf, int64(k)*(size/32)/512*512); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		m.StartReadAt(buf, int64(k)*(size/32)/512*512, func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	// Leg B alone, read-only, beside the running owner: its exported range.
	view := &countLeg{asyncLeg: asyncLeg{&blockdevtest.Async{Mem: b0.Mem}}}
	rd, err := OpenReadOnly(ctx, view, nil, AssembleOptions{})
	if err != nil {
		t.Fatalf("reading the split leg beside the owner: %v", err)
	}
	if rd.Size() != size || rd.Leg() != "B" || rd.SplitSince().Before(t0) || rd.SplitSince().After(t1) {
		t.Fatalf("split leg read as leg %s of %d bytes split at %v, want leg B of %d split between %v and %v", rd.Leg(), rd.Size(), rd.SplitSince(), size, t0, t1)
	}
	got := readAll(t, rd, size)
	rd.Close()
	if view.writes.Load() != 0 {
		t.Errorf("reading the split leg wrote it %d times", view.writes.Load())
	}
	if !bytes.Equal(got, snap) {
		t.Errorf("split leg B differs from the mirror at the split at byte %d", firstDiff(got, snap))
	}

	// The writers' own account: for each, B holds a prefix of its writes
	// with every write acknowledged before Split was called and none
	// issued after it returned; the writes past that prefix are the ones
	// the bitmap must have marked.
	close(stop)
	wg.Wait()
	img := bytes.Clone(full)
	dirty := map[int64]bool{}
	prefix := make([]int, nw)
	for k, w := range ws {
		kmin, kmax := 0, 0
		for _, wr := range w.log {
			if wr.ack < before {
				kmin++
			}
			if wr.issue < after {
				kmax++
			}
		}
		w.replay(img, 0, kmin)
		lo, hi := w.lo, w.hi
		found := -1
		for j := kmin; j <= kmax; j++ {
			if bytes.Equal(got[lo:hi], img[lo:hi]) {
				found = j
				break
			}
			if j < kmax {
				w.replay(img, j, j+1)
			}
		}
		if found < 0 {
			t.Fatalf("writer %d: leg B holds no prefix of its writes between %d (acknowledged before the split) and %d (issued before it returned) of %d", k, kmin, kmax, len(w.log))
		}
		prefix[k] = found
		for _, wr := range w.log[found:] {
			for c := wr.off / testChunk; c <= (wr.off+int64(len(wr.data))-1)/testChunk; c++ {
				dirty[c] = true
			}
		}
		t.Logf("writer %d (async %v): %d writes, %d on B (%d acknowledged before the split, %d issued before it returned)", k, w.async, len(w.log), found, kmin, kmax)
	}
	if b.writes.Load() != bWrites || b.reads.Load() != bReads {
		t.Errorf("leg B got %d writes and %d reads while split", b.writes.Load()-bWrites, b.reads.Load()-bReads)
	}
	if got2 := readAll(t, b0.Mem, size); !bytes.Equal(got2, snap) {
		t.Errorf("split leg B changed while split, at byte %d", firstDiff(got2, snap))
	}
	if st := m.Status(); st.DirtyChunks != int64(len(dirty)) {
		t.Errorf("dirty chunks while split: %d, want the %d written since the split", st.DirtyChunks, len(dirty))
	}

	// Rejoin with writes going on: only the chunks written since the split.
	if err := m.Rejoin(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	st = m.Status()
	if st.Resync == nil || st.Resync.Mode != "incremental" || st.Resync.TotalChunks != int64(len(dirty)) {
		t.Errorf("rejoin resync %+v, want incremental of the %d chunks written since the split (of %d)", st.Resync, len(dirty), st.Chunks)
	}
	stop = make(chan struct{})
	wg = runWriters(stop)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := m.WaitResync(wctx, time.Second, nil); err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	st = m.Status()
	if st.Legs[1].State != "in-sync" || !st.Legs[1].SplitSince.IsZero() || st.Resync.DoneChunks != int64(len(dirty)) {
		t.Errorf("after rejoin: leg B %q (split since %v), resync %+v, want in-sync with %d chunks copied", st.Legs[1].State, st.Legs[1].SplitSince, st.Resync, len(dirty))
	}
	for k, w := range ws {
		w.replay(img, prefix[k], len(w.log))
	}
	if x := readAll(t, a0.Mem, size); !bytes.Equal(x, img) {
		t.Errorf("leg A differs from the acknowledged writes at byte %d", firstDiff(x, img))
	}
	sameData(t, a0.Mem, b0.Mem, size)
}

func firstDiff(x, y []byte) int {
	for i := range min(len(x), len(y)) {
		if x[i] != y[i] {
			return i
		}
	}
	return min(len(x), len(y))
}

// TestSplitRefusals: a split needs both legs in sync; a second split, a
// rejoin of a leg not split and a failure of the last leg are refused;
// automatic re-add leaves a split leg alone; a restart of the owner
// resyncs it incrementally (only what was written since the split).
func TestSplitRefusals(t *testing.T) {
	ctx := context.Background()
	a, b := newLegs()
	r := &reopener{}
	r.set(func() blockdev.Device { return wrap(b) })
	o := readdOpts(r)
	m, err := Create(ctx, wrap(a), wrap(b), CreateOptions{Options: o, ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Rejoin(ctx, "B"); !errors.Is(err, blockdev.ErrInvalid) {
		t.Errorf("rejoin of an in-sync leg: %v, want ErrInvalid", err)
	}
	if err := m.Split(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	if err := m.Split(ctx, "A"); !errors.Is(err, ErrNotInSync) {
		t.Errorf("split of the last leg: %v, want ErrNotInSync", err)
	}
	if err := m.FailLeg(ctx, "A"); !errors.Is(err, ErrLastLeg) {
		t.Errorf("fail of the last leg: %v, want ErrLastLeg", err)
	}
	p := make([]byte, 3*testChunk/2)
	rand.Read(p)
	if err := m.WriteAt(ctx, p, 5*testChunk, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // several probe intervals
	if st := m.Status(); st.Legs[1].State != "split" || r.calls.Load() != 0 {
		t.Fatalf("split leg after %d reopen calls: %q", r.calls.Load(), st.Legs[1].State)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err := Inspect(ctx, a, b); err != nil || st.Legs[1].State != "split" || st.Legs[1].SplitSince.IsZero() {
		t.Errorf("inspect after a split: %v, leg B %+v", err, st.Legs[1])
	}
	// A restart forgets the split: B is resynced, incrementally.
	m2, err := Assemble(ctx, wrap(a), wrap(b), AssembleOptions{Options: testOpts()})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if st := m2.Status(); st.Resync == nil || st.Resync.Mode != "incremental" || st.Resync.TotalChunks != 2 {
		t.Errorf("restart after a split: resync %+v, want incremental of 2 chunks", st.Resync)
	}
	if err := m2.WaitResync(ctx, time.Second, nil); err != nil {
		t.Fatal(err)
	}
	sameData(t, a, b, m2.Size())
	// A failed peer: nothing to split off.
	if err := m2.FailLeg(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	if err := m2.Split(ctx, "A"); !errors.Is(err, ErrNotInSync) {
		t.Errorf("split of A with B failed: %v, want ErrNotInSync", err)
	}
}
