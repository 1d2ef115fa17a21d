package initiator_test

// LUN handle behaviour against the scripted fake target: retry policy for
// statuses that clear by themselves, provisioning (GET LBA STATUS, WRITE
// SAME) and identity checks inside a session.

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/faketarget"
)

const statusTaskAborted = 0x40

// countingHook answers the first n commands with opcode op with status st
// (n < 0: all of them) and counts every command with that opcode.
type countingHook struct {
	mu    sync.Mutex
	op    byte
	st    uint8
	n     int
	count int
}

func (h *countingHook) hook(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
	if cmd.CDB[0] != h.op {
		return false
	}
	h.mu.Lock()
	h.count++
	answer := h.n < 0 || h.count <= h.n
	h.mu.Unlock()
	if !answer {
		return false
	}
	c.SendStatus(cmd.ITT, h.st, nil)
	return true
}

func (h *countingHook) seen() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count
}

// Review #8: TASK ABORTED (another nexus's LUN reset with TAS=1) means the
// command was not done, not that it failed: it is sent again.
func TestLUNTaskAbortedRetried(t *testing.T) {
	h := &countingHook{op: 0x2a, st: statusTaskAborted, n: 1}
	e := newEnv(t, faketarget.Config{OnCommand: h.hook}, nil)
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := lun.WriteAt(e.ctx, make([]byte, 512), 0, false); err != nil {
		t.Fatalf("WriteAt after one TASK ABORTED: %v", err)
	}
	if got := h.seen(); got != 2 {
		t.Errorf("%d WRITEs sent, want 2 (the aborted one again)", got)
	}
	e.noViolations()
}

// Review #13: BUSY, TASK SET FULL and TASK ABORTED are retried for at most
// the command timeout, then the command fails with an error that is both
// blockdev.ErrBusy (EIO at the edges) and the SCSI status.
func TestLUNTryAgainBounded(t *testing.T) {
	for _, st := range []uint8{faketarget.StatusBusy, faketarget.StatusTaskSetFull, statusTaskAborted} {
		t.Run(scsi.Status(st).String(), func(t *testing.T) {
			h := &countingHook{op: 0x2a, st: st, n: -1}
			const budget = 400 * time.Millisecond
			e := newEnv(t, faketarget.Config{OnCommand: h.hook}, func(c *initiator.Config) { c.CommandTimeout = budget })
			lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			err = lun.WriteAt(e.ctx, make([]byte, 512), 0, false)
			took := time.Since(t0)
			if !errors.Is(err, blockdev.ErrBusy) {
				t.Fatalf("WriteAt against a LUN answering %v forever: %v, want ErrBusy", scsi.Status(st), err)
			}
			var se *scsi.SenseError
			if !errors.As(err, &se) || se.Status != scsi.Status(st) {
				t.Errorf("error %v does not carry the SCSI status %v", err, scsi.Status(st))
			}
			if took < budget || took > budget+time.Second {
				t.Errorf("failed after %v, want about the command timeout %v", took, budget)
			}
			if h.seen() < 3 {
				t.Errorf("only %d attempts", h.seen())
			}
			t.Logf("after %v: %v", took.Round(time.Millisecond), err)
			e.noViolations()
		})
	}
}
