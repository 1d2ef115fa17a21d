package mirror

import (
	"context"
	"sync/atomic"

	"github.com/lunbridge/lunbridge/blockdev"
)

// The non-blocking path (blockdev.AsyncIO). A server or bench with many
// I/Os in flight starts them here and hears of each end through a
// callback, with no goroutine per I/O, as on a single LUN. It takes the
// common case only:
//
//   - a write whose chunks are already dirty in the bitmap on disk (so no
//     metadata write has to come first), whose range no other write holds,
//     to legs that all have a non-blocking path themselves. It is started
//     on every live leg at once; when the last leg reports, a write that
//     every leg took is acknowledged from that leg's callback. Anything
//     else at the end (a leg failed: fail it and make that durable first)
//     goes to a goroutine, as does any write not in the common case from
//     the start (it runs WriteAt). The rules are WriteAt's: the same range
//     lock, the same in-flight accounting that keeps the cleaner off the
//     chunk, the same outcome. While a Split barrier (split.go) stands,
//     every write goes to WriteAt, which waits for it to be lifted.
//   - a read from the leg ReadAt would pick. A failed read goes to a
//     goroutine that runs ReadAt (which tries the other leg and repairs).

var _ blockdev.AsyncIO = (*Mirror)(nil)

// StartReadAt implements blockdev.AsyncIO.
func (m *Mirror) StartReadAt(p []byte, off int64, done func(error)) {
	n := int64(len(p))
	if m.endsAtOnce(off, n, done) {
		return
	}
	c0, c1 := m.chunkRange(off, n)
	m.mu.Lock()
	pick := m.pickReadLegLocked(off, c0, c1, [maxLegs]bool{})
	var l *leg
	if pick >= 0 {
		l = m.legs[pick]
	}
	m.mu.Unlock()
	var a blockdev.AsyncIO
	if l != nil {
		a, _ = l.dev.(blockdev.AsyncIO)
	}
	if a == nil {
		go func() { done(m.ReadAt(context.Background(), p, off)) }()
		return
	}
	l.inflight.Add(1)
	l.lastEnd.Store(off + n)
	a.StartReadAt(p, off, func(err error) {
		l.inflight.Add(-1)
		if err == nil {
			done(nil)
			return
		}
		// The other leg, read repair, failing the leg: all of ReadAt.
		go func() { done(m.ReadAt(context.Background(), p, off)) }()
	})
}

// StartWriteAt implements blockdev.AsyncIO.
func (m *Mirror) StartWriteAt(p []byte, off int64, fua bool, done func(error)) {
	if m.endsAtOnce(off, int64(len(p)), done) {
		return
	}
	if !m.tryStartWrite(p, off, fua, done) {
		go func() { done(m.WriteAt(context.Background(), p, off, fua)) }()
	}
}

// endsAtOnce ends an I/O of n bytes at off that needs no leg (a closed
// mirror, a range outside it, nothing to do) by calling done, and reports
// whether it did.
func (m *Mirror) endsAtOnce(off, n int64, done func(error)) bool {
	if err := m.checkIO(off, n); err != nil {
		done(err)
		return true
	}
	if n == 0 {
		done(nil)
		return true
	}
	return false
}

// asyncWrite is one mirrored write in flight on the non-blocking path.
type asyncWrite struct {
	m       *Mirror
	r       *lockedRange
	off, n  int64
	c0, c1  int64
	done    func(error)
	idx     [maxLegs]int
	ls      [maxLegs]*leg
	inSync  [maxLegs]bool
	errs    [maxLegs]error
	nlegs   int
	pending atomic.Int32
}

// tryStartWrite starts the write on every leg when it is in the common
// case (see the top of this file) and reports whether it did.
func (m *Mirror) tryStartWrite(p []byte, off int64, fua bool, done func(error)) bool {
	n := int64(len(p))
	r := m.rl.tryLock(off, n)
	if r == nil {
		return false
	}
	c0, c1 := m.chunkRange(off, n)
	w := &asyncWrite{m: m, r: r, off: off, n: n, c0: c0, c1: c1, done: done}
	var legs [maxLegs]blockdev.AsyncIO
	m.mu.Lock()
	// A Split barrier sends the write to WriteAt, which waits it out.
	ok := !m.barrier && !m.pendDrop && m.memberVer <= m.writtenVer
	for c := c0; ok && c <= c1; c++ {
		ok = m.bitmap.get(c) && m.bitVer[c] <= m.writtenVer
	}
	for i, l := range m.legs {
		if !ok {
			break
		}
		if !l.live || (m.inSync&(1<<i) == 0 && i != m.target) {
			continue
		}
		a, isAsync := l.dev.(blockdev.AsyncIO)
		if !isAsync {
			ok = false
			break
		}
		legs[w.nlegs] = a
		w.idx[w.nlegs] = i
		w.ls[w.nlegs] = l
		w.inSync[w.nlegs] = m.inSync&(1<<i) != 0
		w.nlegs++
	}
	if !ok || w.nlegs == 0 {
		m.mu.Unlock()
		m.rl.unlock(r)
		return false
	}
	for c := c0; c <= c1; c++ {
		m.inflight[c]++
	}
	m.writers++ // ended by endWriteLocked
	m.mu.Unlock()
	m.asyncWrites.Add(1)
	w.pending.Store(int32(w.nlegs))
	for k := 0; k < w.nlegs; k++ {
		legs[k].StartWriteAt(p, off, fua, func(err error) {
			w.errs[k] = err
			if w.pending.Add(-1) == 0 {
				w.finish()
			}
		})
	}
	return true
}

// finish runs once every leg has reported, on the last one's callback: it
// must not block. A write every leg took, with no membership change to make
// durable, ends here; anything else ends on a goroutine.
func (w *asyncWrite) finish() {
	m := w.m
	clean := true
	for k := 0; k < w.nlegs; k++ {
		clean = clean && w.errs[k] == nil
	}
	if clean {
		m.mu.Lock()
		if m.memberVer <= m.writtenVer {
			m.endWriteLocked(w.c0, w.c1)
			m.mu.Unlock()
			m.rl.unlock(w.r)
			w.done(nil)
			return
		}
		m.mu.Unlock()
	}
	go func() {
		err := m.writeOutcome(context.Background(), w.off, w.n, w.idx[:w.nlegs], w.ls[:w.nlegs], w.inSync[:w.nlegs], w.errs[:w.nlegs])
		m.mu.Lock()
		m.endWriteLocked(w.c0, w.c1)
		m.mu.Unlock()
		m.rl.unlock(w.r)
		w.done(err)
	}()
}
