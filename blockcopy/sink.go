package blockcopy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/lunbridge/lunbridge/blockdev"
)

// holeGranularity is the smallest zero run written to a file as a hole.
const holeGranularity = 4096

// fileSink writes by offset into a file; zero ranges become holes. With
// punch unset the file is known to be a hole wherever it is not written
// (freshly truncated); otherwise zero ranges are punched (falling back to
// writing zeroes where the file system cannot punch).
type fileSink struct {
	f      *os.File
	delta  int64 // file offset = source offset + delta
	punch  bool
	noPunc atomic.Bool // punching failed once: write zeroes instead
	// mu serializes writes and punches. The kernel serializes them
	// anyway (the inode's lock), but a writer waiting there spins on the
	// CPU while another copies its megabyte in (perf: rwsem_spin_on_owner,
	// 8% of a tmpfs pull's cycles); waiting here sleeps.
	mu sync.Mutex
	// direct, when set, takes the writes that meet its alignment
	// (memory, offset and length all multiples of align): O_DIRECT moves
	// them from our buffer to the device without a page-cache copy, and
	// they are on the device when WriteAt returns. Everything else (a
	// misaligned head or tail) goes through f. Nil on tmpfs, on file
	// systems without direct I/O, and with PullOptions.Buffered.
	// Direct writes run concurrently (the file system serializes what it
	// must and the device takes several at once); dmu only guards
	// closing direct.
	dmu         sync.RWMutex
	direct      *os.File
	align       int
	directBytes atomic.Int64
	// memWrites: the file lives in memory (tmpfs), so a write never
	// sleeps on I/O, and it is made without telling the Go scheduler
	// (rawPwrite). Announced, each 1 MiB write outlived the scheduler's
	// patience, which handed our P to another thread and back: perf
	// showed 2.4 times qemu-img's context-switch time, and a tmpfs pull
	// used 15 % more CPU than with the raw write. Writes are serialized
	// (mu), so at most one P is held in a write; only with 2 or more Ps.
	memWrites bool
}

// writeAt writes b at off: its aligned part through direct when there is
// one, the rest through f.
func (s *fileSink) writeAt(b []byte, off int64) error {
	n, err := s.writeDirect(b, off)
	if err != nil {
		return err
	}
	b, off = b[n:], off+int64(n)
	if len(b) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.memWrites {
		return rawPwrite(s.f, b, off)
	}
	_, err = s.f.WriteAt(b, off)
	return err
}

// writeDirect writes the aligned front of b through direct and returns
// how many bytes it wrote (0 when b does not start aligned or there is no
// direct descriptor). A direct write that fails with EINVAL (an alignment
// rule statx did not tell) turns direct I/O off and reports 0 bytes, so
// the caller writes them through f; any other error is returned as it is.
func (s *fileSink) writeDirect(b []byte, off int64) (int, error) {
	s.dmu.RLock()
	n := 0
	if s.direct != nil && off%int64(s.align) == 0 && aligned(b, s.align) {
		n = len(b) / s.align * s.align
	}
	var err error
	if n > 0 {
		_, err = s.direct.WriteAt(b[:n], off)
	}
	s.dmu.RUnlock()
	switch {
	case err == nil:
		s.directBytes.Add(int64(n))
		return n, nil
	case errors.Is(err, syscall.EINVAL):
		s.stopDirect()
		return 0, nil
	}
	return 0, err
}

// stopDirect closes the direct descriptor; later writes go through f.
func (s *fileSink) stopDirect() {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.direct != nil {
		s.direct.Close()
		s.direct = nil
	}
}

// aligned reports whether b starts at a multiple of align in memory.
func aligned(b []byte, align int) bool {
	return len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%uintptr(align) == 0
}

// close releases the direct descriptor (f belongs to the caller).
func (s *fileSink) close() { s.stopDirect() }

func (s *fileSink) zeroNeedsBuf() bool                        { return false }
func (s *fileSink) commit(ctx context.Context, t *task) error { return nil }

func (s *fileSink) write(ctx context.Context, t *task) error {
	if t.zero {
		t.holes = t.n
		return s.zeroRange(t.off+s.delta, t.n)
	}
	return zeroRuns(t.buf, holeGranularity, func(o, n int, zero bool) error {
		off := t.off + s.delta + int64(o)
		if zero {
			t.holes += int64(n)
			return s.zeroRange(off, int64(n))
		}
		t.written += int64(n)
		return s.writeAt(t.buf[o:o+n], off)
	})
}

func (s *fileSink) zeroRange(off, n int64) error {
	if !s.punch {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.noPunc.Load() {
		if err := punchHole(s.f, off, n); err == nil {
			return nil
		}
		s.noPunc.Store(true)
	}
	for n > 0 {
		k := min(n, int64(len(zeroBuf)))
		if _, err := s.f.WriteAt(zeroBuf[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// streamSink writes everything in order, zeroes included.
type streamSink struct {
	w io.Writer
}

func (s *streamSink) zeroNeedsBuf() bool                       { return false }
func (s *streamSink) write(ctx context.Context, t *task) error { return nil }

func (s *streamSink) commit(ctx context.Context, t *task) error {
	if t.zero {
		if t.hole {
			t.holes = t.n
		}
		t.written = t.n
		return writeZeros(s.w, t.n)
	}
	t.written = t.n
	_, err := s.w.Write(t.buf)
	return err
}

// deviceSink writes a Device; zero ranges go out as WriteZeroes when the
// device has it, else as zero buffers.
type deviceSink struct {
	d       blockdev.Device
	delta   int64 // device offset = source offset + delta
	maxXfer int
	zeroer  blockdev.Zeroer
	discard bool
}

func newDeviceSink(d blockdev.Device, delta int64, discard bool) *deviceSink {
	s := &deviceSink{d: d, delta: delta, discard: discard}
	if m, ok := d.(MaxTransferer); ok && m.MaxTransfer() > 0 {
		s.maxXfer = m.MaxTransfer() / d.BlockSize() * d.BlockSize()
	}
	s.zeroer, _ = d.(blockdev.Zeroer)
	return s
}

func (s *deviceSink) zeroNeedsBuf() bool                        { return false }
func (s *deviceSink) commit(ctx context.Context, t *task) error { return nil }

func (s *deviceSink) write(ctx context.Context, t *task) error {
	off := t.off + s.delta
	if !t.zero {
		t.written = t.n
		return splitIO(s.maxXfer, t.buf, off, func(q []byte, o int64) error {
			return s.d.WriteAt(ctx, q, o, false)
		})
	}
	t.holes = t.n
	if s.zeroer != nil {
		err := s.zeroer.WriteZeroes(ctx, off, t.n, s.discard)
		if !errors.Is(err, blockdev.ErrNotSupported) {
			return err
		}
	}
	piece := len(zeroBuf) / s.d.BlockSize() * s.d.BlockSize()
	if s.maxXfer > 0 {
		piece = min(piece, s.maxXfer)
	}
	for n := t.n; n > 0; {
		k := min(n, int64(piece))
		if err := s.d.WriteAt(ctx, zeroBuf[:k], off, false); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// diffStat accumulates differences found by a compareSink.
type diffStat struct {
	bytes, blocks int64
	first         []int64 // offsets of the first differing byte of each differing block
}

// compareSink compares what the source yields with a file (verify).
type compareSink struct {
	f        *fileSource
	delta    int64 // file offset = source offset + delta
	bs       int
	maxDiffs int
	chunk    int
}

func (s *compareSink) zeroNeedsBuf() bool                        { return true }
func (s *compareSink) commit(ctx context.Context, t *task) error { return nil }

// write compares source range t against the file, piece by piece following
// the file's holes: hole on both sides costs nothing; a hole on one side is
// compared against zeroes without reading it.
func (s *compareSink) write(ctx context.Context, t *task) error {
	if t.zero && t.hole {
		t.holes = t.n
	}
	other := t.buf[:cap(t.buf)][s.chunk:]
	fo := t.off + s.delta
	exts, err := s.f.extents(ctx, fo, t.n)
	if err != nil {
		return err
	}
	if exts == nil {
		exts = []blockdev.Extent{{Offset: fo, Length: t.n}}
	}
	for _, e := range exts {
		for pos := e.Offset; pos < e.Offset+e.Length; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := e.Length - (pos - e.Offset)
			fileZero := e.Flags&blockdev.ExtentZero != 0
			if t.zero && fileZero {
				break // both zero
			}
			n = min(n, int64(s.chunk))
			if !t.zero {
				// data piece from the source at the same relative place
				rel := pos - fo
				a := t.buf[rel : rel+n]
				if fileZero {
					s.diff(t, a, nil, int(n), pos-s.delta)
				} else {
					b := other[:n]
					if err := s.f.readAt(ctx, b, pos); err != nil {
						return err
					}
					s.diff(t, a, b, int(n), pos-s.delta)
				}
			} else {
				b := other[:n]
				if err := s.f.readAt(ctx, b, pos); err != nil {
					return err
				}
				s.diff(t, nil, b, int(n), pos-s.delta)
			}
			pos += n
		}
	}
	return nil
}

// diff compares n bytes of a and b (nil means zeroes) at source offset srcOff.
func (s *compareSink) diff(t *task, a, b []byte, n int, srcOff int64) {
	for i := 0; i < n; i += len(zeroBuf) {
		k := min(n-i, len(zeroBuf))
		pa, pb := zeroBuf[:k], zeroBuf[:k]
		if a != nil {
			pa = a[i : i+k]
		}
		if b != nil {
			pb = b[i : i+k]
		}
		s.diffPiece(t, pa, pb, srcOff+int64(i))
	}
}

func (s *compareSink) diffPiece(t *task, a, b []byte, srcOff int64) {
	if bytes.Equal(a, b) {
		return
	}
	n := len(a)
	for i := 0; i < n; i += s.bs {
		k := min(n, i+s.bs)
		if bytes.Equal(a[i:k], b[i:k]) {
			continue
		}
		t.diff.blocks++
		first := int64(-1)
		for j := i; j < k; j++ {
			if a[j] != b[j] {
				t.diff.bytes++
				if first < 0 {
					first = srcOff + int64(j)
				}
			}
		}
		if len(t.diff.first) < s.maxDiffs {
			t.diff.first = append(t.diff.first, first)
		}
	}
}

// mergeDiff adds a task's differences, in order.
func (e *engine) mergeDiff(d *diffStat) {
	e.diffs.bytes += d.bytes
	e.diffs.blocks += d.blocks
	for _, o := range d.first {
		if len(e.diffs.first) >= e.maxDiffs {
			break
		}
		e.diffs.first = append(e.diffs.first, o)
	}
}
