package mirror

import (
	"context"
	"fmt"
	"time"
)

// The lag bound of the asynchronous leg: the measured link rate, the
// journal's budget, and the throttle or pull-ahead when it is reached.

// sampleRateLocked updates the measured replay rates (bytes/s and
// entries/s while the journal was not empty). a.mu held.
func (a *Async) sampleRateLocked() {
	now := time.Now()
	if a.rateAt.IsZero() {
		a.rateAt, a.rateBytes, a.rateEntries = now, a.replayed, a.replayedN
		return
	}
	dt := now.Sub(a.rateAt)
	if dt < 200*time.Millisecond {
		return
	}
	d, dn := a.replayed-a.rateBytes, a.replayedN-a.rateEntries
	a.rateAt, a.rateBytes, a.rateEntries = now, a.replayed, a.replayedN
	if dn <= 0 || len(a.q) == 0 {
		return // idle or stalled: no sample
	}
	ewma := func(old *float64, v float64) {
		if *old == 0 {
			*old = v
		} else {
			*old = 0.7**old + 0.3*v
		}
	}
	ewma(&a.rate, float64(d)/dt.Seconds())
	ewma(&a.rateN, float64(dn)/dt.Seconds())
}

// budgetLocked is the journal's byte budget: MaxLagBytes, and what the
// link drains in a quarter of MaxLag at its measured rate (1 MiB until
// it is measured). a.mu held.
func (a *Async) budgetLocked() int64 {
	b := min(a.opts.MaxLagBytes, asyncMinBudget)
	if a.rate > 0 {
		b = min(a.opts.MaxLagBytes, int64(a.rate*a.opts.MaxLag.Seconds()/4))
	}
	return max(b, min(a.opts.MaxLagBytes, asyncMinBudget))
}

// entryBudgetLocked bounds the journal's entries likewise: what the
// replay completes in a quarter of MaxLag at its measured entry rate
// (small writes are bound by the round trip, not by the bandwidth).
// a.mu held.
func (a *Async) entryBudgetLocked() int {
	n := asyncMinEntries
	if a.rateN > 0 {
		n = max(n, int(a.rateN*a.opts.MaxLag.Seconds()/4))
	}
	return min(n, a.opts.MaxEntries)
}

// overLocked reports whether journaling n more bytes would pass the lag
// bound. With throttle it applies during a copy too: the writes to
// chunks already copied are replicated through the journal, and the copy
// converges only if they do not outrun the link. a.mu held.
func (a *Async) overLocked(n int64) bool {
	switch {
	case len(a.q) == 0, a.mode == AsyncFailed:
		return false
	case a.mode != AsyncJournal && a.opts.OnLag != OnLagThrottle:
		// A copy with pull-ahead: what does not fit is marked.
		return false
	}
	if len(a.q) >= a.entryBudgetLocked() || a.jbytes+n > a.budgetLocked() {
		return true
	}
	return time.Since(time.Unix(0, a.q[0].acked)) > a.opts.MaxLag/2
}

// throttleWait applies the lag policy before a write of n bytes.
func (a *Async) throttleWait(ctx context.Context, n int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := time.Time{}
	for a.overLocked(n) {
		if a.opts.OnLag == OnLagPullAhead {
			a.dropJournalLocked(AsyncPullAhead, "lag bound reached")
			break
		}
		last := time.Unix(0, a.q[0].acked)
		if a.lastDone.After(last) {
			last = a.lastDone
		}
		if idle := time.Since(last); idle > a.opts.MaxLag {
			a.failLocked(fmt.Errorf("mirror: asynchronous leg stalled: no progress for %v", idle.Round(time.Millisecond)))
			break
		}
		if start.IsZero() {
			start = time.Now()
		}
		if err := a.waitChange(ctx, 50*time.Millisecond); err != nil {
			a.throttle += time.Since(start)
			return err
		}
	}
	if !start.IsZero() {
		a.throttle += time.Since(start)
	}
	return nil
}
