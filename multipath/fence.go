package multipath

import (
	"context"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

// fenceWait bounds how long a write waits for its failed nexus to be
// proven dead while some path is usable.
const fenceWait = 20 * time.Second

// fence blocks a write that failed on n until n is proven dead (see the
// package doc, "No ghost writes"). It starts the fencing once per nexus.
func (d *Device) fence(ctx context.Context, p *Path, n *nexus, noPathSince *time.Time) error {
	if n.isDead() {
		return nil
	}
	n.fenceOnce.Do(func() {
		d.mu.Lock()
		closed := d.closed
		if !closed {
			d.wg.Add(1)
		}
		d.mu.Unlock()
		if !closed {
			go d.runFence(p, n)
		}
	})
	start := time.Now()
	bound := fenceWait
	if t := d.opts.NoPathTimeout; t < 0 {
		bound = 1 << 62
	} else if t > bound {
		bound = t
	}
	for {
		d.mu.Lock()
		ch, closed, up := d.changed, d.closed, d.anyUsableLocked()
		d.mu.Unlock()
		if closed {
			return blockdev.ErrClosed
		}
		left := bound - time.Since(start)
		if !up {
			if noPathSince.IsZero() {
				*noPathSince = time.Now()
			}
			if t := d.opts.NoPathTimeout; t > 0 {
				left = min(left, t-time.Since(*noPathSince))
			}
		}
		if left <= 0 {
			d.mu.Lock()
			err := d.noPathErrLocked(time.Since(start))
			d.mu.Unlock()
			return fmt.Errorf("write held after a transport error on path %d (%s) whose nexus could not be proven dead: %w", p.idx, p.ep.Portal(), err)
		}
		tm := time.NewTimer(left)
		select {
		case <-n.dead:
			tm.Stop()
			return nil
		case <-ctx.Done():
			tm.Stop()
			return ctx.Err()
		case <-ch:
		case <-tm.C:
		}
		tm.Stop()
	}
}

// runFence proves n dead: reinstatement with p's ISID through the portal of
// another live path in the same target portal group at once (the path's own
// reinstatement loop tries its own portal meanwhile), then, after
// FenceTimeout, LOGICAL UNIT RESET through a live path until one completes.
func (d *Device) runFence(p *Path, n *nexus) {
	defer d.wg.Done()
	if tf, ok := n.conn.(timeFencer); ok {
		at, how := tf.fenceAfter()
		if at.IsZero() { // nothing bounds the association: never proven
			select {
			case <-n.dead:
			case <-d.ctx.Done():
			}
			return
		}
		tm := time.NewTimer(time.Until(at))
		defer tm.Stop()
		select {
		case <-n.dead:
		case <-d.ctx.Done():
		case <-tm.C:
			d.provedBy(p, n, how, fenceByKATO)
		}
		return
	}
	d.mu.Lock()
	target, tpgt := p.target, p.tpgt
	var via []*Path
	for _, q := range d.paths {
		if q != p && q.nx != nil && q.target == target && q.tpgt == tpgt {
			via = append(via, q)
		}
	}
	d.mu.Unlock()
	isid := p.ep.ISID()
	for _, q := range via {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if n.isDead() {
				return
			}
			ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
			defer cancel()
			t, g, err := q.ep.fenceLogin(ctx, isid)
			if err != nil {
				d.log.WithError(err).Debugf("fence: login with path %d's ISID through %s failed", p.idx, q.ep.Portal())
				return
			}
			if t == target && g == tpgt {
				d.proved(p, n, fmt.Sprintf("session reinstated through path %d (%s)", q.idx, q.ep.Portal()), false)
			}
		}()
	}
	tm := time.NewTimer(d.opts.FenceTimeout)
	defer tm.Stop()
	select {
	case <-n.dead:
		return
	case <-d.ctx.Done():
		return
	case <-tm.C:
	}
	for !n.isDead() {
		d.mu.Lock()
		var q *Path
		var qn *nexus
		for _, c := range d.paths {
			if c != p && c.nx != nil {
				q, qn = c, c.nx
				break
			}
		}
		ch := d.changed
		d.mu.Unlock()
		if q != nil {
			ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
			err := qn.conn.ResetLU(ctx)
			cancel()
			if err == nil {
				d.proved(p, n, fmt.Sprintf("LOGICAL UNIT RESET through path %d (%s)", q.idx, q.ep.Portal()), true)
				return
			}
			d.log.WithError(err).Warnf("fence: LOGICAL UNIT RESET through path %d failed", q.idx)
		}
		select {
		case <-n.dead:
			return
		case <-d.ctx.Done():
			return
		case <-ch:
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// proved records that n is gone and releases the writes held for it.
func (d *Device) proved(p *Path, n *nexus, how string, reset bool) {
	by := fenceByReinstate
	if reset {
		by = fenceByReset
	}
	d.provedBy(p, n, how, by)
}

const (
	fenceByReinstate = iota
	fenceByReset
	fenceByKATO
)

func (d *Device) provedBy(p *Path, n *nexus, how string, by int) {
	// Count the fence before the held writes go: a caller whose write
	// returns must find it in Status (TestNoGhostWrite read it too early).
	if !n.proveDeadThen(how, func() {
		d.mu.Lock()
		switch by {
		case fenceByReset:
			d.fencesReset++
		case fenceByKATO:
			d.fencesKATO++
		default:
			d.fencesReinstate++
		}
		d.mu.Unlock()
	}) {
		return
	}
	d.mu.Lock()
	d.notifyLocked()
	d.mu.Unlock()
	d.log.Infof("path %d (%s): old session proven dead: %s", p.idx, p.ep.Portal(), how)
}
