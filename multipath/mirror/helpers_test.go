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

// faulty wraps a Device and injects faults (pebble errorfs style).
type faulty struct {
	blockdev.Device
	ops        atomic.Int64
	failAfter  atomic.Int64 // fail every op once ops exceeds it (0: never)
	dead       atomic.Bool  // every op fails with ErrUnavailable
	failFlush  atomic.Bool
	writeDelay atomic.Int64 // nanoseconds slept before each write
	errOps     atomic.Int64 // this many reads and writes fail with opErr
	opErr      error

	mu                   sync.Mutex
	mediumOff, mediumEnd int64 // reads of this range fail with ErrMedium
}

func wrap(d blockdev.Device) *faulty { return &faulty{Device: d} }

func (f *faulty) fault() error {
	n := f.ops.Add(1)
	if f.dead.Load() {
		return blockdev.ErrUnavailable
	}
	if a := f.failAfter.Load(); a > 0 && n > a {
		f.dead.Store(true)
		return blockdev.ErrUnavailable
	}
	return nil
}

// injected returns opErr while errOps lasts.
func (f *faulty) injected() error {
	if f.errOps.Add(-1) >= 0 {
		return f.opErr
	}
	f.errOps.Store(0)
	return nil
}

func (f *faulty) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := f.injected(); err != nil {
		return err
	}
	if err := f.fault(); err != nil {
		return err
	}
	f.mu.Lock()
	bad := off < f.mediumEnd && f.mediumOff < off+int64(len(p))
	f.mu.Unlock()
	if bad {
		return blockdev.ErrMedium
	}
	return f.Device.ReadAt(ctx, p, off)
}

func (f *faulty) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if d := f.writeDelay.Load(); d > 0 {
		// Like a LUN: a cancelled caller stops waiting.
		t := time.NewTimer(time.Duration(d))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if err := f.injected(); err != nil {
		return err
	}
	if err := f.fault(); err != nil {
		return err
	}
	f.mu.Lock()
	if off < f.mediumEnd && f.mediumOff < off+int64(len(p)) {
		f.mediumOff, f.mediumEnd = 0, 0 // a rewrite remaps the bad blocks
	}
	f.mu.Unlock()
	return f.Device.WriteAt(ctx, p, off, fua)
}

func (f *faulty) Flush(ctx context.Context) error {
	if err := f.fault(); err != nil {
		return err
	}
	if f.failFlush.Load() {
		return blockdev.ErrUnavailable
	}
	return f.Device.Flush(ctx)
}

func (f *faulty) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	if err := f.fault(); err != nil {
		return err
	}
	return f.Device.(blockdev.Zeroer).WriteZeroes(ctx, off, n, mayTrim)
}

// Close leaves the underlying device open so a test can reassemble it.
func (f *faulty) Close() error { return nil }

func (f *faulty) setMedium(off, end int64) {
	f.mu.Lock()
	f.mediumOff, f.mediumEnd = off, end
	f.mu.Unlock()
}

const (
	testSize  = 64 << 20
	testChunk = 1 << 20
)

func newLegs() (*blockdevtest.Mem, *blockdevtest.Mem) {
	return blockdevtest.NewMem(testSize, 512), blockdevtest.NewMem(testSize, 512)
}

func testOpts() Options { return Options{BitmapIdle: 100 * time.Millisecond} }

// model records what the caller was told is written.
type model struct {
	mu   sync.Mutex
	data []byte
}

func newModel(n int64) *model { return &model{data: make([]byte, n)} }

// write issues one random write inside [lo, hi) and records it. Each
// writer goroutine owns its own region, so the model needs no ordering.
func (md *model) write(ctx context.Context, d blockdev.Device, rng *rand.Rand, lo, hi int64) error {
	bs := int64(d.BlockSize())
	n := (rng.Int63n(64) + 1) * bs
	off := lo + rng.Int63n((hi-lo-n)/bs)*bs
	p := make([]byte, n)
	rng.Read(p)
	if err := d.WriteAt(ctx, p, off, rng.Intn(8) == 0); err != nil {
		return err
	}
	md.mu.Lock()
	copy(md.data[off:], p)
	md.mu.Unlock()
	return nil
}

// workload runs writers goroutines until stop is closed, returning the
// number of writes and the errors seen.
func (md *model) workload(ctx context.Context, d blockdev.Device, writers int, region int64, stop <-chan struct{}) (int64, []error) {
	var wg sync.WaitGroup
	var n atomic.Int64
	var mu sync.Mutex
	var errs []error
	per := region / int64(writers) / 512 * 512
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w) + time.Now().UnixNano()))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := md.write(ctx, d, rng, int64(w)*per, int64(w+1)*per); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load(), errs
}

func readAll(t testing.TB, d blockdev.Device, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	for off := int64(0); off < n; off += 4 << 20 {
		k := min(4<<20, n-off)
		if err := d.ReadAt(context.Background(), b[off:off+k], off); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	return b
}

func sameData(t testing.TB, a, b blockdev.Device, n int64) {
	t.Helper()
	x, y := readAll(t, a, n), readAll(t, b, n)
	if !bytes.Equal(x, y) {
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("legs differ at byte %d (chunk %d)", i, int64(i)/testChunk)
			}
		}
	}
}

// testEnv stands for the host in the owner check: every Mirror gets a
// pid of its own, alive until halt (simulated process death) or the end
// of the test binary.
type testEnv struct {
	mu      sync.Mutex
	machine string
	boot    string
	next    int
	alive   map[int]bool
}

func newTestEnv(machine, boot string) *testEnv {
	return &testEnv{machine: machine, boot: boot, next: 1 << 22, alive: map[int]bool{}}
}

func (e *testEnv) hostEnv() *hostEnv {
	return &hostEnv{
		machineID: func() string { return e.machine },
		hostname:  func() string { return "testhost" },
		bootID:    func() string { return e.boot },
		pid: func() int {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.next++
			e.alive[e.next] = true
			return e.next
		},
		procStart: func(pid int) (uint64, bool) {
			e.mu.Lock()
			defer e.mu.Unlock()
			return uint64(pid), e.alive[pid]
		},
		exited: func(pid int) {
			e.mu.Lock()
			delete(e.alive, pid)
			e.mu.Unlock()
		},
	}
}

// realEnv is the real host; the package's tests run with a testEnv so
// that halt() simulates the death of the owning process.
var realEnv = sysEnv

func init() { sysEnv = newTestEnv("test-machine", "test-boot").hostEnv() }
