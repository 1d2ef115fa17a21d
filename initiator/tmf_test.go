package initiator_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// Review #3: a task-set TMF covers only the tasks received before it (lower
// CmdSN). A WRITE issued while a LOGICAL UNIT RESET (ABORT TASK SET,
// TARGET WARM RESET) is outstanding must not be sent until the TMF has
// ended, and must then be sent exactly once; the older WRITE the TMF did
// cover is ended by it and issued again.
func TestTaskSetTMFCoversOnlyOlderTasks(t *testing.T) {
	for _, fn := range []uint8{pdu.TMFLogicalUnitReset, pdu.TMFAbortTaskSet, pdu.TMFTargetWarmReset} {
		t.Run(fmt.Sprintf("function%d", fn), func(t *testing.T) {
			tmfs := make(chan *pdu.TaskMgmtRequest, 4)
			h := newHolder()
			tcfg := faketarget.Config{
				OnPDU: func(c *faketarget.Conn, p pdu.PDU, data []byte) bool {
					if q, ok := p.(*pdu.TaskMgmtRequest); ok {
						cp := *q
						tmfs <- &cp // answered by the test
						return true
					}
					return false
				},
				OnCommand: h.hook(0x2a), // WRITE(10)s are answered by the test
			}
			e := newEnv(t, tcfg, nil)
			block := func(b byte) []byte { return bytes.Repeat([]byte{b}, 512) }
			lba := func(c *pdu.SCSICommand) uint32 { return binary.BigEndian.Uint32(c.CDB[2:6]) }

			old := goDo(e.ctx, e.s, write10(1, block(0x11)))
			first := h.next(t, e.ctx)
			tmfErr := make(chan error, 1)
			go func() { tmfErr <- e.s.TaskManagement(e.ctx, fn, 0) }()
			var tmf *pdu.TaskMgmtRequest
			select {
			case tmf = <-tmfs:
			case <-e.ctx.Done():
				t.Fatal("no TMF arrived")
			}
			if first.CmdSN != tmf.CmdSN-1 {
				t.Fatalf("older WRITE CmdSN %d, TMF CmdSN %d", first.CmdSN, tmf.CmdSN)
			}
			nw := goDo(e.ctx, e.s, write10(2, block(0x22)))
			sent := map[uint32][]uint32{1: {first.CmdSN}} // LBA → CmdSNs received
			var during []*pdu.SCSICommand
			select {
			case c := <-h.ch:
				during = append(during, c)
				sent[lba(c)] = append(sent[lba(c)], c.CmdSN)
				t.Errorf("WRITE to LBA %d sent (CmdSN %d) while the TMF (CmdSN %d) was outstanding", lba(c), c.CmdSN, tmf.CmdSN)
			case <-time.After(300 * time.Millisecond):
			}
			// The target completes the TMF; it aborted the older WRITE
			// (no response for it).
			e.c.Send(&pdu.TaskMgmtResponse{Header: pdu.Header{ITT: tmf.ITT}, Response: pdu.TMFRespComplete}, nil)
			if err := <-tmfErr; err != nil {
				t.Fatal(err)
			}
			for _, c := range during {
				e.c.SendStatus(c.ITT, 0, nil)
			}
			var oldDone, newDone bool
			for !oldDone || !newDone {
				select {
				case c := <-h.ch:
					sent[lba(c)] = append(sent[lba(c)], c.CmdSN)
					if lba(c) == 2 && serialBefore(c.CmdSN, tmf.CmdSN) {
						t.Errorf("new WRITE CmdSN %d before the TMF's %d", c.CmdSN, tmf.CmdSN)
					}
					e.c.SendStatus(c.ITT, 0, nil)
				case r := <-old:
					if r.err != nil {
						t.Errorf("older WRITE: %v", r.err)
					}
					oldDone = true
				case r := <-nw:
					if r.err != nil {
						t.Errorf("new WRITE: %v", r.err)
					}
					newDone = true
				case <-e.ctx.Done():
					t.Fatalf("writes never completed; received %v", sent)
				}
			}
			select {
			case c := <-h.ch:
				sent[lba(c)] = append(sent[lba(c)], c.CmdSN)
			case <-time.After(100 * time.Millisecond):
			}
			if len(sent[2]) != 1 {
				t.Errorf("target received the WRITE issued during the TMF %d times (CmdSN %v), want once", len(sent[2]), sent[2])
			}
			if len(sent[1]) != 2 {
				t.Errorf("target received the covered WRITE %d times (CmdSN %v), want twice (aborted, then issued again)", len(sent[1]), sent[1])
			}
			e.noViolations()
		})
	}
}

func serialBefore(a, b uint32) bool { return int32(a-b) < 0 }
