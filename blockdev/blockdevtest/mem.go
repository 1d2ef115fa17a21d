// Package blockdevtest provides in-memory and fault-injecting implementations
// of blockdev.Device for tests of the consumers (bridges, copy engine,
// multipath, mirror). They are additions to real targets, never substitutes.
package blockdevtest

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/lunbridge/lunbridge/blockdev"
)

// Mem is a sparse in-memory Device. Blocks never written, or trimmed, are
// holes and read as zeroes. It implements Trimmer, Zeroer and Extenter.
type Mem struct {
	size     int64
	bs       int
	readOnly bool

	mu     sync.RWMutex
	blocks map[int64][]byte // block index -> BlockSize bytes
	closed bool

	Flushes atomic.Int64 // number of Flush calls, for tests
}

var (
	_ blockdev.Device   = (*Mem)(nil)
	_ blockdev.Trimmer  = (*Mem)(nil)
	_ blockdev.Zeroer   = (*Mem)(nil)
	_ blockdev.Extenter = (*Mem)(nil)
)

// NewMem returns an empty device of size bytes (a multiple of blockSize).
func NewMem(size int64, blockSize int) *Mem {
	return &Mem{size: size, bs: blockSize, blocks: make(map[int64][]byte)}
}

// SetReadOnly makes writes fail with blockdev.ErrReadOnly.
func (m *Mem) SetReadOnly(ro bool) { m.readOnly = ro }

func (m *Mem) ReadOnly() bool { return m.readOnly }
func (m *Mem) Size() int64    { return m.size }
func (m *Mem) BlockSize() int { return m.bs }

func (m *Mem) check(off, n int64) error {
	m.mu.RLock()
	closed := m.closed
	m.mu.RUnlock()
	if closed {
		return blockdev.ErrClosed
	}
	return blockdev.CheckRange(m, off, n)
}

func (m *Mem) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	bs := int64(m.bs)
	m.mu.RLock()
	defer m.mu.RUnlock()
	for i := int64(0); i < int64(len(p)); i += bs {
		dst := p[i : i+bs]
		if b, ok := m.blocks[(off+i)/bs]; ok {
			copy(dst, b)
		} else {
			clear(dst)
		}
	}
	return nil
}

func (m *Mem) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	if m.readOnly {
		return blockdev.ErrReadOnly
	}
	bs := int64(m.bs)
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := int64(0); i < int64(len(p)); i += bs {
		idx := (off + i) / bs
		b, ok := m.blocks[idx]
		if !ok {
			b = make([]byte, bs)
			m.blocks[idx] = b
		}
		copy(b, p[i:i+bs])
	}
	return nil
}

func (m *Mem) Flush(ctx context.Context) error {
	if err := m.check(0, 0); err != nil {
		return err
	}
	m.Flushes.Add(1)
	return nil
}

func (m *Mem) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

func (m *Mem) Trim(ctx context.Context, off, n int64) error {
	if err := m.check(off, n); err != nil {
		return err
	}
	if m.readOnly {
		return blockdev.ErrReadOnly
	}
	bs := int64(m.bs)
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := off / bs; i < (off+n)/bs; i++ {
		delete(m.blocks, i)
	}
	return nil
}

func (m *Mem) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	// A hole reads as zeroes, so trimming is always a valid way to zero here.
	return m.Trim(ctx, off, n)
}

// Extents reports holes (unwritten blocks) and data, merging adjacent runs.
func (m *Mem) Extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error) {
	if err := m.check(off, n); err != nil {
		return nil, err
	}
	bs := int64(m.bs)
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []blockdev.Extent
	for i := off / bs; i < (off+n)/bs; i++ {
		var f blockdev.ExtentFlags
		if _, ok := m.blocks[i]; !ok {
			f = blockdev.ExtentHole | blockdev.ExtentZero
		}
		if k := len(out) - 1; k >= 0 && out[k].Flags == f {
			out[k].Length += bs
			continue
		}
		out = append(out, blockdev.Extent{Offset: i * bs, Length: bs, Flags: f})
	}
	if len(out) == 0 {
		return nil, blockdev.ErrInvalid
	}
	return out, nil
}
