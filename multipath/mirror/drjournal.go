package mirror

import (
	"context"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

// The journal of the asynchronous leg and its ordered replay on the
// remote; dropping it for a bitmap mode.

// jentry is one journal entry.
type jentry struct {
	pos   uint64
	kind  uint8 // jWrite, jZero, jFlush
	off   int64
	n     int64
	data  []byte
	fua   bool
	dep   uint64 // entries before this position complete first
	acked int64  // unix ns
	done  bool
	bytes int64 // accounted journal bytes
}

const (
	jWrite = iota
	jZero
	jFlush
)

// appendLocked journals e (journal mode) or marks its chunks. a.mu held.
func (a *Async) appendLocked(e *jentry) {
	switch a.mode {
	case AsyncJournal:
	case AsyncFailed:
		a.markLocked(a.bitmap, e)
		return
	default:
		// A copy is running: writes to chunks already copied are
		// replicated as they come, as long as the journal has room, so
		// the copy converges under writes; the rest is marked.
		if e.kind != jFlush && (a.dirtyLocked(e) || a.jbytes+e.n > a.budgetLocked() || len(a.q) >= a.opts.MaxEntries) {
			a.markLocked(a.bitmap, e)
			return
		}
	}
	e.pos = a.next
	a.next++
	e.acked = time.Now().UnixNano()
	e.bytes = int64(len(e.data)) + 64
	a.jbytes += e.bytes
	a.q = append(a.q, e)
	a.notifyLocked()
	a.startReplaysLocked(a.bgCtx)
}

func (a *Async) markLocked(bits bitset, e *jentry) {
	if e.kind == jFlush || e.n == 0 {
		return
	}
	for c := e.off / a.chunk; c <= (e.off+e.n-1)/a.chunk; c++ {
		bits.set(c)
	}
}

// dirtyLocked reports whether a chunk of e is marked. a.mu held.
func (a *Async) dirtyLocked(e *jentry) bool {
	if e.n == 0 {
		return false
	}
	for c := e.off / a.chunk; c <= (e.off+e.n-1)/a.chunk; c++ {
		if a.bitmap.get(c) {
			return true
		}
	}
	return false
}

// startReplaysLocked starts every journal entry that may start now (its
// dependencies complete, the window not full); false when none. a.mu held.
func (a *Async) startReplaysLocked(ctx context.Context) bool {
	started := false
	for a.mode != AsyncFailed && a.issue < a.next && a.inflight < asyncWindowEntries && a.infBytes < asyncWindowBytes {
		e := a.q[a.issue-a.base]
		if e.dep > a.base {
			break
		}
		if e.kind == jFlush && a.base < e.pos {
			break
		}
		a.issue++
		a.inflight++
		a.infBytes += e.n
		started = true
		gen, dev := a.gen, a.remote
		go a.replay(ctx, e, gen, dev)
	}
	return started
}

// replay applies one journal entry to the remote.
func (a *Async) replay(ctx context.Context, e *jentry, gen uint64, dev blockdev.Device) {
	var err error
	switch e.kind {
	case jWrite:
		err = dev.WriteAt(ctx, e.data, e.off, e.fua)
	case jZero:
		err = zeroLeg(ctx, dev, e.off, e.n, true)
	case jFlush:
		err = dev.Flush(ctx)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inflight--
	a.infBytes -= e.n
	a.notifyLocked()
	if a.gen != gen {
		a.stale-- // the journal was dropped meanwhile
		return
	}
	if err != nil {
		if ctx.Err() == nil {
			a.failLocked(fmt.Errorf("replay: %w", err))
		} else {
			a.dropJournalLocked(AsyncResync, "closing")
		}
		return
	}
	e.done = true
	a.replayed += e.n
	a.replayedN++
	a.lastDone = time.Now()
	for len(a.q) > 0 && a.q[0].done {
		h := a.q[0]
		a.q[0] = nil
		a.q = a.q[1:]
		a.base++
		a.jbytes -= h.bytes
		a.asOf = h.acked
	}
	if len(a.q) == 0 {
		a.q = nil // let the backing array go
	}
	a.checkConsistentLocked()
	a.startReplaysLocked(ctx)
}

// checkConsistentLocked ends the catch-up of a copy: once every entry
// journaled before the copy ended is on the remote, the remote is the
// primary's content after a prefix of its writes again. a.mu held.
func (a *Async) checkConsistentLocked() {
	if a.mode != AsyncJournal || a.consistent || a.base < a.consistentAt {
		return
	}
	a.consistent = true
	a.epoch++
	a.epochBase = a.consistentAt
	a.asOf = time.Now().UnixNano()
	a.metaDue = true
	a.log.Info("mirror: asynchronous leg caught up: consistent, journal mode")
	a.notifyLocked()
}

// dropJournalLocked leaves journal mode for a bitmap mode: the chunks of
// every entry the remote does not have yet are marked, the journal
// discarded. a.mu held.
func (a *Async) dropJournalLocked(mode, why string) {
	a.discardJournalLocked()
	if a.mode == AsyncJournal {
		a.lostAt = time.Now()
	}
	if mode != AsyncFailed {
		// The copy that follows makes the remote a mix of old and new.
		a.consistent = false
	}
	if a.mode != mode {
		a.log.Warnf("mirror: asynchronous leg: %s: %s mode (%d chunks to copy)", why, mode, a.bitmap.count())
	}
	a.mode = mode
	a.reason = why
	a.gen++
	a.notifyLocked()
}

// discardJournalLocked marks the chunks of every entry not on the remote
// and empties the journal; replays still running become stale. a.mu held.
func (a *Async) discardJournalLocked() {
	for _, e := range a.q {
		if !e.done {
			a.markLocked(a.bitmap, e)
		}
	}
	a.q = nil
	a.jbytes = 0
	a.base, a.issue = a.next, a.next
	a.stale = a.inflight
}
