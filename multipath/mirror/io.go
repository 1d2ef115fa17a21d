package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

func (m *Mirror) checkIO(off, n int64) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return blockdev.ErrClosed
	}
	return blockdev.CheckRange(m, off, n)
}

func (m *Mirror) chunkRange(off, n int64) (int64, int64) {
	if n == 0 {
		return off / m.chunk, off/m.chunk - 1
	}
	return off / m.chunk, (off + n - 1) / m.chunk
}

// readableLocked reports whether leg i holds chunks [c0, c1] in sync.
func (m *Mirror) readableLocked(i int, c0, c1 int64) bool {
	l := m.legs[i]
	if !l.live {
		return false
	}
	if i == m.target {
		for c := c0; c <= c1; c++ {
			if m.need.get(c) {
				return false
			}
		}
		return true
	}
	return m.inSync&(1<<i) != 0
}

// ReadAt reads from an in-sync leg: the one a sequential stream is already
// on, else the one with fewer reads in flight. A failed read is retried on
// the other leg and the range rewritten from the good copy.
func (m *Mirror) ReadAt(ctx context.Context, p []byte, off int64) error {
	n := int64(len(p))
	if err := m.checkIO(off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	c0, c1 := m.chunkRange(off, n)
	tried := [maxLegs]bool{}
	var firstErr error
	bad := -1
	var badLeg *leg
	for {
		m.mu.Lock()
		pick := m.pickReadLegLocked(off, c0, c1, tried)
		var l *leg
		if pick >= 0 {
			l = m.legs[pick]
		}
		m.mu.Unlock()
		if pick < 0 {
			if firstErr == nil {
				firstErr = fmt.Errorf("mirror: no leg holds [%d, %d) in sync: %w", off, off+n, blockdev.ErrUnavailable)
			}
			return firstErr
		}
		l.inflight.Add(1)
		l.lastEnd.Store(off + n)
		err := l.dev.ReadAt(ctx, p, off)
		l.inflight.Add(-1)
		if err == nil {
			if bad >= 0 {
				m.repair(ctx, badLeg, bad, l, pick, off, n, firstErr)
			}
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		tried[pick] = true
		if firstErr == nil {
			firstErr = err
			bad, badLeg = pick, l
		}
		m.log.WithError(err).Warnf("mirror: read [%d, %d) failed on leg %s, trying the other leg", off, off+n, legName(pick))
	}
}

// pickReadLegLocked chooses the leg to read [off, ...) from, among the
// legs not tried yet that hold chunks [c0, c1] in sync: the one a
// sequential stream is already on, else the one with fewer reads in
// flight; -1 when there is none. m.mu held.
func (m *Mirror) pickReadLegLocked(off, c0, c1 int64, tried [maxLegs]bool) int {
	pick := -1
	for i := range m.legs {
		if tried[i] || !m.readableLocked(i, c0, c1) {
			continue
		}
		if pick < 0 {
			pick = i
			continue
		}
		l, o := m.legs[i], m.legs[pick]
		switch {
		case l.lastEnd.Load() == off && o.lastEnd.Load() != off:
			pick = i
		case o.lastEnd.Load() == off && l.lastEnd.Load() != off:
		case l.inflight.Load() < o.inflight.Load():
			pick = i
		}
	}
	return pick
}

// repair rewrites [off, off+n) of leg bad (instance bl) from leg good
// (instance gl) after a read error.
func (m *Mirror) repair(ctx context.Context, bl *leg, bad int, gl *leg, good int, off, n int64, cause error) {
	if legFatal(cause) {
		m.mu.Lock()
		m.failInstLocked(bl, bad, cause)
		v := m.memberVer
		m.mu.Unlock()
		m.commitMeta(ctx, v)
		return
	}
	r, err := m.rl.lock(ctx, off, n)
	if err != nil {
		return
	}
	defer m.rl.unlock(r)
	// A repair writes a leg like a write does: it waits out a Split
	// barrier and is drained by it, and it never writes a leg that left
	// the write set meanwhile (a split leg stays frozen).
	m.mu.Lock()
	if err := m.waitBarrierLocked(ctx); err != nil || m.legs[bad] != bl || !bl.live {
		m.mu.Unlock()
		return
	}
	m.writers++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.endWriterLocked()
		m.mu.Unlock()
	}()
	buf := make([]byte, n)
	err = gl.dev.ReadAt(ctx, buf, off)
	if err == nil {
		err = bl.dev.WriteAt(ctx, buf, off, true)
	}
	if err != nil {
		m.mu.Lock()
		m.failInstLocked(bl, bad, fmt.Errorf("read repair: %w", err))
		v := m.memberVer
		m.mu.Unlock()
		m.commitMeta(ctx, v)
		return
	}
	m.log.Infof("mirror: repaired [%d, %d) on leg %s from leg %s", off, off+n, legName(bad), legName(good))
}

// WriteAt writes p to every live leg after marking its chunks dirty
// durably; it returns once every in-sync leg has the data.
func (m *Mirror) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return m.write(ctx, off, int64(len(p)), func(ctx context.Context, d blockdev.Device) error {
		return d.WriteAt(ctx, p, off, fua)
	})
}

// WriteZeroes zeroes a range on both legs (WRITE SAME where a leg can,
// zero buffers where it cannot).
func (m *Mirror) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	return m.write(ctx, off, n, func(ctx context.Context, d blockdev.Device) error {
		return zeroLeg(ctx, d, off, n, mayTrim)
	})
}

// Trim deallocates a range on both legs where they can; it always reads
// back as zeroes afterwards, so the legs stay identical.
func (m *Mirror) Trim(ctx context.Context, off, n int64) error {
	return m.WriteZeroes(ctx, off, n, true)
}

func zeroLeg(ctx context.Context, d blockdev.Device, off, n int64, mayTrim bool) error {
	if z, ok := d.(blockdev.Zeroer); ok {
		err := z.WriteZeroes(ctx, off, n, mayTrim)
		if !errors.Is(err, blockdev.ErrNotSupported) {
			return err
		}
	}
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if err := d.WriteAt(ctx, buf[:k], off, false); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

func (m *Mirror) write(ctx context.Context, off, n int64, op func(context.Context, blockdev.Device) error) error {
	if err := m.checkIO(off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	r, err := m.rl.lock(ctx, off, n)
	if err != nil {
		return err
	}
	defer m.rl.unlock(r)
	c0, c1 := m.chunkRange(off, n)

	m.mu.Lock()
	if err := m.waitBarrierLocked(ctx); err != nil {
		m.mu.Unlock()
		return err
	}
	m.writers++ // ended by endWriteLocked
	if m.pendDrop {
		m.pendDrop = false
		for i, l := range m.legs {
			if !l.live {
				m.dropLocked(i)
			}
		}
	}
	wait := m.memberVer
	for c := c0; c <= c1; c++ {
		m.inflight[c]++
		if !m.bitmap.get(c) {
			m.bitmap.set(c)
			m.dirtyVer++
			m.bitVer[c] = m.dirtyVer
		}
		wait = max(wait, m.bitVer[c])
	}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.endWriteLocked(c0, c1)
		m.mu.Unlock()
	}()
	if err := m.commitMeta(ctx, wait); err != nil {
		return err
	}

	m.mu.Lock()
	var idx []int
	var inSync []bool
	var ls []*leg
	for i, l := range m.legs {
		if l.live && (m.inSync&(1<<i) != 0 || i == m.target) {
			idx = append(idx, i)
			inSync = append(inSync, m.inSync&(1<<i) != 0)
			ls = append(ls, l)
		}
	}
	m.mu.Unlock()
	errs := make([]error, len(idx))
	wctx := context.WithoutCancel(ctx)
	if len(idx) == 1 {
		errs[0] = op(wctx, ls[0].dev)
	} else {
		// Every leg but the last on its own goroutine, the last on ours:
		// one goroutine fewer per mirrored write.
		var wg sync.WaitGroup
		last := len(idx) - 1
		for k, l := range ls[:last] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[k] = op(wctx, l.dev)
			}()
		}
		errs[last] = op(wctx, ls[last].dev)
		wg.Wait()
	}
	return m.writeOutcome(ctx, off, n, idx, ls, inSync, errs)
}

// endWriteLocked ends a write of chunks [c0, c1]: they are no longer in
// flight and remember when they were last written. m.mu held.
func (m *Mirror) endWriteLocked(c0, c1 int64) {
	m.endWriterLocked()
	now := time.Now().UnixNano()
	for c := c0; c <= c1; c++ {
		m.inflight[c]--
		m.writeSeq++
		m.chunkSeq[c] = m.writeSeq
		m.chunkTime[c] = now
	}
}

// writeOutcome settles a write that went to legs idx (instances ls;
// inSync[k]: leg idx[k] was in sync) with results errs: a leg that failed while another
// in-sync leg succeeded (or that is gone) is failed and the membership
// change made durable before the caller hears of the write; the write
// succeeded when an in-sync leg has it.
func (m *Mirror) writeOutcome(ctx context.Context, off, n int64, idx []int, ls []*leg, inSync []bool, errs []error) error {
	okInSync := false
	var callerErr error
	for k := range idx {
		if errs[k] == nil && inSync[k] {
			okInSync = true
		}
		if errs[k] != nil && (callerErr == nil || inSync[k]) {
			callerErr = errs[k]
		}
	}
	m.mu.Lock()
	for k, i := range idx {
		if errs[k] == nil {
			continue
		}
		if okInSync || legFatal(errs[k]) {
			m.failInstLocked(ls[k], i, fmt.Errorf("write [%d, %d): %w", off, off+n, errs[k]))
		}
	}
	wait := m.memberVer
	m.mu.Unlock()
	if err := m.commitMeta(ctx, wait); err != nil {
		return err
	}
	if !okInSync {
		if callerErr == nil {
			callerErr = fmt.Errorf("mirror: no in-sync leg: %w", blockdev.ErrUnavailable)
		}
		return callerErr
	}
	return nil
}

// Flush flushes every live leg; a leg that fails its flush is failed.
func (m *Mirror) Flush(ctx context.Context) error {
	if err := m.checkIO(0, 0); err != nil {
		return err
	}
	return m.flush(ctx)
}

func (m *Mirror) flush(ctx context.Context) error {
	m.mu.Lock()
	seq := m.writeSeq
	var idx []int
	var ls []*leg
	for i, l := range m.legs {
		if l.live {
			idx = append(idx, i)
			ls = append(ls, l)
		}
	}
	m.mu.Unlock()
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	for k, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = l.dev.Flush(context.WithoutCancel(ctx))
		}()
	}
	wg.Wait()
	var ret error
	m.mu.Lock()
	all := true
	for k, i := range idx {
		if errs[k] != nil {
			all = false
			if err := m.failInstLocked(ls[k], i, fmt.Errorf("flush: %w", errs[k])); err != nil {
				ret = err
			}
		}
	}
	if all && len(idx) == maxLegs && m.legs[0] == ls[0] && m.legs[1] == ls[1] && seq > m.flushedSeq {
		m.flushedSeq = seq
	}
	v := m.memberVer
	m.mu.Unlock()
	if err := m.commitMeta(ctx, v); err != nil && ret == nil {
		ret = err
	}
	return ret
}
