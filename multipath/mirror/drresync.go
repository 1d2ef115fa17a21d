package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

// The bitmap modes of the asynchronous leg: a failed remote and its
// reopening, and the chunk copy that returns the leg to journal mode.

// failLocked takes the remote out of service; it is probed again later.
// a.mu held.
func (a *Async) failLocked(err error) {
	if a.mode == AsyncFailed {
		return
	}
	a.lastErr = err
	a.log.WithError(err).Warn("mirror: asynchronous leg failed")
	a.dropJournalLocked(AsyncFailed, "remote failed")
	if a.probeDelay == 0 {
		a.probeDelay = a.opts.ProbeInterval
	}
	a.probeNext = time.Now().Add(a.probeDelay)
}

// probe makes one attempt to bring a failed remote back.
func (a *Async) probe(ctx context.Context) {
	a.mu.Lock()
	old, inflight := a.remote, a.inflight
	a.mu.Unlock()
	dev := old
	var err error
	if a.opts.Reopen != nil {
		// Outstanding replays fail once their device is closed.
		closeBounded(ctx, old)
		if inflight > 0 {
			err = errors.New("replays still outstanding")
		} else {
			ctx2, cancel := context.WithTimeout(ctx, probeTimeout)
			dev, err = a.opts.Reopen(ctx2)
			cancel()
			if err == nil && dev == nil {
				err = blockdev.ErrUnavailable
			}
		}
	} else if inflight > 0 {
		err = errors.New("replays still outstanding")
	}
	if err == nil {
		var h *asyncHeader
		if h, err = readAsyncHeader(ctx, dev); err == nil && (h.Leg != a.hdr.Leg || h.LegSize != a.hdr.LegSize) {
			err = fmt.Errorf("%w: the returning device is async leg %s, want %s", ErrAsyncMismatch, h.Leg, a.hdr.Leg)
		}
		if err == nil {
			if w := wwidOf(dev); w != "" && a.hdr.WWID != "" && w != a.hdr.WWID {
				err = fmt.Errorf("%w: the returning device has WWID %s, want %s", ErrAsyncMismatch, w, a.hdr.WWID)
			}
		}
		if err != nil && dev != old {
			dev.Close()
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ctx.Err() != nil {
		if err == nil && dev != old {
			a.remote = dev
		}
		return
	}
	if err != nil {
		a.lastErr = err
		a.probeDelay = min(2*a.probeDelay, a.opts.ProbeMaxInterval)
		a.probeNext = time.Now().Add(a.probeDelay)
		a.log.WithError(err).Debugf("mirror: asynchronous leg still unavailable, next attempt in %v", a.probeDelay)
		return
	}
	a.remote = dev
	a.readds++
	a.lastErr = nil
	a.probeDelay = 0
	a.mode = AsyncResync
	a.consistent = false
	a.reason = "re-added"
	a.gen++
	a.notifyLocked()
	a.log.Infof("mirror: asynchronous leg back: copying %d chunks", a.bitmap.count())
}

// resyncPass copies the marked chunks to the remote, the remote marked
// inconsistent first; when none is left it returns to journal mode.
func (a *Async) resyncPass(ctx context.Context) {
	a.mu.Lock()
	a.consistent = false
	stale := a.diskConsistent
	a.mu.Unlock()
	if stale {
		if err := a.writeMeta(ctx, false); err != nil {
			a.mu.Lock()
			a.failLocked(fmt.Errorf("metadata write: %w", err))
			a.mu.Unlock()
			return
		}
	}
	var cursor int64
	for ctx.Err() == nil {
		a.mu.Lock()
		if a.mode == AsyncFailed || a.mode == AsyncJournal {
			a.mu.Unlock()
			return
		}
		var batch []int64
		for c := cursor; c < a.nchunks && len(batch) < asyncResyncParallel; c++ {
			if a.bitmap.get(c) {
				batch = append(batch, c)
			}
		}
		if len(batch) == 0 && cursor > 0 {
			cursor = 0
			a.mu.Unlock()
			continue
		}
		if len(batch) == 0 {
			a.mu.Unlock()
			a.catchUp(ctx)
			return
		}
		gen := a.gen
		a.mu.Unlock()
		cursor = batch[len(batch)-1] + 1
		errs := make([]error, len(batch))
		var wg sync.WaitGroup
		for k, c := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[k] = a.copyChunk(ctx, c)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil && ctx.Err() == nil {
				a.mu.Lock()
				if a.gen == gen {
					a.failLocked(fmt.Errorf("resync: %w", err))
				}
				a.mu.Unlock()
				return
			}
		}
	}
}

// pendingLocked reports whether a journal entry not yet on the remote
// overlaps [off, off+n). a.mu held.
func (a *Async) pendingLocked(off, n int64) bool {
	for _, e := range a.q {
		if !e.done && e.kind != jFlush && e.off < off+n && off < e.off+e.n {
			return true
		}
	}
	return false
}

// copyChunk copies chunk c from the primary to the remote under the range
// lock (no write to it runs meanwhile; one that follows marks it again).
func (a *Async) copyChunk(ctx context.Context, c int64) error {
	off := c * a.chunk
	n := min(a.chunk, a.size-off)
	r, err := a.rl.lock(ctx, off, n)
	if err != nil {
		return err
	}
	defer a.rl.unlock(r)
	a.mu.Lock()
	// Journal entries on the chunk reach the remote first: none may land
	// after the copy (the range lock keeps new ones out meanwhile).
	for a.pendingLocked(off, n) && a.mode != AsyncFailed {
		if err := a.waitChange(ctx, 100*time.Millisecond); err != nil {
			a.mu.Unlock()
			return err
		}
	}
	if !a.bitmap.get(c) || a.mode == AsyncFailed {
		a.mu.Unlock()
		return nil
	}
	a.bitmap.clear(c)
	a.copying++
	dev := a.remote
	a.mu.Unlock()
	err = a.limit.wait(ctx, n)
	buf := make([]byte, n)
	if err == nil {
		if err = a.primary.ReadAt(ctx, buf, off); err != nil {
			err = fmt.Errorf("read primary: %w", err)
		} else {
			err = dev.WriteAt(ctx, buf, off, false)
		}
	}
	a.mu.Lock()
	a.copying--
	if err != nil {
		a.bitmap.set(c)
	} else {
		a.copied += n
		a.lastDone = time.Now()
	}
	a.notifyLocked()
	a.mu.Unlock()
	return err
}

// catchUp ends a resync: the remote is flushed and, when no chunk was
// marked meanwhile, the leg returns to journal mode, consistent as of now.
func (a *Async) catchUp(ctx context.Context) {
	a.mu.Lock()
	dev := a.remote
	a.mu.Unlock()
	if err := dev.Flush(ctx); err != nil {
		if ctx.Err() == nil {
			a.mu.Lock()
			a.failLocked(fmt.Errorf("flush: %w", err))
			a.mu.Unlock()
		}
		return
	}
	a.mu.Lock()
	if a.bitmap.count() > 0 || a.copying > 0 || (a.mode != AsyncPullAhead && a.mode != AsyncResync) {
		a.mu.Unlock()
		return
	}
	// Every acknowledged write is on the remote or in the journal (a
	// write still running holds its range and journals when it ends):
	// consistent once the entries journaled so far are replayed.
	a.mode = AsyncJournal
	a.reason = "caught up"
	a.consistentAt = a.next
	a.lastDone = time.Now()
	a.checkConsistentLocked()
	a.notifyLocked()
	a.mu.Unlock()
}
