package initiator_test

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
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
// TASK first; when the target ignores that, LOGICAL UNIT RESET; it is
// issued again (maxTimeoutReissue times), and when the target never
// answers it the caller gets ErrCommandTimeout and the session stays
// usable.
func TestCommandTimeoutEscalation(t *testing.T) {
	for _, ignoreAbort := range []bool{false, true} {
		name := "abort-task"
		if ignoreAbort {
			name = "lun-reset"
		}
		t.Run(name, func(t *testing.T) {
			var log tmfLog
			var reads atomic.Int32
			tcfg := faketarget.Config{
				OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, data []byte) bool {
					if cmd.CDB[0] == 0x28 && binary.BigEndian.Uint32(cmd.CDB[2:6]) == 0 { // READ(10) of LBA 0: never answered
						reads.Add(1)
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
			e := newEnv(t, tcfg, func(c *initiator.Config) { c.CommandTimeout = 300 * time.Millisecond; c.NopTimeout = time.Second })
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
			if took < 3*300*time.Millisecond {
				t.Fatalf("timed out after %v, before three 300ms command timeouts", took)
			}
			if n := reads.Load(); n != 3 {
				t.Fatalf("READ sent %d times, want 3 (issued again twice after its aborts)", n)
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

// Issue item 16: a command that timed out and was ended by ABORT TASK
// ("function complete") is issued again, not failed: a read always, a
// write too, since the target confirmed the aborted one never runs later.
// A write whose ABORT TASK found no task is not issued again. Both the
// blocking and the non-blocking (NBD) paths.
func TestTimedOutCommandIsReissued(t *testing.T) {
	cases := []struct {
		name   string
		write  bool
		noTask bool // ABORT TASK answers "task does not exist"
		async  bool
		ok     bool
		sent   int32
	}{
		{name: "read", ok: true, sent: 2},
		{name: "read-async", async: true, ok: true, sent: 2},
		{name: "read-no-task", noTask: true, ok: true, sent: 2},
		{name: "write", write: true, ok: true, sent: 2},
		{name: "write-async", write: true, async: true, ok: true, sent: 2},
		{name: "write-no-task", write: true, noTask: true, ok: false, sent: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			op := byte(0x28)
			if tc.write {
				op = 0x2a
			}
			var sent atomic.Int32
			tcfg := faketarget.Config{
				OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, data []byte) bool {
					// The first command to LBA 16 is accepted and forgotten.
					if cmd.CDB[0] == op && binary.BigEndian.Uint32(cmd.CDB[2:6]) == 16 {
						return sent.Add(1) == 1
					}
					return false
				},
				OnPDU: func(c *faketarget.Conn, p pdu.PDU, data []byte) bool {
					if tm, ok := p.(*pdu.TaskMgmtRequest); ok && tm.Function == pdu.TMFAbortTask && tc.noTask {
						c.Send(&pdu.TaskMgmtResponse{Header: pdu.Header{ITT: tm.ITT}, Response: pdu.TMFRespNoTask}, nil)
						return true
					}
					return false
				},
			}
			e := newEnv(t, tcfg, func(c *initiator.Config) { c.CommandTimeout = 300 * time.Millisecond; c.NopTimeout = time.Second })
			l, err := initiator.OpenLUN(e.ctx, e.s, 0)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			for i := range buf {
				buf[i] = byte(i)
			}
			off := int64(16 * 512)
			if tc.async {
				ch := make(chan error, 1)
				if tc.write {
					l.StartWriteAt(buf, off, false, func(err error) { ch <- err })
				} else {
					l.StartReadAt(buf, off, func(err error) { ch <- err })
				}
				select {
				case err = <-ch:
				case <-e.ctx.Done():
					t.Fatal("no completion")
				}
			} else if tc.write {
				err = l.WriteAt(e.ctx, buf, off, false)
			} else {
				err = l.ReadAt(e.ctx, buf, off)
			}
			if tc.ok && err != nil {
				t.Fatalf("command failed after its timeout and abort: %v", err)
			}
			if !tc.ok && !errors.Is(err, initiator.ErrCommandTimeout) {
				t.Fatalf("want ErrCommandTimeout, got %v", err)
			}
			if n := sent.Load(); n != tc.sent {
				t.Fatalf("command sent %d times, want %d", n, tc.sent)
			}
			if tc.write && tc.ok {
				got := make([]byte, len(buf))
				if err := l.ReadAt(e.ctx, got, off); err != nil || string(got) != string(buf) {
					t.Fatalf("read back after the reissued write: %v, equal %v", err, string(got) == string(buf))
				}
			}
			e.noViolations()
		})
	}
}
