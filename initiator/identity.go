package initiator

// The identity of a LU behind a LUN number: checked again after every
// session recovery and, inside a session, after a sense that may mean
// another disk (issue 19 item 15).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// idGate holds I/O back while the LU's identity is in doubt. A sense that
// may mean another disk behind the LUN number (scsi.IsIdentityChange)
// makes it suspect; the next command then identifies the LU again first,
// and every other command waits for that. A different disk fails the
// session as a failed check after a reconnect does.
type idGate struct {
	hold    atomic.Bool // suspect, being checked or failed: commands go through gate
	mu      sync.Mutex
	suspect error         // the sense that put the identity in doubt
	gen     uint64        // counts suspect's settings
	running chan struct{} // closed when the running check ends
	failed  error         // the LU is another disk: every later command fails
}

// verifyIdentity runs after a session recovery: the LUN must still be the
// same medium (VPD 0x80 serial, VPD 0x83 WWID, capacity and block size),
// else continuing would put data on the wrong disk.
func (l *LUN) verifyIdentity(ctx context.Context) error {
	// Drain the old session's tasks first (see barrier.go). The barrier
	// goes out on a probe handle: the identity gate of l may be waiting for
	// this very reconnect, and must not hold the barrier back.
	probe := &LUN{s: l.s, number: l.number, field: l.field, probe: true}
	if err := probe.drainOldTasks(ctx); err != nil {
		return err
	}
	return l.checkIdentity(ctx, "after reconnect")
}

// checkIdentity identifies the LU behind the LUN number again and compares
// it with the one the handle was opened on. An error wrapping ErrLUNChanged
// means it is not that disk (or no longer a usable disk); any other error
// means the check could not be made (link, timeout, busy).
//
// Any change of size is refused, growth included. Serial and WWID do not
// tell disks apart on every target: tgtd derives both from the target and
// LUN numbers, so the same LUN number of another tgtd target, or a LUN
// re-created on another file, differs from the old disk only in size
// (TestReconnectToDifferentLUNOrGarbage). A LUN grown online therefore ends
// the session; open it again to use the new size.
func (l *LUN) checkIdentity(ctx context.Context, when string) error {
	n := &LUN{s: l.s, number: l.number, field: l.field, probe: true}
	if err := n.identify(ctx); err != nil {
		var ce *ConnError
		if errors.As(err, &ce) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
			errors.Is(err, ErrSessionClosed) || errors.Is(err, blockdev.ErrBusy) || errors.Is(err, blockdev.ErrUnavailable) {
			return fmt.Errorf("re-identifying LUN %d %s: %w", l.number, when, err)
		}
		// The LUN answers, but not as the disk it was (gone, not a disk...).
		return fmt.Errorf("%w: re-identifying LUN %d %s: %w", ErrLUNChanged, l.number, when, err)
	}
	if n.Serial != l.Serial || n.wwid != l.wwid || n.size != l.size || n.bs != l.bs {
		return fmt.Errorf("%w: %s LUN %d of %s is a different disk (serial %q→%q, WWID %s→%s, size %d→%d, block %d→%d); refusing to continue",
			ErrLUNChanged, when, l.number, l.s.cfg.TargetName, l.Serial, n.Serial, l.wwid, n.wwid, l.size, n.size, l.bs, n.bs)
	}
	return nil
}

// suspect puts the LU's identity in doubt after sense err: the next command
// checks it first, and the others wait for that.
func (l *LUN) suspect(err error) {
	l.id.mu.Lock()
	l.id.suspect = err
	l.id.gen++
	l.id.hold.Store(true)
	l.id.mu.Unlock()
	l.s.log.WithField("lun", l.number).Infof("%v: re-identifying the LUN before further I/O", err)
}

// gated reports whether commands must go through gate (the non-blocking
// path then falls back to the blocking one).
func (l *LUN) gated() bool { return l.id.hold.Load() }

// observe looks at the status of a command issued outside do (the
// non-blocking path): a sense that may mean another disk puts the identity
// in doubt, as it does in do.
func (l *LUN) observe(resp Response) {
	if st := scsi.Status(resp.Status); st == scsi.StatusCheckCondition {
		if serr := statusError(st, resp.Sense); scsi.IsIdentityChange(serr) {
			l.suspect(serr)
		}
	}
}

// gate lets a command through once the LU's identity is not in doubt. When
// it is, the first caller identifies the LU again while the others wait; a
// check that could not be made is retried by the next command; a different
// disk fails this and every later command, and the session, like a failed
// check after a reconnect.
func (l *LUN) gate(ctx context.Context) error {
	for l.id.hold.Load() {
		l.id.mu.Lock()
		if err := l.id.failed; err != nil {
			l.id.mu.Unlock()
			return err
		}
		if ch := l.id.running; ch != nil {
			l.id.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		why, gen := l.id.suspect, l.id.gen
		if why == nil {
			l.id.hold.Store(false)
			l.id.mu.Unlock()
			return nil
		}
		ch := make(chan struct{})
		l.id.running = ch
		l.id.mu.Unlock()

		err := l.checkIdentity(ctx, fmt.Sprintf("after %v", why))

		l.id.mu.Lock()
		l.id.running = nil
		switch {
		case errors.Is(err, ErrLUNChanged):
			l.id.failed = err
		case err == nil && l.id.gen == gen:
			l.id.suspect = nil
			l.id.hold.Store(false)
		}
		l.id.mu.Unlock()
		close(ch)
		if errors.Is(err, ErrLUNChanged) {
			l.s.log.WithField("lun", l.number).WithError(err).Error("the LUN changed; refusing to continue")
			l.s.failLUNChanged(err)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
