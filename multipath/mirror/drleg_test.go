package mirror

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// slowDev is a remote behind a slow link: every write and flush waits
// latency, and writes share a bandwidth (bytes/s). onStart sees each write
// as it starts; dead makes every I/O fail. Close leaves the memory open.
type slowDev struct {
	*blockdevtest.Mem
	latency time.Duration
	link    *limiter
	onStart func(p []byte, off int64)
	onDone  func(p []byte, off int64)
	dead    atomic.Bool
	writes  atomic.Int64
	hang    atomic.Pointer[chan struct{}] // writes wait for it to close
}

func newSlow(size int64, latency time.Duration, rate int64) *slowDev {
	return &slowDev{Mem: blockdevtest.NewMem(size, 512), latency: latency, link: &limiter{rate: rate}}
}

func (s *slowDev) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if s.dead.Load() {
		return blockdev.ErrUnavailable
	}
	if s.onStart != nil {
		s.onStart(p, off)
	}
	if h := s.hang.Load(); h != nil {
		<-*h
	}
	time.Sleep(s.latency)
	if err := s.link.wait(ctx, int64(len(p))); err != nil {
		return err
	}
	if s.dead.Load() {
		return blockdev.ErrUnavailable
	}
	s.writes.Add(1)
	err := s.Mem.WriteAt(ctx, p, off, fua)
	if s.onDone != nil {
		s.onDone(p, off)
	}
	return err
}

func (s *slowDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	if s.dead.Load() {
		return blockdev.ErrUnavailable
	}
	return s.Mem.ReadAt(ctx, p, off)
}

func (s *slowDev) Flush(ctx context.Context) error {
	if s.dead.Load() {
		return blockdev.ErrUnavailable
	}
	time.Sleep(s.latency)
	return s.Mem.Flush(ctx)
}

func (s *slowDev) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	if s.dead.Load() {
		return blockdev.ErrUnavailable
	}
	return s.Mem.WriteZeroes(ctx, off, n, mayTrim)
}

func (s *slowDev) Close() error { return nil }

type openMem struct{ *blockdevtest.Mem }

func (openMem) Close() error { return nil }

const asyncTestSize = 16 << 20

func openTestAsync(t *testing.T, primary blockdev.Device, remote blockdev.Device, o AsyncOptions) *Async {
	t.Helper()
	o.Init = true
	if o.ChunkSize == 0 {
		o.ChunkSize = 64 << 10
	}
	a, err := OpenAsync(context.Background(), primary, remote, o)
	if err != nil {
		t.Fatal(err)
	}
	waitMode(t, a, AsyncJournal, 10*time.Second)
	return a
}

// waitMode waits for mode (journal: and consistent, the catch-up over).
func waitMode(t *testing.T, a *Async, mode string, d time.Duration) AsyncStatus {
	t.Helper()
	end := time.Now().Add(d)
	for {
		s := a.Status()
		if s.Mode == mode && (mode != AsyncJournal || s.Consistent) {
			return s
		}
		if time.Now().After(end) {
			t.Fatalf("async leg in mode %s (%s), want %s", s.Mode, s.Reason, mode)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stamped is a 4 KiB block naming write k.
func stamped(k int64) []byte {
	b := make([]byte, 4096)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], uint64(k)+1)
	}
	return b
}

func stampOf(p []byte) int64 { return int64(binary.LittleEndian.Uint64(p)) - 1 }

// TestAsyncReplayKeepsPrefix: four writers hammer a small region (with
// flushes) through a slow remote that runs many replays at once. Every
// write may start on the remote only once every write acknowledged
// before it was issued is complete there, so the remote always holds a
// state a crash of the primary could have left; at the end it equals
// the primary and its metadata says consistent and clean.
func TestAsyncReplayKeepsPrefix(t *testing.T) {
	primary := openMem{blockdevtest.NewMem(asyncTestSize, 512)}
	remote := newSlow(asyncTestSize, time.Millisecond, 0)

	var clock atomic.Int64
	var mu sync.Mutex
	issued := map[int64]int64{} // write → clock at issue
	acked := map[int64]int64{}  // write → clock at acknowledgement
	complete := map[int64]bool{}
	var violations []string
	remote.onStart = func(p []byte, off int64) {
		if len(p) != 4096 || off >= 1<<20 {
			return
		}
		j := stampOf(p)
		mu.Lock()
		defer mu.Unlock()
		for i, ack := range acked {
			if ack < issued[j] && !complete[i] && len(violations) < 5 {
				violations = append(violations, "write started on the remote before a write acknowledged before it was issued")
			}
		}
	}
	remote.onDone = func(p []byte, off int64) {
		if len(p) != 4096 || off >= 1<<20 {
			return
		}
		mu.Lock()
		complete[stampOf(p)] = true
		mu.Unlock()
	}
	a := openTestAsync(t, primary, remote, AsyncOptions{MaxLag: 5 * time.Second})
	var next atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(1500 * time.Millisecond)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for time.Now().Before(stop) {
				k := next.Add(1)
				off := int64(rng.Intn(64)) * 4096 // 256 KiB region: overlaps
				mu.Lock()
				issued[k] = clock.Add(1)
				mu.Unlock()
				if err := a.WriteAt(context.Background(), stamped(k), off, rng.Intn(20) == 0); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[k] = clock.Add(1)
				mu.Unlock()
				if rng.Intn(30) == 0 {
					if err := a.Flush(context.Background()); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations {
		t.Error(v)
	}
	t.Logf("%d writes, %d on the remote", next.Load(), remote.writes.Load())
	if !bytes.Equal(readAll(t, primary, 1<<20), readAll(t, remote, 1<<20)) {
		t.Fatal("remote differs from the primary after a clean close")
	}
	info, err := InspectAsync(context.Background(), remote)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Consistent || !info.Clean || info.Dirty != 0 || info.Sequence == 0 {
		t.Fatalf("remote metadata %+v: want consistent, clean, no dirty chunk, a sequence", info)
	}
}

// TestAsyncThrottleHoldsLag: writes offered far above the link's rate
// are throttled so the lag never passes MaxLag; the leg stays consistent
// in journal mode.
func TestAsyncThrottleHoldsLag(t *testing.T) {
	const size = 4 << 20
	primary := openMem{blockdevtest.NewMem(size, 512)}
	remote := newSlow(size, 2*time.Millisecond, 4<<20) // 4 MiB/s
	const maxLag = 400 * time.Millisecond
	a := openTestAsync(t, primary, remote, AsyncOptions{MaxLag: maxLag, MaxLagBytes: 64 << 20})
	defer a.Close()
	var written atomic.Int64
	var maxSeen float64
	var wg sync.WaitGroup
	stop := time.Now().Add(2 * time.Second)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			rng := rand.New(rand.NewSource(int64(w)))
			for time.Now().Before(stop) {
				off := int64(rng.Intn(size/2/len(buf))) * int64(len(buf))
				if err := a.WriteAt(context.Background(), buf, off, false); err != nil {
					t.Error(err)
					return
				}
				written.Add(int64(len(buf)))
			}
		}()
	}
	for time.Now().Before(stop) {
		s := a.Status()
		maxSeen = max(maxSeen, s.LagSeconds)
		if s.Mode != AsyncJournal || !s.Consistent {
			t.Fatalf("mode %s consistent %v (%s): throttle must keep the journal", s.Mode, s.Consistent, s.Reason)
		}
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	s := a.Status()
	rate := float64(written.Load()) / 2 / 1e6
	t.Logf("max lag %.3fs (bound %v), allowed %.2f MB/s, link measured %.2f MB/s, throttled %v", maxSeen, maxLag, rate, s.RateBytes/1e6, time.Duration(s.ThrottledNs))
	if maxSeen > maxLag.Seconds() {
		t.Fatalf("lag reached %.3fs, bound %v", maxSeen, maxLag)
	}
	if s.ThrottledNs == 0 || rate > 8 {
		t.Fatalf("writes were not throttled (%.2f MB/s through a 4 MiB/s link)", rate)
	}
}

// TestAsyncPullAhead: with pull-ahead, a write load above the link's rate
// never waits: the leg drops to bitmap mode (its metadata says
// inconsistent), and returns to journal mode, consistent and equal to the
// primary, once the load stops.
func TestAsyncPullAhead(t *testing.T) {
	primary := openMem{blockdevtest.NewMem(asyncTestSize, 512)}
	remote := newSlow(asyncTestSize, 2*time.Millisecond, 8<<20)
	a := openTestAsync(t, primary, remote, AsyncOptions{MaxLag: 200 * time.Millisecond, MaxLagBytes: 1 << 20, OnLag: OnLagPullAhead})
	defer a.Close()
	buf := make([]byte, 64<<10)
	rng := rand.New(rand.NewSource(1))
	sawPull := false
	start := time.Now()
	for time.Since(start) < 3*time.Second && !sawPull {
		for i := 0; i < 16; i++ {
			buf[0] = byte(rng.Intn(256))
			off := int64(rng.Intn(asyncTestSize/2/len(buf))) * int64(len(buf))
			if err := a.WriteAt(context.Background(), buf, off, false); err != nil {
				t.Fatal(err)
			}
		}
		sawPull = a.Status().Mode == AsyncPullAhead
	}
	if !sawPull {
		t.Fatalf("never pulled ahead: %+v", a.Status())
	}
	if s := a.Status(); s.Consistent {
		t.Fatalf("pull-ahead and consistent: %+v", s)
	}
	// The remote's metadata says inconsistent while it is copied.
	end := time.Now().Add(5 * time.Second)
	for {
		info, err := InspectAsync(context.Background(), remote)
		if err == nil && !info.Consistent {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("remote metadata never marked inconsistent: %+v %v", info, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := waitMode(t, a, AsyncJournal, 20*time.Second)
	if !s.Consistent || s.Epoch < 2 {
		t.Fatalf("back in journal mode: %+v, want consistent in a new epoch", s)
	}
	if !bytes.Equal(readAll(t, primary, asyncTestSize/2), readAll(t, remote, asyncTestSize/2)) {
		t.Fatal("remote differs from the primary after catching up")
	}
	// The metadata records it just after the switch.
	for end := time.Now().Add(5 * time.Second); ; {
		info, err := InspectAsync(context.Background(), remote)
		if err == nil && info.Consistent && info.Epoch == s.Epoch {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("caught up but the metadata says inconsistent: %+v %v", info, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAsyncRemoteFailureAndReadd: a remote that dies never fails a write;
// the writes are tracked in the bitmap and, when the remote answers again,
// copied; the leg is then consistent and equal to the primary.
func TestAsyncRemoteFailureAndReadd(t *testing.T) {
	primary := openMem{blockdevtest.NewMem(asyncTestSize, 512)}
	remote := newSlow(asyncTestSize, 0, 0)
	a := openTestAsync(t, primary, remote, AsyncOptions{MaxLag: time.Second, ProbeInterval: 50 * time.Millisecond, ProbeMaxInterval: 100 * time.Millisecond})
	defer a.Close()
	copied0 := a.Status().ResyncedBytes
	remote.dead.Store(true)
	buf := make([]byte, 4096)
	for i := 0; i < 200; i++ {
		buf[0] = byte(i)
		if err := a.WriteAt(context.Background(), buf, int64(i%50)*8192, false); err != nil {
			t.Fatalf("write %d failed with the remote down: %v", i, err)
		}
	}
	waitMode(t, a, AsyncFailed, 5*time.Second)
	remote.dead.Store(false)
	s := waitMode(t, a, AsyncJournal, 10*time.Second)
	if s.ReAdds != 1 || !s.Consistent {
		t.Fatalf("after re-add: %+v", s)
	}
	if got := s.ResyncedBytes - copied0; got <= 0 || got > 8*(64<<10) {
		t.Fatalf("re-add copied %d bytes, want the few dirty chunks only", got)
	}
	if !bytes.Equal(readAll(t, primary, 1<<20), readAll(t, remote, 1<<20)) {
		t.Fatal("remote differs from the primary after the re-add")
	}
}

// TestAsyncOpenIdentity: a remote without metadata is refused unless
// Init; a cleanly closed leg reopens in journal mode with nothing to copy;
// another primary's leg is refused.
func TestAsyncOpenIdentity(t *testing.T) {
	ctx := context.Background()
	primary := openMem{blockdevtest.NewMem(asyncTestSize, 512)}
	remote := newSlow(asyncTestSize, 0, 0)
	if _, err := OpenAsync(ctx, primary, remote, AsyncOptions{}); !errors.Is(err, ErrAsyncNoMetadata) {
		t.Fatalf("open without metadata: %v, want ErrAsyncNoMetadata", err)
	}
	a := openTestAsync(t, primary, remote, AsyncOptions{})
	if err := a.WriteAt(ctx, make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	before := remote.writes.Load()
	b, err := OpenAsync(ctx, primary, remote, AsyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := b.Status(); s.Mode != AsyncJournal || s.DirtyChunks != 0 || !s.Consistent {
		t.Fatalf("clean reopen: %+v", s)
	}
	b.halt()
	if w := remote.writes.Load() - before; w > 4 {
		t.Fatalf("clean reopen wrote %d times (a copy?)", w)
	}
	// Not closed cleanly (halt): the next open copies everything.
	c, err := OpenAsync(ctx, primary, remote, AsyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Status(); s.Mode != AsyncResync || s.Consistent {
		t.Fatalf("after a crash: %+v, want a full resync, inconsistent", s)
	}
	waitMode(t, c, AsyncJournal, 10*time.Second)
	c.Close()
}

// halt stops the background work without the clean close (tests: the
// process died).
func (a *Async) halt() {
	a.cancel()
	a.wg.Wait()
}

// TestAsyncStalledRemote: a remote that stops answering (writes hang) does
// not hold the application past the throttle: once nothing progressed for
// MaxLag the leg is failed, writes go on at once, and when the remote
// answers again it is resynced and consistent.
func TestAsyncStalledRemote(t *testing.T) {
	primary := openMem{blockdevtest.NewMem(asyncTestSize, 512)}
	remote := newSlow(asyncTestSize, 0, 0)
	const maxLag = 300 * time.Millisecond
	a := openTestAsync(t, primary, remote, AsyncOptions{MaxLag: maxLag, MaxLagBytes: 1 << 20, ProbeInterval: 50 * time.Millisecond})
	defer a.Close()
	hang := make(chan struct{})
	remote.hang.Store(&hang)
	buf := make([]byte, 64<<10)
	start := time.Now()
	var slowest time.Duration
	for i := 0; i < 64; i++ { // 4 MiB: four times the journal budget
		t0 := time.Now()
		if err := a.WriteAt(context.Background(), buf, int64(i)*int64(len(buf)), false); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	if el := time.Since(start); el > 3*maxLag || slowest > 2*maxLag {
		t.Fatalf("writes took %v (slowest %v) with a hung remote, bound %v", el, slowest, maxLag)
	}
	s := a.Status()
	if s.Mode != AsyncFailed || s.DirtyChunks == 0 {
		t.Fatalf("hung remote: %+v, want failed with dirty chunks", s)
	}
	remote.hang.Store(nil)
	close(hang)
	s = waitMode(t, a, AsyncJournal, 10*time.Second)
	if !s.Consistent {
		t.Fatalf("after the stall: %+v", s)
	}
	if !bytes.Equal(readAll(t, primary, 4<<20), readAll(t, remote, 4<<20)) {
		t.Fatal("remote differs from the primary after the stall")
	}
}

// TestAsyncResyncConvergesUnderWrites: the copy after a re-add ends while
// writes keep hitting the chunks being copied (writes to chunks already
// copied are replicated through the journal, not marked again), and the
// leg becomes consistent and equal to the primary.
func TestAsyncResyncConvergesUnderWrites(t *testing.T) {
	primary := openMem{blockdevtest.NewMem(asyncTestSize, 512)}
	remote := newSlow(asyncTestSize, 200*time.Microsecond, 0)
	a := openTestAsync(t, primary, remote, AsyncOptions{MaxLag: time.Second, ProbeInterval: 50 * time.Millisecond, ProbeMaxInterval: 100 * time.Millisecond})
	defer a.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			buf := make([]byte, 4096)
			for {
				select {
				case <-stop:
					return
				default:
				}
				buf[0] = byte(rng.Intn(256))
				if err := a.WriteAt(context.Background(), buf, int64(rng.Intn(512))*4096, false); err != nil { // 2 MiB: 32 chunks
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	remote.dead.Store(true)
	waitMode(t, a, AsyncFailed, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	remote.dead.Store(false)
	s := waitMode(t, a, AsyncJournal, 10*time.Second) // writes still running
	close(stop)
	wg.Wait()
	t.Logf("caught up under writes: %+v", s)
	waitMode(t, a, AsyncJournal, 5*time.Second)
	for end := time.Now().Add(5 * time.Second); a.Status().JournalEntries > 0; {
		if time.Now().After(end) {
			t.Fatal("journal never drained")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !bytes.Equal(readAll(t, primary, 2<<20), readAll(t, remote, 2<<20)) {
		t.Fatal("remote differs from the primary after the re-add under writes")
	}
}
