package mirror

import (
	"bytes"
	"context"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// asyncLeg is a leg with the non-blocking path that stays open when the
// mirror closes it, so the test can read it afterwards.
type asyncLeg struct{ *blockdevtest.Async }

func (asyncLeg) Close() error { return nil }

func newAsyncLegs() (asyncLeg, asyncLeg) {
	a, b := newLegs()
	return asyncLeg{&blockdevtest.Async{Mem: a}}, asyncLeg{&blockdevtest.Async{Mem: b}}
}

// newAsyncMirror is a clean mirror (no initial sync) over two asyncLegs.
func newAsyncMirror(t *testing.T) (*Mirror, asyncLeg, asyncLeg) {
	t.Helper()
	a, b := newAsyncLegs()
	m, err := Create(context.Background(), a, b, CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	return m, a, b
}

// asyncWorkload keeps chains of I/O going through m's non-blocking
// path until stop: each chain owns a region, writes a random range of it,
// records the write in md once acknowledged, reads it back and checks it,
// then starts the next write from the callback, as bench and serve do.
// It returns the acknowledged writes and the errors seen.
func asyncWorkload(m *Mirror, md *model, chains int, stop <-chan struct{}) (int64, []error) {
	var wg sync.WaitGroup
	var n atomic.Int64
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		wg.Done()
	}
	per := m.Size() / int64(chains) / 512 * 512
	for c := 0; c < chains; c++ {
		wg.Add(1)
		rng := rand.New(rand.NewSource(int64(c) + time.Now().UnixNano()))
		lo := int64(c) * per
		var next func()
		next = func() {
			select {
			case <-stop:
				wg.Done()
				return
			default:
			}
			k := (rng.Int63n(64) + 1) * 512
			off := lo + rng.Int63n((per-k)/512)*512
			p := make([]byte, k)
			rng.Read(p)
			m.StartWriteAt(p, off, rng.Intn(8) == 0, func(err error) {
				if err != nil {
					fail(err)
					return
				}
				md.mu.Lock()
				copy(md.data[off:], p)
				md.mu.Unlock()
				n.Add(1)
				q := make([]byte, k)
				m.StartReadAt(q, off, func(err error) {
					if err != nil {
						fail(err)
						return
					}
					if !bytes.Equal(p, q) {
						fail(blockdev.ErrMedium)
						return
					}
					next()
				})
			})
		}
		go next()
	}
	wg.Wait()
	return n.Load(), errs
}

// Mirrored writes and reads through the non-blocking path: every
// acknowledged write is on both legs, reads return it, and once the first
// write of a chunk has made its bit durable, later writes to it start on
// the legs without waiting for metadata.
func TestAsyncWritesReachBothLegs(t *testing.T) {
	m, a, b := newAsyncMirror(t)
	md := newModel(m.Size())
	stop := make(chan struct{})
	time.AfterFunc(400*time.Millisecond, func() { close(stop) })
	n, errs := asyncWorkload(m, md, 16, stop)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	fast := m.asyncWrites.Load()
	t.Logf("%d writes acknowledged, %d through the non-blocking path", n, fast)
	if n == 0 || fast == 0 || fast > n {
		t.Fatalf("%d writes, %d non-blocking", n, fast)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, leg := range []blockdev.Device{a, b} {
		if !bytes.Equal(readAll(t, leg, m.Size()), md.data) {
			t.Fatal("a leg alone does not hold the acknowledged data")
		}
	}
}

// Overlapping writes in flight at once (the non-blocking path defers to
// WriteAt's range lock for them) leave both legs identical.
func TestAsyncOverlappingWritesKeepLegsIdentical(t *testing.T) {
	m, a, b := newAsyncMirror(t)
	var wg sync.WaitGroup
	var bad atomic.Int64
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for i := 0; i < 4000; i++ {
		k := (rng.Int63n(16) + 1) * 512
		off := rng.Int63n(64) * 512 // all inside the first 40 KiB
		p := bytes.Repeat([]byte{byte(i)}, int(k))
		wg.Add(1)
		m.StartWriteAt(p, off, false, func(err error) {
			if err != nil {
				bad.Add(1)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d writes failed", bad.Load())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	sameData(t, a, b, m.Size())
}

// A leg that starts failing its writes mid-run is failed; every write the
// caller was told succeeded is on the surviving leg, and the mirror goes
// on degraded.
func TestAsyncWriteLegFailure(t *testing.T) {
	m, a, b := newAsyncMirror(t)
	var ops atomic.Int64
	b.Fail = func(write bool, off int64) error {
		if ops.Add(1) > 300 {
			return blockdev.ErrUnavailable
		}
		return nil
	}
	md := newModel(m.Size())
	stop := make(chan struct{})
	time.AfterFunc(400*time.Millisecond, func() { close(stop) })
	n, errs := asyncWorkload(m, md, 8, stop)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	st := m.Status()
	if st.Legs[1].State != "failed" || st.State != "degraded" {
		t.Fatalf("after leg B failed: %+v", st)
	}
	t.Logf("%d writes acknowledged; B: %s (%s)", n, st.Legs[1].State, st.Legs[1].Error)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, a, m.Size()), md.data) {
		t.Fatal("leg A does not hold every acknowledged write")
	}
}

// A read that fails on the leg it went to is answered from the other leg.
func TestAsyncReadFallsBackToTheOtherLeg(t *testing.T) {
	m, a, b := newAsyncMirror(t)
	defer m.Close()
	want := bytes.Repeat([]byte{0x5a}, 64<<10)
	if err := m.WriteAt(context.Background(), want, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	var failed atomic.Int64
	medium := func(write bool, off int64) error {
		if !write && off == 1<<20 {
			failed.Add(1)
			return blockdev.ErrMedium
		}
		return nil
	}
	a.Fail, b.Fail = medium, nil
	for i := 0; i < 8; i++ { // whichever leg the read picks
		got := make([]byte, len(want))
		ch := make(chan error, 1)
		m.StartReadAt(got, 1<<20, func(err error) { ch <- err })
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("read returned the wrong data")
		}
	}
	if failed.Load() == 0 {
		t.Fatal("no read went to the failing leg: the test proves nothing")
	}
}
