package initiator_test

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// UNH-IOL 4.1 Command Retry at ErrorRecoveryLevel 1. The fake target
// discards one command PDU as if its header digest had failed
// (Config.DropCommand); the command gets no response. After its command
// timeout the initiator retries it: the same PDU — Initiator Task Tag,
// CmdSN, flags, LUN, CDB, Expected Data Transfer Length, immediate data;
// only ExpStatSN may differ — on the same connection, and the command
// completes with the right data. A command the target did receive and
// merely does not answer is never retried (the fake target records a
// duplicate CmdSN as a violation and discards it): its timeout
// escalates to ABORT TASK as at ERL 0.
func TestConformanceCommandRetry(t *testing.T) {
	retryEnv := func(t *testing.T, tcfg faketarget.Config) *env {
		return erlEnv(t, tcfg, func(c *initiator.Config) { c.CommandTimeout = 300 * time.Millisecond })
	}
	// sameCommand checks that b is a; only ExpStatSN (bytes 28-31) may differ.
	sameCommand := func(t *testing.T, a, b faketarget.Received) {
		t.Helper()
		x, y := a.Raw, b.Raw
		copy(x[28:32], []byte{0, 0, 0, 0})
		copy(y[28:32], []byte{0, 0, 0, 0})
		if x != y || !bytes.Equal(a.Data, b.Data) {
			t.Errorf("retried command differs from the original:\n%x\n%x (data %d/%d bytes)", a.Raw, b.Raw, len(a.Data), len(b.Data))
		}
	}
	commands := func(e *env) []faketarget.Received { return ofOpcode(e.c.Received(), pdu.OpSCSICommand) }

	t.Run("read", func(t *testing.T) {
		var arm atomic.Bool
		e := retryEnv(t, faketarget.Config{DropCommand: func(_, _ uint32) bool { return arm.CompareAndSwap(true, false) }})
		n0 := len(commands(e))
		arm.Store(true)
		cmd := read10(0, 16)
		start := time.Now()
		resp, err := e.s.Do(e.ctx, cmd)
		checkRead(t, e, 0, result{resp, err})
		if !bytes.Equal(cmd.Read, e.tg.Disk(0)[:16*512]) {
			t.Fatal("data differs")
		}
		cs := commands(e)[n0:]
		if len(cs) != 2 || !cs[0].Dropped || cs[1].Dropped {
			t.Fatalf("%d command PDUs (want the dropped one and its retry)", len(cs))
		}
		sameCommand(t, cs[0], cs[1])
		if d := cs[1].At.Sub(start); d < 300*time.Millisecond {
			t.Errorf("retried after %v, before the command timeout", d)
		}
		if tm := ofOpcode(e.c.Received(), pdu.OpTaskMgmtReq); len(tm) != 0 {
			t.Errorf("%d task management requests for a command that was retried", len(tm))
		}
		e.noViolations()
	})

	t.Run("write-immediate-data", func(t *testing.T) {
		var arm atomic.Bool
		e := retryEnv(t, faketarget.Config{DropCommand: func(_, _ uint32) bool { return arm.CompareAndSwap(true, false) }})
		n0 := len(commands(e))
		data := bytes.Repeat([]byte("retry me"), 64)
		arm.Store(true)
		if _, err := e.s.Do(e.ctx, write10(5, data)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e.tg.Disk(0)[5*512:6*512], data) {
			t.Fatal("the retried write did not land")
		}
		cs := commands(e)[n0:]
		if len(cs) != 2 || !cs[0].Dropped || cs[1].Dropped || len(cs[1].Data) != 512 {
			t.Fatalf("%d command PDUs (want the dropped one and its retry with 512 bytes of immediate data)", len(cs))
		}
		sameCommand(t, cs[0], cs[1])
		e.noViolations() // a duplicate CmdSN would be one
	})

	t.Run("received-not-retried", func(t *testing.T) {
		var held atomic.Uint32
		e := retryEnv(t, faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
			// Keep (never answer) the first READ: it arrived.
			return cmd.CDB[0] == 0x28 && held.CompareAndSwap(0, cmd.ITT)
		}})
		resp, err := e.s.Do(e.ctx, read10(0, 16))
		checkRead(t, e, 0, result{resp, err}) // issued again after ABORT TASK
		itt := held.Load()
		var same int
		for _, r := range commands(e) {
			if r.ITT() == itt {
				same++
			}
		}
		if same != 1 {
			t.Errorf("the command the target had (itt %#x) was sent %d times", itt, same)
		}
		tm := ofOpcode(e.c.Received(), pdu.OpTaskMgmtReq)
		if len(tm) == 0 || tm[0].PDU.(*pdu.TaskMgmtRequest).Function != pdu.TMFAbortTask || tm[0].PDU.(*pdu.TaskMgmtRequest).RTT != itt {
			t.Errorf("no ABORT TASK for the unanswered command (TMFs: %d)", len(tm))
		}
		e.noViolations()
	})
}
