package mirror

import (
	"context"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

// Split and Rejoin (issue 20 item 5): a consistent backup without array
// snapshots, like splitting a third mirror off in a SAN.
//
// Split(B) raises a write barrier: no write starts (WriteAt and the
// non-blocking path alike, read repair and Check's repair too), every write
// already started ends on both legs, and both legs are flushed, so B holds
// every acknowledged write durably. B's header is written once more, with
// flagSplit (its last write: a reader of B alone knows it is frozen and
// since when). Then B leaves the write set the way a
// failed leg does (not live: no reads, no writes, no metadata updates) but
// held out of automatic re-add as "split", and the barrier is lifted. At
// that instant both legs hold the same data, so the bitmap is emptied; from
// then on it marks exactly the chunks written since the split. Leg A's
// metadata records that B was dropped at the generation B's own header
// carries, as after a failure, so a Rejoin (or a restart of the owner,
// which does not remember the split) resyncs B incrementally.
//
// B is left a frozen, crash-consistent image of the split instant: its data
// and its own metadata are those of that instant, and nothing the mirror
// does writes it until Rejoin. A reader opens it with OpenReadOnly(B, nil)
// (lunbridge pull --mirror-leg), which reads the exported size from B's
// header and writes nothing, beside the running owner. A persistent
// reservation the owner holds on B (Options.Reserve) stays: other
// initiators may read B but not write it.
//
// Rejoin(B) reattaches B's still open device with an incremental resync of
// the chunks the bitmap marked since the split, writes continuing.

// heldSplit is probeState.held of a split leg.
const heldSplit = "split by operator"

// waitBarrierLocked waits until no Split barrier stands or ctx ends. m.mu
// held (released while waiting).
func (m *Mirror) waitBarrierLocked(ctx context.Context) error {
	if !m.barrier {
		return nil
	}
	stop := context.AfterFunc(ctx, func() {
		m.mu.Lock()
		m.cond.Broadcast()
		m.mu.Unlock()
	})
	defer stop()
	for m.barrier {
		if err := ctx.Err(); err != nil {
			return err
		}
		m.cond.Wait()
	}
	return nil
}

// endWriterLocked ends one write counted in m.writers and wakes a Split
// waiting for the last one. m.mu held.
func (m *Mirror) endWriterLocked() {
	m.writers--
	if m.barrier && m.writers == 0 {
		m.cond.Broadcast()
	}
}

// Split takes leg "A" or "B" out of the mirror at a write barrier and
// leaves it a frozen image of the mirror's content at that instant (see the
// top of this file). Both legs must be in sync, with no resync running.
// Writes wait while the barrier stands: the time to drain the writes in
// flight, flush both legs and write leg A's metadata.
func (m *Mirror) Split(ctx context.Context, name string) error {
	i, err := legIndex(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return blockdev.ErrClosed
	case m.barrier:
		m.mu.Unlock()
		return fmt.Errorf("mirror: a split is already in progress: %w", blockdev.ErrInvalid)
	case m.target >= 0 || m.pendDrop || !m.allInSyncLocked():
		m.mu.Unlock()
		return fmt.Errorf("%w: split of leg %s needs both legs in sync and no resync running", ErrNotInSync, legName(i))
	}
	m.barrier = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.barrier = false
		m.cond.Broadcast()
		m.mu.Unlock()
	}()

	// Drain: every write past the barrier check ends on both legs.
	m.mu.Lock()
	stop := context.AfterFunc(ctx, func() {
		m.mu.Lock()
		m.cond.Broadcast()
		m.mu.Unlock()
	})
	for m.writers > 0 && ctx.Err() == nil {
		m.cond.Wait()
	}
	stop()
	m.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	// Every acknowledged write durable on both legs, and the current
	// membership on both legs' headers (flush commits it).
	if err := m.flush(ctx); err != nil {
		return fmt.Errorf("mirror: split of leg %s: %w", legName(i), err)
	}

	// Leg i's last header says it was split off (flagSplit, with its
	// time): a reader of the leg alone can tell a frozen image from a
	// leg still written (OpenReadOnly).
	m.mu.Lock()
	m.splitMark[i] = true
	m.dirtyVer++
	v := m.dirtyVer
	m.mu.Unlock()
	if err := m.commitMeta(ctx, v); err != nil {
		m.mu.Lock()
		m.splitMark[i] = false
		m.mu.Unlock()
		return fmt.Errorf("mirror: split of leg %s: %w", legName(i), err)
	}

	m.mu.Lock()
	if !m.allInSyncLocked() || m.target >= 0 || m.writtenVer < m.memberVer {
		m.splitMark[i] = false
		m.mu.Unlock()
		return fmt.Errorf("%w: split of leg %s: a leg failed during the split", ErrNotInSync, legName(i))
	}
	if m.splitHook != nil {
		m.splitHook()
	}
	// Both legs hold the same data, durably, and no write is in flight:
	// the bitmap starts over, marking only what is written from now on.
	clear(m.bitmap)
	l := m.legs[i]
	l.live = false
	l.err = nil
	p := &m.probe[i]
	p.held, p.splitAt, p.lastErr = heldSplit, time.Now(), nil
	m.dropLocked(i) // leg A records that i was dropped at its current generation
	v = m.memberVer
	m.mu.Unlock()
	// Written on the live legs only; it also waits for a metadata write
	// already under way (which may include i) to end, so nothing reaches
	// leg i once Split returns.
	if err := m.commitMeta(ctx, v); err != nil {
		return fmt.Errorf("mirror: split of leg %s: %w", legName(i), err)
	}
	m.log.Infof("mirror: leg %s split off: a frozen image of the mirror at %s; writes go on to leg %s only", legName(i), time.Now().UTC().Format(time.RFC3339Nano), legName(1-i))
	return nil
}

// Rejoin brings split leg "A" or "B" back: its device (still open) is
// reattached with an incremental resync of the chunks written since the
// split, writes continuing. A split leg that was removed since is reopened
// as AddLeg does.
func (m *Mirror) Rejoin(ctx context.Context, name string) error {
	i, err := legIndex(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	l := m.legs[i]
	switch {
	case m.closed:
		m.mu.Unlock()
		return blockdev.ErrClosed
	case l.live || m.probe[i].splitAt.IsZero():
		m.mu.Unlock()
		return fmt.Errorf("mirror: leg %s is not split: %w", legName(i), blockdev.ErrInvalid)
	case l.dev == nil || l.closed:
		// Removed since the split: reopen it.
		m.mu.Unlock()
		return m.AddLeg(ctx, name)
	}
	dev := l.dev
	m.mu.Unlock()
	h, err := readHeader(ctx, dev)
	if err != nil {
		return fmt.Errorf("mirror: rejoin leg %s: %w", legName(i), err)
	}
	if h.Mirror != m.id || h.Index != i {
		return fmt.Errorf("%w: rejoin leg %s: the device is leg %s of mirror %s", ErrMismatch, legName(i), legName(h.Index), h.Mirror)
	}
	return m.reattach(ctx, dev, h, i)
}
