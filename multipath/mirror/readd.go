package mirror

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

// Automatic re-add (md's --re-add from the write-intent bitmap, DRBD's
// reconnect), when Options.Reopen is set.
//
// A leg that fails (or was missing at assembly) is reopened by the prober
// goroutine after ProbeInterval, then after twice that, up to
// ProbeMaxInterval, until its device answers. The returning device must
// carry the same identity: mirror metadata naming this mirror and this
// leg's UUID and index, and (when both are known) the WWID the mirror
// recorded for the leg. It is then reattached like Reattach does: only the
// chunks the bitmap marked while the leg was away are copied, under the
// range lock, while writes go on. A device with another identity (another
// mirror's metadata, another WWID, no metadata, a split brain, too small,
// read-only) is refused with a logged error and the leg is not probed again
// until AddLeg.
//
// The operator verbs (like mdadm --manage): FailLeg marks a leg failed and
// holds it out of automatic re-add; RemoveLeg closes a failed leg's device
// and holds it too; AddLeg reopens (or, without Reopen, reattaches the
// still open device of) a failed leg now and lifts the hold.
//
// The prober runs until Close. Reopen gets a context that Close cancels; a
// Reopen that ignores it is abandoned (its device closed when it returns),
// so Close never waits for a stuck dial.

// Defaults of Options.ProbeInterval and Options.ProbeMaxInterval.
const (
	DefaultProbeInterval    = time.Second
	DefaultProbeMaxInterval = 30 * time.Second
)

// probeTimeout bounds one reopen attempt (a dial, a login, the header
// read) and the wait for a failed leg's old device to close.
const probeTimeout = 30 * time.Second

// Why a leg is held out of automatic re-add (probeState.held).
const (
	heldFailed  = "failed by operator"
	heldRemoved = "removed by operator"
)

// probeState is the automatic re-add state of one leg (m.mu).
type probeState struct {
	delay    time.Duration // current backoff
	next     time.Time     // next attempt
	attempts int           // since the leg failed
	held     string        // not probed while set: operator action or refusal
	lastErr  error
	readds   int // automatic and manual re-adds
	removed  bool
	splitAt  time.Time // split off by Split (split.go); zero once back
}

// errRefused marks a returning device that is not the leg (identity,
// split brain): it is not retried.
var errRefused = errors.New("mirror: returning device refused")

// scheduleProbeLocked plans the first reopen of leg i, just failed. m.mu held.
func (m *Mirror) scheduleProbeLocked(i int) {
	p := &m.probe[i]
	if p.delay == 0 {
		p.delay = m.opts.ProbeInterval
	}
	p.next = time.Now().Add(p.delay)
	p.attempts = 0
	m.wakeProber()
}

func (m *Mirror) wakeProber() {
	select {
	case m.probeWake <- struct{}{}:
	default:
	}
}

// probeWantedLocked reports whether the prober should reopen leg i. m.mu held.
func (m *Mirror) probeWantedLocked(i int) bool {
	return !m.closed && !m.legs[i].live && m.probe[i].held == ""
}

// prober reopens failed legs (see the top of this file).
func (m *Mirror) prober() {
	defer m.wg.Done()
	ctx := m.bgCtx
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		m.mu.Lock()
		now := time.Now()
		due, wait := -1, time.Hour
		for i := range m.legs {
			if !m.probeWantedLocked(i) {
				continue
			}
			if d := m.probe[i].next.Sub(now); d <= 0 {
				due = i
				break
			} else {
				wait = min(wait, d)
			}
		}
		m.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if due >= 0 {
			m.probeLeg(ctx, due, false)
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-m.probeWake:
		case <-timer.C:
		}
	}
}

// probeLeg makes one attempt to reopen and re-add leg i. manual (AddLeg)
// ignores and lifts a hold. It returns nil when the leg is live again.
func (m *Mirror) probeLeg(ctx context.Context, i int, manual bool) error {
	select {
	case m.probeSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-m.probeSem }()
	m.mu.Lock()
	l := m.legs[i]
	if m.closed {
		m.mu.Unlock()
		return blockdev.ErrClosed
	}
	if l.live {
		m.mu.Unlock()
		return nil
	}
	if !manual && m.probe[i].held != "" {
		m.mu.Unlock()
		return nil
	}
	var old blockdev.Device
	if l.dev != nil && !l.closed {
		// A session whose recovery gave up may still be open: close it
		// before dialling again (one session per ISID at the target).
		old, l.closed = l.dev, true
	}
	m.probe[i].attempts++
	m.mu.Unlock()

	if old != nil {
		closeBounded(ctx, old)
	}
	d, err := m.reopen(ctx, i)
	if err == nil {
		err = m.readd(ctx, i, d)
	}
	if ctx.Err() != nil && err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p := &m.probe[i]
	switch {
	case err == nil:
		return nil
	case m.legs[i].live:
		// Reattached meanwhile by someone else.
		return nil
	case errors.Is(err, errRefused):
		p.held = "refused: " + err.Error()
		p.lastErr = err
		m.log.WithError(err).Errorf("mirror: leg %s came back as another device; not probed again until it is added (lunbridge mirror add %s)", legName(i), legName(i))
	default:
		p.lastErr = err
		if p.delay == 0 {
			p.delay = m.opts.ProbeInterval
		} else {
			p.delay = min(2*p.delay, m.opts.ProbeMaxInterval)
		}
		p.next = time.Now().Add(p.delay)
		m.log.WithError(err).Debugf("mirror: leg %s still unavailable, next attempt in %v", legName(i), p.delay)
	}
	return err
}

// closeBounded closes d, waiting at most probeTimeout (or until ctx ends).
func closeBounded(ctx context.Context, d blockdev.Device) {
	done := make(chan struct{})
	go func() {
		d.Close()
		close(done)
	}()
	t := time.NewTimer(probeTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// reopen calls Options.Reopen for leg i with a deadline. A Reopen that
// outlives ctx is abandoned; the device it returns later is closed.
func (m *Mirror) reopen(ctx context.Context, i int) (blockdev.Device, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	type result struct {
		d   blockdev.Device
		err error
	}
	ch := make(chan result, 1)
	go func() {
		d, err := m.opts.Reopen(ctx, i)
		ch <- result{d, err}
	}()
	select {
	case r := <-ch:
		if r.err == nil && r.d == nil {
			r.err = fmt.Errorf("mirror: reopen of leg %s returned no device: %w", legName(i), blockdev.ErrUnavailable)
		}
		return r.d, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.d != nil {
				r.d.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// readd checks that d is leg i of this mirror and reattaches it. It closes
// d unless d became the leg. Errors wrapping errRefused are final.
func (m *Mirror) readd(ctx context.Context, i int, d blockdev.Device) (err error) {
	defer func() {
		if err == nil {
			return
		}
		m.mu.Lock()
		installed := m.legs[i].dev == d
		m.mu.Unlock()
		if !installed {
			d.Close()
		}
	}()
	h, err := readHeader(ctx, d)
	switch {
	case errors.Is(err, ErrNoMetadata):
		return fmt.Errorf("%w: leg %s: %w", errRefused, legName(i), err)
	case err != nil:
		return err
	}
	m.mu.Lock()
	id, legID, wwid := m.id, m.legUUID[i], m.legWWID[i]
	m.mu.Unlock()
	switch {
	case h.Mirror != id:
		return fmt.Errorf("%w: leg %s: %w: the device is leg %s of mirror %s, not of %s", errRefused, legName(i), ErrMismatch, legName(h.Index), h.Mirror, id)
	case h.Index != i || h.Leg != legID:
		return fmt.Errorf("%w: leg %s: %w: the device is leg %s (%s) of this mirror, want %s", errRefused, legName(i), ErrMismatch, legName(h.Index), h.Leg, legID)
	}
	if w := wwidOf(d); w != "" && wwid != "" && w != wwid {
		return fmt.Errorf("%w: leg %s: %w: WWID %s, the mirror recorded %s", errRefused, legName(i), ErrMismatch, w, wwid)
	}
	if err := writable(d); err != nil {
		return fmt.Errorf("%w: leg %s: %w", errRefused, legName(i), err)
	}
	err = m.reattach(ctx, d, h, i)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrSplitBrain), errors.Is(err, ErrTooSmall), errors.Is(err, ErrMismatch):
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	return err
}

// AddLeg brings failed (or removed, or refused) leg "A" or "B" back now,
// like mdadm --re-add: with Options.Reopen its device is reopened and,
// when it is the same leg, reattached with an incremental resync; without
// Reopen, a leg only failed by FailLeg is reattached on its still open
// device. A hold on automatic re-add is lifted either way; a refused
// device stays held.
func (m *Mirror) AddLeg(ctx context.Context, name string) error {
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
	case l.live:
		m.mu.Unlock()
		return fmt.Errorf("mirror: leg %s is not failed: %w", legName(i), blockdev.ErrInvalid)
	}
	m.probe[i].held, m.probe[i].removed = "", false
	m.probe[i].delay = 0
	reopen := m.opts.Reopen != nil
	dev := l.dev
	if l.closed {
		dev = nil
	}
	m.mu.Unlock()
	if reopen {
		return m.probeLeg(ctx, i, true)
	}
	if dev == nil {
		return fmt.Errorf("mirror: leg %s has no device and no way to reopen it: %w", legName(i), blockdev.ErrUnavailable)
	}
	h, err := readHeader(ctx, dev)
	if err != nil {
		return fmt.Errorf("mirror: leg %s: %w", legName(i), err)
	}
	if h.Mirror != m.id || h.Index != i {
		return fmt.Errorf("%w: leg %s: the device is leg %s of mirror %s", ErrMismatch, legName(i), legName(h.Index), h.Mirror)
	}
	return m.reattach(ctx, dev, h, i)
}

// RemoveLeg closes the device of failed leg "A" or "B" (like mdadm
// --remove) and holds it out of automatic re-add until AddLeg. An in-sync
// leg must be failed first.
func (m *Mirror) RemoveLeg(ctx context.Context, name string) error {
	i, err := legIndex(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	l := m.legs[i]
	if l.live {
		m.mu.Unlock()
		return fmt.Errorf("mirror: leg %s is active; fail it first: %w", legName(i), blockdev.ErrInvalid)
	}
	m.probe[i].held, m.probe[i].removed = heldRemoved, true
	var old blockdev.Device
	if l.dev != nil && !l.closed {
		old, l.closed = l.dev, true
	}
	m.mu.Unlock()
	if old != nil {
		closeBounded(ctx, old)
	}
	m.log.Infof("mirror: leg %s removed", legName(i))
	return nil
}

// LegDevice returns the current device of leg "A" or "B", nil when it has
// none or the mirror closed it (for callers that show a leg's own status,
// e.g. its paths). It must not be used for I/O.
func (m *Mirror) LegDevice(name string) blockdev.Device {
	i, err := legIndex(name)
	if err != nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if l := m.legs[i]; l.dev != nil && !l.closed {
		return l.dev
	}
	return nil
}
