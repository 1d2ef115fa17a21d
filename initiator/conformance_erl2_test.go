package initiator_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// UNH-IOL FFP 7.1, 14.2 and 19.5: ErrorRecoveryLevel 2 connection
// recovery inside the session (connrecovery.go), on the fake target's
// sessions (faketarget/session.go).

// erl2Env is newEnv at ErrorRecoveryLevel 2 with conns connections,
// session recovery on (the fallback), MaxRecvDataSegmentLength 1024 (a
// 16-block read is DataSN 0..7) and a patterned disk.
func erl2Env(t *testing.T, conns int, tcfg faketarget.Config, mod func(*initiator.Config)) *env {
	t.Helper()
	tcfg.ErrorRecoveryLevel = 2
	tcfg.MaxConnections = conns
	e := newEnv(t, tcfg, func(c *initiator.Config) {
		c.ErrorRecoveryLevel = 2
		c.MaxConnections = conns
		c.NoRecovery = false
		c.MaxRecvDataSegmentLength = 1024
		c.NopTimeout = time.Second
		if os.Getenv("LUNBRIDGE_ERL2_DEBUG") != "" {
			lg := logrus.New()
			lg.SetLevel(logrus.DebugLevel)
			c.Logger = logrus.NewEntry(lg)
		}
		if mod != nil {
			mod(c)
		}
	})
	if p := e.s.Params(); p.ErrorRecoveryLvl != 2 || e.s.Connections() != conns {
		t.Fatalf("negotiated ERL %d with %d connections, want 2 with %d", p.ErrorRecoveryLvl, e.s.Connections(), conns)
	}
	rand.New(rand.NewSource(7)).Read(e.tg.Disk(0))
	return e
}

// logins returns every Login Request the target received (first request
// of each connection), in connection order.
func firstLogins(tg *faketarget.Target) []pdu.LoginRequest {
	var out []pdu.LoginRequest
	for _, c := range tg.Conns() {
		if l := c.Logins(); len(l) > 0 {
			out = append(out, l[0].Req)
		}
	}
	return out
}

// reassigns returns the TASK REASSIGN requests c received.
func reassigns(c *faketarget.Conn) []*pdu.TaskMgmtRequest {
	var out []*pdu.TaskMgmtRequest
	for _, r := range ofOpcode(c.Received(), pdu.OpTaskMgmtReq) {
		if q := r.PDU.(*pdu.TaskMgmtRequest); q.Function == pdu.TMFTaskReassign {
			out = append(out, q)
		}
	}
	return out
}

// keptSession checks that the session was kept (no reinstatement, same
// TSIH) and nothing broke a rule.
func keptSession(t *testing.T, e *env, tsih uint16) {
	t.Helper()
	if r := e.s.Recovery(); r.Reconnects != 0 {
		t.Errorf("session reinstated %d times; connection recovery should have kept it", r.Reconnects)
	}
	if e.s.TSIH() != tsih {
		t.Errorf("TSIH %d, was %d", e.s.TSIH(), tsih)
	}
	e.noViolations()
}

// 7.1: at ERL 2 with one connection, the target sends part of a read's
// data and drops the connection before the status. The initiator logs in
// a new connection (same ISID, the session's TSIH, same CID: implicit
// logout of the old one), sends TASK REASSIGN for the read on it, and the
// read completes with the right data; the session is kept.
func TestConformanceConnectionReassignment(t *testing.T) {
	var cut sync.Once
	cutAt := func(_, sn uint32) (hit bool) {
		if sn == 3 {
			cut.Do(func() { hit = true })
		}
		return hit
	}
	e := erl2Env(t, 1, faketarget.Config{CutDataIn: cutAt}, nil)
	tsih := e.s.TSIH()
	for _, cdb := range [][]byte{scsi.Inquiry(false, 0, 96), scsi.TestUnitReady(), scsi.ReadCapacity10()} {
		cmd := &initiator.Command{CDB: cdb}
		if cdb[0] != 0x00 {
			cmd.Read = make([]byte, 96)
		}
		if _, err := e.s.Do(e.ctx, cmd); err != nil {
			t.Fatalf("%#x: %v", cdb[0], err)
		}
	}
	cmd := read10(0, 16)
	r := await(t, e.ctx, goDo(e.ctx, e.s, cmd))
	if r.err != nil || r.resp.Status != 0 {
		t.Fatalf("read after the connection drop: status %d, %v", r.resp.Status, r.err)
	}
	if !bytes.Equal(cmd.Read, e.tg.Disk(0)[:16*512]) {
		t.Fatal("read data differs from the disk")
	}
	conns := e.tg.Conns()
	if len(conns) != 2 {
		for i, c := range conns {
			t.Logf("conn %d: logins %+v received %d", i, c.Logins(), len(c.Received()))
		}
		t.Fatalf("%d connections, want the first and one new connection", len(conns))
	}
	reads := ofOpcode(conns[0].Received(), pdu.OpSCSICommand)
	itt := reads[len(reads)-1].ITT()
	ls := firstLogins(e.tg)
	if ls[1].ISID != ls[0].ISID || ls[1].TSIH != tsih || ls[1].CID != ls[0].CID {
		t.Fatalf("new connection logged in with ISID %x TSIH %d CID %d, want ISID %x TSIH %d CID %d",
			ls[1].ISID, ls[1].TSIH, ls[1].CID, ls[0].ISID, tsih, ls[0].CID)
	}
	ra := reassigns(conns[1])
	if len(ra) != 1 || ra[0].RTT != itt || !ra[0].Immediate || ra[0].ExpDataSN != 3 {
		t.Fatalf("TASK REASSIGN on the new connection: %+v, want one, immediate, for itt %#x with ExpDataSN 3", ra, itt)
	}
	if got := e.tg.Reassigned(); len(got) != 1 || got[0] != itt {
		t.Fatalf("target reassigned %v, want [%#x]", got, itt)
	}
	if e.s.Connections() != 1 {
		t.Fatalf("%d live connections after recovery, want 1", e.s.Connections())
	}
	keptSession(t, e, tsih)
}

// 19.5: two connections at ERL 2; a READ on the first gets no answer and
// the first connection fails; a READ on the second is answered. The
// initiator removes the first connection for recovery (Logout reason 2 on
// the second), sends TASK REASSIGN on the second with the READ's ITT, and
// the target's answer on the second connection completes the READ.
func TestConformanceTaskReassign(t *testing.T) {
	held := make(chan *pdu.SCSICommand, 8)
	e := erl2Env(t, 2, faketarget.Config{OnCommand: func(c *faketarget.Conn, q *pdu.SCSICommand, _ []byte) bool {
		if q.CDB[0] == 0x28 && c.CID() == 0 {
			cp := *q
			held <- &cp // not answered
			return true
		}
		return false
	}}, nil)
	tsih := e.s.TSIH()
	c1, err := e.tg.WaitConn(e.ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	var pending []<-chan result
	var cmds []*initiator.Command
	var q *pdu.SCSICommand
	for q == nil {
		cmd := read10(0, 16)
		ch := goDo(e.ctx, e.s, cmd)
		select {
		case q = <-held:
			pending, cmds = append(pending, ch), append(cmds, cmd)
		case r := <-ch:
			// Answered on the second connection.
			if r.err != nil || !bytes.Equal(cmd.Read, e.tg.Disk(0)[:16*512]) {
				t.Fatalf("read on the second connection: %v", r.err)
			}
		case <-e.ctx.Done():
			t.Fatal("no READ reached the first connection")
		}
	}
	e.c.Close() // the first connection fails
	lo, err := c1.WaitOpcode(e.ctx, pdu.OpLogoutReq)
	if err != nil {
		t.Fatal(err)
	}
	if l := lo.PDU.(*pdu.LogoutRequest); l.Reason != pdu.LogoutRemoveForRecov || l.CID != 0 {
		t.Fatalf("Logout reason %d CID %d on the second connection, want reason 2 (remove for recovery) CID 0", l.Reason, l.CID)
	}
	tm, err := c1.WaitFor(e.ctx, func(r faketarget.Received) bool {
		p, ok := r.PDU.(*pdu.TaskMgmtRequest)
		return ok && p.Function == pdu.TMFTaskReassign
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := tm.PDU.(*pdu.TaskMgmtRequest); p.RTT != q.ITT || !p.Immediate {
		t.Fatalf("TASK REASSIGN RTT %#x immediate %v, want the READ's ITT %#x, immediate", p.RTT, p.Immediate, q.ITT)
	}
	// The Logout came first (the old connection was removed before the
	// reassign).
	rs := c1.Received()
	var li, ti int
	for i, r := range rs {
		switch r.Opcode() {
		case pdu.OpLogoutReq:
			li = i
		case pdu.OpTaskMgmtReq:
			ti = i
		}
	}
	if li > ti {
		t.Fatal("TASK REASSIGN sent before the Logout removing the old connection")
	}
	// The target answers the READ on the second connection.
	c1.DataIn(q, e.tg.Disk(0)[:16*512])
	for i, ch := range pending {
		r := await(t, e.ctx, ch)
		if r.err != nil || r.resp.Status != 0 || !bytes.Equal(cmds[i].Read, e.tg.Disk(0)[:16*512]) {
			t.Fatalf("reassigned READ: status %d, %v", r.resp.Status, r.err)
		}
	}
	waitFor(t, e.ctx, "the replacement connection", func() bool { return e.s.Connections() == 2 })
	keptSession(t, e, tsih)
}

// waitFor polls cond every 5 ms until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// 14.2: two connections (ImmediateData=No, InitialR2T=Yes,
// FirstBurstLength 4096, MaxBurstLength 8194, target
// MaxRecvDataSegmentLength 1024, ErrorRecoveryLevel 1); WRITEs on each
// are answered with R2Ts; once the first Data-Out arrives on one
// connection the target sends Async Message event 1 (logout requested,
// Parameter3 5 s) on it. The initiator logs out that connection alone
// (reason 1, its CID, the connection's ExpStatSN), sends nothing new on it
// after the Logout, closes it, and goes on sending commands on the other.
func TestConformanceLogoutRequestTwoConnections(t *testing.T) {
	var asked sync.Once
	tcfg := faketarget.Config{
		ErrorRecoveryLevel: 1, MaxConnections: 2,
		NoImmediateData: true, InitialR2T: true, FirstBurstLength: 4096, MaxBurstLength: 8194, MaxRecvDataSegmentLength: 1024,
		OnDataOut: func(c *faketarget.Conn, _ *pdu.DataOut, _ []byte) bool {
			if c.CID() == 0 {
				asked.Do(func() { go c.SendAsync(1, 0, 0, 5, nil) })
			}
			return false
		},
	}
	e := newEnv(t, tcfg, func(c *initiator.Config) {
		if os.Getenv("LUNBRIDGE_ERL2_DEBUG") != "" {
			lg := logrus.New()
			lg.SetLevel(logrus.DebugLevel)
			c.Logger = logrus.NewEntry(lg)
		}
		c.ErrorRecoveryLevel = 1
		c.MaxConnections = 2
		c.NoRecovery = false
		c.InitialR2T = true
		c.NoImmediateData = true
		c.MaxRecvDataSegmentLength = 1024
	})
	if e.s.Connections() != 2 {
		t.Fatalf("%d connections, want 2", e.s.Connections())
	}
	tsih := e.s.TSIH()
	c1, err := e.tg.WaitConn(e.ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, cdb := range [][]byte{scsi.Inquiry(false, 0, 96), scsi.TestUnitReady(), scsi.ReadCapacity10()} {
		cmd := &initiator.Command{CDB: cdb}
		if cdb[0] != 0x00 {
			cmd.Read = make([]byte, 96)
		}
		if _, err := e.s.Do(e.ctx, cmd); err != nil {
			t.Fatalf("%#x: %v", cdb[0], err)
		}
	}
	// Writes (with verifying reads) until the first connection is gone
	// and a few more have gone out on the second.
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewSource(9))
		for i := 0; ; i++ {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			data := make([]byte, 16*512)
			rng.Read(data)
			lba := uint32(i%64) * 16
			if _, err := e.s.Do(e.ctx, write10(lba, data)); err != nil {
				errc <- err
				return
			}
			rd := read10(lba, 16)
			if _, err := e.s.Do(e.ctx, rd); err != nil || !bytes.Equal(rd.Read, data) {
				errc <- fmt.Errorf("verify at LBA %d: %v", lba, err)
				return
			}
		}
	}()
	lo, err := e.c.WaitOpcode(e.ctx, pdu.OpLogoutReq)
	if err != nil {
		t.Fatal(err)
	}
	<-e.c.Done()
	after := len(ofOpcode(c1.Received(), pdu.OpSCSICommand))
	waitFor(t, e.ctx, "commands on the remaining connection", func() bool {
		return len(ofOpcode(c1.Received(), pdu.OpSCSICommand)) >= after+10
	})
	close(stop)
	if err := <-errc; err != nil {
		t.Fatalf("workload: %v", err)
	}
	l := lo.PDU.(*pdu.LogoutRequest)
	if l.Reason != pdu.LogoutCloseConnection || l.CID != e.c.CID() {
		t.Fatalf("Logout reason %d CID %d, want 1 (close the connection) with CID %d", l.Reason, l.CID, e.c.CID())
	}
	if want := e.c.StatSN() - 1; l.ExpStatSN != want {
		t.Fatalf("Logout ExpStatSN %d, want the connection's last ExpStatSN %d", l.ExpStatSN, want)
	}
	rs := e.c.Received()
	for i, r := range rs {
		if r.Opcode() == pdu.OpLogoutReq {
			for _, x := range rs[i+1:] {
				t.Errorf("%v itt %#x sent on the connection after its Logout", x.Opcode(), x.ITT())
			}
			break
		}
	}
	if e.s.Connections() != 1 {
		t.Fatalf("%d connections after the logout, want 1", e.s.Connections())
	}
	if r := e.s.Recovery(); r.Reconnects != 0 || e.s.TSIH() != tsih {
		t.Fatalf("session reinstated (%d reconnects, TSIH %d was %d); only the connection should have been logged out", r.Reconnects, e.s.TSIH(), tsih)
	}
	e.noViolations()
}
