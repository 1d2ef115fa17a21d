package initiator_test

import (
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// UNH-IOL 3.1: with a zero window the initiator sends no command, does not
// spin, and resumes when a NOP-In opens the window.
func TestConformanceZeroWindowBlocksUntilNopIn(t *testing.T) {
	e := newEnv(t, faketarget.Config{Window: faketarget.ClosedWindow}, nil)
	done := goDo(e.ctx, e.s, tur())
	cpu0, wall0 := cpuTime(), time.Now()
	time.Sleep(400 * time.Millisecond)
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	if n := len(ofOpcode(e.c.Received(), pdu.OpSCSICommand)); n != 0 {
		t.Fatalf("%d SCSI Commands sent into a zero window", n)
	}
	if cpu > wall/2 {
		t.Errorf("blocked on a zero window, the process used %v of CPU in %v: the initiator spins", cpu, wall)
	}
	e.c.SetWindowSize(1)
	e.c.SendNopIn(pdu.ReservedTag, 0, nil)
	if r := await(t, e.ctx, done); r.err != nil || r.resp.Status != 0 {
		t.Fatalf("after the window opened: %+v %v", r.resp, r.err)
	}
	e.noViolations() // includes "CmdSN beyond the advertised MaxCmdSN"
}

// UNH-IOL 3.3: a window of one: one command until a NOP-In opens the next slot.
func TestConformanceWindowOfOne(t *testing.T) {
	h := newHolder()
	e := newEnv(t, faketarget.Config{Window: 1, OnCommand: h.hook(0x00)}, nil)
	var done []<-chan result
	for i := 0; i < 3; i++ {
		done = append(done, goDo(e.ctx, e.s, tur()))
	}
	first := h.next(t, e.ctx)
	// The target now expects first.CmdSN+1 but advertised MaxCmdSN = first.CmdSN.
	e.c.SetWindowSize(0)
	h.none(t, 300*time.Millisecond, "window of one already used")
	e.c.SetWindowSize(1)
	e.c.SendNopIn(pdu.ReservedTag, 0, nil)
	second := h.next(t, e.ctx)
	h.none(t, 200*time.Millisecond, "window of one reopened by one slot")
	e.c.SendStatus(first.ITT, 0, nil) // window 1 again: the third may go
	third := h.next(t, e.ctx)
	e.c.SendStatus(second.ITT, 0, nil)
	e.c.SendStatus(third.ITT, 0, nil)
	for _, d := range done {
		if r := await(t, e.ctx, d); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if second.CmdSN != first.CmdSN+1 || third.CmdSN != first.CmdSN+2 {
		t.Errorf("CmdSNs %d %d %d", first.CmdSN, second.CmdSN, third.CmdSN)
	}
	e.noViolations()
}

// UNH-IOL 3.2: a large window is used without waiting for responses.
func TestConformanceLargeWindow(t *testing.T) {
	h := newHolder()
	e := newEnv(t, faketarget.Config{Window: 64, OnCommand: h.hook(0x00)}, nil)
	const n = 24
	var done []<-chan result
	for i := 0; i < n; i++ {
		done = append(done, goDo(e.ctx, e.s, tur()))
	}
	var held []*pdu.SCSICommand
	for i := 0; i < n; i++ {
		held = append(held, h.next(t, e.ctx)) // all arrive before any response
	}
	for _, c := range held {
		e.c.SendStatus(c.ITT, 0, nil)
	}
	for _, d := range done {
		if r := await(t, e.ctx, d); r.err != nil {
			t.Fatal(r.err)
		}
	}
	e.noViolations()
}

// UNH-IOL 16.5: a SCSI Response closes the window (MaxCmdSN = ExpCmdSN-1);
// no command until a NOP-In reopens it. (A window once advertised cannot
// shrink — MaxCmdSN never goes backwards — so the login offers one slot.)
func TestConformanceWindowClosedByResponseReopenedByNopIn(t *testing.T) {
	h := newHolder()
	e := newEnv(t, faketarget.Config{Window: 1, OnCommand: h.hook(0x00)}, nil)
	d1 := goDo(e.ctx, e.s, tur())
	c1 := h.next(t, e.ctx)
	e.c.SetWindowSize(0)
	e.c.SendStatus(c1.ITT, 0, nil)
	if r := await(t, e.ctx, d1); r.err != nil {
		t.Fatal(r.err)
	}
	d2 := goDo(e.ctx, e.s, tur())
	h.none(t, 300*time.Millisecond, "window closed by the SCSI Response")
	e.c.SetWindowSize(8)
	e.c.SendNopIn(pdu.ReservedTag, 0, nil)
	c2 := h.next(t, e.ctx)
	e.c.SendStatus(c2.ITT, 0, nil)
	if r := await(t, e.ctx, d2); r.err != nil {
		t.Fatal(r.err)
	}
	e.noViolations()
}

// RFC 7143 4.2.2.1: "If the PDU's MaxCmdSN < its ExpCmdSN - 1, ignore both."
func TestConformanceInvalidWindowIgnored(t *testing.T) {
	h := newHolder()
	e := newEnv(t, faketarget.Config{Window: faketarget.ClosedWindow, OnCommand: h.hook(0x00)}, nil)
	d := goDo(e.ctx, e.s, tur())
	exp := e.c.ExpCmdSN()
	// MaxCmdSN far beyond the command's CmdSN, but ExpCmdSN even higher:
	// MaxCmdSN < ExpCmdSN - 1, so the pair is invalid and ignored.
	e.c.SetWindow(exp+100, exp+10)
	e.c.SendNopIn(pdu.ReservedTag, 0, nil)
	h.none(t, 300*time.Millisecond, "invalid window (MaxCmdSN < ExpCmdSN-1) was applied")
	e.c.SetWindowSize(4)
	e.c.SendNopIn(pdu.ReservedTag, 0, nil)
	c := h.next(t, e.ctx)
	if c.CmdSN != exp {
		t.Errorf("CmdSN %d, want %d: the ignored ExpCmdSN must not move the initiator's CmdSN", c.CmdSN, exp)
	}
	e.c.SendStatus(c.ITT, 0, nil)
	if r := await(t, e.ctx, d); r.err != nil {
		t.Fatal(r.err)
	}
	e.noViolations()
}

// UNH-IOL 1.1, 2.1, 2.2, 15.2, 16.1.1, 19.1: CmdSN numbering. Non-immediate
// requests advance CmdSN by one; immediate ones (NOP-Out ping, TMF, Logout)
// carry the current CmdSN without advancing it. The first command carries
// the ExpCmdSN of the last Login Response and acknowledges its StatSN.
func TestConformanceCmdSNNumbering(t *testing.T) {
	e := newEnv(t, faketarget.Config{}, nil)
	do := func() {
		if _, err := e.s.Do(e.ctx, tur()); err != nil {
			t.Fatal(err)
		}
	}
	do()
	if err := e.s.Ping(e.ctx); err != nil {
		t.Fatal(err)
	}
	do()
	if err := e.s.TaskManagement(e.ctx, pdu.TMFLogicalUnitReset, 0); err != nil {
		t.Fatal(err)
	}
	do()
	if _, err := e.s.Text(e.ctx, []pdu.KV{{Key: "SendTargets", Value: "All"}}); err != nil {
		t.Fatal(err)
	}
	do()
	logins := e.c.Logins()
	loginCmdSN := logins[0].Req.CmdSN
	lastLoginStatSN := e.tg.Config().InitialStatSN + uint32(len(logins)) - 1
	type want struct {
		op    pdu.Opcode
		imm   bool
		cmdSN uint32
	}
	wants := []want{
		{pdu.OpSCSICommand, false, loginCmdSN},
		{pdu.OpNopOut, true, loginCmdSN + 1},
		{pdu.OpSCSICommand, false, loginCmdSN + 1},
		{pdu.OpTaskMgmtReq, true, loginCmdSN + 2},
		{pdu.OpSCSICommand, false, loginCmdSN + 2},
		{pdu.OpTextReq, false, loginCmdSN + 3},
		{pdu.OpSCSICommand, false, loginCmdSN + 4},
	}
	got := e.c.Received()
	if len(got) != len(wants) {
		t.Fatalf("received %d PDUs, want %d", len(got), len(wants))
	}
	for i, w := range wants {
		r := got[i]
		var sn uint32
		switch p := r.PDU.(type) {
		case *pdu.SCSICommand:
			sn = p.CmdSN
			if i == 0 && p.ExpStatSN != lastLoginStatSN+1 {
				t.Errorf("first command ExpStatSN %d, want %d (last Login Response StatSN + 1)", p.ExpStatSN, lastLoginStatSN+1)
			}
			if p.ITT == logins[0].Req.ITT {
				t.Errorf("first command reuses the login ITT %#x", p.ITT)
			}
		case *pdu.NopOut:
			sn = p.CmdSN
		case *pdu.TaskMgmtRequest:
			sn = p.CmdSN
		case *pdu.TextRequest:
			sn = p.CmdSN
		}
		if r.Opcode() != w.op || r.PDU.Hdr().Immediate != w.imm || sn != w.cmdSN {
			t.Errorf("PDU %d: %v I=%v CmdSN %d, want %v I=%v CmdSN %d", i, r.Opcode(), r.PDU.Hdr().Immediate, sn, w.op, w.imm, w.cmdSN)
		}
	}
	e.noViolations()
}

// RFC 7143 11.2.1.8 / UNH-IOL 16.1.1: every outstanding task has a unique
// Initiator Task Tag, never 0xffffffff.
func TestConformanceITTUnique(t *testing.T) {
	h := newHolder()
	e := newEnv(t, faketarget.Config{Window: 128, OnCommand: h.hook(0x00)}, nil)
	const n = 64
	var done []<-chan result
	for i := 0; i < n; i++ {
		done = append(done, goDo(e.ctx, e.s, tur()))
	}
	seen := map[uint32]bool{e.c.Logins()[0].Req.ITT: true}
	var held []*pdu.SCSICommand
	for i := 0; i < n; i++ {
		c := h.next(t, e.ctx)
		if seen[c.ITT] || c.ITT == pdu.ReservedTag {
			t.Errorf("ITT %#x reused or reserved", c.ITT)
		}
		seen[c.ITT] = true
		held = append(held, c)
	}
	for _, c := range held {
		e.c.SendStatus(c.ITT, 0, nil)
	}
	for _, d := range done {
		await(t, e.ctx, d)
	}
	e.noViolations()
}
