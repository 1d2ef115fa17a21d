package initiator

import "github.com/lunbridge/lunbridge/initiator/pdu"

// Task-set holds. A task-set TMF (ABORT TASK SET, CLEAR TASK SET, LOGICAL
// UNIT RESET, TARGET WARM/COLD RESET) is immediate and carries the next
// CmdSN; it covers only the tasks received before it, those with a lower
// CmdSN (RFC 7143, Sections 4.2.3.3 and 11.5.1). A command issued while
// it is outstanding would get a CmdSN after it and run under the reset,
// yet could not be told apart from the covered ones once the TMF
// completes. Like Linux's error handler, which quiesces the host before a
// reset, the session holds new SCSI commands to the TMF's LUN (every LUN
// for a target reset) from the moment the TMF takes its CmdSN until it has
// ended (tmfDone has then finished the covered tasks).

// taskSetFunc reports whether fn acts on a task set rather than one task.
func taskSetFunc(fn uint8) (task, target bool) {
	switch fn {
	case pdu.TMFAbortTaskSet, pdu.TMFClearTaskSet, pdu.TMFLogicalUnitReset:
		return true, false
	case pdu.TMFTargetWarmReset, pdu.TMFTargetColdReset:
		return true, true
	}
	return false, false
}

// heldLocked reports whether commands to lun are held; winMu is held.
func (s *Session) heldLocked(lun uint64) bool {
	return s.holdAll > 0 || s.holds[lun] > 0
}

// holdLocked starts holding for TMF t, if it is a task-set function;
// winMu is held.
func (s *Session) holdLocked(t *task) {
	set, all := taskSetFunc(t.tmfFunc)
	if !set || t.holding {
		return
	}
	t.holding = true
	if all {
		s.holdAll++
		return
	}
	if s.holds == nil {
		s.holds = make(map[uint64]int)
	}
	s.holds[t.lun]++
}

// releaseHold ends t's hold, if any, and wakes the held commands.
func (s *Session) releaseHold(t *task) {
	s.winMu.Lock()
	defer s.winMu.Unlock()
	if !t.holding {
		return
	}
	t.holding = false
	if _, all := taskSetFunc(t.tmfFunc); all {
		s.holdAll--
	} else if s.holds[t.lun]--; s.holds[t.lun] <= 0 {
		delete(s.holds, t.lun)
	}
	close(s.holdCh)
	s.holdCh = make(chan struct{})
}
