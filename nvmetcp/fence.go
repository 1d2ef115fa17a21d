package nvmetcp

import (
	"context"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// No ghost writes after a reconnect.
//
// An NVMe association cannot be reinstated from another: when its
// connections are lost, the controller on the target may still hold
// commands of it (queued, or in its backend) and carry them out later.
// A write re-sent on the next association, or a later write the host
// acknowledged there, could then be overwritten by the old copy. What
// bounds the old association is its keep-alive timeout (KATO): a
// controller that receives no command for KATO stops processing the
// association's commands and tears it down (NVMe Base 2.0, Section 3.9;
// Linux nvmet checks every KATO, so detection takes up to 2×KATO). Our
// connections are closed with a TCP reset, so nothing sent before the
// close reaches the controller after it and restarts its timer.
//
// Hence the rule both the single-path controller (Controller.exec) and
// multipath (OpenNVMe) follow: no write-class command (anything but Read
// on an I/O queue) goes to the subsystem until FenceAfter(close, KATO);
// reads go at once.

// FenceDelay is how long after an association's connections were closed
// abortively every command sent on it has surely ended: twice the
// keep-alive timeout plus a second for the controller's timer
// granularity. ok is false without a keep-alive timeout (kato <= 0):
// then nothing bounds the old association.
func FenceDelay(kato time.Duration) (d time.Duration, ok bool) {
	if kato <= 0 {
		return 0, false
	}
	return 2*kato + time.Second, true
}

// FenceAfter is when an association whose connections were closed at
// closed, with keep-alive timeout kato, can hold no command any more;
// the zero Time when nothing bounds it (no keep-alive timeout).
func FenceAfter(closed time.Time, kato time.Duration) time.Time {
	d, ok := FenceDelay(kato)
	if !ok {
		return time.Time{}
	}
	return closed.Add(d)
}

// writeClass reports whether an I/O command may change the namespace
// (or, as Flush, vouch for what was written): everything but Read.
func writeClass(admin bool, op uint8) bool { return !admin && op != pdu.IORead }

// fence holds a write-class command while the association a reconnect
// closed may still carry out commands (see above). deadline, when set,
// is the command's ReconnectTimeout: a fence that ends later fails the
// command now. It reports whether it waited; the caller then takes a
// queue again (the association may have changed meanwhile).
func (c *Controller) fence(ctx context.Context, deadline time.Time) (bool, error) {
	c.mu.Lock()
	closed, gen := c.closedAt, c.gen.Load()
	c.mu.Unlock()
	if closed.IsZero() {
		return false, nil // never reconnected
	}
	until := FenceAfter(closed, c.cfg.KeepAlive)
	if until.IsZero() {
		return false, fmt.Errorf("%w: the association was re-established, and without a keep-alive timeout nothing bounds the old one, which may still hold writes", blockdev.ErrUnavailable)
	}
	wait := time.Until(until)
	if wait <= 0 {
		return false, nil
	}
	if !deadline.IsZero() && until.After(deadline) {
		return false, fmt.Errorf("%w: writes are held until %v after the old association was reset (2×keep-alive timeout + 1 s), beyond the reconnect timeout",
			blockdev.ErrUnavailable, until.Sub(closed))
	}
	c.mu.Lock()
	if c.fencedGen != gen {
		c.fencedGen = gen
		c.fences.Add(1)
		c.cfg.Logger.Infof("nvmetcp: writes held %v (until 2×keep-alive timeout + 1 s after the old association was reset)", wait.Round(time.Millisecond))
	}
	c.mu.Unlock()
	c.fencedCmds.Add(1)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-c.down: // closed (or, with NoReconnect, down): the next queue call says so
	case <-t.C:
	}
	return true, nil
}

// Stats are a controller's counters since Dial.
type Stats struct {
	// Reconnects counts associations re-established after a failure.
	Reconnects int64 `json:"reconnects"`
	// FencesKATO counts reconnects after which write-class commands
	// were held until the old association's keep-alive timeout had
	// passed; FencedCommands the commands so held.
	FencesKATO     int64 `json:"fences_keep_alive"`
	FencedCommands int64 `json:"fenced_commands"`
}

// Stats returns the controller's counters.
func (c *Controller) Stats() Stats {
	return Stats{Reconnects: c.reconnects.Load(), FencesKATO: c.fences.Load(), FencedCommands: c.fencedCmds.Load()}
}
