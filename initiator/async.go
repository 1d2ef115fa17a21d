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

// asyncCmd is one command on the fast path, with everything its start,
// completion and fallback need in one allocation: at queue depth 32 every
// allocation per command is paid tens of thousands of times a second.
type asyncCmd struct {
	s     *Session
	l     *LUN // for slow
	p     []byte
	off   int64
	write bool
	fua   bool
	want  int // bytes a read must receive to succeed
	// timeouts is 1 once the fast-path attempt timed out (see slow).
	timeouts int
	done     func(error)
	cmd      Command
	cdb      [16]byte
	task     task // the fast path's task (tryStart)
}

// slow runs the command as the blocking call, from the beginning, on a
// goroutine of its own (errors and retries are then exactly its; a
// timeout on the fast path counts against its budget).
func (a *asyncCmd) slow() {
	go func() {
		ctx := context.Background()
		if a.timeouts > 0 {
			ctx = context.WithValue(ctx, timeoutsKey, a.timeouts)
		}
		if a.write {
			a.done(a.l.WriteAt(ctx, a.p, a.off, a.fua))
		} else {
			a.done(a.l.ReadAt(ctx, a.p, a.off))
		}
	}()
}

// finished runs once the task of a started command is finished, on the
// goroutine that finished it. GOOD status with at least want bytes
// received ends in done(nil) and a command timeout is final; anything
// else goes to slow.
func (a *asyncCmd) finished(t *task) {
	s := a.s
	s.releaseSlot()
	resp, err := s.result(t)
	switch {
	case err == nil && scsi.Status(resp.Status).OK() && resp.Received >= a.want:
		a.done(nil)
	case errors.Is(err, ErrCommandTimeout):
		var te *timeoutError
		if errors.As(err, &te) && te.reissue {
			// Aborted for certain: the blocking path issues it again.
			a.timeouts = 1
			a.slow()
			return
		}
		a.done(err)
	default:
		if err == nil {
			a.l.observe(resp) // a sense that may mean another disk holds later I/O
		}
		a.slow()
	}
}

// tryStart issues a's command now if it can without waiting. On true,
// a.finished runs exactly once with the command's outcome, on the
// goroutine that finishes it. On false nothing was sent and a.finished is
// not called.
func (s *Session) tryStart(a *asyncCmd) bool {
	cmd := &a.cmd
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
	t := s.initSCSITask(&a.task, c, cmd)
	if t.r2t != nil {
		s.releaseSlot()
		return false
	}
	t.async = a
	ok, _, err := s.issueNow(c, t, false, false, nil)
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
	a := &asyncCmd{s: l.s, l: l, p: p, off: off, want: len(p), done: done}
	if len(p) == 0 || len(p) > l.maxXfer || l.gated() {
		a.slow()
		return
	}
	a.cmd = Command{LUN: l.field, Read: p,
		CDB: scsi.AppendReadCDB(a.cdb[:0], uint64(off/int64(l.bs)), uint32(len(p)/l.bs), false)}
	if !l.s.tryStart(a) {
		a.slow()
	}
}

// StartWriteAt is WriteAt without blocking, under StartReadAt's rules; with
// fua the data is durable when done reports success.
func (l *LUN) StartWriteAt(p []byte, off int64, fua bool, done func(error)) {
	if err := l.check(off, int64(len(p))); err != nil {
		done(err)
		return
	}
	a := &asyncCmd{s: l.s, l: l, p: p, off: off, write: true, fua: fua, done: done}
	if l.WriteProtect || len(p) == 0 || len(p) > l.maxXfer || (fua && !l.dpofua) || l.gated() {
		a.slow()
		return
	}
	a.cmd = Command{LUN: l.field, Write: p,
		CDB: scsi.AppendWriteCDB(a.cdb[:0], uint64(off/int64(l.bs)), uint32(len(p)/l.bs), fua)}
	if !l.s.tryStart(a) {
		a.slow()
	}
}
