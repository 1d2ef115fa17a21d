package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev"
)

// resyncBatch is how many copied chunks are flushed and cleared from the
// bitmap (a checkpoint) at once.
const resyncBatch = 16

type copied struct {
	c   int64
	seq uint64
}

// resyncLoop copies the chunks the target lacks from the in-sync leg,
// chunk by chunk, each under the range lock.
func (m *Mirror) resyncLoop() {
	defer m.wg.Done()
	ctx := m.bgCtx
	var batch []copied
	var lastCkpt time.Time
	for {
		m.mu.Lock()
		t := m.target
		if t < 0 {
			m.mu.Unlock()
			batch = nil
			select {
			case <-ctx.Done():
				return
			case <-m.resyncWake:
				continue
			}
		}
		src := -1
		for i, l := range m.legs {
			if i != t && l.live && m.inSync&(1<<i) != 0 {
				src = i
			}
		}
		c := int64(-1)
		for k := m.checkpoint; k < m.nchunks; k++ {
			if m.need.get(k) {
				c = k
				break
			}
		}
		if c < 0 && m.checkpoint > 0 {
			m.checkpoint = 0
			for k := int64(0); k < m.nchunks; k++ {
				if m.need.get(k) {
					c = k
					break
				}
			}
		}
		m.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if src < 0 {
			m.sleep(ctx, time.Second)
			continue
		}
		if c < 0 || len(batch) >= resyncBatch || (len(batch) > 0 && time.Since(lastCkpt) > time.Second) {
			if err := m.checkpointBatch(ctx, t, batch); err != nil {
				m.sleep(ctx, 100*time.Millisecond)
			}
			batch, lastCkpt = nil, time.Now()
			if c < 0 {
				m.finishResync(ctx, t)
			}
			continue
		}
		seq, n, err := m.copyChunk(ctx, src, t, c)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.WithError(err).Warnf("mirror: resync of chunk %d to leg %s", c, legName(t))
			m.sleep(ctx, 500*time.Millisecond)
			continue
		}
		batch = append(batch, copied{c, seq})
		m.mu.Lock()
		if m.target == t {
			m.need.clear(c)
			m.checkpoint = c + 1
			m.resyncDone++
			m.bytesResynced += n
		}
		m.mu.Unlock()
	}
}

func (m *Mirror) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// copyChunk copies chunk c from leg src to leg t under the range lock and
// returns the chunk's write sequence at the time of the copy.
func (m *Mirror) copyChunk(ctx context.Context, src, t int, c int64) (uint64, int64, error) {
	off := c * m.chunk
	n := min(m.chunk, m.size-off)
	if err := m.limit.wait(ctx, n); err != nil {
		return 0, 0, err
	}
	r, err := m.rl.lock(ctx, off, n)
	if err != nil {
		return 0, 0, err
	}
	defer m.rl.unlock(r)
	m.mu.Lock()
	sl, tl := m.legs[src], m.legs[t]
	ok := m.target == t && tl.live && sl.live
	seq := m.chunkSeq[c]
	m.mu.Unlock()
	if !ok {
		return 0, 0, errors.New("resync target changed")
	}
	// The chunk moves in pieces of up to resyncPiece, all in flight at
	// once, each read then written: the legs see several commands at a
	// time instead of one read, then one write.
	buf := make([]byte, n)
	piece := min(n, resyncPiece)
	np := int((n + piece - 1) / piece)
	rerrs := make([]error, np)
	werrs := make([]error, np)
	var wg sync.WaitGroup
	for k := range np {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lo := int64(k) * piece
			hi := min(lo+piece, n)
			if rerrs[k] = sl.dev.ReadAt(ctx, buf[lo:hi], off+lo); rerrs[k] != nil {
				return
			}
			werrs[k] = tl.dev.WriteAt(ctx, buf[lo:hi], off+lo, false)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		// Stopped (Close, or the resync was cancelled): the pieces that
		// failed did so because of that, not because of a leg.
		return 0, 0, err
	}
	if err := errors.Join(rerrs...); err != nil {
		if legFatal(err) {
			m.mu.Lock()
			m.failInstLocked(sl, src, fmt.Errorf("resync read: %w", err))
			m.mu.Unlock()
		}
		return 0, 0, fmt.Errorf("read leg %s: %w", legName(src), err)
	}
	if err := errors.Join(werrs...); err != nil {
		m.mu.Lock()
		m.failInstLocked(tl, t, fmt.Errorf("resync write: %w", err))
		v := m.memberVer
		m.mu.Unlock()
		m.commitMeta(ctx, v)
		return 0, 0, fmt.Errorf("write leg %s: %w", legName(t), err)
	}
	return seq, n, nil
}

// resyncPiece is the unit of one resync read or write.
const resyncPiece = 1 << 20

// checkpointBatch flushes the target and clears the bits of copied chunks
// not written since they were copied; the bitmap is the durable progress.
func (m *Mirror) checkpointBatch(ctx context.Context, t int, batch []copied) error {
	if len(batch) == 0 {
		return nil
	}
	m.mu.Lock()
	tl := m.legs[t]
	m.mu.Unlock()
	if err := tl.dev.Flush(ctx); err != nil {
		if ctx.Err() != nil {
			return err
		}
		m.mu.Lock()
		m.failInstLocked(tl, t, fmt.Errorf("resync flush: %w", err))
		v := m.memberVer
		m.mu.Unlock()
		m.commitMeta(ctx, v)
		return err
	}
	m.mu.Lock()
	if m.target != t {
		m.mu.Unlock()
		return nil
	}
	for _, b := range batch {
		if m.chunkSeq[b.c] == b.seq && m.inflight[b.c] == 0 && !m.need.get(b.c) {
			m.bitmap.clear(b.c)
		}
	}
	m.dirtyVer++
	v := m.dirtyVer
	m.mu.Unlock()
	return m.commitMeta(ctx, v)
}

// finishResync makes the target in sync again (a new generation when it
// had been dropped).
func (m *Mirror) finishResync(ctx context.Context, t int) {
	m.mu.Lock()
	tl := m.legs[t]
	m.mu.Unlock()
	if err := tl.dev.Flush(ctx); err != nil {
		if ctx.Err() != nil {
			return
		}
		m.mu.Lock()
		m.failInstLocked(tl, t, fmt.Errorf("resync flush: %w", err))
		m.mu.Unlock()
		return
	}
	m.mu.Lock()
	if m.target != t || m.need.count() != 0 || m.legs[t] != tl {
		m.mu.Unlock()
		return
	}
	mode := m.mode
	m.probe[t].delay = 0 // back in sync: the next failure is probed quickly again
	m.target, m.need = -1, nil
	m.checkpoint = 0
	m.resyncElapsed = time.Since(m.resyncStart)
	if m.inSync&(1<<t) == 0 {
		m.inSync |= 1 << t
		m.dropGen, m.dropGenID = 0, 0
		m.gen++
		m.genID = randID()
		m.genTime = time.Now().UnixNano()
	}
	m.dirtyVer++
	m.memberVer = m.dirtyVer
	v := m.dirtyVer
	el, bytes := m.resyncElapsed, m.bytesResynced
	m.mu.Unlock()
	m.commitMeta(ctx, v)
	m.log.WithFields(logrus.Fields{"leg": legName(t), "mode": mode, "bytes": bytes, "elapsed": el.Round(time.Millisecond)}).Info("mirror: resync complete")
	m.cond.L.Lock()
	m.cond.Broadcast()
	m.cond.L.Unlock()
}

// cleaner clears bitmap bits of chunks idle for BitmapIdle and flushed on
// both legs since their last write, while both legs are in sync.
func (m *Mirror) cleaner() {
	defer m.wg.Done()
	ctx := m.bgCtx
	tick := time.NewTicker(max(m.opts.BitmapIdle/2, 20*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		m.mu.Lock()
		if m.target >= 0 || m.pendDrop || !m.allInSyncLocked() {
			m.mu.Unlock()
			continue
		}
		limit := time.Now().Add(-m.opts.BitmapIdle).UnixNano()
		var cand []int64
		needFlush := false
		for c := int64(0); c < m.nchunks; c++ {
			if m.bitmap[c/64] == 0 {
				c += 63 - c%64
				continue
			}
			if m.bitmap.get(c) && m.inflight[c] == 0 && m.chunkTime[c] < limit {
				cand = append(cand, c)
				if m.chunkSeq[c] > m.flushedSeq {
					needFlush = true
				}
			}
		}
		m.mu.Unlock()
		if len(cand) == 0 {
			continue
		}
		if needFlush {
			if err := m.flush(ctx); err != nil {
				continue
			}
		}
		m.mu.Lock()
		cleared := 0
		if m.target < 0 && m.allInSyncLocked() {
			for _, c := range cand {
				if m.inflight[c] == 0 && m.chunkSeq[c] <= m.flushedSeq && m.chunkTime[c] < limit {
					m.bitmap.clear(c)
					cleared++
				}
			}
		}
		var v uint64
		if cleared > 0 {
			m.dirtyVer++
			v = m.dirtyVer
		}
		m.mu.Unlock()
		if v > 0 {
			m.commitMeta(ctx, v)
		}
	}
}

// Reattach brings a failed or missing leg back. A leg that only missed
// what the bitmap records is resynced incrementally; one with other or no
// metadata (a blank replacement) fully. The resync runs in the background.
func (m *Mirror) Reattach(ctx context.Context, d blockdev.Device) error {
	if err := writable(d); err != nil {
		return err
	}
	h, herr := readHeader(ctx, d)
	if herr != nil && !errors.Is(herr, ErrNoMetadata) {
		return herr
	}
	return m.reattach(ctx, d, h, -1)
}

// reattach installs d, whose metadata is h (nil: none), as the failed leg
// want (-1: the failed leg h names, or any failed leg).
func (m *Mirror) reattach(ctx context.Context, d blockdev.Device, h *header, want int) error {
	// Fence the returning device like the others before it is written
	// (owner.go): its session may be a new I_T nexus, unregistered.
	reserved, err := m.reserveReturning(ctx, d)
	if err != nil {
		return err
	}
	installed := false
	defer func() {
		if reserved && !installed {
			d.(blockdev.Reserver).Release(ctx, m.owner.Assembly)
		}
	}()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return blockdev.ErrClosed
	}
	i := -1
	for k, l := range m.legs {
		if !l.live {
			if h != nil && h.Index != k || want >= 0 && k != want {
				continue
			}
			i = k
		}
	}
	if i < 0 {
		m.mu.Unlock()
		if h != nil {
			return fmt.Errorf("mirror: leg %s is not failed", legName(h.Index))
		}
		return errors.New("mirror: no failed leg to reattach")
	}
	if alignDown(d.Size(), m.unit)-2*m.unit-2*m.bitmapBytes < m.size || d.BlockSize() > m.bs {
		m.mu.Unlock()
		return fmt.Errorf("%w: leg %s has %d bytes of %d-byte blocks", ErrTooSmall, legName(i), d.Size(), d.BlockSize())
	}
	mode := "full"
	if h != nil {
		if h.Mirror != m.id || h.Leg != m.legUUID[i] {
			m.mu.Unlock()
			return fmt.Errorf("%w: device is leg %s of mirror %s, want leg %s (%s) of %s", ErrMismatch, legName(h.Index), h.Mirror, legName(i), m.legUUID[i], m.id)
		}
		sameGen := h.Gen == m.gen && h.GenID == m.genID
		dropped := h.Gen == m.dropGen && h.GenID == m.dropGenID
		switch {
		case sameGen || dropped:
			mode = "incremental"
		case h.InSync&(1<<(1-i)) == 0 && h.InSync&(1<<i) != 0:
			m.mu.Unlock()
			return fmt.Errorf("%w: the returning %s; the mirror (leg %s) is at generation %d since %s. Reassemble with Prefer to choose",
				ErrSplitBrain, describe(i, h), legName(1-i), m.gen, fmtTime(m.genTime))
		}
	} else {
		m.legUUID[i] = newUUID()
	}
	m.legWWID[i] = wwidOf(d)
	old := m.legs[i]
	m.legs[i] = &leg{dev: d, live: true}
	m.reserved[i], installed = reserved, true
	if h != nil {
		m.legs[i].nextSlot = h.slot ^ 1
	}
	closeOld := old.dev != nil && old.dev != d && !old.closed
	old.closed = old.closed || closeOld
	p := &m.probe[i]
	p.held, p.lastErr, p.attempts = "", nil, 0
	p.splitAt = time.Time{}
	m.splitMark[i] = false
	p.readds++
	if m.inSync&(1<<i) != 0 && m.pendDrop && h != nil && h.Gen == m.gen && h.GenID == m.genID {
		// Degraded start, never written, and the same leg at the same
		// generation: it is as good as the other.
		m.pendDrop = false
		if m.bitmap.count() > 0 {
			m.startResyncLocked(i, m.bitmap.clone(), "crash")
		}
	} else {
		if m.inSync&(1<<i) != 0 {
			// Degraded start, never written, but a blank device or
			// another generation: record the leg as dropped first,
			// it holds nothing the mirror can rely on.
			m.dropLocked(i)
			m.pendDrop = false
			if mode == "incremental" {
				mode = "full"
			}
		}
		if mode == "full" {
			m.bitmap.setAll(m.nchunks)
			m.dropGen, m.dropGenID = 0, 0
		}
		m.inSync &^= 1 << i
		m.startResyncLocked(i, m.bitmap.clone(), mode)
	}
	m.dirtyVer++
	m.memberVer = m.dirtyVer
	v := m.dirtyVer
	total := m.resyncTotal
	m.mu.Unlock()
	if closeOld {
		old.dev.Close()
	}
	m.log.WithFields(logrus.Fields{"leg": legName(i), "mode": mode, "chunks": total}).Info("mirror: leg reattached, resyncing")
	return m.commitMeta(ctx, v)
}

// WaitResync blocks until no resync is running (or ctx ends), calling
// progress (when not nil) about every interval.
func (m *Mirror) WaitResync(ctx context.Context, interval time.Duration, progress func(Status)) error {
	if interval <= 0 {
		interval = time.Second
	}
	tick := time.NewTicker(min(interval, 50*time.Millisecond))
	defer tick.Stop()
	last := time.Now()
	for {
		m.mu.Lock()
		running := m.target >= 0
		m.mu.Unlock()
		if progress != nil && (!running || time.Since(last) >= interval) {
			progress(m.Status())
			last = time.Now()
		}
		if !running {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// CheckResult reports a scrub.
type CheckResult struct {
	Chunks         int64         `json:"chunks"`          // chunks compared
	Skipped        int64         `json:"skipped"`         // chunks not held in sync by both legs
	BytesCompared  int64         `json:"bytes_compared"`  // per leg
	Mismatches     int64         `json:"mismatches"`      // chunks whose checksums differ
	MismatchBlocks int64         `json:"mismatch_blocks"` // differing blocks within them
	FirstOffsets   []int64       `json:"first_offsets"`   // offsets of the first differing blocks
	Repaired       int64         `json:"repaired"`        // chunks rewritten from leg A (or the in-sync leg)
	Elapsed        time.Duration `json:"elapsed_ns"`
}

// Check scrubs the mirror: it compares the CRC32C of every chunk on both
// legs (each chunk under the range lock) and, with repair, rewrites a
// differing chunk on the other leg from leg A.
func (m *Mirror) Check(ctx context.Context, repair bool) (CheckResult, error) {
	var res CheckResult
	start := time.Now()
	defer func() { res.Elapsed = time.Since(start) }()
	bufs := [2][]byte{make([]byte, m.chunk), make([]byte, m.chunk)}
	for c := int64(0); c < m.nchunks; c++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		off := c * m.chunk
		n := min(m.chunk, m.size-off)
		r, err := m.rl.lock(ctx, off, n)
		if err != nil {
			return res, err
		}
		m.mu.Lock()
		both := m.readableLocked(0, c, c) && m.readableLocked(1, c, c)
		la, lb := m.legs[0], m.legs[1]
		if both && repair {
			// A repair may write leg B: count it as a write so a
			// Split barrier drains it (and leaves a split leg alone).
			if err := m.waitBarrierLocked(ctx); err != nil {
				m.mu.Unlock()
				m.rl.unlock(r)
				return res, err
			}
			both = m.readableLocked(0, c, c) && m.readableLocked(1, c, c) && m.legs[1] == lb
			if both {
				m.writers++
			}
		}
		m.mu.Unlock()
		if !both {
			m.rl.unlock(r)
			res.Skipped++
			continue
		}
		endChunk := func() {
			if repair {
				m.mu.Lock()
				m.endWriterLocked()
				m.mu.Unlock()
			}
			m.rl.unlock(r)
		}
		var errs [2]error
		done := make(chan struct{})
		go func() { errs[1] = lb.dev.ReadAt(ctx, bufs[1][:n], off); close(done) }()
		errs[0] = la.dev.ReadAt(ctx, bufs[0][:n], off)
		<-done
		if err := errors.Join(errs[0], errs[1]); err != nil {
			endChunk()
			return res, fmt.Errorf("mirror: check chunk %d: %w", c, err)
		}
		res.Chunks++
		res.BytesCompared += n
		a, b := bufs[0][:n], bufs[1][:n]
		if crc32.Checksum(a, castagnoli) != crc32.Checksum(b, castagnoli) || !bytes.Equal(a, b) {
			res.Mismatches++
			bs := int64(m.bs)
			for k := int64(0); k < n; k += bs {
				if !bytes.Equal(a[k:k+bs], b[k:k+bs]) {
					res.MismatchBlocks++
					if len(res.FirstOffsets) < 10 {
						res.FirstOffsets = append(res.FirstOffsets, off+k)
					}
				}
			}
			m.log.Warnf("mirror: check: chunk %d (offset %d) differs between the legs", c, off)
			if repair {
				if err := lb.dev.WriteAt(ctx, a, off, true); err != nil {
					endChunk()
					return res, fmt.Errorf("mirror: repair chunk %d: %w", c, err)
				}
				res.Repaired++
			}
		}
		endChunk()
	}
	return res, nil
}
