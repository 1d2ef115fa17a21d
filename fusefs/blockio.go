package fusefs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/lunbridge/lunbridge/blockdev"
)

// zeroChunk is the largest zero buffer written when a device cannot zero a
// range by itself. Devices never modify the buffers they are given.
const zeroChunk = 1 << 20

var zeroes = make([]byte, zeroChunk)

// zeroesAfterTrimmer is implemented by devices whose trimmed blocks read
// back as zeroes (SCSI LBPRZ). Only those get a punched hole as a plain
// Trim; others get WriteZeroes(mayTrim=true), which has exactly the
// punch-hole semantics.
type zeroesAfterTrimmer interface {
	ReadZeroesAfterTrim() bool
}

// blockIO maps byte-granular file I/O onto a block device: the aligned middle
// of every request goes straight to the device, unaligned edges are
// read-modify-write of one block each under a range lock. It knows nothing
// of FUSE, so it is tested on its own.
type blockIO struct {
	dev  blockdev.Device
	size int64
	bs   int64

	locks rangeLock
	dirty atomic.Bool // a write was acknowledged since the last Flush
	pool  sync.Pool   // *[]byte of one block, for edges
}

func newBlockIO(dev blockdev.Device) *blockIO {
	b := &blockIO{dev: dev, size: dev.Size(), bs: int64(dev.BlockSize())}
	if b.bs <= 0 {
		b.bs = 512
	}
	b.pool.New = func() any { p := make([]byte, b.bs); return &p }
	return b
}

func (b *blockIO) alignDown(x int64) int64 { return x - x%b.bs }
func (b *blockIO) alignUp(x int64) int64   { return b.alignDown(x + b.bs - 1) }

func (b *blockIO) getBlock() *[]byte  { return b.pool.Get().(*[]byte) }
func (b *blockIO) putBlock(p *[]byte) { b.pool.Put(p) }

// clip limits [off, off+n) to the device. It returns n' <= n (0 at or past
// the end).
func (b *blockIO) clip(off, n int64) int64 {
	if off >= b.size || n <= 0 {
		return 0
	}
	return min(n, b.size-off)
}

// ReadAt reads into p from off and returns the number of bytes read: short
// across the end of the device, 0 at or past it.
func (b *blockIO) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	n := b.clip(off, int64(len(p)))
	if n == 0 {
		return 0, nil
	}
	p = p[:n]
	end := off + n
	pos := off
	if off%b.bs != 0 || n < b.bs { // partial first block
		blk := b.alignDown(off)
		buf := b.getBlock()
		err := b.dev.ReadAt(ctx, *buf, blk)
		if err == nil {
			pos += int64(copy(p, (*buf)[off-blk:]))
		}
		b.putBlock(buf)
		if err != nil {
			return 0, err
		}
	}
	if mid := b.alignDown(end); mid > pos {
		if err := b.dev.ReadAt(ctx, p[pos-off:mid-off], pos); err != nil {
			return 0, err
		}
		pos = mid
	}
	if pos < end { // partial last block; pos is aligned here
		buf := b.getBlock()
		err := b.dev.ReadAt(ctx, *buf, pos)
		if err == nil {
			copy(p[pos-off:], (*buf)[:end-pos])
		}
		b.putBlock(buf)
		if err != nil {
			return 0, err
		}
	}
	return int(n), nil
}

// WriteAt writes p at off and returns the number of bytes written: short
// across the end of the device; a write at or past the end is ENOSPC, as on
// a block device node.
func (b *blockIO) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	return b.writeAt(ctx, p, off, false)
}

// writeAt is WriteAt; with fua every device write it makes, the
// read-modify-write of an unaligned edge included, is a FUA write, so the
// data is durable when it returns (O_SYNC, O_DSYNC, RWF_DSYNC).
func (b *blockIO) writeAt(ctx context.Context, p []byte, off int64, fua bool) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := b.clip(off, int64(len(p)))
	if n == 0 {
		return 0, syscall.ENOSPC
	}
	p = p[:n]
	end := off + n
	h, err := b.locks.lock(ctx, b.alignDown(off), b.alignUp(end))
	if err != nil {
		return 0, err
	}
	defer b.locks.unlock(h)

	pos := off
	if off%b.bs != 0 || n < b.bs {
		blk := b.alignDown(off)
		c, err := b.patchBlock(ctx, blk, off-blk, p, fua)
		if err != nil {
			return 0, err
		}
		pos += int64(c)
	}
	if mid := b.alignDown(end); mid > pos {
		if err := b.dev.WriteAt(ctx, p[pos-off:mid-off], pos, fua); err != nil {
			return 0, err
		}
		pos = mid
	}
	if pos < end {
		if _, err := b.patchBlock(ctx, pos, 0, p[pos-off:], fua); err != nil {
			return 0, err
		}
	}
	if !fua {
		b.dirty.Store(true)
	}
	return int(n), nil
}

// patchBlock is the read-modify-write of the block at blk: it copies as much
// of src as fits from byte at within the block (nil src means zeroes, up to
// the end of the block or zn bytes) and returns how many bytes it patched.
// The caller holds the range lock over the block.
func (b *blockIO) patchBlock(ctx context.Context, blk, at int64, src []byte, fua bool) (int, error) {
	buf := b.getBlock()
	defer b.putBlock(buf)
	if err := b.dev.ReadAt(ctx, *buf, blk); err != nil {
		return 0, err
	}
	c := copy((*buf)[at:], src)
	if err := b.dev.WriteAt(ctx, *buf, blk, fua); err != nil {
		return 0, err
	}
	return c, nil
}

// zeroEdge zeroes [off, end) inside the single block at blk.
func (b *blockIO) zeroEdge(ctx context.Context, blk, off, end int64) error {
	_, err := b.patchBlock(ctx, blk, off-blk, zeroes[:end-off], false)
	return err
}

// Flush makes acknowledged writes durable. When onlyDirty is set (close(2))
// it skips devices with no write since the last flush.
func (b *blockIO) Flush(ctx context.Context, onlyDirty bool) error {
	if !b.dirty.Swap(false) && onlyDirty {
		return nil
	}
	if err := b.dev.Flush(ctx); err != nil {
		b.dirty.Store(true)
		return err
	}
	return nil
}

// zeroMode says how zeroRange treats the aligned middle of its range.
type zeroMode int

const (
	zeroPunch zeroMode = iota // deallocate if possible (PUNCH_HOLE)
	zeroKeep                  // keep allocated (ZERO_RANGE)
)

// ZeroRange makes [off, off+n) (clipped to the device) read as zeroes: the
// edges by read-modify-write, the aligned middle by the device's
// Trim/WriteZeroes when it has them, else by writing zero buffers.
func (b *blockIO) ZeroRange(ctx context.Context, off, n int64, mode zeroMode) error {
	if off < 0 || n < 0 {
		return syscall.EINVAL
	}
	n = b.clip(off, n)
	if n == 0 {
		return nil
	}
	end := off + n
	h, err := b.locks.lock(ctx, b.alignDown(off), b.alignUp(end))
	if err != nil {
		return err
	}
	defer b.locks.unlock(h)
	defer b.dirty.Store(true)

	midStart, midEnd := b.alignUp(off), b.alignDown(end)
	if midStart >= midEnd { // within one block, or two partial blocks
		for blk := b.alignDown(off); blk < end; blk += b.bs {
			if err := b.zeroEdge(ctx, blk, max(off, blk), min(end, blk+b.bs)); err != nil {
				return err
			}
		}
		return nil
	}
	if off < midStart {
		if err := b.zeroEdge(ctx, midStart-b.bs, off, midStart); err != nil {
			return err
		}
	}
	if end > midEnd {
		if err := b.zeroEdge(ctx, midEnd, midEnd, end); err != nil {
			return err
		}
	}
	return b.zeroAligned(ctx, midStart, midEnd-midStart, mode)
}

func (b *blockIO) zeroAligned(ctx context.Context, off, n int64, mode zeroMode) error {
	if mode == zeroPunch {
		if t, ok := b.dev.(blockdev.Trimmer); ok {
			if z, ok := b.dev.(zeroesAfterTrimmer); ok && z.ReadZeroesAfterTrim() {
				err := t.Trim(ctx, off, n)
				if !errors.Is(err, blockdev.ErrNotSupported) {
					return err
				}
			}
		}
	}
	if z, ok := b.dev.(blockdev.Zeroer); ok {
		err := z.WriteZeroes(ctx, off, n, mode == zeroPunch)
		if !errors.Is(err, blockdev.ErrNotSupported) {
			return err
		}
	}
	for n > 0 {
		c := min(n, zeroChunk)
		if err := b.dev.WriteAt(ctx, zeroes[:c], off, false); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// extentChunk bounds one Extents query, so a huge sparse device is walked
// in steps that each stay cheap for the device.
const extentChunk = 1 << 30

// Seek implements SEEK_DATA (data true) and SEEK_HOLE from off: the first
// offset >= off in data (or in a hole). The end of the device counts as a
// hole; at or past it, and for SEEK_DATA with no data left, it is ENXIO.
func (b *blockIO) Seek(ctx context.Context, off int64, data bool) (int64, error) {
	if off < 0 || off >= b.size {
		return 0, syscall.ENXIO
	}
	ex, ok := b.dev.(blockdev.Extenter)
	if !ok {
		if data {
			return off, nil
		}
		return b.size, nil
	}
	pos := b.alignDown(off)
	for pos < b.size {
		exts, err := ex.Extents(ctx, pos, min(extentChunk, b.size-pos))
		if errors.Is(err, blockdev.ErrNotSupported) {
			// Everything is data, as without an Extenter.
			if data {
				return max(off, pos), nil
			}
			return b.size, nil
		}
		if err != nil {
			return 0, err
		}
		if len(exts) == 0 {
			return 0, syscall.EIO
		}
		for _, e := range exts {
			if e.Length <= 0 || e.Offset != pos {
				return 0, syscall.EIO // the device broke the Extenter contract
			}
			hole := e.Flags&blockdev.ExtentHole != 0
			if hole != data && e.Offset+e.Length > off {
				return max(off, e.Offset), nil
			}
			pos = e.Offset + e.Length
		}
	}
	if data {
		return 0, syscall.ENXIO
	}
	return b.size, nil
}
