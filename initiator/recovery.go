package initiator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

// ERL 0 session recovery (RFC 7143, Sections 6.3.5 and 7.15).
//
// When the connection fails, every task on it fails with a *ConnError in
// the read loop's exit (so no caller buffer is written afterwards). Session.Do
// sees that error, waits for recovery and re-issues the command from scratch
// with a new ITT and CmdSN. Recovery logs in with the SAME InitiatorName and
// ISID and TSIH 0, which makes the target reinstate the session and
// terminate every task of the old session (Section 6.3.5). Not every target
// waits for its backend before answering that login (tgtd does not), so
// each LUN handle's reconnect hook first drains the LU's task set with an
// ORDERED command (barrier.go): a write is re-issued only after the old
// session's commands are done, and no ghost write of the old session can
// land after a newer one. The target then reports UNIT ATTENTION 29/xx or
// 47/7F, which the LUN handle absorbs, and the LUN's identity is
// re-verified by the reconnect hooks before any caller's I/O resumes.

// ErrLUNChanged is wrapped by the error of a session whose LUN turned out
// to be a different disk after a reconnect.
var ErrLUNChanged = errors.New("iscsi: LUN changed")

type ctxKey int

const verifyKey ctxKey = 1

// recoveryState is guarded by Session.recMu.
type recoveryState struct {
	recovering bool
	done       chan struct{} // closed when the current recovery ends
	lostAt     time.Time
	cause      error
	fatal      error // permanent failure: no more recovery
	attempts   int
}

// RecoveryStats reports what recovery did, for tests and status output.
type RecoveryStats struct {
	Reconnects int64 // successful session recoveries (reinstatements)
	// ConnRecoveries counts connections recovered at ERL 2 inside the
	// session (same TSIH, tasks reassigned; connrecovery.go).
	ConnRecoveries int64
	// TasksReassigned counts tasks a target took over with TASK REASSIGN
	// (function complete) in those recoveries; CommandsResent the
	// commands sent again because the target answered that it did not
	// have them (task does not exist, CmdSN not acknowledged).
	TasksReassigned, CommandsResent int64
	LastDuration                    time.Duration // connection loss to resumed I/O, last recovery
	Recovering                      bool
}

// OnReconnect registers a check that runs after every successful
// re-login, before callers' I/O resumes (used by LUN handles to verify the
// LUN's identity). An error fails the session permanently.
func (s *Session) OnReconnect(f func(ctx context.Context) error) {
	s.recMu.Lock()
	s.hooks = append(s.hooks, f)
	s.recMu.Unlock()
}

// Recovery returns recovery statistics.
func (s *Session) Recovery() RecoveryStats {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return RecoveryStats{Reconnects: s.reconnects, ConnRecoveries: s.connRecoveries,
		TasksReassigned: s.tasksReassigned, CommandsResent: s.commandsResent, LastDuration: s.lastRecovery, Recovering: s.rec.recovering}
}

// startRecovery is called (from the read loop's exit) when c failed. It
// must run before c's tasks are failed so that their callers find the
// session recovering rather than retrying against the dead connection.
func (s *Session) startRecovery(c *conn, cause error) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if s.closed.Load() || s.rec.fatal != nil || s.connRec[c] || c.loggedOut.Load() {
		return // (under ERL 2 connection recovery: connrecovery.go decides)
	}
	s.connMu.Lock()
	current := false
	for _, x := range s.conns {
		current = current || x == c
	}
	others := append([]*conn(nil), s.conns...)
	s.connMu.Unlock()
	if !current || s.rec.recovering {
		return
	}
	// ERL 0: the loss of any connection means recovering the whole session
	// (Section 7.1.5); the other connections' tasks fail and are re-issued
	// after reinstatement, like this one's.
	defer func() {
		for _, x := range others {
			if x != c {
				go x.fail(fmt.Errorf("session recovery after connection %d failed", c.cid))
			}
		}
	}()
	s.recOld = others
	if s.cfg.NoRecovery {
		s.rec.fatal = cause
		return
	}
	s.rec = recoveryState{recovering: true, done: make(chan struct{}), lostAt: time.Now(), cause: cause}
	s.log.WithError(cause).Warn("connection lost; recovering the session (same ISID, session reinstatement)")
	go s.recover(s.rec.done)
}

// recover reconnects with backoff until it succeeds, the session is closed
// or a reconnect hook reports a permanent failure.
func (s *Session) recover(done chan struct{}) {
	backoff := []time.Duration{0, 200 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}
	// Every old connection must be closed on our side (its read loop gone)
	// before the session is reinstated, so nothing of the old session is
	// still being sent while the new one starts.
	s.recMu.Lock()
	old := s.recOld
	s.recOld = nil
	s.recMu.Unlock()
	for _, x := range old {
		<-x.exit
	}
	for attempt := 0; ; attempt++ {
		// An Async Message that announced the drop holds the first
		// login back until its Time2Wait (asyncdrop.go).
		wait := max(backoff[min(attempt, len(backoff)-1)], s.dropWait())
		select {
		case <-s.closeCh:
			s.endRecovery(done, ErrSessionClosed)
			return
		case <-time.After(wait):
		}
		err := s.reconnect(attempt)
		if err == nil {
			err = s.runHooks()
			if err != nil && !errors.Is(err, ErrLUNChanged) {
				// The new connection failed during the checks: try again.
				s.log.WithError(err).Warn("re-verifying the LUN after reconnect failed; reconnecting again")
				for _, c := range s.allConns() {
					c.fail(err)
					<-c.exit
				}
				s.recMu.Lock()
				s.rec.cause = err
				s.recMu.Unlock()
				continue
			}
			if err != nil {
				s.log.WithError(err).Error("session recovered but the LUN changed; refusing to continue")
				s.connMu.Lock()
				c := s.conn
				s.connMu.Unlock()
				s.endRecovery(done, err)
				c.fail(err)
				return
			}
			s.dropDone()
			s.endRecovery(done, nil)
			// A connection that failed while this recovery was finishing
			// found it still running and did not start another: do it now.
			for _, c := range s.allConns() {
				select {
				case <-c.exit:
					s.startRecovery(c, c.err)
				default:
				}
			}
			return
		}
		s.recMu.Lock()
		s.rec.attempts++
		s.rec.cause = err
		s.recMu.Unlock()
		s.log.WithError(err).Warnf("reconnect attempt %d failed", attempt+1)
	}
}

func (s *Session) endRecovery(done chan struct{}, fatal error) {
	s.recMu.Lock()
	if fatal != nil {
		s.rec.fatal = fatal
	} else {
		s.reconnects++
		s.lastRecovery = time.Since(s.rec.lostAt)
		s.log.Infof("session recovered after %v", s.lastRecovery.Round(time.Millisecond))
	}
	s.rec.recovering = false
	s.recMu.Unlock()
	close(done)
}

// reconnect logs in again with the same ISID and TSIH 0 (session
// reinstatement). Attempts alternate between the portal the session last
// logged in to and the portal as configured: arrays that redirect logins
// from a group or virtual address to one port redirect to a live port
// when that one is lost. Redirects are followed as Dial follows them;
// each login is bounded by LoginTimeout. The caller (recover) has waited
// for every old connection's read loop to exit, whichever portal is tried.
func (s *Session) reconnect(attempt int) error {
	ctx, cancel := context.WithTimeout(context.Background(), (maxRedirects+1)*s.cfg.LoginTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.closeCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	portal := s.portalAddr()
	if attempt%2 == 1 && s.origPortal != "" {
		portal = s.origPortal
	}
	tpgt := s.Params().TargetPortalGroupTag
	if err := s.connectRedirected(ctx, portal); err != nil {
		return err
	}
	if now := s.Params().TargetPortalGroupTag; now != tpgt {
		s.log.Warnf("recovery logged in to portal group %d (the session was in group %d): the old session may not have been reinstated", now, tpgt)
	}
	return nil
}

func (s *Session) runHooks() error {
	s.recMu.Lock()
	hooks := append([]func(context.Context) error(nil), s.hooks...)
	s.recMu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), verifyKey, true), s.cfg.LoginTimeout)
	defer cancel()
	for _, h := range hooks {
		if err := h(ctx); err != nil {
			return err
		}
	}
	return nil
}

// awaitRecovery blocks a caller whose command failed with cause until the
// session is back, the replacement timeout since the loss expires, or ctx
// ends. A nil return means: retry the command.
func (s *Session) awaitRecovery(ctx context.Context, cause error) error {
	for {
		s.recMu.Lock()
		st := s.rec
		s.recMu.Unlock()
		if s.closed.Load() {
			return ErrSessionClosed
		}
		if st.fatal != nil {
			return st.fatal
		}
		if !st.recovering {
			erl2 := s.Params().ErrorRecoveryLvl >= 2
			s.connMu.Lock()
			c := s.conn
			live := s.liveConnLocked() != nil
			s.connMu.Unlock()
			if live && erl2 {
				return nil // (MC/S: another connection serves)
			}
			if s.connRecovering() {
				// ERL 2 connection recovery is bringing a connection
				// back, or will fall back to session recovery.
				select {
				case <-time.After(10 * time.Millisecond):
				case <-ctx.Done():
					return ctx.Err()
				}
				continue
			}
			select {
			case <-c.done:
				// The connection failed but its read loop has not yet
				// started recovery: wait for the loop to exit.
				select {
				case <-c.exit:
					// Its loop is gone: if it died while a recovery was
					// finishing, nobody else will start the next one.
					s.startRecovery(c, c.err)
					select {
					case <-time.After(10 * time.Millisecond):
					case <-ctx.Done():
						return ctx.Err()
					}
					continue
				case <-ctx.Done():
					return ctx.Err()
				}
			default:
				return nil // up again: retry
			}
		}
		var timeout <-chan time.Time
		if rt := s.cfg.ReplacementTimeout; rt > 0 {
			left := time.Until(st.lostAt.Add(rt))
			if left <= 0 {
				return s.unavailable(st)
			}
			t := time.NewTimer(left)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-st.done:
			continue
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			s.recMu.Lock()
			st = s.rec
			s.recMu.Unlock()
			return s.unavailable(st)
		}
	}
}

func (s *Session) unavailable(st recoveryState) error {
	return fmt.Errorf("%w: %s unreachable for %v (replacement timeout %v), last error: %v",
		blockdev.ErrUnavailable, s.portalAddr(), time.Since(st.lostAt).Round(time.Second), s.cfg.ReplacementTimeout, st.cause)
}

// recoverable reports whether err is a transport failure that recovery
// can hide.
func (s *Session) recoverable(err error) bool {
	if s.cfg.NoRecovery || s.closed.Load() {
		return false
	}
	var ce *ConnError
	return errors.As(err, &ce) && !errors.Is(err, ErrSessionClosed)
}
