package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// TestBlockIORandom checks byte-granular reads and writes against a
// reference slice, for both common block sizes.
func TestBlockIORandom(t *testing.T) {
	for _, bs := range []int{512, 4096} {
		t.Run(fmt.Sprint(bs), func(t *testing.T) {
			const size = 1 << 20
			ctx := context.Background()
			b := newBlockIO(blockdevtest.NewMem(size, bs))
			ref := make([]byte, size)
			rng := rand.New(rand.NewPCG(uint64(bs), 9))
			for i := range 3000 {
				off := rng.Int64N(size)
				n := 1 + rng.IntN([]int{3, bs + 2, 3 * bs, 100000}[i%4])
				p := make([]byte, n)
				for j := range p {
					p[j] = byte(rng.Uint32())
				}
				w, err := b.WriteAt(ctx, p, off)
				want := min(int64(n), size-off)
				if err != nil || int64(w) != want {
					t.Fatalf("WriteAt(%d, +%d) = %d, %v; want %d", off, n, w, err, want)
				}
				copy(ref[off:], p)
				ro := rng.Int64N(size)
				got := make([]byte, 1+rng.IntN(3*bs))
				r, err := b.ReadAt(ctx, got, ro)
				want = min(int64(len(got)), size-ro)
				if err != nil || int64(r) != want {
					t.Fatalf("ReadAt(%d, +%d) = %d, %v; want %d", ro, len(got), r, err, want)
				}
				if !bytes.Equal(got[:r], ref[ro:ro+int64(r)]) {
					t.Fatalf("op %d: ReadAt(%d, +%d) differs from the reference", i, ro, len(got))
				}
			}
		})
	}
}

func TestBlockIOEnd(t *testing.T) {
	ctx := context.Background()
	b := newBlockIO(blockdevtest.NewMem(8192, 512))
	p := make([]byte, 1000)
	if n, err := b.ReadAt(ctx, p, 8192); n != 0 || err != nil {
		t.Errorf("read at end = %d, %v", n, err)
	}
	if n, err := b.WriteAt(ctx, p, 8192); n != 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write at end = %d, %v; want ENOSPC", n, err)
	}
	if n, err := b.WriteAt(ctx, p, 8000); n != 192 || err != nil {
		t.Errorf("write across end = %d, %v; want 192", n, err)
	}
	if n, err := b.ReadAt(ctx, p, 8000); n != 192 || err != nil {
		t.Errorf("read across end = %d, %v; want 192", n, err)
	}
	if _, err := b.WriteAt(ctx, p, -1); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("negative offset: %v", err)
	}
}

// TestBlockIOConcurrentEdges: writers of disjoint bytes within the same
// blocks never lose each other's updates.
func TestBlockIOConcurrentEdges(t *testing.T) {
	ctx := context.Background()
	b := newBlockIO(blockdevtest.NewMem(1<<20, 4096))
	const writers, rounds, span = 16, 300, 37
	base := int64(4096 - 300)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, span)
			for r := range rounds {
				for i := range p {
					p[i] = byte(w + r)
				}
				if _, err := b.WriteAt(ctx, p, base+int64(w*span)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := make([]byte, writers*span)
	b.ReadAt(ctx, got, base)
	for w := range writers {
		if want := bytes.Repeat([]byte{byte(w + rounds - 1)}, span); !bytes.Equal(got[w*span:(w+1)*span], want) {
			t.Fatalf("writer %d lost its update: %v", w, got[w*span:(w+1)*span])
		}
	}
}

// recDev records zeroing calls and may promise zeroes after trim.
type recDev struct {
	*blockdevtest.Mem
	lbprz bool
	mu    sync.Mutex
	calls []string
}

func (d *recDev) ReadZeroesAfterTrim() bool { return d.lbprz }
func (d *recDev) Trim(ctx context.Context, off, n int64) error {
	d.mu.Lock()
	d.calls = append(d.calls, fmt.Sprintf("trim %d+%d", off, n))
	d.mu.Unlock()
	return d.Mem.Trim(ctx, off, n)
}
func (d *recDev) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	d.mu.Lock()
	d.calls = append(d.calls, fmt.Sprintf("zeroes %d+%d %v", off, n, mayTrim))
	d.mu.Unlock()
	return d.Mem.WriteZeroes(ctx, off, n, mayTrim)
}

// plainDev hides every optional interface of a Mem.
type plainDev struct{ m *blockdevtest.Mem }

func (d plainDev) Size() int64    { return d.m.Size() }
func (d plainDev) BlockSize() int { return d.m.BlockSize() }
func (d plainDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	return d.m.ReadAt(ctx, p, off)
}
func (d plainDev) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return d.m.WriteAt(ctx, p, off, fua)
}
func (d plainDev) Flush(ctx context.Context) error { return d.m.Flush(ctx) }
func (d plainDev) Close() error                    { return d.m.Close() }

func TestZeroRange(t *testing.T) {
	ctx := context.Background()
	ones := bytes.Repeat([]byte{1}, 1<<16)
	for _, tc := range []struct {
		name      string
		lbprz     bool
		mode      zeroMode
		off, n    int64
		wantCalls []string
	}{
		{"punch lbprz", true, zeroPunch, 1000, 20000, []string{"trim 1024+19968"}},
		{"punch no lbprz", false, zeroPunch, 1000, 20000, []string{"zeroes 1024+19968 true"}},
		{"zero range", true, zeroKeep, 1024, 20000, []string{"zeroes 1024+19968 false"}},
		{"one block", true, zeroPunch, 1030, 100, nil},
		{"two partial blocks", true, zeroPunch, 1030, 600, nil},
		{"past the end", true, zeroPunch, 60000, 90000, []string{"trim 60416+5120"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &recDev{Mem: blockdevtest.NewMem(1<<16, 512), lbprz: tc.lbprz}
			d.WriteAt(ctx, ones, 0, false)
			b := newBlockIO(d)
			if err := b.ZeroRange(ctx, tc.off, tc.n, tc.mode); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(d.calls) != fmt.Sprint(tc.wantCalls) {
				t.Errorf("calls %v, want %v", d.calls, tc.wantCalls)
			}
			got := make([]byte, 1<<16)
			d.ReadAt(ctx, got, 0)
			want := bytes.Clone(ones)
			clear(want[tc.off:min(tc.off+tc.n, 1<<16)])
			if !bytes.Equal(got, want) {
				t.Error("content differs")
			}
		})
	}
	// Without Trim/WriteZeroes: zero buffers.
	m := blockdevtest.NewMem(1<<16, 512)
	m.WriteAt(ctx, ones, 0, false)
	if err := newBlockIO(plainDev{m}).ZeroRange(ctx, 100, 50000, zeroPunch); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<16)
	m.ReadAt(ctx, got, 0)
	want := bytes.Clone(ones)
	clear(want[100:50100])
	if !bytes.Equal(got, want) {
		t.Error("plain device: content differs")
	}
}

func TestSeek(t *testing.T) {
	ctx := context.Background()
	m := blockdevtest.NewMem(1<<20, 512)
	m.WriteAt(ctx, make([]byte, 4096), 8192, false)     // data [8192, 12288)
	m.WriteAt(ctx, make([]byte, 512), 1<<20-512, false) // data in the last block
	b := newBlockIO(m)
	for _, tc := range []struct {
		off  int64
		data bool
		want int64
		err  error
	}{
		{0, true, 8192, nil},
		{0, false, 0, nil},
		{8192 + 100, true, 8292, nil},
		{8192 + 100, false, 12288, nil},
		{12288, true, 1<<20 - 512, nil},
		{1<<20 - 1, false, 1 << 20, nil},
		{1<<20 - 1, true, 1<<20 - 1, nil},
		{1 << 20, true, 0, syscall.ENXIO},
	} {
		got, err := b.Seek(ctx, tc.off, tc.data)
		if got != tc.want || !errors.Is(err, tc.err) && err != tc.err {
			t.Errorf("Seek(%d, data=%v) = %d, %v; want %d, %v", tc.off, tc.data, got, err, tc.want, tc.err)
		}
	}
	m.Trim(ctx, 1<<20-512, 512)
	if _, err := b.Seek(ctx, 12288, true); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("SEEK_DATA with no data left: %v, want ENXIO", err)
	}
	// Without an Extenter, everything is data.
	p := newBlockIO(plainDev{m})
	if got, err := p.Seek(ctx, 100, true); got != 100 || err != nil {
		t.Errorf("plain SEEK_DATA = %d, %v", got, err)
	}
	if got, err := p.Seek(ctx, 100, false); got != 1<<20 || err != nil {
		t.Errorf("plain SEEK_HOLE = %d, %v", got, err)
	}
}

func TestToErrno(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{fmt.Errorf("x: %w", blockdev.ErrReadOnly), syscall.EROFS},
		{blockdev.ErrOutOfRange, syscall.EINVAL},
		{blockdev.ErrMedium, syscall.EIO},
		{blockdev.ErrNoSpace, syscall.ENOSPC},
		{blockdev.ErrUnavailable, syscall.EIO},
		{blockdev.ErrNotSupported, syscall.EOPNOTSUPP},
		{ctx.Err(), syscall.EINTR},
		{syscall.ENOSPC, syscall.ENOSPC},
		{errors.New("other"), syscall.EIO},
	} {
		if got := ToErrno(tc.err); got != tc.want {
			t.Errorf("ToErrno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestRangeLockCancel(t *testing.T) {
	var l rangeLock
	h, _ := l.lock(context.Background(), 0, 512)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.lock(ctx, 511, 1024); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("overlapping lock: %v, want deadline", err)
	}
	h2, err := l.lock(context.Background(), 512, 1024) // disjoint: no wait
	if err != nil {
		t.Fatal(err)
	}
	l.unlock(h)
	l.unlock(h2)
	if len(l.held) != 0 {
		t.Fatalf("held %v", l.held)
	}
}

func TestParseMountinfo(t *testing.T) {
	e, ok := parseMountinfo(`1289 30 0:98 / /tmp/a\040b rw,nosuid,nodev,relatime shared:700 - fuse.lunbridge lunbridge rw,user_id=0,group_id=0`)
	if !ok || e.point != "/tmp/a b" || e.fstype != FSType {
		t.Errorf("parsed %+v, %v", e, ok)
	}
}
