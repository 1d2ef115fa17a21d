package initiator

import (
	"context"
	"errors"

	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// The non-blocking command path. A blocking call (Do, ReadAt) keeps a
// goroutine waiting for every command in flight; a server that turns each
// of its requests into one command (the NBD bridge at queue depth 32) then
// pays a goroutine start and a wake-up per request. tryStart instead
// issues the command from the caller's goroutine and runs a callback from
// the read loop when the status arrives. It only takes the simple case —
// a live connection, a free slot, an open window, no data the target
// must solicit — and otherwise sends nothing and says so; the caller then
// uses the blocking path, which handles everything else (recovery,
// waiting for the window, R2Ts, retries).

// tryStart issues cmd now if it can without waiting. On true, done runs
// exactly once with the command's outcome, on the goroutine that finishes
// it: it must not block. On false nothing was sent and done is not called.
func (s *Session) tryStart(cmd *Command, done func(Response, error)) bool {
	if len(cmd.CDB) > 16 || (cmd.Read != nil && cmd.Write != nil) || s.closed.Load() {
		return false
	}
	s.recMu.Lock()
	settled := s.rec.fatal == nil && !s.rec.recovering
	s.recMu.Unlock()
	if !settled {
		return false
	}
	s.connMu.Lock()
	var c *conn
	if s.conn != nil {
		c = s.liveConnLocked()
	}
	s.connMu.Unlock()
	if c == nil {
		return false
	}
	select {
	case s.slots <- struct{}{}:
	default:
		return false
	}
	t, send := s.newSCSITask(c, cmd)
	if t.r2t != nil {
		s.releaseSlot()
		return false
	}
	t.cb = func(t *task) {
		s.releaseSlot()
		resp, err := s.result(t)
		done(resp, err)
	}
	ok, _, err := s.issueNow(c, t, false, false, send)
	if !ok && t.itt == 0 {
		// Not sent (closed window, connection gone): the callback never
		// runs, so give the slot back here.
		s.releaseSlot()
		return false
	}
	// Sent, or registered and then failed to queue: then the failing
	// connection fails the task, and the callback reports that.
	_ = err
	return true
}

// StartReadAt starts reading len(p) bytes at off and returns at once; done
// runs exactly once with the outcome, possibly before StartReadAt returns,
// often on the connection's read loop: it must not block. p must not be
// touched until then. A read the fast path cannot take (longer than one
// command, no live connection, the window closed, an error status to
// retry or decode) runs as ReadAt on a goroutine of its own, so errors
// and retries are exactly ReadAt's.
func (l *LUN) StartReadAt(p []byte, off int64, done func(error)) {
	if err := l.check(off, int64(len(p))); err != nil {
		done(err)
		return
	}
	slow := func() { go func() { done(l.ReadAt(context.Background(), p, off)) }() }
	if len(p) == 0 || len(p) > l.maxXfer {
		slow()
		return
	}
	var cdb [16]byte
	cmd := Command{LUN: l.field, Read: p,
		CDB: scsi.AppendReadCDB(cdb[:0], uint64(off/int64(l.bs)), uint32(len(p)/l.bs), false)}
	l.start(&cmd, len(p), done, slow)
}

// StartWriteAt is WriteAt without blocking, under StartReadAt's rules; with
// fua the data is durable when done reports success.
func (l *LUN) StartWriteAt(p []byte, off int64, fua bool, done func(error)) {
	if err := l.check(off, int64(len(p))); err != nil {
		done(err)
		return
	}
	slow := func() { go func() { done(l.WriteAt(context.Background(), p, off, fua)) }() }
	if l.WriteProtect || len(p) == 0 || len(p) > l.maxXfer || (fua && !l.dpofua) {
		slow()
		return
	}
	var cdb [16]byte
	cmd := Command{LUN: l.field, Write: p,
		CDB: scsi.AppendWriteCDB(cdb[:0], uint64(off/int64(l.bs)), uint32(len(p)/l.bs), fua)}
	l.start(&cmd, 0, done, slow)
}

// start runs cmd on the fast path. GOOD status with at least want bytes
// received ends in done(nil) and a command timeout is final; anything
// else, or a start the fast path declines, goes to slow (the blocking
// call, from the beginning).
func (l *LUN) start(cmd *Command, want int, done func(error), slow func()) {
	if !l.s.tryStart(cmd, func(resp Response, err error) {
		switch {
		case err == nil && scsi.Status(resp.Status).OK() && resp.Received >= want:
			done(nil)
		case errors.Is(err, ErrCommandTimeout):
			done(err)
		default:
			slow()
		}
	}) {
		slow()
	}
}
