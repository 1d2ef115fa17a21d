package initiator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// ERL 2 connection recovery (RFC 7143, Sections 6.2.2, 6.3.4, 7.1.4.3,
// 7.2.2, 11.5.1, 11.14).
//
// When a session negotiated ErrorRecoveryLevel 2 and one of its
// connections fails, the session is kept: the other connections go on
// serving, and the SCSI tasks allegiant to the lost connection stay in the
// task table, their callers still waiting, their buffers untouched. A
// recovery goroutine then, after DefaultTime2Wait:
//
//  1. clears the lost connection at the target: with a surviving
//     connection, by a Logout with reason 2 (remove the connection for
//     recovery) for the lost CID sent on the survivor; with none, by
//     logging in a new connection with the session's TSIH and the SAME
//     CID, which logs the old one out implicitly (connection
//     reinstatement, Section 6.3.4). The same CID is used in both cases:
//     it needs no CID bookkeeping, a target that never saw the loss ends
//     the old connection by the login itself, and the session keeps the
//     CIDs it negotiated;
//  2. sends TASK REASSIGN (function 8, immediate, Referenced Task Tag =
//     the task's ITT, ExpDataSN = the next Data-In DataSN a read expects,
//     RefCmdSN reserved) for each task on the connection that will carry
//     it (the survivor, or the new connection). On "function complete"
//     the task goes on there: a read takes the re-sent Data-In from
//     ExpDataSN, a write answers the target's recovery R2Ts from its
//     buffer, and the caller is answered by the final status as always.
//     A task the target does not have whose CmdSN it has not yet
//     acknowledged (ExpCmdSN not past it) never reached it: the command
//     is sent again with the same ITT and CmdSN (command retry, allowed
//     on another connection once the old one is logged out, Section
//     6.2.1), so the target's CmdSN sequence has no hole;
//  3. logs in a replacement connection with the lost CID, if a survivor
//     carried the tasks, so the session has its connections back.
//
// Everything happens within DefaultTime2Wait + DefaultTime2Retain of the
// loss (after that the target may have dropped the tasks), each login
// bounded by LoginTimeout and each exchange by the TMF timeout. Any
// failure — the Logout or login refused, a reassign answered with
// anything but "function complete", the deadline passed — falls back to
// session reinstatement (recovery.go) with its guarantees: every
// connection is closed, the tasks fail with a connection error and
// Session.Do issues them again after the target terminated the old
// session's tasks.

// maxConnRecovery caps the whole connection recovery whatever the target
// negotiated (DefaultTime2Retain may be up to an hour).
const maxConnRecovery = 60 * time.Second

// beginConnRecovery decides, from c's read loop exit, whether c's loss is
// recovered at ERL 2. If so it marks c as recovering, keeps c's SCSI
// tasks (returned) and fails its other tasks (immediate commands are
// never recoverable, Section 7.14).
func (s *Session) beginConnRecovery(c *conn, err error) ([]*task, bool) {
	p := s.Params()
	if p.ErrorRecoveryLvl < 2 || p.DefaultTime2Ret == 0 || s.dropNoRetain(c) || s.discovery || s.cfg.NoRecovery || s.closed.Load() || errors.Is(err, ErrSessionClosed) || c.loggedOut.Load() {
		return nil, false
	}
	s.recMu.Lock()
	if s.rec.recovering || s.rec.fatal != nil {
		s.recMu.Unlock()
		return nil, false
	}
	s.connMu.Lock()
	current := false
	for _, x := range s.conns {
		current = current || x == c
	}
	s.connMu.Unlock()
	if !current {
		s.recMu.Unlock()
		return nil, false
	}
	if s.connRec == nil {
		s.connRec = make(map[*conn]bool)
	}
	s.connRec[c] = true
	s.recMu.Unlock()

	// Under c.wmu, so that a command being issued on c either is in the
	// task table when it is scanned (and recovered with the others) or
	// sees c dead and takes no CmdSN: a CmdSN given out and never sent
	// would leave a hole the target waits for.
	c.wmu.Lock()
	s.winMu.Lock()
	c.dead = true
	close(s.winCh)
	s.winCh = make(chan struct{})
	s.winMu.Unlock()
	s.taskMu.Lock()
	c.down = true
	var keep, dead []*task
	for itt, t := range s.tasks {
		if t.conn != c {
			continue
		}
		if t.kind == kindSCSI {
			keep = append(keep, t)
			continue
		}
		dead = append(dead, t)
		delete(s.tasks, itt)
	}
	s.taskMu.Unlock()
	c.wmu.Unlock()
	for _, t := range dead {
		t.finish(err)
	}
	return keep, true
}

// connRecovering reports whether a connection recovery is under way.
func (s *Session) connRecovering() bool {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return len(s.connRec) > 0
}

// recoverConn runs connection recovery for the lost connection c with its
// tasks; see the comment at the top of the file.
func (s *Session) recoverConn(c *conn, tasks []*task, cause error) {
	p := s.Params()
	start := time.Now()
	t2w := min(time.Duration(p.DefaultTime2Wait)*time.Second, maxConnRecovery)
	deadline := start.Add(min(t2w+time.Duration(p.DefaultTime2Ret)*time.Second, maxConnRecovery))
	if h, ok := s.connDrop(c); ok {
		// Announced by an Async Message: its Time2Wait and Time2Retain
		// (asyncdrop.go).
		t2w = max(time.Until(h.notBefore), 0)
		deadline = start.Add(min(time.Until(h.retainUntil), maxConnRecovery))
	}
	log := c.log.WithField("tasks", len(tasks))
	log.WithError(cause).Warn("connection lost; recovering the connection (ERL 2), the session is kept")
	err := s.runConnRecovery(c, tasks, t2w, deadline)
	s.recMu.Lock()
	delete(s.connRec, c)
	if err == nil {
		s.connRecoveries++
	}
	s.recMu.Unlock()
	if err != nil {
		if errors.Is(err, ErrSessionClosed) {
			s.failAllegiant(c, ErrSessionClosed)
			return
		}
		log.WithError(err).Warn("connection recovery failed; recovering the session (reinstatement)")
		s.startRecovery(c, err)
		// Any task still allegiant to the lost connection fails now, after
		// the session is marked recovering: its caller waits for the
		// reinstatement and issues it again (recovery.go).
		s.failAllegiant(c, err)
		return
	}
	log.Infof("connection recovered in %v", time.Since(start).Round(time.Millisecond))
}

// failAllegiant fails every task still allegiant to the dead c.
func (s *Session) failAllegiant(c *conn, err error) {
	if err == nil {
		err = errors.New("connection recovery failed")
	}
	cerr := error(&ConnError{Portal: c.portal, Err: err})
	s.taskMu.Lock()
	dead := s.takeTasksLocked(c)
	s.taskMu.Unlock()
	for _, t := range dead {
		t.finish(cerr)
	}
}

// sleepFor waits d, or returns ErrSessionClosed when the session closes.
func (s *Session) sleepFor(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-s.closeCh:
		return ErrSessionClosed
	}
}

func (s *Session) runConnRecovery(c *conn, tasks []*task, t2w time.Duration, deadline time.Time) error {
	lostAt := time.Now()
	// No write of the lost connection may still be going out (it reads
	// task buffers) once the tasks move to another connection.
	<-c.wexit
	if err := s.sleepFor(t2w); err != nil {
		return err
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	go func() {
		select {
		case <-s.closeCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	carrier, replaced, err := s.clearLostConn(ctx, c, lostAt)
	if err != nil {
		return err
	}
	for _, t := range tasks {
		if err := s.sessionGoingOn(ctx); err != nil {
			return err
		}
		if err := s.reassignTask(ctx, carrier, t); err != nil {
			return fmt.Errorf("task %#x: %w", t.itt, err)
		}
	}
	if !replaced {
		// A survivor carries the tasks: bring the session back to its
		// number of connections with the lost CID (best effort).
		nc, err := s.loginConn(ctx, c.cid)
		if err != nil {
			c.log.WithError(err).Warn("could not log in a replacement connection; going on with one connection less")
		}
		s.replaceConn(c, nc)
	} else {
		s.replaceConn(c, nil)
	}
	return nil
}

// sessionGoingOn fails when the session closed, a session recovery began,
// or ctx (the recovery deadline) ended.
func (s *Session) sessionGoingOn(ctx context.Context) error {
	if s.closed.Load() {
		return ErrSessionClosed
	}
	s.recMu.Lock()
	rec := s.rec.recovering || s.rec.fatal != nil
	s.recMu.Unlock()
	if rec {
		return errors.New("the session is being recovered")
	}
	if ctx.Err() != nil {
		return fmt.Errorf("Time2Wait + Time2Retain passed: %w", ctx.Err())
	}
	return nil
}

// clearLostConn logs the lost connection out at the target and returns
// the connection that will carry its tasks: a survivor after a Logout with
// reason 2, or (replaced) a new connection with the same CID.
func (s *Session) clearLostConn(ctx context.Context, c *conn, lostAt time.Time) (carrier *conn, replaced bool, err error) {
	if err := s.sessionGoingOn(ctx); err != nil {
		return nil, false, err
	}
	s.connMu.Lock()
	var r *conn
	for _, x := range s.conns {
		if x == c {
			continue
		}
		select {
		case <-x.done:
		default:
			if r == nil {
				r = x
			}
		}
	}
	s.connMu.Unlock()
	if r != nil {
		t2w, err := s.logoutForRecovery(ctx, r, c)
		if err == nil {
			// The Logout Response's Time2Wait is the minimum wait
			// before reassigning, counted from the loss.
			if t2w > 0 {
				if err := s.sleepFor(min(time.Until(lostAt.Add(t2w)), time.Until(deadlineOf(ctx)))); err != nil {
					return nil, false, err
				}
			}
			return r, false, nil
		}
		c.log.WithError(err).Warn("logout of the lost connection on a surviving one failed; logging in a new connection with its CID")
	}
	nc, err := s.loginConn(ctx, c.cid)
	if err != nil {
		return nil, false, err
	}
	return nc, true, nil
}

func deadlineOf(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(maxConnRecovery)
	}
	return d
}

// logoutForRecovery sends, on r, a Logout with reason 2 (remove the
// connection for recovery) for the lost connection c and returns the
// Time2Wait the target answered. "CID not found" means the target already
// dropped the connection: its tasks may still be reassigned.
func (s *Session) logoutForRecovery(ctx context.Context, r, c *conn) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, s.tmfTimeout())
	defer cancel()
	t := newTask(kindLogout)
	// The ExpStatSN is "the last ExpStatSN value for the connection to be
	// closed" (Section 11.14.5).
	req := &pdu.LogoutRequest{Header: pdu.Header{Immediate: true, Final: true}, Reason: pdu.LogoutRemoveForRecov, CID: c.cid}
	err := s.issue(ctx, r, t, true, func(sn uint32) error {
		req.ITT, req.CmdSN, req.ExpStatSN = t.itt, sn, c.expStatSN.Load()
		return r.queueLocked(req, nil)
	})
	if err == nil {
		select {
		case <-t.doneCh():
			err = t.err
		case <-ctx.Done():
			s.complete(t, ctx.Err())
			err = ctx.Err()
		}
	} else if t.itt != 0 {
		s.complete(t, err)
	}
	if err != nil {
		return 0, err
	}
	resp := t.ctl.(*pdu.LogoutResponse)
	switch resp.Response {
	case 0:
		return time.Duration(resp.Time2Wait) * time.Second, nil
	case 1:
		return 0, nil
	}
	return 0, fmt.Errorf("iscsi: logout for recovery of connection %d refused (response %d)", c.cid, resp.Response)
}

// loginConn logs in a new connection of this session with cid and starts
// it; it joins the session's connections.
func (s *Session) loginConn(ctx context.Context, cid uint16) (*conn, error) {
	var last error
	for attempt := 0; ; attempt++ {
		if err := s.sessionGoingOn(ctx); err != nil {
			if last != nil {
				return nil, fmt.Errorf("%w (last login error: %v)", err, last)
			}
			return nil, err
		}
		lctx, cancel := context.WithTimeout(ctx, s.cfg.LoginTimeout)
		s.winMu.Lock()
		cmdSN := s.cmdSN
		s.winMu.Unlock()
		nc, l, err := s.dialLogin(lctx, s.portalAddr(), cid, s.TSIH(), cmdSN)
		cancel()
		if err == nil {
			nc.p = l.params
			s.recMu.Lock()
			s.connMu.Lock()
			ok := !s.rec.recovering && s.rec.fatal == nil && !s.closed.Load()
			if ok {
				s.conns = append(s.conns, nc)
			}
			s.connMu.Unlock()
			s.recMu.Unlock()
			if !ok {
				nc.nc.Close()
				return nil, errors.New("the session is being recovered")
			}
			s.start(nc)
			return nc, nil
		}
		var le *LoginError
		if errors.As(err, &le) && le.Class == 2 {
			return nil, err // the target refuses this session or connection
		}
		last = err
		if err := s.sleepFor(min(time.Duration(attempt+1)*200*time.Millisecond, time.Second)); err != nil {
			return nil, err
		}
	}
}

// replaceConn removes the recovered connection c from the session's
// connections; nc (if any) takes its place, the new connection of a
// recovery that had no survivor is already in the list.
func (s *Session) replaceConn(c, nc *conn) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	out := s.conns[:0]
	for _, x := range s.conns {
		switch {
		case x == c && nc != nil:
			out = append(out, nc)
		case x == c:
		case x == nc:
		default:
			out = append(out, x)
		}
	}
	s.conns = out
	if s.conn == c {
		s.conn = nil
		for _, x := range s.conns {
			select {
			case <-x.done:
			default:
				if s.conn == nil {
					s.conn = x
				}
			}
		}
		if s.conn == nil && len(s.conns) > 0 {
			s.conn = s.conns[0]
		}
		if s.conn == nil {
			s.conn = c
			s.conns = append(s.conns, c)
		}
	}
}

// reassignTask moves t to r with TASK REASSIGN (or retries a command the
// target never received) and returns nil when t goes on there.
func (s *Session) reassignTask(ctx context.Context, r *conn, t *task) error {
	s.taskMu.Lock()
	if s.tasks[t.itt] != t {
		s.taskMu.Unlock()
		return nil // finished meanwhile
	}
	old := t.conn
	var expDataSN uint32
	if t.rbuf != nil {
		// Resume a read at the first Data-In not received in order.
		if len(t.gaps) > 0 {
			t.expDataSN, t.received = t.gaps[0].nextSN, t.gaps[0].next
		}
		expDataSN = t.expDataSN
	}
	t.gaps, t.held = nil, false
	t.reassigned = true
	t.conn = r
	s.taskMu.Unlock()
	_ = old

	ctx, cancel := context.WithTimeout(ctx, s.tmfTimeout())
	defer cancel()
	tm := newTask(kindTMF)
	tm.lun, tm.tmfFunc, tm.tmfRef = t.lun, pdu.TMFTaskReassign, t.itt
	req := pdu.TaskMgmtRequest{Header: pdu.Header{Immediate: true, LUN: t.lun}, Function: pdu.TMFTaskReassign, RTT: t.itt, ExpDataSN: expDataSN}
	err := s.issue(ctx, r, tm, true, func(sn uint32) error {
		req.ITT, req.CmdSN, req.ExpStatSN = tm.itt, sn, r.expStatSN.Load()
		return r.queueLocked(&req, nil)
	})
	if err == nil {
		select {
		case <-tm.doneCh():
			err = tm.err
		case <-ctx.Done():
			s.complete(tm, ctx.Err())
			err = ctx.Err()
		}
	} else if tm.itt != 0 {
		s.complete(tm, err)
	}
	if err != nil {
		return fmt.Errorf("TASK REASSIGN: %w", err)
	}
	wire := tm.ctl.(*pdu.TaskMgmtResponse).Response
	resp := s.reassignResponse(wire)
	switch {
	case resp == pdu.TMFRespComplete:
		t.conn.log.Debugf("task %#x reassigned (ExpDataSN %d; response %d on the wire)", t.itt, expDataSN, wire)
		s.recMu.Lock()
		s.tasksReassigned++
		s.recMu.Unlock()
		return nil
	case resp == pdu.TMFRespNoTask && !s.cmdAcknowledged(t.cmdSN):
		// Never received: send the command again, same ITT and CmdSN.
		s.taskMu.Lock()
		if s.tasks[t.itt] != t {
			s.taskMu.Unlock()
			return nil
		}
		t.expDataSN, t.received, t.r2tSN = 0, 0, 0
		s.taskMu.Unlock()
		r.wmu.Lock()
		err := s.sendSCSI(r, t, t.cmdSN)
		r.wmu.Unlock()
		r.flush()
		if err != nil {
			return fmt.Errorf("retrying the command: %w", err)
		}
		r.log.Debugf("task %#x was not at the target (response %d on the wire); command retried with CmdSN %d", t.itt, wire, t.cmdSN)
		s.recMu.Lock()
		s.commandsResent++
		s.recMu.Unlock()
		return nil
	}
	return fmt.Errorf("TASK REASSIGN refused: %s", tmfResponseName(resp))
}

// reassignResponse is the TASK REASSIGN response as the target meant it.
//
// LIO (the Linux kernel target, INQUIRY vendor "LIO-ORG") sends swapped
// codes, from at least Linux 3.1 through 6.1 and, as far as its sources
// show, every later version: iscsit_tmr_task_reassign returns an iSCSI
// response code (function complete 0, task does not exist 1) that
// iscsit_handle_task_mgt_cmd stores in se_tmr->response, and
// iscsit_build_task_mgt_rsp converts that field as a target-core code
// (iscsit_convert_tcm_tmr_rsp: TMR_FUNCTION_FAILED = 0 goes out as 255
// "function rejected", TMR_FUNCTION_COMPLETE = 1 as 0 "function
// complete"). So LIO answers 255 when it took the task (and goes on with
// it: iscsit_tmr_post_handler tests the same field against
// ISCSI_TMF_RSP_COMPLETE) and 0 when it does not have it. On a session
// whose target is LIO, 255 is read as "function complete" and 0 as "task
// does not exist"; every other value, and every value from any other
// target, as RFC 7143 Section 11.6.1 says.
//
// Why a wrong reading cannot lose or repeat a write:
//   - 255 read as complete when LIO really refused (it also answers 255
//     for its genuine rejections: a different MaxRecvDataSegmentLength
//     or LUN on the new connection): the task stays in the task table
//     with its caller waiting, gets no answer, and at its command
//     timeout the usual escalation takes over — command retry only for a
//     CmdSN gap (retry.go), else ABORT TASK and then session recovery
//     with its ERL 0 guarantees (the target terminates the old session's
//     tasks before anything is issued again). Nothing is re-sent on the
//     strength of the 255.
//   - 0 read as "task does not exist" from a LIO that one day answers 0
//     for "function complete": the command is sent again only if the
//     target has not acknowledged its CmdSN (cmdAcknowledged, which
//     includes the ExpCmdSN of this very TMF response). A target that
//     received the command in order has acknowledged it, and that
//     answer falls through to "refused": session reinstatement, as for
//     any refusal. A command the target holds out of order (behind a
//     gap) is unacknowledged, and its copy is a non-immediate duplicate
//     CmdSN within the window, which the target "MUST silently ignore"
//     (Section 4.2.2.1); the original, reassigned, answers the caller.
//
// The INQUIRY vendor is the signal because the session has it (OpenLUN
// reads standard INQUIRY before any I/O and records it, lun.go) and
// it names the SCSI target stack itself, whatever the distribution or
// the iSCSI names configured; a LIO LUN exported with a pass-through
// backstore shows the real device's vendor instead, and then the
// initiator keeps the RFC reading — the fallback to reinstatement, as
// before.
func (s *Session) reassignResponse(resp uint8) uint8 {
	if !s.lioTarget.Load() {
		return resp
	}
	switch resp {
	case pdu.TMFRespRejected:
		return pdu.TMFRespComplete
	case pdu.TMFRespComplete:
		return pdu.TMFRespNoTask
	}
	return resp
}

// cmdAcknowledged reports whether the target acknowledged CmdSN sn
// (ExpCmdSN is past it).
func (s *Session) cmdAcknowledged(sn uint32) bool {
	s.winMu.Lock()
	defer s.winMu.Unlock()
	return serialGT(s.expCmdSN, sn)
}

// taskConn returns the connection t is allegiant to now.
func (s *Session) taskConn(t *task) *conn {
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	return t.conn
}
