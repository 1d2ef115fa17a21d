package initiator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// Command timeouts and task management: the sweep that finds commands past
// Config.CommandTimeout, the escalation from ABORT TASK to LOGICAL UNIT
// RESET to dropping the connection, and the TMF exchange itself (tmfhold.go
// holds new commands while a task-set function runs).

// reissueAfterAbort reports whether a timed-out task, ended by task
// management, may be issued again. "Function complete" means the target
// ended the task: it will not execute later (a task it never received is
// then considered received, Section 11.5.1), so even a write is safe to
// issue again; it rewrites the same data, and the caller has no
// acknowledgement for it yet. "Task does not exist" says nothing about a
// write the target may still hold in a state we cannot see: only a read
// is issued again then.
func reissueAfterAbort(t *task) bool {
	switch t.abortResp {
	case pdu.TMFRespComplete:
		return true
	case pdu.TMFRespNoTask:
		return t.wbuf == nil
	}
	return false
}

// maxTimeoutReissue bounds how often one command is issued again after it
// timed out and was aborted: a target that never answers it fails it after
// (1+maxTimeoutReissue) command timeouts, like Linux's sd bounds retries.
const maxTimeoutReissue = 2

// timeoutsKey carries, into a blocking retry of a non-blocking command,
// how many timeouts it has had (asyncCmd.slow).
const timeoutsKey ctxKey = 2

// timeoutError is a command that exceeded CommandTimeout and was ended by
// task management; reissue says whether it may be issued again.
type timeoutError struct {
	after   time.Duration
	reissue bool
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("%v: command timed out after %v and was aborted", ErrCommandTimeout, e.after)
}

func (e *timeoutError) Is(target error) bool { return target == ErrCommandTimeout }

// sweep escalates SCSI tasks older than CommandTimeout. One goroutine per
// session scans the task table a few times per timeout period, instead of
// a timer per command.
func (s *Session) sweep() {
	d := s.cfg.CommandTimeout
	tick := time.NewTicker(min(max(d/4, 10*time.Millisecond), time.Second))
	defer tick.Stop()
	// marks are the clock values stored so far (oldest first, trimmed).
	// A task stamped with mark i started before mark i+1 was stored; so
	// with L the newest mark at least d old, every task stamped before
	// L is older than d, however late the ticks came.
	marks := []int64{s.clock.Load()}
	for {
		select {
		case <-s.closeCh:
			return
		case <-tick.C:
			now := time.Now().UnixNano()
			s.clock.Store(now)
			marks = append(marks, now)
			i := 0
			for i < len(marks) && marks[i] <= now-int64(d) {
				i++
			}
			if i == 0 {
				continue
			}
			limit := marks[i-1]
			marks = marks[i-1:]
			var late []*task
			var lateConn []*conn
			s.taskMu.Lock()
			for _, t := range s.tasks {
				if t.kind == kindSCSI && t.start != 0 && t.start < limit && !t.timedOut.Load() {
					late = append(late, t)
					lateConn = append(lateConn, t.conn)
				}
			}
			s.taskMu.Unlock()
			for i, t := range late {
				if t.timedOut.CompareAndSwap(false, true) {
					s.log.WithFields(logrus.Fields{"itt": fmt.Sprintf("%#x", t.itt), "cmdsn": t.cmdSN, "conn": lateConn[i].cid}).Warnf("command timed out after %v; aborting it", d)
					go s.escalate(lateConn[i], t, "timed out")
				}
			}
		}
	}
}

// maxReissue bounds how often one command is issued again after
// connection losses.
const maxReissue = 10

// ErrCommandTimeout is returned for a command that exceeded
// Config.CommandTimeout and was aborted on the target.
var ErrCommandTimeout = errors.New("iscsi: command timeout")

// tmfTimeout bounds each escalation step: the NOP timeout (a live target
// answers a TMF as fast as a ping), between 1 and 5 seconds.
func (s *Session) tmfTimeout() time.Duration {
	return min(max(s.cfg.NopTimeout, time.Second), 5*time.Second)
}

// escalate ends a task the caller gave up on, like the Linux SCSI error
// handler: ABORT TASK; if the task is still not finished, LOGICAL UNIT
// RESET; if even that fails, drop the connection (which fails the task,
// and session recovery takes over). When escalate returns, t is finished or
// its connection is gone, so its buffers are free.
func (s *Session) escalate(c *conn, t *task, why string) {
	if why == "timed out" && s.retryCommand(c, t) {
		return // a command that never arrived was sent again (retry.go)
	}
	log := s.log.WithField("itt", fmt.Sprintf("%#x", t.itt))
	connGone := func() bool {
		select {
		case <-c.done:
			return true // the read loop's exit fails t: nothing to escalate
		default:
			return false
		}
	}
	step := func(fn uint8, ref uint32) bool {
		if connGone() {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.tmfTimeout())
		defer cancel()
		resp, err := s.taskMgmt(ctx, c, fn, t.lun, ref, t.cmdSN)
		if err != nil {
			if connGone() {
				return true
			}
			log.WithError(err).Warnf("task management %d failed", fn)
			return false
		}
		log.Debugf("task management %d (%s): %s", fn, why, tmfResponseName(resp))
		select {
		case <-t.doneCh():
			return true
		case <-time.After(s.tmfTimeout()):
			return false
		}
	}
	if step(pdu.TMFAbortTask, t.itt) {
		return
	}
	log.Warnf("task %s and not ended by ABORT TASK; resetting the LUN", why)
	if step(pdu.TMFLogicalUnitReset, pdu.ReservedTag) {
		return
	}
	log.Warnf("task %s and not ended by LOGICAL UNIT RESET; dropping the connection", why)
	c.fail(fmt.Errorf("task %#x %s and not ended by ABORT TASK or LOGICAL UNIT RESET", t.itt, why))
}

// tmfDone ends the tasks a successful TMF covered; the read loop calls it
// in order, after any Data-In for those tasks (Section 4.2.3.3).
func (s *Session) tmfDone(tmf *task, resp *pdu.TaskMgmtResponse) {
	if resp.Response != pdu.TMFRespComplete && resp.Response != pdu.TMFRespNoTask {
		return
	}
	s.taskMu.Lock()
	var ended []*task
	for itt, t := range s.tasks {
		if t.kind != kindSCSI {
			continue
		}
		hit := false
		switch tmf.tmfFunc {
		case pdu.TMFAbortTask:
			hit = itt == tmf.tmfRef
		case pdu.TMFAbortTaskSet, pdu.TMFClearTaskSet, pdu.TMFLogicalUnitReset:
			// The task set is the tasks received before the TMF: those
			// with a lower CmdSN (Sections 4.2.3.3 and 11.5.1).
			hit = t.lun == tmf.lun && serialLT(t.cmdSN, tmf.cmdSN)
		case pdu.TMFTargetWarmReset, pdu.TMFTargetColdReset:
			hit = serialLT(t.cmdSN, tmf.cmdSN)
		}
		if hit {
			t.abortResp = resp.Response
			ended = append(ended, t)
			delete(s.tasks, itt)
		}
	}
	s.taskMu.Unlock()
	for _, t := range ended {
		t.finish(ErrAborted)
	}
}

// TMF response names (RFC 7143, Section 11.6.1).
func tmfResponseName(r uint8) string {
	switch r {
	case 0:
		return "function complete"
	case 1:
		return "task does not exist"
	case 2:
		return "LUN does not exist"
	case 3:
		return "task still allegiant"
	case 4:
		return "task allegiance reassignment not supported"
	case 5:
		return "task management function not supported"
	case 6:
		return "function authorization failed"
	case 255:
		return "function rejected"
	}
	return fmt.Sprintf("response %d", r)
}

// taskMgmt sends an immediate TMF and waits for its response.
func (s *Session) taskMgmt(ctx context.Context, c *conn, fn uint8, lun uint64, ref uint32, refCmdSN uint32) (uint8, error) {
	t := newTask(kindTMF)
	t.lun, t.tmfFunc, t.tmfRef = lun, fn, ref
	req := pdu.TaskMgmtRequest{Header: pdu.Header{Immediate: true, LUN: lun}, Function: fn, RTT: pdu.ReservedTag, RefCmdSN: refCmdSN}
	if fn == pdu.TMFAbortTask {
		req.RTT = ref
	}
	// A task-set function holds new commands from issue until here:
	// after tmfDone has ended the tasks it covered.
	defer s.releaseHold(t)
	err := s.issue(ctx, c, t, true, func(sn uint32) error {
		req.ITT, req.CmdSN, req.ExpStatSN = t.itt, sn, c.expStatSN.Load()
		if fn != pdu.TMFAbortTask {
			req.RefCmdSN = sn
		}
		return c.queueLocked(&req, nil)
	})
	if err != nil {
		if t.itt != 0 {
			s.complete(t, err)
		}
		return 0, err
	}
	select {
	case <-t.doneCh():
	case <-ctx.Done():
		s.complete(t, ctx.Err())
		return 0, ctx.Err()
	}
	if t.err != nil {
		return 0, t.err
	}
	return t.ctl.(*pdu.TaskMgmtResponse).Response, nil
}

// TaskManagement runs a task management function on a LUN (ABORT TASK SET,
// LOGICAL UNIT RESET, TARGET WARM RESET, ...) and returns an error unless
// the target completed it.
func (s *Session) TaskManagement(ctx context.Context, fn uint8, lun uint64) error {
	c, err := s.currentConn(ctx)
	if err != nil {
		return err
	}
	r, err := s.taskMgmt(ctx, c, fn, lun, pdu.ReservedTag, 0)
	if err != nil {
		return err
	}
	if r != pdu.TMFRespComplete && r != pdu.TMFRespFunctionSucceed {
		return fmt.Errorf("iscsi: task management function %d: %s", fn, tmfResponseName(r))
	}
	return nil
}
