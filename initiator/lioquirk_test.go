package initiator_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// LIO 6.1's swapped TASK REASSIGN responses (connrecovery.go,
// reassignResponse) on the fake target posing as LIO: INQUIRY vendor
// "LIO-ORG", responses put on the wire by faketarget.LIO61ReassignWire.

// lioEnv is erl2Env with two connections and a LUN opened, so the
// session has read the target's INQUIRY vendor.
func lioEnv(t *testing.T, cfg faketarget.Config, mod func(*initiator.Config)) *env {
	t.Helper()
	if len(cfg.LUNs) == 0 {
		cfg.LUNs = []faketarget.LUNConfig{{Blocks: 4096}}
	}
	e := erl2Env(t, 2, cfg, mod)
	if _, err := initiator.OpenLUN(e.ctx, e.s, 0); err != nil {
		t.Fatalf("OpenLUN: %v", err)
	}
	return e
}

// A write cut on its connection is reassigned; LIO accepts and says 255
// "function rejected". The initiator reads it as "function complete" for
// LIO: the write completes on the survivor, executed once, the session
// kept (no reinstatement, which LIO 6.1 oopses on with MC/S).
func TestLIOSwappedReassignAccepted(t *testing.T) {
	w := newWriteTap(96 << 10)
	e := lioEnv(t, faketarget.Config{Vendor: "LIO-ORG", ReassignWire: faketarget.LIO61ReassignWire, OnPDU: w.onPDU, CutDataOut: w.cutDataOut}, nil)
	tsih := e.s.TSIH()
	data := make([]byte, 128<<10)
	rand.New(rand.NewSource(5)).Read(data)
	r := await(t, e.ctx, goDo(e.ctx, e.s, write10(100, data)))
	if r.err != nil || r.resp.Status != 0 {
		t.Fatalf("write: status %d, %v", r.resp.Status, r.err)
	}
	if !bytes.Equal(e.tg.Disk(0)[100*512:100*512+len(data)], data) {
		t.Fatal("disk does not hold the written data")
	}
	w.mu.Lock()
	cut, sn := w.done, w.itts[w.first]
	w.mu.Unlock()
	if !cut {
		t.Fatal("the connection was never cut")
	}
	if n := e.tg.Executions()[sn]; n != 1 {
		t.Fatalf("write CmdSN %d executed %d times, want once", sn, n)
	}
	if len(e.tg.Reassigned()) != 1 {
		t.Fatalf("target reassigned %v, want the write", e.tg.Reassigned())
	}
	// Counted once the replacement connection is in, after the write.
	waitFor(t, e.ctx, "the connection recovery", func() bool { return e.s.Recovery().ConnRecoveries == 1 && e.s.Connections() == 2 })
	if rec := e.s.Recovery(); rec.TasksReassigned != 1 || rec.CommandsResent != 0 {
		t.Errorf("recovery stats: %d tasks reassigned, %d commands resent; want 1 and 0", rec.TasksReassigned, rec.CommandsResent)
	}
	keptSession(t, e, tsih)
}

// A write lost with its connection before the target counted it: LIO
// has no such task and says 0 "function complete". Read for LIO as "task
// does not exist" for a CmdSN the target has not acknowledged, the
// command is sent again with the same ITT and CmdSN at once — no wait for
// the command timeout (30 s here) — and executed once.
func TestLIOSwappedReassignNoTaskResends(t *testing.T) {
	var once sync.Once
	var lostITT, lostSN uint32
	e := lioEnv(t, faketarget.Config{Vendor: "LIO-ORG", ReassignWire: faketarget.LIO61ReassignWire, LoseCommand: func(_ *faketarget.Conn, q *pdu.SCSICommand) (hit bool) {
		if q.CDB[0] == 0x2a {
			once.Do(func() { hit, lostITT, lostSN = true, q.ITT, q.CmdSN })
		}
		return hit
	}}, func(c *initiator.Config) { c.CommandTimeout = 30 * time.Second })
	tsih := e.s.TSIH()
	data := make([]byte, 8<<10)
	rand.New(rand.NewSource(6)).Read(data)
	start := time.Now()
	r := await(t, e.ctx, goDo(e.ctx, e.s, write10(40, data)))
	took := time.Since(start)
	if r.err != nil || r.resp.Status != 0 {
		t.Fatalf("write: status %d, %v", r.resp.Status, r.err)
	}
	if took > 5*time.Second {
		t.Errorf("write took %v: it waited for the command timeout instead of being sent again", took.Round(time.Millisecond))
	}
	if !bytes.Equal(e.tg.Disk(0)[40*512:40*512+len(data)], data) {
		t.Fatal("disk does not hold the written data")
	}
	if lostITT == 0 && lostSN == 0 {
		t.Fatal("no write was lost")
	}
	var sent []*pdu.SCSICommand
	for _, c := range e.tg.Conns() {
		for _, rc := range ofOpcode(c.Received(), pdu.OpSCSICommand) {
			if q := rc.PDU.(*pdu.SCSICommand); q.CDB[0] == 0x2a {
				sent = append(sent, q)
			}
		}
	}
	// The lost command (recorded as it arrived) and its copy, alike.
	same := len(sent) == 2
	var got []string
	for _, q := range sent {
		got = append(got, fmt.Sprintf("ITT %#x CmdSN %d", q.ITT, q.CmdSN))
		same = same && q.ITT == lostITT && q.CmdSN == lostSN
	}
	if !same {
		t.Fatalf("writes the target received: %v; want the lost one and its copy, both ITT %#x CmdSN %d", got, lostITT, lostSN)
	}
	if n := e.tg.Executions()[lostSN]; n != 1 || len(e.tg.Executions()) != 1 {
		t.Fatalf("executions %v, want CmdSN %d once", e.tg.Executions(), lostSN)
	}
	waitFor(t, e.ctx, "the connection recovery", func() bool { return e.s.Recovery().ConnRecoveries == 1 && e.s.Connections() == 2 })
	if rec := e.s.Recovery(); rec.TasksReassigned != 0 || rec.CommandsResent != 1 {
		t.Errorf("recovery stats: %d tasks reassigned, %d commands resent; want 0 and 1", rec.TasksReassigned, rec.CommandsResent)
	}
	keptSession(t, e, tsih)
}

// A target that is not LIO answering 255 "function rejected" is taken at
// its word: the session falls back to reinstatement as before, and the
// write lands once.
func TestNonLIOReassignRejectedFallsBack(t *testing.T) {
	w := newWriteTap(96 << 10)
	e := lioEnv(t, faketarget.Config{OnPDU: w.onPDU, CutDataOut: w.cutDataOut,
		ReassignResponse: func(uint32) uint8 { return pdu.TMFRespRejected }}, nil)
	tsih := e.s.TSIH()
	data := make([]byte, 128<<10)
	rand.New(rand.NewSource(7)).Read(data)
	r := await(t, e.ctx, goDo(e.ctx, e.s, write10(200, data)))
	if r.err != nil || r.resp.Status != 0 {
		t.Fatalf("write: status %d, %v", r.resp.Status, r.err)
	}
	if !bytes.Equal(e.tg.Disk(0)[200*512:200*512+len(data)], data) {
		t.Fatal("disk does not hold the written data")
	}
	if rec := e.s.Recovery(); rec.Reconnects != 1 || rec.ConnRecoveries != 0 {
		t.Fatalf("recovery %+v, want the fallback: one session reinstatement, no connection recovery", rec)
	}
	if e.s.TSIH() == tsih {
		t.Fatal("same TSIH: the session was not reinstated")
	}
	total := 0
	for _, n := range e.tg.Executions() {
		total += n
	}
	if total != 1 {
		t.Fatalf("%d executions (%v), want the write once", total, e.tg.Executions())
	}
	e.noViolations()
}
