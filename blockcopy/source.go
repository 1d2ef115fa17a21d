package blockcopy

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/lunbridge/lunbridge/blockdev"
)

// source is what the planner and workers read from with random access.
type source interface {
	readAt(ctx context.Context, p []byte, off int64) error
	// extents reports allocation from off on; nil, nil when unknown.
	extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error)
}

// deviceSource reads a Device, splitting reads at its MaxTransfer.
type deviceSource struct {
	d       blockdev.Device
	maxXfer int
	ext     blockdev.Extenter
}

func newDeviceSource(d blockdev.Device) *deviceSource {
	s := &deviceSource{d: d}
	if m, ok := d.(MaxTransferer); ok && m.MaxTransfer() > 0 {
		s.maxXfer = m.MaxTransfer() / d.BlockSize() * d.BlockSize()
	}
	s.ext, _ = d.(blockdev.Extenter)
	return s
}

func (s *deviceSource) readAt(ctx context.Context, p []byte, off int64) error {
	return splitIO(s.maxXfer, p, off, func(q []byte, o int64) error { return s.d.ReadAt(ctx, q, o) })
}

func (s *deviceSource) extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error) {
	if s.ext == nil {
		return nil, nil
	}
	return s.ext.Extents(ctx, off, n)
}

// splitIO runs fn over p in pieces of at most max bytes (0: one piece).
func splitIO(max int, p []byte, off int64, fn func([]byte, int64) error) error {
	if max <= 0 || len(p) <= max {
		return fn(p, off)
	}
	for i := 0; i < len(p); i += max {
		if err := fn(p[i:min(i+max, len(p))], off+int64(i)); err != nil {
			return err
		}
	}
	return nil
}

// fileSource reads a regular file; reads past EOF return zeroes (the image is
// padded to the device block size). Extents come from SEEK_DATA/SEEK_HOLE.
type fileSource struct {
	f    *os.File
	size int64
}

func (s *fileSource) readAt(ctx context.Context, p []byte, off int64) error {
	n, err := s.f.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	clear(p[n:])
	return nil
}

func (s *fileSource) extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error) {
	end := off + n
	var out []blockdev.Extent
	const zero = blockdev.ExtentHole | blockdev.ExtentZero
	for pos := off; pos < end; {
		if pos >= s.size { // padding past EOF reads as zeroes
			out = append(out, blockdev.Extent{Offset: pos, Length: end - pos, Flags: zero})
			break
		}
		data, ok := nextData(s.f, pos, end)
		if !ok {
			if len(out) == 0 {
				return nil, nil
			}
			break
		}
		if data > pos {
			out = append(out, blockdev.Extent{Offset: pos, Length: data - pos, Flags: zero})
		}
		if data >= end {
			break
		}
		hole := nextHole(s.f, data, end)
		if hole <= data {
			hole = end
		}
		out = append(out, blockdev.Extent{Offset: data, Length: hole - data})
		pos = hole
	}
	return out, nil
}

// extentCache answers "is [off, off+n) known to read as zeroes?" for
// increasing offsets, asking the source for large windows at a time.
type extentCache struct {
	src      source
	end      int64 // end of the range the engine walks
	disabled bool
	exts     []blockdev.Extent
	covered  int64 // exts describe [.., covered)
}

func newExtentCache(src source, start, end int64) *extentCache {
	return &extentCache{src: src, end: end, covered: start}
}

// zero reports whether [off, off+n) is entirely ExtentZero. Offsets must not
// decrease between calls.
func (c *extentCache) zero(ctx context.Context, off, n int64) (bool, error) {
	if c.disabled {
		return false, nil
	}
	for c.covered < off+n {
		if c.covered < off {
			c.covered = off
			c.exts = c.exts[:0]
		}
		exts, err := c.src.extents(ctx, c.covered, min(extentWindow, c.end-c.covered))
		if err != nil && ctx.Err() != nil {
			return false, ctx.Err()
		}
		if err != nil || len(exts) == 0 {
			// Reporting data is always safe: stop asking.
			c.disabled = true
			return false, nil
		}
		for _, e := range exts {
			if e.Length <= 0 || e.Offset != c.covered {
				c.disabled = true
				return false, nil
			}
			c.exts = append(c.exts, e)
			c.covered += e.Length
		}
	}
	// Drop extents that end before off.
	i := 0
	for i < len(c.exts) && c.exts[i].Offset+c.exts[i].Length <= off {
		i++
	}
	c.exts = c.exts[i:]
	for _, e := range c.exts {
		if e.Offset >= off+n {
			break
		}
		if e.Flags&blockdev.ExtentZero == 0 {
			return false, nil
		}
	}
	return true, nil
}
