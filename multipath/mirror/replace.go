package mirror

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev"
)

// Replace (issue 20 item 4), like mdadm --manage --replace/--add of a new
// disk: a failed, removed or split leg is replaced by another LUN.
//
// The leg must be out of service first (FailLeg, or a failure): replace
// never takes a healthy leg out by itself, so the mirror is degraded only
// when the operator (or the failure) made it so. The other leg must be in
// sync: it is the source of the copy.
//
// The old leg's device is closed before the new one is used (a session of
// a failed leg may still be open). The new device is refused when it
// is read-only, too small for the exported size plus the metadata, the
// same LUN as the surviving leg (same Device, same WWID, or a copy of the
// surviving leg's metadata), or carries another mirror's metadata (unless
// ReplaceOptions.Force; an owner of that mirror alive on this host is
// refused even then). A refused device is closed and the old leg stays
// failed (its device closed, as after RemoveLeg).
//
// The new leg then gets a new leg UUID and its WWID is recorded; it is
// fenced with the persistent reservation like a returning leg
// (reserveReturning), both of its metadata slots are written with the
// leg marked not in sync and every chunk dirty, and it is fully resynced
// from the surviving leg in the background, writes continuing (they reach
// both legs; the resync copies each chunk under the range lock). Until the
// resync ends, the new leg's metadata says it is a resync target: a crash
// leaves it not in sync, and the next assembly resumes the copy from the
// surviving leg (the new leg alone is refused with ErrNotInSync). Status
// shows the leg "resyncing" and the resync in mode "replace".
//
// Automatic re-add (Options.Reopen) is held off for the leg while the
// replace runs; ReplaceOptions.Installed tells the caller when to point its
// Reopen at the new device, before the leg can be probed again.

// heldReplacing is probeState.held while ReplaceLeg runs.
const heldReplacing = "being replaced"

// ReplaceOptions tune ReplaceLegWith.
type ReplaceOptions struct {
	// Force accepts a device that carries another mirror's metadata
	// (overwritten); an owner of that mirror alive on this host is
	// refused even then.
	Force bool
	// Open, when set, opens the new device; ReplaceLegWith's dev is then
	// ignored. It is called after the old leg's device is closed, with
	// automatic re-add held off for the leg.
	Open func(ctx context.Context) (blockdev.Device, error)
	// Installed, when set, is called once the new device is the leg,
	// before automatic re-add can reopen the leg again: the caller points
	// its Options.Reopen at the new device.
	Installed func()
}

// ReplaceLeg replaces failed (or removed, or split) leg "A" or "B" with
// dev and fully resyncs it from the other leg (see the top of this file).
// It returns once dev is the leg and its metadata is written; the resync
// runs in the background (WaitResync, Status). dev is closed when refused.
func (m *Mirror) ReplaceLeg(ctx context.Context, name string, dev blockdev.Device) error {
	return m.ReplaceLegWith(ctx, name, dev, ReplaceOptions{})
}

// ReplaceLegWith is ReplaceLeg with options.
func (m *Mirror) ReplaceLegWith(ctx context.Context, name string, dev blockdev.Device, o ReplaceOptions) (err error) {
	if o.Open != nil {
		dev = nil // opened below
	}
	closeDev := func() {
		if dev != nil {
			dev.Close()
		}
	}
	i, err := legIndex(name)
	if err != nil {
		closeDev()
		return err
	}
	if o.Open == nil && dev == nil {
		return fmt.Errorf("mirror: replace leg %s: no device: %w", legName(i), blockdev.ErrInvalid)
	}
	// One reopen at a time: the prober does not reopen the leg meanwhile.
	select {
	case m.probeSem <- struct{}{}:
	case <-ctx.Done():
		closeDev()
		return ctx.Err()
	}
	defer func() { <-m.probeSem }()

	s := 1 - i
	m.mu.Lock()
	l := m.legs[i]
	var refuse error
	switch {
	case m.closed:
		refuse = blockdev.ErrClosed
	case l.live:
		refuse = fmt.Errorf("mirror: leg %s is active: fail it first (lunbridge mirror fail %s), then replace it: %w", legName(i), legName(i), blockdev.ErrInvalid)
	case m.barrier:
		refuse = fmt.Errorf("mirror: a split is in progress: %w", blockdev.ErrInvalid)
	case !m.legs[s].live || m.inSync&(1<<s) == 0:
		refuse = fmt.Errorf("%w: replace leg %s: leg %s, the source of the copy, is not in sync", ErrNotInSync, legName(i), legName(s))
	}
	if refuse != nil {
		m.mu.Unlock()
		closeDev()
		return refuse
	}
	prevHeld := m.probe[i].held
	m.probe[i].held = heldReplacing
	var old blockdev.Device
	if l.dev != nil && !l.closed {
		old, l.closed = l.dev, true
	}
	// The old LUN leaves the mirror: it keeps no reservation of ours
	// (best effort: a failed leg may not answer).
	releaseOld := old != nil && m.reserved[i]
	m.reserved[i] = m.reserved[i] && !releaseOld
	survivor := m.legs[s].dev
	m.mu.Unlock()
	installed := false
	defer func() {
		if installed {
			return
		}
		closeDev()
		m.mu.Lock()
		if m.probe[i].held == heldReplacing {
			m.probe[i].held = prevHeld
			if prevHeld == "" {
				m.scheduleProbeLocked(i)
			}
		}
		m.mu.Unlock()
	}()
	if releaseOld {
		rctx, cancel := context.WithTimeout(ctx, probeTimeout)
		if err := old.(blockdev.Reserver).Release(rctx, m.owner.Assembly); err != nil {
			m.log.WithError(err).Warnf("mirror: replace leg %s: releasing the old LUN's persistent reservation", legName(i))
		}
		cancel()
	}
	if old != nil {
		closeBounded(ctx, old)
	}
	if o.Open != nil {
		if dev, err = o.Open(ctx); err != nil {
			dev = nil
			return fmt.Errorf("mirror: replace leg %s: %w", legName(i), err)
		}
		if dev == nil {
			return fmt.Errorf("mirror: replace leg %s: open returned no device: %w", legName(i), blockdev.ErrUnavailable)
		}
	}
	if err := m.checkReplacement(ctx, i, dev, survivor, o.Force); err != nil {
		return err
	}

	reserved, err := m.reserveReturning(ctx, dev)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed || m.legs[i] != l || m.legs[i].live || !m.legs[s].live || m.inSync&(1<<s) == 0 {
		m.mu.Unlock()
		if reserved {
			dev.(blockdev.Reserver).Release(ctx, m.owner.Assembly)
		}
		return fmt.Errorf("mirror: replace leg %s: the mirror changed meanwhile: %w", legName(i), blockdev.ErrUnavailable)
	}
	if m.inSync&(1<<i) != 0 {
		// Degraded start, never written (pendDrop): the surviving leg
		// records now that leg i is gone.
		m.dropLocked(i)
		m.pendDrop = false
	}
	m.legUUID[i] = newUUID()
	m.legWWID[i] = wwidOf(dev)
	m.legs[i] = &leg{dev: dev, live: true}
	m.reserved[i] = reserved
	installed = true
	m.bitmap.setAll(m.nchunks)
	m.dropGen, m.dropGenID = 0, 0 // no earlier device of leg i may come back incrementally
	p := &m.probe[i]
	p.held, p.removed, p.lastErr, p.attempts, p.delay = "", false, nil, 0, 0
	p.splitAt = time.Time{}
	m.splitMark[i] = false
	m.startResyncLocked(i, m.bitmap.clone(), "replace")
	m.dirtyVer++
	m.memberVer = m.dirtyVer
	v1 := m.dirtyVer
	total, id := m.resyncTotal, m.legUUID[i]
	m.mu.Unlock()
	if o.Installed != nil {
		o.Installed()
	}
	m.log.WithFields(logrus.Fields{"leg": legName(i), "uuid": id, "chunks": total}).Info("mirror: leg replaced, full resync")
	// Both slots of the new leg: no metadata it carried before can win.
	if err := m.commitMeta(ctx, v1); err != nil {
		return err
	}
	m.mu.Lock()
	m.dirtyVer++
	v2 := m.dirtyVer
	m.mu.Unlock()
	if err := m.commitMeta(ctx, v2); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if nl := m.legs[i]; nl.dev != dev || !nl.live {
		cause := nl.err
		if cause == nil {
			cause = blockdev.ErrUnavailable
		}
		return fmt.Errorf("mirror: replace leg %s: the new leg failed: %w", legName(i), cause)
	}
	return nil
}

// checkReplacement refuses a device that cannot become leg i (see the top
// of this file); survivor is the other leg's device.
func (m *Mirror) checkReplacement(ctx context.Context, i int, d, survivor blockdev.Device, force bool) error {
	s := 1 - i
	if err := writable(d); err != nil {
		return fmt.Errorf("mirror: replace leg %s: %w", legName(i), err)
	}
	m.mu.Lock()
	survWWID, id, survUUID := m.legWWID[s], m.id, m.legUUID[s]
	m.mu.Unlock()
	if w := wwidOf(d); d == survivor || SameLUN(d, survivor) || w != "" && w == survWWID {
		if w != "" {
			return fmt.Errorf("%w: the new leg %s is leg %s's LUN (WWID %s)", ErrSameLUN, legName(i), legName(s), w)
		}
		return fmt.Errorf("%w: the new leg %s is leg %s's device", ErrSameLUN, legName(i), legName(s))
	}
	if alignDown(d.Size(), m.unit)-2*m.unit-2*m.bitmapBytes < m.size || d.BlockSize() > m.bs {
		return fmt.Errorf("%w: the new leg %s has %d bytes of %d-byte blocks; the mirror needs %d bytes of blocks of at most %d bytes (%d exported plus the metadata)",
			ErrTooSmall, legName(i), d.Size(), d.BlockSize(), m.size+2*m.unit+2*m.bitmapBytes, m.bs, m.size)
	}
	h, err := readHeader(ctx, d)
	switch {
	case errors.Is(err, ErrNoMetadata):
		return nil
	case err != nil:
		// Damaged metadata (checksum, version, resized) or unreadable:
		// overwritten only with force.
		if !force {
			return fmt.Errorf("%w: the new leg %s: its mirror metadata cannot be read (%w); pass --force (Force) to overwrite it", ErrHasMetadata, legName(i), err)
		}
		return nil
	}
	if h.Mirror == id {
		if h.Leg == survUUID {
			return fmt.Errorf("%w: the new leg %s carries leg %s's metadata of this mirror (the same LUN, or a copy of it)", ErrSameLUN, legName(i), legName(s))
		}
		return nil // an earlier device of this leg: overwritten by the full resync
	}
	var owner *Owner
	if os := activeOwners([2]*header{h}); len(os) > 0 {
		owner = &os[0]
	}
	switch {
	case owner != nil && m.opts.env.state(*owner) == ownerAlive:
		return fmt.Errorf("%w: the new leg %s is leg %s of mirror %s, in use by %s, which is running on this host", ErrOwned, legName(i), legName(h.Index), h.Mirror, *owner)
	case force:
		m.log.Warnf("mirror: replace leg %s: overwriting leg %s of mirror %s (forced)", legName(i), legName(h.Index), h.Mirror)
		return nil
	case owner != nil:
		return fmt.Errorf("%w: the new leg %s is leg %s of mirror %s, in use by %s; if that mirror is gone, pass --force (Force) to overwrite it", ErrOwned, legName(i), legName(h.Index), h.Mirror, *owner)
	default:
		return fmt.Errorf("%w: the new leg %s is leg %s of mirror %s; pass --force (Force) to overwrite it", ErrHasMetadata, legName(i), legName(h.Index), h.Mirror)
	}
}
