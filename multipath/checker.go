package multipath

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// loginTimeout bounds one reinstatement attempt.
const loginTimeout = 15 * time.Second

// startReinstate runs p's reinstatement loop unless one runs already. old,
// when set, is the nexus that failed: the first successful login with p's
// ISID proves it dead.
func (d *Device) startReinstate(p *Path, old *nexus, afterFailure bool) {
	d.mu.Lock()
	if p.reinstating || d.closed {
		d.mu.Unlock()
		return
	}
	p.reinstating = true
	d.wg.Add(1)
	d.mu.Unlock()
	go d.reinstate(p, old, afterFailure)
}

func (d *Device) reinstate(p *Path, old *nexus, afterFailure bool) {
	defer d.wg.Done()
	backoff := []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}
	if !afterFailure {
		backoff = backoff[1:]
	}
	retry := min(d.opts.CheckInterval, 2*time.Second)
	for attempt := 0; ; attempt++ {
		wait := retry
		if attempt < len(backoff) {
			wait = min(backoff[attempt], retry)
		}
		select {
		case <-d.ctx.Done():
			d.mu.Lock()
			p.reinstating = false
			d.mu.Unlock()
			return
		case <-time.After(wait):
		}
		d.mu.Lock()
		p.connecting = true
		d.notifyLocked()
		needRead := p.consecFail >= d.opts.MaxPathErrors
		d.mu.Unlock()
		ctx, cancel := context.WithTimeout(d.ctx, loginTimeout)
		c, login, err := p.ep.connect(ctx)
		if login != (sessionID{}) && old != nil {
			// Only a login into the failed session's target and portal
			// group reinstates it; one redirected (or reconfigured) into
			// another group is a new session beside the old one.
			t, g, _ := old.conn.Nexus()
			if was := (sessionID{t, g}); login == was {
				d.proved(p, old, "session reinstated on its own portal (same ISID, TSIH 0)", false)
			} else {
				d.log.Warnf("path %d (%s): login with ISID %s landed in %v, not the failed session's %v: it does not prove the old session dead",
					p.idx, p.ep.Portal(), p.isidString(), login, was)
			}
		}
		if err == nil {
			if id := c.Identity(); id != d.ident {
				err = fmt.Errorf("path %d (%s) now reaches a different LU: %s, expected %s; the path stays failed",
					p.idx, p.ep.Portal(), fmtIdentity(id), fmtIdentity(d.ident))
				d.log.Error(err)
			} else if needRead {
				buf := make([]byte, d.ident.Block)
				pt := 10 * time.Second
				if d.opts.IOTimeout > 0 {
					pt = d.opts.IOTimeout
				}
				pctx, pcancel := context.WithTimeout(ctx, pt)
				rerr := c.ReadAt(pctx, buf, 0)
				pcancel()
				if rerr != nil {
					err = fmt.Errorf("TEST UNIT READY passes but I/O fails (%d I/O failures in a row), probe READ: %w", d.opts.MaxPathErrors, rerr)
				}
			}
			if err == nil {
				err = d.registerReinstated(ctx, c)
			}
			if err != nil {
				go c.Close()
				c = nil
			}
		}
		cancel()
		d.mu.Lock()
		p.connecting = false
		if err != nil {
			p.lastErr, p.lastErrAt = fmt.Errorf("reinstate: %w", err), time.Now()
			d.notifyLocked()
			d.mu.Unlock()
			d.log.WithError(err).Debugf("path %d (%s): reinstatement attempt %d failed", p.idx, p.ep.Portal(), attempt+1)
			continue
		}
		if needRead {
			p.consecFail = 0
		}
		d.mu.Unlock()
		d.install(p, c)
		d.recheckALUA(p, nil)
		d.mu.Lock()
		d.selectFailoverLocked()
		d.notifyLocked()
		d.mu.Unlock()
		d.log.Infof("path %d (%s, ISID %s) reinstated", p.idx, p.ep.Portal(), p.isidString())
		return
	}
}

// checker tests every path with a session each CheckInterval: TEST UNIT
// READY and a NOP-Out ping (standby paths too), and refreshes ALUA states
// and delayed failback.
func (d *Device) checker() {
	defer d.wg.Done()
	t := time.NewTicker(d.opts.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		d.checkOnce()
	}
}

func (d *Device) checkOnce() {
	type target struct {
		p *Path
		n *nexus
	}
	var ts []target
	d.mu.Lock()
	for _, p := range d.paths {
		if p.nx != nil {
			ts = append(ts, target{p, p.nx})
		}
	}
	d.mu.Unlock()
	done := make(chan struct{}, len(ts))
	for _, t := range ts {
		go func() {
			defer func() { done <- struct{}{} }()
			ctx, cancel := context.WithTimeout(d.ctx, max(d.opts.CheckInterval, 5*time.Second))
			defer cancel()
			err := t.n.conn.TestUnitReady(ctx)
			if err == nil {
				err = t.n.conn.Ping(ctx)
			}
			if err != nil && d.ctx.Err() == nil {
				if isALUAPathState(err) || isANAPathState(err) {
					d.recheckALUA(t.p, t.n)
					return
				}
				d.failNexus(t.p, t.n, fmt.Errorf("path checker: %w", err), false)
				return
			}
			d.recheckALUA(t.p, t.n)
		}()
	}
	for range ts {
		<-done
	}
	d.mu.Lock()
	d.selectFailoverLocked()
	d.mu.Unlock()
}

// refreshALUA re-reads every live path's access state.
func (d *Device) refreshALUA() {
	d.mu.Lock()
	var ps []*Path
	for _, p := range d.paths {
		if p.nx != nil {
			ps = append(ps, p)
		}
	}
	d.mu.Unlock()
	for _, p := range ps {
		d.recheckALUA(p, nil)
	}
}

// recheckALUA reads p's ALUA state through its nexus (n, or the current
// one when n is nil).
func (d *Device) recheckALUA(p *Path, n *nexus) {
	d.mu.Lock()
	if n == nil {
		n = p.nx
	}
	d.mu.Unlock()
	if n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
	st, pref, ok, err := n.conn.ALUA(ctx)
	cancel()
	if err != nil {
		if classifyErr(err) == classPath && !isSense(err) {
			d.failNexus(p, n, fmt.Errorf("ALUA check: %w", err), false)
		}
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if p.nx != n {
		return
	}
	if p.hasALUA != ok || p.alua != st || p.aluaPref != pref {
		if ok {
			d.log.Infof("path %d (%s): ALUA %v (preferred %v)", p.idx, p.ep.Portal(), st, pref)
		}
		p.hasALUA, p.alua, p.aluaPref = ok, st, pref
		d.selectFailoverLocked()
		d.notifyLocked()
	}
}

// isALUAPathState: NOT READY, 04/0A (transitioning), 04/0B (standby),
// 04/0C (unavailable) — the path, not the LU, is the problem.
func isALUAPathState(err error) bool {
	var se *scsi.SenseError
	if !errors.As(err, &se) || !se.HasSense || se.Key != scsi.KeyNotReady || se.ASC != 0x04 {
		return false
	}
	return se.ASCQ == 0x0a || se.ASCQ == 0x0b || se.ASCQ == 0x0c
}

func isSense(err error) bool {
	var se *scsi.SenseError
	return errors.As(err, &se)
}
