package initiator

import (
	"context"
	"fmt"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// Command retry at ErrorRecoveryLevel >= 1 (RFC 7143, Sections 6.2.1 and
// 7.2.1; UNH-IOL initiator FFP 4.1). A target discards a command PDU
// whose header digest failed, leaving a gap in its CmdSN sequence that
// only the initiator can plug: by sending the same command PDU again —
// same Initiator Task Tag, CmdSN, flags, LUN, CDB and immediate data —
// on the same connection. Retry "MUST NOT be used for reasons other than
// plugging command sequence gaps".
//
// When a command times out, the initiator first asks the target where
// its command sequence stands: an immediate NOP-Out ping on the task's
// connection, whose NOP-In carries ExpCmdSN. The ping leaves after the
// command on the same TCP connection, so the target has seen the command
// (if it arrived intact) before it answers. The command is retried only
// when ExpCmdSN equals its CmdSN: every earlier command arrived and this
// one did not — had it arrived, ExpCmdSN would have moved past it, since
// a target advances ExpCmdSN on receipt of the next expected command.
// ExpCmdSN beyond the CmdSN means the target has the command (it is slow,
// or its response was lost): no retry, the timeout escalates to ABORT
// TASK as at ERL 0. ExpCmdSN below it means an earlier command is
// missing: no retry either, that command's own timeout plugs its gap.
// So a retry never reaches a target that holds the original, and no
// write runs twice; should one anyway (a target that counts CmdSN
// differently), the RFC makes the target discard a non-immediate
// command whose CmdSN it already received (Section 4.2.2.1: "MUST
// silently ignore ... non-immediate duplicates"), so it still does not
// execute twice.

// maxCommandRetries bounds the retries of one command; after them its
// timeout escalates as usual.
const maxCommandRetries = 2

// retryCommand runs when t timed out on c, before any task management.
// It reports whether the command PDU was sent again; the task then runs
// on with a fresh CommandTimeout. A caller that cancels meanwhile waits
// for that (the retried command ends or times out again).
func (s *Session) retryCommand(c *conn, t *task) bool {
	if t.kind != kindSCSI || !c.erl1() || t.retries >= maxCommandRetries {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.tmfTimeout())
	defer cancel()
	if err := s.pingConn(ctx, c); err != nil {
		return false
	}
	s.winMu.Lock()
	exp := s.expCmdSN
	s.winMu.Unlock()
	log := s.log.WithField("itt", fmt.Sprintf("%#x", t.itt))
	if exp != t.cmdSN {
		log.Debugf("command timed out; the target's ExpCmdSN %d says CmdSN %d is not a gap to plug", exp, t.cmdSN)
		return false
	}
	c.wmu.Lock()
	if t.isFinished() {
		c.wmu.Unlock()
		return true // ended meanwhile: nothing left to escalate
	}
	t.retries++
	log.Warnf("command CmdSN %d never reached the target (its ExpCmdSN is %d): retrying it (%d of %d)", t.cmdSN, exp, t.retries, maxCommandRetries)
	req := &t.req
	req.ExpStatSN = c.expStatSN.Load() // ITT, CmdSN, flags, LUN and CDB as sent
	err := c.queueLocked(req, t.wbuf[:t.imm])
	if err == nil && t.unsol > 0 {
		err = s.sendData(c, t, pdu.ReservedTag, uint32(t.imm), uint32(t.unsol), true)
	}
	c.wmu.Unlock()
	c.flush()
	if err != nil {
		return false
	}
	s.taskMu.Lock()
	t.start = s.clock.Load()
	s.taskMu.Unlock()
	t.timedOut.Store(false)
	return true
}
