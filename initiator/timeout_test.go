package initiator_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/faketarget"
)

// tmfLog records the task management functions the target received.
type tmfLog struct {
	mu  sync.Mutex
	fns []uint8
}

func (l *tmfLog) add(fn uint8) { l.mu.Lock(); l.fns = append(l.fns, fn); l.mu.Unlock() }
func (l *tmfLog) get() []uint8 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]uint8(nil), l.fns...)
}

// A command the target never answers times out and is escalated: ABORT
// TASK first; when the target ignores that, LOGICAL UNIT RESET; the caller
// gets ErrCommandTimeout and the session stays usable.
func TestCommandTimeoutEscalation(t *testing.T) {
	for _, ignoreAbort := range []bool{false, true} {
		name := "abort-task"
		if ignoreAbort {
			name = "lun-reset"
		}
		t.Run(name, func(t *testing.T) {
			var log tmfLog
			swallowed := false
			tcfg := faketarget.Config{
				OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, data []byte) bool {
					if cmd.CDB[0] == 0x28 && !swallowed { // first READ(10): never answered
						swallowed = true
						return true
					}
					return false
				},
				OnPDU: func(c *faketarget.Conn, p pdu.PDU, data []byte) bool {
					if tm, ok := p.(*pdu.TaskMgmtRequest); ok {
						log.add(tm.Function)
						if tm.Function == pdu.TMFAbortTask && ignoreAbort {
							return true // ignore it: no response at all
						}
					}
					return false
				},
			}
			e := newEnv(t, tcfg, func(c *initiator.Config) { c.CommandTimeout = 300 * time.Millisecond })
			l, err := initiator.OpenLUN(e.ctx, e.s, 0)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			start := time.Now()
			err = l.ReadAt(e.ctx, buf, 0)
			if !errors.Is(err, initiator.ErrCommandTimeout) {
				t.Fatalf("want ErrCommandTimeout, got %v", err)
			}
			took := time.Since(start)
			t.Logf("timed out in %v: %v; TMFs %v", took.Round(time.Millisecond), err, log.get())
			if took < 300*time.Millisecond {
				t.Fatalf("timed out after %v, before the 300ms command timeout", took)
			}
			fns := log.get()
			if len(fns) == 0 || fns[0] != pdu.TMFAbortTask {
				t.Fatalf("first TMF %v, want ABORT TASK", fns)
			}
			if ignoreAbort && (len(fns) < 2 || fns[1] != pdu.TMFLogicalUnitReset) {
				t.Fatalf("TMFs %v: want LOGICAL UNIT RESET after the ignored ABORT TASK", fns)
			}
			// The session still works.
			if err := l.ReadAt(e.ctx, buf, 4096); err != nil {
				t.Fatalf("read after timeout: %v", err)
			}
			_ = scsi.StatusGood
		})
	}
}

// Commands slower than the timeout's tick but quicker than the timeout
// itself are never timed out: a command's start is the sweeper's coarse
// clock, up to one tick before it really started, and the sweeper allows
// for that. (Comparing that clock with now-d alone times these out.)
func TestCommandTimeoutNotEarly(t *testing.T) {
	var late atomic.Int32
	tcfg := faketarget.Config{
		OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, data []byte) bool {
			c.SetDelay(330 * time.Millisecond) // 0.83 of the timeout, 3.3 ticks
			return false
		},
		OnPDU: func(c *faketarget.Conn, p pdu.PDU, data []byte) bool {
			if _, ok := p.(*pdu.TaskMgmtRequest); ok {
				late.Add(1)
			}
			return false
		},
	}
	e := newEnv(t, tcfg, func(c *initiator.Config) { c.CommandTimeout = 400 * time.Millisecond })
	l, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for i := 0; i < 8; i++ {
		// Start at a different phase of the sweeper's tick each time.
		time.Sleep(time.Duration(i) * 13 * time.Millisecond)
		if err := l.ReadAt(e.ctx, buf, int64(i)*4096); err != nil {
			t.Fatalf("read %d (330ms, timeout 400ms): %v", i, err)
		}
	}
	if n := late.Load(); n != 0 {
		t.Fatalf("%d task management requests: a command was timed out early", n)
	}
}
