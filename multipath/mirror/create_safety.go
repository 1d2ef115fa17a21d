package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

// ErrSameLUN: both legs of a mirror are the same LUN (same WWID, or the
// same Device). A mirror on one LUN protects nothing and its resync reads
// and writes the same blocks.
var ErrSameLUN = errors.New("mirror: both legs are the same LUN")

// ErrLegsDiffer: CompareLegs found the legs' data different.
var ErrLegsDiffer = errors.New("mirror: the legs' data differ")

// Geometry is what Create will do to two legs, for a caller that must
// show it before asking: the exported size and, per leg, where the
// metadata (two bitmap slots and two superblock slots) is written.
type Geometry struct {
	// Exported is the mirror's size: [0, Exported) of each leg is data.
	Exported  int64
	BlockSize int
	ChunkSize int64
	// MetaStart[i] is the offset of leg i's metadata; MetaBytes[i] is how
	// many bytes from there Create writes (to the leg's last unit).
	MetaStart [maxLegs]int64
	MetaBytes [maxLegs]int64
	// LegSize[i] is leg i's size; everything in [Exported, LegSize) is no
	// longer reachable through the mirror.
	LegSize [maxLegs]int64
}

// PlanCreate computes the Geometry Create would use for legs a and b with
// the given chunk size (0: DefaultChunkSize). It reads and writes nothing.
func PlanCreate(a, b blockdev.Device, chunk int64) (Geometry, error) {
	var g Geometry
	if a == nil || b == nil {
		return g, fmt.Errorf("mirror: create needs two legs: %w", blockdev.ErrInvalid)
	}
	if chunk == 0 {
		chunk = DefaultChunkSize
	}
	bs := max(a.BlockSize(), b.BlockSize())
	if chunk <= 0 || chunk%int64(bs) != 0 {
		return g, fmt.Errorf("mirror: chunk size %d is not a multiple of the block size %d: %w", chunk, bs, blockdev.ErrInvalid)
	}
	unit, bitmapBytes, exported, err := geometry(min(a.Size(), b.Size()), bs, chunk)
	if err != nil {
		return g, err
	}
	g.Exported, g.BlockSize, g.ChunkSize = exported, bs, chunk
	for i, d := range []blockdev.Device{a, b} {
		l := layout{unit: unit, bitmapBytes: bitmapBytes, legSize: d.Size()}
		g.LegSize[i] = d.Size()
		g.MetaStart[i] = l.metaStart()
		g.MetaBytes[i] = alignDown(d.Size(), unit) - l.metaStart()
	}
	return g, nil
}

// HasMetadata reports whether d carries a lunbridge mirror superblock in
// either slot: a valid one, or one whose magic is there but whose
// checksum or geometry no longer matches (a damaged or resized leg).
func HasMetadata(ctx context.Context, d blockdev.Device) (bool, error) {
	if _, err := readHeader(ctx, d); err == nil {
		return true, nil
	} else if !errors.Is(err, ErrNoMetadata) {
		return false, err
	}
	size := d.Size()
	unit := max(4096, int64(d.BlockSize()))
	if size < 2*unit+minLegBytes/2 {
		return false, nil
	}
	l := layout{unit: unit, legSize: size}
	b := make([]byte, unit)
	for slot := 0; slot < 2; slot++ {
		if err := d.ReadAt(ctx, b, l.headerOff(slot)); err != nil {
			return false, err
		}
		if string(b[:len(magic)]) == magic {
			return true, nil
		}
	}
	return false, nil
}

// SameLUN reports whether a and b are the same medium: the same Device
// value or the same non-empty WWID.
func SameLUN(a, b blockdev.Device) bool {
	if a == b {
		return true
	}
	wa, wb := wwidOf(a), wwidOf(b)
	return wa != "" && wa == wb
}

// CompareOptions tune CompareLegs.
type CompareOptions struct {
	// ChunkSize is the size of each compared read (default 1 MiB, rounded
	// to the block size).
	ChunkSize int64
	// Workers is the number of chunks compared at once (default 4).
	Workers int
	// Progress, when set, is called after each chunk with the bytes
	// compared so far (out of order chunks count when they end). It is
	// called from several goroutines, one at a time.
	Progress func(done, total int64)
	// NoExtents skips the allocation proof and always reads.
	NoExtents bool
}

// CompareResult says how CompareLegs proved the legs equal, or where they
// first differ.
type CompareResult struct {
	// Method is "unmapped" (both legs report the whole range deallocated
	// and reading as zeroes) or "compared" (every byte was read and
	// compared).
	Method string
	// Compared is the number of bytes read from each leg.
	Compared int64
	// FirstDiff is the offset of the first block that differs, -1 when
	// the legs are equal.
	FirstDiff int64
	Elapsed   time.Duration
}

// CompareLegs proves that [0, n) of a and b hold the same data, as
// Create's AssumeClean requires: first from allocation status alone (both
// legs report the range deallocated and reading as zeroes, through
// blockdev.Extenter), else by reading and comparing every byte. When the
// legs differ it returns ErrLegsDiffer with FirstDiff set to the first
// differing block.
func CompareLegs(ctx context.Context, a, b blockdev.Device, n int64, o CompareOptions) (CompareResult, error) {
	start := time.Now()
	res := CompareResult{FirstDiff: -1}
	defer func() { res.Elapsed = time.Since(start) }()
	if a == nil || b == nil || n < 0 || n > a.Size() || n > b.Size() {
		return res, fmt.Errorf("mirror: compare %d bytes: %w", n, blockdev.ErrInvalid)
	}
	bs := int64(max(a.BlockSize(), b.BlockSize()))
	if n%bs != 0 {
		return res, fmt.Errorf("mirror: compare %d bytes, not a multiple of the block size %d: %w", n, bs, blockdev.ErrInvalid)
	}
	if !o.NoExtents {
		za, err := allZero(ctx, a, n)
		if err != nil {
			return res, err
		}
		if za {
			zb, err := allZero(ctx, b, n)
			if err != nil {
				return res, err
			}
			if zb {
				res.Method = "unmapped"
				if o.Progress != nil {
					o.Progress(n, n)
				}
				return res, nil
			}
		}
	}
	res.Method = "compared"
	chunk := o.ChunkSize
	if chunk <= 0 {
		chunk = 1 << 20
	}
	chunk = max(bs, chunk/bs*bs)
	workers := o.Workers
	if workers <= 0 {
		workers = 4
	}
	nchunks := (n + chunk - 1) / chunk
	workers = int(min(int64(workers), max(nchunks, 1)))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		done     atomic.Int64
		mu       sync.Mutex
		firstErr error
		diffAt   = int64(-1) // smallest differing offset found so far
		progMu   sync.Mutex
		wg       sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ba, bb := make([]byte, chunk), make([]byte, chunk)
			for {
				k := next.Add(1) - 1
				off := k * chunk
				if off >= n || ctx.Err() != nil {
					return
				}
				mu.Lock()
				stop := diffAt >= 0 && off > diffAt
				mu.Unlock()
				if stop {
					return // a lower chunk already differs
				}
				m := min(chunk, n-off)
				var errA error
				rd := make(chan struct{})
				go func() { errA = a.ReadAt(ctx, ba[:m], off); close(rd) }()
				errB := b.ReadAt(ctx, bb[:m], off)
				<-rd
				if err := errors.Join(errA, errB); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("mirror: compare at offset %d: %w", off, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				if !bytes.Equal(ba[:m], bb[:m]) {
					for i := int64(0); i < m; i += bs {
						if !bytes.Equal(ba[i:i+bs], bb[i:i+bs]) {
							mu.Lock()
							if diffAt < 0 || off+i < diffAt {
								diffAt = off + i
							}
							mu.Unlock()
							break
						}
					}
				}
				done.Add(m)
				if o.Progress != nil {
					// Read under the lock: a caller whose Add came
					// first may get here last, and must not report
					// less than the one before it did.
					progMu.Lock()
					o.Progress(done.Load(), n)
					progMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	res.Compared = done.Load()
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if diffAt >= 0 {
		res.FirstDiff = diffAt
		return res, fmt.Errorf("%w: first difference in the block at offset %d", ErrLegsDiffer, diffAt)
	}
	return res, nil
}

// allZero reports whether d says, through allocation status, that all of
// [0, n) reads as zeroes. A device without Extenter, or any extent that is
// data, or an answer that does not advance, is "not proven".
func allZero(ctx context.Context, d blockdev.Device, n int64) (bool, error) {
	ex, ok := d.(blockdev.Extenter)
	if !ok || n == 0 {
		return ok, nil
	}
	for pos, calls := int64(0), 0; pos < n; calls++ {
		if calls > 1<<20 {
			return false, nil // bounded: a pathological answer stream
		}
		es, err := ex.Extents(ctx, pos, n-pos)
		if err != nil {
			if errors.Is(err, blockdev.ErrNotSupported) {
				return false, nil
			}
			return false, err
		}
		start := pos
		for _, e := range es {
			if e.Offset != pos || e.Length <= 0 {
				return false, nil
			}
			if e.Flags&blockdev.ExtentZero == 0 {
				return false, nil
			}
			pos += e.Length
			if pos >= n {
				return true, nil
			}
		}
		if pos == start {
			return false, nil
		}
	}
	return true, nil
}
