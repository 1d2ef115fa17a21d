package multipath

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// usableLocked: the path has a session, is not held out of service, and
// its ALUA state (if any) allows I/O.
func (d *Device) usableLocked(p *Path) bool {
	return p.nx != nil && p.held == "" && (!p.hasALUA || p.alua.Active())
}

// rank orders usable paths: ALUA active/optimized (or no ALUA) before
// active/non-optimized, the preferred group first within each.
func rank(p *Path) int {
	if !p.hasALUA {
		return 0
	}
	r := 0
	if p.alua != scsi.StateActiveOptimized {
		r = 2
	}
	if !p.aluaPref {
		r++
	}
	return r
}

// groupLocked returns the usable paths of the best rank (the path group
// dm-multipath would use).
func (d *Device) groupLocked() []*Path {
	best := -1
	var out []*Path
	for _, p := range d.paths {
		if !d.usableLocked(p) {
			continue
		}
		r := rank(p)
		switch {
		case best < 0 || r < best:
			best, out = r, append(out[:0], p)
		case r == best:
			out = append(out, p)
		}
	}
	return out
}

func (d *Device) anyUsableLocked() bool {
	for _, p := range d.paths {
		if d.usableLocked(p) {
			return true
		}
	}
	return false
}

// activeLocked reports whether the selector sends I/O to p now.
func (d *Device) activeLocked(p *Path) bool {
	if d.opts.Policy == PolicyFailover {
		return d.cur == p
	}
	for _, q := range d.groupLocked() {
		if q == p {
			return true
		}
	}
	return false
}

// selectFailoverLocked keeps or replaces the failover policy's active
// path, applying the failback mode when the preferred path is back.
func (d *Device) selectFailoverLocked() {
	if d.opts.Policy != PolicyFailover {
		return
	}
	g := d.groupLocked()
	if len(g) == 0 {
		d.cur = nil
		return
	}
	best := g[0] // configuration order within the best rank
	now := time.Now()
	if d.cur == nil || !d.usableLocked(d.cur) {
		d.cur, d.curSince = best, now
		return
	}
	if best == d.cur {
		return
	}
	sw := rank(best) < rank(d.cur) // ALUA moved: follow it at once
	if !sw {
		switch d.failback {
		case "immediate":
			sw = true
		case "followover":
			sw = best.upSince.After(d.curSince)
		case "delay":
			sw = now.Sub(best.upSince) >= d.fbDelay
		}
	}
	if sw {
		d.log.Infof("failback: I/O moves from path %d (%s) to path %d (%s)", d.cur.idx, d.cur.ep.Portal(), best.idx, best.ep.Portal())
		d.cur, d.curSince = best, now
	}
}

// pick returns the path and nexus for the next I/O, waiting (at most
// NoPathTimeout since *noPathSince) while no path is usable.
func (d *Device) pick(ctx context.Context, noPathSince *time.Time) (*Path, *nexus, error) {
	queued := false
	defer func() {
		if queued {
			d.mu.Lock()
			d.queued--
			d.mu.Unlock()
		}
	}()
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, nil, blockdev.ErrClosed
		}
		var p *Path
		if d.opts.Policy == PolicyFailover {
			d.selectFailoverLocked()
			p = d.cur
		} else if g := d.groupLocked(); len(g) > 0 {
			p = d.choose(g)
		}
		if p != nil {
			nx := p.nx
			d.mu.Unlock()
			return p, nx, nil
		}
		if noPathSince.IsZero() {
			*noPathSince = time.Now()
		}
		if !queued {
			queued = true
			d.queued++
		}
		ch := d.changed
		transitioning := false
		for _, q := range d.paths {
			if q.nx != nil && q.hasALUA && !q.alua.Active() {
				transitioning = true
			}
		}
		waited := time.Since(*noPathSince)
		t := d.opts.NoPathTimeout
		if t > 0 && waited >= t {
			err := d.noPathErrLocked(waited)
			d.mu.Unlock()
			return nil, nil, err
		}
		d.mu.Unlock()
		wait := time.Duration(1 << 62)
		if t > 0 {
			wait = t - waited
		}
		if transitioning {
			wait = min(wait, 500*time.Millisecond)
		}
		tm := time.NewTimer(wait)
		select {
		case <-ch:
		case <-tm.C:
			if transitioning {
				d.refreshALUA()
			}
		case <-ctx.Done():
			tm.Stop()
			return nil, nil, ctx.Err()
		}
		tm.Stop()
	}
}

// noPathErrLocked names every path's last error.
func (d *Device) noPathErrLocked(waited time.Duration) error {
	var b strings.Builder
	for i, p := range d.paths {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "path %d (%s): %s", p.idx, p.ep.Portal(), d.stateLocked(p))
		switch {
		case p.held != "":
			fmt.Fprintf(&b, ": %s", p.held)
		case p.nx != nil && p.hasALUA:
			fmt.Fprintf(&b, ": ALUA %v", p.alua)
		case p.lastErr != nil:
			fmt.Fprintf(&b, ": %v", p.lastErr)
		}
	}
	return fmt.Errorf("%w: multipath: no usable path for %v (no-path timeout %v): %s",
		blockdev.ErrUnavailable, waited.Round(time.Millisecond), d.opts.NoPathTimeout, b.String())
}

// choose applies the load-balancing selectors to the best path group.
func (d *Device) choose(g []*Path) *Path {
	d.rr++
	start := d.rr % len(g)
	switch d.opts.Policy {
	case PolicyQueueLength:
		var best *Path
		for i := range g {
			p := g[(start+i)%len(g)]
			if best == nil || p.inflight.Load() < best.inflight.Load() {
				best = p
			}
		}
		return best
	case PolicyServiceTime:
		var best *Path
		bestCost := 0.0
		for i := range g {
			p := g[(start+i)%len(g)]
			tp := p.tput()
			if tp == 0 {
				return p // not measured yet: measure it
			}
			cost := float64(p.inflightBytes.Load()+1) / tp
			if best == nil || cost < bestCost {
				best, bestCost = p, cost
			}
		}
		return best
	}
	return g[start]
}

// stateLocked is the path's State for Status.
func (d *Device) stateLocked(p *Path) State {
	switch {
	case p.nx == nil && p.connecting:
		return StateReinstating
	case p.nx == nil || p.held != "":
		return StateFailed
	case d.activeLocked(p):
		return StateActive
	}
	return StateStandby
}
