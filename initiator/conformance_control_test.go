package initiator_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// UNH-IOL 15.1: a target NOP-In ping (valid TTT) is answered with a NOP-Out
// copying TTT and LUN, ITT 0xffffffff, I=1, no data, and the next command
// keeps the same CmdSN.
func TestConformanceTargetNopInPing(t *testing.T) {
	e := newEnv(t, faketarget.Config{}, nil)
	const lun = 0x0001000000000000
	e.c.SendNopIn(0x5a5a0001, lun, nil)
	r, err := e.c.WaitOpcode(e.ctx, pdu.OpNopOut)
	if err != nil {
		t.Fatal(err)
	}
	n := r.PDU.(*pdu.NopOut)
	if n.TTT != 0x5a5a0001 || n.LUN != lun || n.ITT != pdu.ReservedTag || !n.Immediate || n.DataLen != 0 {
		t.Errorf("NOP-Out answer: TTT %#x LUN %#x ITT %#x I %v DSL %d", n.TTT, n.LUN, n.ITT, n.Immediate, n.DataLen)
	}
	if _, err := e.s.Do(e.ctx, tur()); err != nil {
		t.Fatal(err)
	}
	cmd := ofOpcode(e.c.Received(), pdu.OpSCSICommand)[0].PDU.(*pdu.SCSICommand)
	if cmd.CmdSN != n.CmdSN {
		t.Errorf("command after the NOP-Out has CmdSN %d, NOP-Out had %d (must not advance)", cmd.CmdSN, n.CmdSN)
	}
	// A NOP-In with TTT 0xffffffff asks for nothing.
	e.c.SendNopIn(pdu.ReservedTag, 0, nil)
	if err := e.s.Ping(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(ofOpcode(e.c.Received(), pdu.OpNopOut)); n != 2 {
		t.Errorf("%d NOP-Outs, want 2 (the answer and our ping)", n)
	}
	e.noViolations()
}

// UNH-IOL 15.2: the initiator's own ping: TTT 0xffffffff, LUN 0, a valid
// ITT, I=1, and CmdSN not advanced.
func TestConformanceInitiatorPing(t *testing.T) {
	e := newEnv(t, faketarget.Config{}, nil)
	if err := e.s.Ping(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Do(e.ctx, tur()); err != nil {
		t.Fatal(err)
	}
	rs := e.c.Received()
	n, cmd := rs[0].PDU.(*pdu.NopOut), rs[1].PDU.(*pdu.SCSICommand)
	if n.TTT != pdu.ReservedTag || n.LUN != 0 || n.ITT == pdu.ReservedTag || !n.Immediate || cmd.CmdSN != n.CmdSN {
		t.Errorf("ping: TTT %#x LUN %#x ITT %#x I %v CmdSN %d, next command CmdSN %d", n.TTT, n.LUN, n.ITT, n.Immediate, n.CmdSN, cmd.CmdSN)
	}
	e.noViolations()
}

// UNH-IOL 20.1, 14.1: Async Message event 1 (logout requested, Parameter3 =
// 1 s): a Logout Request within 1 s, reason 0 or 1, valid CID, ExpStatSN
// current, no data; no command after it; the outstanding command fails.
func TestConformanceAsyncLogoutRequest(t *testing.T) {
	h := newHolder()
	e := newEnv(t, faketarget.Config{OnCommand: h.hook(0x28)}, nil)
	pending := goDo(e.ctx, e.s, read10(0, 1))
	h.next(t, e.ctx)
	statSN := e.c.StatSN()
	e.c.SendAsync(1, 0, 0, 1, nil)
	sent := time.Now()
	r, err := e.c.WaitOpcode(e.ctx, pdu.OpLogoutReq)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(sent); el > time.Second {
		t.Errorf("Logout after %v, Parameter3 allowed 1 s", el)
	}
	l := r.PDU.(*pdu.LogoutRequest)
	if l.Reason > 1 || l.CID != e.c.CID() || l.ExpStatSN != statSN+1 || l.DataLen != 0 || r.Raw.TotalAHSLength() != 0 {
		t.Errorf("Logout: reason %d CID %d (conn %d) ExpStatSN %d (want %d) DSL %d", l.Reason, l.CID, e.c.CID(), l.ExpStatSN, statSN+1, l.DataLen)
	}
	res := await(t, e.ctx, pending)
	if res.err == nil {
		t.Error("the outstanding READ succeeded after the logout")
	}
	<-e.c.Done()
	rs := e.c.Received()
	if last := rs[len(rs)-1]; last.Opcode() != pdu.OpLogoutReq {
		t.Errorf("%v sent after the Logout Request", last.Opcode())
	}
	e.noViolations()
}

// UNH-IOL 20.2, 20.3: Async Message events 2 and 3 (target drops the
// connection / all connections): the initiator closes the connection and
// fails its outstanding commands instead of waiting for them.
func TestConformanceAsyncDropConnection(t *testing.T) {
	for _, ev := range []uint8{2, 3} {
		t.Run(map[uint8]string{2: "event2", 3: "event3"}[ev], func(t *testing.T) {
			h := newHolder()
			e := newEnv(t, faketarget.Config{OnCommand: h.hook(0x28)}, nil)
			pending := goDo(e.ctx, e.s, read10(0, 1))
			h.next(t, e.ctx)
			e.c.SendAsync(ev, e.c.CID(), 0, 1, nil)
			select {
			case <-e.c.Done():
			case <-e.ctx.Done():
				t.Fatal("the initiator kept the connection open")
			}
			if res := await(t, e.ctx, pending); res.err == nil {
				t.Error("the outstanding READ succeeded")
			}
			e.noViolations()
		})
	}
	// The reconnect timing, with session recovery on: no login before
	// Parameter2 (Time2Wait) after the message, the first one at once
	// after it, inside Parameter3 (Time2Retain); the held READ is then
	// issued again on the new connection and completes.
	for _, tc := range []struct {
		name       string
		ev         uint8
		wait       uint16 // Parameter2
		retain     uint16 // Parameter3
		early, due time.Duration
	}{
		// 20.2: Parameter2 0, Parameter3 1: reconnect within 1 s.
		{"event2-reconnect", 2, 0, 1, 0, time.Second},
		{"event2-time2wait", 2, 1, 2, time.Second, 2 * time.Second},
		// 20.3: Parameter2 1, Parameter3 2: wait 1 s, but no longer than 2 s.
		{"event3-time2wait", 3, 1, 2, time.Second, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logins := make(chan time.Time, 8)
			var first atomic.Pointer[faketarget.Conn]
			held := make(chan *pdu.SCSICommand, 1)
			tcfg := faketarget.Config{
				OnLogin: func(c *faketarget.Conn, req *pdu.LoginRequest, _ []pdu.KV) bool {
					if len(c.Logins()) == 1 {
						logins <- time.Now()
					}
					return false
				},
				OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
					if c != first.Load() || cmd.CDB[0] != 0x28 {
						return false
					}
					held <- cmd
					return true
				},
				OnConnect: func(c *faketarget.Conn) {
					first.CompareAndSwap(nil, c)
				},
			}
			e := newEnv(t, tcfg, func(cfg *initiator.Config) { cfg.NoRecovery = false })
			<-logins // the session's own login
			pending := goDo(e.ctx, e.s, read10(0, 1))
			select {
			case <-held:
			case <-e.ctx.Done():
				t.Fatal("no READ arrived")
			}
			sent := time.Now()
			e.c.SendAsync(tc.ev, e.c.CID(), tc.wait, tc.retain, nil)
			select {
			case <-e.c.Done():
			case <-e.ctx.Done():
				t.Fatal("the initiator kept the connection open")
			}
			closed := time.Since(sent)
			var at time.Time
			select {
			case at = <-logins:
			case <-e.ctx.Done():
				t.Fatal("the initiator never logged in again")
			}
			el := at.Sub(sent)
			t.Logf("connection closed %v after the message, new login after %v", closed.Round(time.Millisecond), el.Round(time.Millisecond))
			if el < tc.early {
				t.Errorf("logged in again %v after the message, before Time2Wait (%v)", el, tc.early)
			}
			if el > tc.due {
				t.Errorf("logged in again %v after the message, want within %v", el, tc.due)
			}
			if res := await(t, e.ctx, pending); res.err != nil {
				t.Errorf("the READ failed after the reconnect: %v", res.err)
			}
			if n := e.s.Recovery().Reconnects; n != 1 {
				t.Errorf("%d reconnects, want 1", n)
			}
			e.noViolations()
		})
	}
}

// UNH-IOL 20.4: Async Message event 4 (renegotiate, Parameter3 = 3 s): a
// Text Request within 3 s.
func TestConformanceAsyncRenegotiate(t *testing.T) {
	e := newEnv(t, faketarget.Config{}, nil)
	e.c.SendAsync(4, 0, 0, 3, nil)
	sent := time.Now()
	r, err := e.c.WaitOpcode(e.ctx, pdu.OpTextReq)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(sent); el > 3*time.Second {
		t.Errorf("Text Request after %v", el)
	}
	if tr := r.PDU.(*pdu.TextRequest); !tr.Final || tr.TTT != pdu.ReservedTag {
		t.Errorf("Text Request F %v TTT %#x", tr.Final, tr.TTT)
	}
	if _, err := e.s.Do(e.ctx, tur()); err != nil {
		t.Fatalf("session unusable after renegotiation: %v", err)
	}
	e.noViolations()
}

// UNH-IOL 17.1, 14.1: Close sends a Logout (reason 0, CID, ExpStatSN, no
// data), nothing after it, and closes the connection on the response.
func TestConformanceLogout(t *testing.T) {
	e := newEnv(t, faketarget.Config{}, nil)
	if _, err := e.s.Do(e.ctx, tur()); err != nil {
		t.Fatal(err)
	}
	statSN := e.c.StatSN()
	if err := e.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-e.c.Done():
	case <-e.ctx.Done():
		t.Fatal("connection not closed after the Logout Response")
	}
	rs := e.c.Received()
	r := rs[len(rs)-1]
	l, ok := r.PDU.(*pdu.LogoutRequest)
	if !ok {
		t.Fatalf("last PDU %v, want Logout Request", r.Opcode())
	}
	if l.Reason != pdu.LogoutCloseSession || l.CID != e.c.CID() || l.ExpStatSN != statSN || !l.Immediate {
		t.Errorf("Logout: reason %d CID %d ExpStatSN %d (want %d) I %v", l.Reason, l.CID, l.ExpStatSN, statSN, l.Immediate)
	}
	if _, err := e.s.Do(e.ctx, tur()); !errors.Is(err, initiator.ErrSessionClosed) {
		t.Errorf("Do after Close: %v, want ErrSessionClosed", err)
	}
	e.noViolations()
}

// UNH-IOL 19.2, 19.3, 2.2: cancelling a command sends ABORT TASK with the
// command's LUN, ITT (Referenced Task Tag) and CmdSN (RefCmdSN), immediate,
// with the current CmdSN; the caller gets its context error.
func TestConformanceAbortTaskFields(t *testing.T) {
	h := newHolder()
	e := newEnv(t, faketarget.Config{OnCommand: h.hook(0x28), LUNs: []faketarget.LUNConfig{{Number: 0}, {Number: 1}}}, nil)
	ctx, cancel := context.WithCancel(e.ctx)
	lun1 := uint64(0x0001000000000000)
	cmd := read10(0, 1)
	cmd.LUN = lun1
	pending := goDo(ctx, e.s, cmd)
	rd := h.next(t, e.ctx)
	cancel()
	r, err := e.c.WaitOpcode(e.ctx, pdu.OpTaskMgmtReq)
	if err != nil {
		t.Fatal(err)
	}
	tm := r.PDU.(*pdu.TaskMgmtRequest)
	if tm.Function != pdu.TMFAbortTask || tm.RTT != rd.ITT || tm.LUN != lun1 || tm.RefCmdSN != rd.CmdSN || !tm.Immediate || tm.CmdSN != rd.CmdSN+1 {
		t.Errorf("ABORT TASK: fn %d RTT %#x (itt %#x) LUN %#x RefCmdSN %d (CmdSN %d) I %v CmdSN %d",
			tm.Function, tm.RTT, rd.ITT, tm.LUN, tm.RefCmdSN, rd.CmdSN, tm.Immediate, tm.CmdSN)
	}
	if res := await(t, e.ctx, pending); !errors.Is(res.err, context.Canceled) {
		t.Errorf("Do: %v, want context.Canceled", res.err)
	}
	e.noViolations()
}

// UNH-IOL 19.4.1-19.4.3: after ABORT TASK SET is sent, the initiator still
// answers a NOP-In ping and accepts the response of a task in the affected
// set, without rejecting anything.
func TestConformanceAbortTaskSetStillServes(t *testing.T) {
	h := newHolder()
	var conn *faketarget.Conn
	e := newEnv(t, faketarget.Config{
		OnCommand: h.hook(0x28),
		OnPDU: func(c *faketarget.Conn, p pdu.PDU, _ []byte) bool {
			tm, ok := p.(*pdu.TaskMgmtRequest)
			if !ok {
				return false
			}
			conn = c
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), confTimeout)
				defer cancel()
				c.SendNopIn(0x777, 0, nil)
				c.WaitFor(ctx, func(r faketarget.Received) bool {
					n, ok := r.PDU.(*pdu.NopOut)
					return ok && n.TTT == 0x777
				})
				for _, r := range c.Received() {
					if cmd, ok := r.PDU.(*pdu.SCSICommand); ok {
						c.SendDataIn(&pdu.DataIn{Header: pdu.Header{ITT: cmd.ITT}, HasStatus: true}, make([]byte, 512))
					}
				}
				c.Send(&pdu.TaskMgmtResponse{Header: pdu.Header{ITT: tm.ITT}}, nil)
			}()
			return true
		},
	}, nil)
	pending := goDo(e.ctx, e.s, read10(0, 1))
	h.next(t, e.ctx)
	if err := e.s.TaskManagement(e.ctx, pdu.TMFAbortTaskSet, 0); err != nil {
		t.Fatal(err)
	}
	if res := await(t, e.ctx, pending); res.err != nil {
		t.Errorf("response of a task in the aborted set: %v", res.err)
	}
	if _, err := e.s.Do(e.ctx, tur()); err != nil {
		t.Fatal(err)
	}
	if conn == nil {
		t.Fatal("no TMF seen")
	}
	e.noViolations()
}

// UNH-IOL 18.1: a Text Request: TTT 0xffffffff, F=1, unique ITT, CmdSN
// is the current CmdSN.
func TestConformanceTextRequestFields(t *testing.T) {
	e := newEnv(t, faketarget.Config{}, nil)
	if _, err := e.s.Text(e.ctx, []pdu.KV{{Key: "SendTargets", Value: "All"}}); err != nil {
		t.Fatal(err)
	}
	r := e.c.Received()[0]
	tr := r.PDU.(*pdu.TextRequest)
	if tr.TTT != pdu.ReservedTag || !tr.Final || tr.Continue || tr.CmdSN != e.c.Logins()[0].Req.CmdSN || tr.ITT == e.c.Logins()[0].Req.ITT {
		t.Errorf("Text Request: TTT %#x F %v C %v CmdSN %d ITT %#x", tr.TTT, tr.Final, tr.Continue, tr.CmdSN, tr.ITT)
	}
	e.noViolations()
}

// UNH-IOL 18.2: a Text Response split with C=1 is continued by an empty
// Text Request with the SAME Initiator Task Tag (RFC 7143 11.10.3: "the
// Initiator Task Tag MUST be the same for all the requests within the
// sequence"), the response's TTT and LUN.
func TestConformanceTextContinuationSameITT(t *testing.T) {
	var portals []string
	for i := 0; i < 64; i++ {
		portals = append(portals, "192.0.2.1:3260,1")
	}
	e := newEnv(t, faketarget.Config{Portals: portals}, func(c *initiator.Config) { c.MaxRecvDataSegmentLength = 512 })
	kvs, err := e.s.Text(e.ctx, []pdu.KV{{Key: "SendTargets", Value: "All"}})
	if err != nil || len(kvs) != 65 {
		t.Fatalf("SendTargets: %d keys, %v", len(kvs), err)
	}
	reqs := ofOpcode(e.c.Received(), pdu.OpTextReq)
	if len(reqs) < 2 {
		t.Fatalf("%d Text Requests, want a continuation", len(reqs))
	}
	first := reqs[0].PDU.(*pdu.TextRequest)
	for _, r := range reqs[1:] {
		tr := r.PDU.(*pdu.TextRequest)
		if tr.TTT == pdu.ReservedTag || tr.DataLen != 0 {
			t.Errorf("continuation: TTT %#x DSL %d", tr.TTT, tr.DataLen)
		}
		if tr.ITT != first.ITT {
			t.Errorf("continuation with a new ITT (%#x, first request %#x); RFC 7143 11.10.3 requires the same ITT", tr.ITT, first.ITT)
		}
	}
	e.noViolations()
}

// RFC 7143 11.17: Reject handling. A rejected Text Request fails the call
// with the reason; a protocol-error Reject ends the connection; a rejected
// SCSI command (which gets no response) ends within the caller's deadline.
func TestConformanceReject(t *testing.T) {
	t.Run("text", func(t *testing.T) {
		e := newEnv(t, faketarget.Config{OnPDU: func(c *faketarget.Conn, p pdu.PDU, _ []byte) bool {
			if _, ok := p.(*pdu.TextRequest); !ok {
				return false
			}
			var raw pdu.BHS
			p.MarshalBHS(&raw)
			c.SendReject(pdu.RejectInvalidField, raw)
			return true
		}}, nil)
		_, err := e.s.Text(e.ctx, []pdu.KV{{Key: "SendTargets", Value: "All"}})
		if err == nil || !strings.Contains(err.Error(), "invalid PDU field") {
			t.Fatalf("Text: %v, want the Reject reason", err)
		}
		if _, err := e.s.Do(e.ctx, tur()); err != nil {
			t.Errorf("session unusable after a Reject of a Text Request: %v", err)
		}
		e.noViolations()
	})
	t.Run("protocol-error", func(t *testing.T) {
		h := newHolder()
		e := newEnv(t, faketarget.Config{OnCommand: h.hook(0x28)}, nil)
		pending := goDo(e.ctx, e.s, read10(0, 1))
		cmd := h.next(t, e.ctx)
		var raw pdu.BHS
		cmd.MarshalBHS(&raw)
		e.c.SendReject(pdu.RejectProtocolError, raw)
		res := await(t, e.ctx, pending)
		expectConnError(t, res.err, nil)
		e.noViolations()
	})
	t.Run("scsi-command", func(t *testing.T) {
		h := newHolder()
		e := newEnv(t, faketarget.Config{OnCommand: h.hook(0x28)}, nil)
		ctx, cancel := context.WithTimeout(e.ctx, time.Second)
		defer cancel()
		pending := goDo(ctx, e.s, read10(0, 1))
		cmd := h.next(t, e.ctx)
		var raw pdu.BHS
		cmd.MarshalBHS(&raw)
		e.c.SendReject(pdu.RejectNotSupported, raw)
		res := await(t, e.ctx, pending)
		if res.err == nil {
			t.Fatal("a rejected command succeeded")
		}
		e.noViolations()
	})
}

// UNH-IOL 16.4.5 and TASK SET FULL: BUSY and TASK SET FULL are surfaced by
// Session.Do as statuses and retried by the LUN handle as new commands
// (new CmdSN).
func TestConformanceBusyRetried(t *testing.T) {
	for _, st := range []uint8{faketarget.StatusBusy, faketarget.StatusTaskSetFull} {
		t.Run(scsi.Status(st).String(), func(t *testing.T) {
			busy := 0
			e := newEnv(t, faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
				if cmd.CDB[0] != 0x28 || busy >= 3 {
					return false
				}
				busy++
				c.SendStatus(cmd.ITT, st, nil)
				return true
			}}, nil)
			resp, err := e.s.Do(e.ctx, read10(0, 1))
			if err != nil || resp.Status != st {
				t.Fatalf("Do: status %#x, %v; want %#x surfaced", resp.Status, err, st)
			}
			lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := lun.ReadAt(e.ctx, make([]byte, 512), 0); err != nil {
				t.Fatalf("ReadAt after %d busy answers: %v", busy, err)
			}
			var sns []uint32
			for _, r := range ofOpcode(e.c.Received(), pdu.OpSCSICommand) {
				if c := r.PDU.(*pdu.SCSICommand); c.CDB[0] == 0x28 {
					sns = append(sns, c.CmdSN)
				}
			}
			if len(sns) != 4 || sns[1] == sns[2] || sns[2] == sns[3] {
				t.Errorf("READ CmdSNs %v: want 4 commands, each retry with a new CmdSN", sns)
			}
			e.noViolations()
		})
	}
}

// UNH-IOL 16.4.6: RESERVATION CONFLICT is surfaced (not retried: it does
// not clear by itself) as a SCSI error the caller can classify.
func TestConformanceReservationConflict(t *testing.T) {
	e := newEnv(t, faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
		if cmd.CDB[0] != 0x2a {
			return false
		}
		c.SendStatus(cmd.ITT, faketarget.StatusReservationConflict, nil)
		return true
	}}, nil)
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = lun.WriteAt(e.ctx, make([]byte, 512), 0, false)
	if !scsi.IsReservationConflict(err) {
		t.Fatalf("WriteAt: %v, want a reservation conflict", err)
	}
	if !strings.Contains(err.Error(), "RESERVATION CONFLICT") {
		t.Errorf("error text %q does not name the status", err)
	}
	e.noViolations()
}

// UNH-IOL 16.4.1-16.4.4: a SCSI Response with Response 0x01 (target
// failure) is not taken as success; the error goes to the caller.
func TestConformanceTargetFailureResponse(t *testing.T) {
	e := newEnv(t, faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
		if cmd.CDB[0] != 0x28 {
			return false
		}
		c.SendResponse(&pdu.SCSIResponse{Header: pdu.Header{ITT: cmd.ITT}, Response: 0x01}, nil)
		return true
	}}, nil)
	if _, err := e.s.Do(e.ctx, read10(0, 1)); err == nil || !strings.Contains(err.Error(), "target failure") {
		t.Fatalf("Do: %v, want a target failure error", err)
	}
	if _, err := e.s.Do(e.ctx, tur()); err != nil {
		t.Errorf("session unusable after a target failure response: %v", err)
	}
	e.noViolations()
}

// UNH-IOL 18.3.1 and 18.3.2: a final Text Response (F=1) carrying a TTT is
// taken as final (the TTT ignored, no recovery); a Text Response with C=1
// but no TTT is a protocol error for that exchange, with no hang.
func TestConformanceTextResponseTTT(t *testing.T) {
	for _, tc := range []struct {
		name    string
		resp    pdu.TextResponse
		wantErr bool
	}{
		{"final-with-ttt", pdu.TextResponse{Header: pdu.Header{Final: true}, TTT: 0xabcd}, false},
		{"continue-without-ttt", pdu.TextResponse{Continue: true, TTT: pdu.ReservedTag}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, faketarget.Config{OnPDU: func(c *faketarget.Conn, p pdu.PDU, _ []byte) bool {
				q, ok := p.(*pdu.TextRequest)
				if !ok {
					return false
				}
				r := tc.resp
				r.ITT = q.ITT
				c.Send(&r, pdu.AppendText(nil, pdu.KV{Key: "TargetName", Value: "iqn.x"}))
				return true
			}}, nil)
			kvs, err := e.s.Text(e.ctx, []pdu.KV{{Key: "SendTargets", Value: "All"}})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Text: %v %v", kvs, err)
			}
			if !tc.wantErr && (len(kvs) != 1 || kvs[0].Value != "iqn.x") {
				t.Errorf("keys %v", kvs)
			}
			if err := e.s.Close(); err != nil {
				t.Errorf("Logout after the exchange: %v", err)
			}
			e.noViolations()
		})
	}
}
