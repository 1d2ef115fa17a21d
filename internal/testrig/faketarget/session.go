package faketarget

import (
	"bytes"
	"sync"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// Sessions with several connections (MC/S) and connection recovery
// (ErrorRecoveryLevel 2; RFC 7143, Sections 6.3.4, 7.1.4.3, 7.2.2, 11.5.1,
// 11.14). They are on when Config.MaxConnections > 1 or
// Config.ErrorRecoveryLevel is 2; otherwise every connection is a session
// of its own, as before.
//
//   - A login with the session's TSIH adds a connection; one with the CID
//     of a connection still open reinstates that connection (the old one is
//     closed: implicit logout). A login with TSIH 0 and the ISID of a live
//     session reinstates the session (its connections are closed and its
//     tasks forgotten).
//   - The command window (ExpCmdSN, MaxCmdSN) belongs to the session:
//     commands arrive on any connection, in any order inside the window.
//   - Every SCSI task is remembered with the connection it is allegiant
//     to, its read data and its status, until the initiator acknowledges
//     the status (ExpStatSN past it on that connection).
//   - Logout reason 1 or 2 for another CID closes that connection; reason
//     2 answers with Time2Wait and Time2Retain.
//   - TASK REASSIGN (function 8) on a live connection moves a task of a
//     connection that is gone (failed or logged out) to it: a read re-sends
//     its Data-In from ExpDataSN and its status; a write whose data is not
//     all in asks for the rest with recovery R2Ts; a write already executed
//     only re-sends its status — it is never executed twice
//     (Target.Executions counts executions per CmdSN). Refusals are
//     scripted with Config.ReassignResponse; after Time2Wait + Time2Retain
//     the task is forgotten and the answer is "task does not exist".

type session struct {
	isid [6]byte
	tsih uint16

	mu       sync.Mutex
	expCmdSN uint32
	advMax   uint32
	seen     map[uint32]bool // CmdSNs received above expCmdSN
	conns    map[uint16]*Conn
	tasks    map[uint32]*sessTask // by ITT
	params   Params               // session-wide values of the leading login
	closed   bool
}

// sessTask is one SCSI task of a session.
type sessTask struct {
	cmd    pdu.SCSICommand
	conn   *Conn
	read   []byte // the data of a read, for a reassign
	status *pdu.SCSIResponse
	sdata  []byte
	statSN uint32
	acked  bool
	lostAt time.Time // when its connection went away (zero: live)
	// pending: cut before it was executed (Config.CutCommand); imm is
	// its immediate data.
	pending bool
	imm     []byte
}

// keepPending marks a command cut before execution.
func (s *session) keepPending(itt uint32, imm []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.tasks[itt]; st != nil {
		st.pending, st.imm = true, bytes.Clone(imm)
	}
}

func (c *Config) sessions() bool { return c.MaxConnections > 1 || c.ErrorRecoveryLevel >= 2 }

// joinSession puts c into its session at the end of its login: a new one
// for TSIH 0 (closing a session with the same ISID: reinstatement), the
// existing one otherwise. It reports false when TSIH names no session.
func (c *Conn) joinSession(isid [6]byte, tsih uint16, newSession bool, cmdSN uint32) bool {
	t := c.t
	t.mu.Lock()
	if t.sessions == nil {
		t.sessions = map[uint16]*session{}
	}
	var s *session
	var old []*Conn
	if newSession {
		for k, x := range t.sessions {
			if x.isid == isid {
				x.mu.Lock()
				x.closed = true
				for _, oc := range x.conns {
					old = append(old, oc)
				}
				x.mu.Unlock()
				delete(t.sessions, k)
			}
		}
		s = &session{isid: isid, tsih: tsih, expCmdSN: cmdSN, advMax: cmdSN - 1, seen: map[uint32]bool{}, conns: map[uint16]*Conn{}, tasks: map[uint32]*sessTask{}}
		t.sessions[tsih] = s
	} else {
		s = t.sessions[tsih]
	}
	t.mu.Unlock()
	for _, oc := range old {
		oc.Close()
	}
	if s == nil {
		return false
	}
	s.mu.Lock()
	if prev := s.conns[c.cid]; prev != nil && prev != c {
		old = []*Conn{prev} // connection reinstatement: implicit logout
	} else {
		old = nil
	}
	s.conns[c.cid] = c
	sp := s.params
	s.mu.Unlock()
	// (c.mu is taken before s.mu elsewhere: never inside it.)
	c.mu.Lock()
	if newSession {
		sp = c.params
	} else {
		// Session-wide keys come from the leading login; an added
		// connection negotiates only its own (digests, data segment
		// lengths).
		p := sp
		p.InitiatorMaxRecvDSL, p.TargetMaxRecvDSL = c.params.InitiatorMaxRecvDSL, c.params.TargetMaxRecvDSL
		p.HeaderDigest, p.DataDigest = c.params.HeaderDigest, c.params.DataDigest
		c.params = p
	}
	c.mu.Unlock()
	if newSession {
		s.mu.Lock()
		s.params = sp
		s.mu.Unlock()
	}
	for _, oc := range old {
		oc.Close()
		<-oc.served
	}
	c.mu.Lock()
	c.sess = s
	c.mu.Unlock()
	return true
}

// lost marks the tasks of c as without allegiance (c failed or logged out).
func (s *session) lost(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[c.cid] == c {
		delete(s.conns, c.cid)
	}
	now := time.Now()
	for _, st := range s.tasks {
		if st.conn == c && st.lostAt.IsZero() {
			st.lostAt = now
		}
	}
}

// checkCmdSN is Conn.checkCmdSN for a session: any order inside the window.
func (s *session) checkCmdSN(t *Target, h *pdu.Header, sn uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.Immediate {
		// The current CmdSN when it was sent; commands sent after it on
		// other connections may have arrived first, so it may be below
		// ExpCmdSN, never beyond MaxCmdSN + 1.
		if int32(sn-(s.advMax+1)) > 0 {
			t.violate("immediate %v itt %#x carries CmdSN %d beyond MaxCmdSN+1 %d", h.Opcode, h.ITT, sn, s.advMax+1)
		}
		return
	}
	if int32(sn-s.expCmdSN) < 0 {
		// A retry of a command already received (same CmdSN): allowed at
		// ErrorRecoveryLevel > 0 after a connection was lost.
		return
	}
	if int32(sn-s.advMax) > 0 {
		t.violate("%v itt %#x sent with CmdSN %d beyond the advertised MaxCmdSN %d", h.Opcode, h.ITT, sn, s.advMax)
	}
	s.seen[sn] = true
	for s.seen[s.expCmdSN] {
		delete(s.seen, s.expCmdSN)
		s.expCmdSN++
	}
}

// window is Conn.window for a session.
func (s *session) window(size int) (exp, max uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp = s.expCmdSN
	max = exp + uint32(size) - 1
	if size <= 0 {
		max = exp - 1
	}
	if int32(max-(exp-1)) >= 0 && int32(max-s.advMax) > 0 {
		s.advMax = max
	}
	return exp, max
}

func (s *session) maxCmdSN() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.advMax
}

// command records a SCSI command received on c.
func (s *session) command(c *Conn, q *pdu.SCSICommand) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.tasks[q.ITT]; old != nil && old.cmd.CmdSN == q.CmdSN {
		// A retry of a command it has: keep the task.
		old.conn = c
		return
	}
	s.tasks[q.ITT] = &sessTask{cmd: *q, conn: c}
}

func (s *session) task(itt uint32) *sessTask {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks[itt]
}

// keepRead remembers the data of a read for a reassign.
func (s *session) keepRead(itt uint32, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.tasks[itt]; st != nil {
		st.read = b
	}
}

// keepStatus remembers a task's status, sent with r.StatSN on c unless
// cut (then it never went out).
func (s *session) keepStatus(c *Conn, r *pdu.SCSIResponse, data []byte, cut bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.tasks[r.ITT]; st != nil && st.conn == c {
		cp := *r
		st.status, st.sdata, st.statSN = &cp, bytes.Clone(data), r.StatSN
		if !cut {
			c.statQ = append(c.statQ, st)
		}
	}
}

// acked forgets the tasks of c whose status the initiator acknowledged.
func (s *session) acked(c *Conn, expStatSN uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(c.statQ) > 0 && int32(expStatSN-c.statQ[0].statSN) > 0 {
		st := c.statQ[0]
		c.statQ = c.statQ[1:]
		if s.tasks[st.cmd.ITT] == st && st.conn == c {
			delete(s.tasks, st.cmd.ITT)
		}
	}
}

// closeCID closes the connection with cid (Logout for another connection);
// found is false when the session has no such connection.
func (s *session) closeCID(cid uint16) (found bool) {
	s.mu.Lock()
	c := s.conns[cid]
	delete(s.conns, cid)
	lostCID := false
	for _, st := range s.tasks {
		if st.conn != nil && st.conn.cid == cid && !st.lostAt.IsZero() {
			lostCID = true
		}
	}
	s.mu.Unlock()
	if c != nil {
		c.Close()
		<-c.served
		s.lost(c)
	}
	return c != nil || lostCID
}

// reassign handles TASK REASSIGN on c and returns the response; after a
// "function complete" answer, resume continues the task on c.
func (c *Conn) reassign(q *pdu.TaskMgmtRequest) (resp uint8, resume func()) {
	s := c.sess
	cfg := &c.t.cfg
	if !q.Immediate {
		c.t.violate("TASK REASSIGN itt %#x is not immediate", q.ITT)
	}
	if s == nil || c.Params().ErrorRecoveryLevel < 2 {
		return pdu.TMFRespNoReassign, nil
	}
	if h := cfg.ReassignResponse; h != nil {
		if r := h(q.RTT); r != pdu.TMFRespComplete {
			return r, nil
		}
	}
	s.mu.Lock()
	st := s.tasks[q.RTT]
	if st == nil {
		s.mu.Unlock()
		return pdu.TMFRespNoTask, nil
	}
	old := st.conn
	if st.lostAt.IsZero() {
		s.mu.Unlock()
		if old == c {
			return pdu.TMFRespComplete, nil // already here
		}
		c.t.violate("TASK REASSIGN of itt %#x while its connection %d is still logged in", q.RTT, old.cid)
		return pdu.TMFRespStillAllegiant, nil
	}
	t2w, t2r := time.Duration(cfg.Time2Wait)*time.Second, time.Duration(cfg.retain())*time.Second
	if time.Since(st.lostAt) > t2w+t2r {
		delete(s.tasks, q.RTT)
		s.mu.Unlock()
		return pdu.TMFRespNoTask, nil
	}
	if time.Since(st.lostAt) < t2w {
		c.t.violate("TASK REASSIGN of itt %#x %v after its connection was lost, before Time2Wait %v", q.RTT, time.Since(st.lostAt).Round(time.Millisecond), t2w)
	}
	st.conn, st.lostAt = c, time.Time{}
	st.acked = false
	read, status, sdata := st.read, st.status, st.sdata
	cmd := st.cmd
	pending, imm := st.pending, st.imm
	st.pending, st.imm = false, nil
	s.mu.Unlock()
	c.t.noteReassign(q.RTT)

	old.mu.Lock()
	w := old.writes[q.RTT]
	delete(old.writes, q.RTT)
	r2tSN := old.r2tSN[q.RTT]
	old.mu.Unlock()
	c.mu.Lock()
	c.lunOf[q.RTT] = cmd.LUN
	c.r2tSN[q.RTT] = r2tSN
	c.mu.Unlock()
	switch {
	case pending:
		// Never executed: execute it here. Unsolicited data sent on the
		// lost connection is gone: everything after the immediate data
		// is asked for with R2Ts.
		cmd.Final = true
		return pdu.TMFRespComplete, func() { c.command(&cmd, imm) }
	case w != nil:
		// Data not all in: recovery R2Ts for the rest (from the end of
		// what arrived in order), then the write executes here.
		w.r2ts, w.unsolDone, w.next = nil, true, w.contig
		c.mu.Lock()
		c.writes[q.RTT] = w
		c.mu.Unlock()
		return pdu.TMFRespComplete, func() { c.progress(w) }
	case status != nil && !cmd.Read:
		return pdu.TMFRespComplete, func() { c.resendStatus(status, sdata) }
	case cmd.Read && read != nil:
		from := q.ExpDataSN
		return pdu.TMFRespComplete, func() { c.resendRead(&cmd, read, from, status, sdata) }
	case status != nil:
		return pdu.TMFRespComplete, func() { c.resendStatus(status, sdata) }
	default:
		// Not answered yet (a hook holds it): whoever answers it now
		// answers on c.
		return pdu.TMFRespComplete, nil
	}
}

func (c *Conn) resendStatus(r *pdu.SCSIResponse, data []byte) {
	cp := *r
	cp.StatSN = 0
	var sense []byte
	if len(data) >= 2 {
		sense = data[2:]
	}
	c.SendResponse(&cp, sense)
}

// resendRead re-sends a read's Data-In from DataSN from (0: all) and its
// status.
func (c *Conn) resendRead(q *pdu.SCSICommand, b []byte, from uint32, status *pdu.SCSIResponse, sdata []byte) {
	c.mu.Lock()
	c.dataSN[q.ITT] = from
	c.mu.Unlock()
	c.dataInFrom(q, b, int(from))
	_ = status
	_ = sdata
}

// retain is the Time2Retain the target answers (default 20).
func (c *Config) retain() int {
	if c.Time2Retain == 0 {
		return 20
	}
	return max(c.Time2Retain, 0)
}

// Executions returns how often each CmdSN was executed (writes only).
func (t *Target) Executions() map[uint32]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[uint32]int, len(t.execs))
	for k, v := range t.execs {
		m[k] = v
	}
	return m
}

func (t *Target) executed(cmdSN uint32) {
	t.mu.Lock()
	if t.execs == nil {
		t.execs = map[uint32]int{}
	}
	t.execs[cmdSN]++
	t.mu.Unlock()
}

// Reassigned returns the ITTs of the tasks reassigned so far, in order.
func (t *Target) Reassigned() []uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]uint32(nil), t.reassigned...)
}

func (t *Target) noteReassign(itt uint32) {
	t.mu.Lock()
	t.reassigned = append(t.reassigned, itt)
	t.mu.Unlock()
}

// SessionTSIH returns the TSIH of the session c belongs to (0: none).
func (c *Conn) SessionTSIH() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return 0
	}
	return c.sess.tsih
}

// LIO61ReassignWire is the TASK REASSIGN response LIO 6.1 puts on the wire
// for the one it decided: iscsit_tmr_task_reassign returns an iSCSI
// response code, which iscsit_build_task_mgt_rsp then converts as a
// target-core code (enum tcm_tmrsp_table): function complete (0, read as
// TMR_FUNCTION_FAILED) goes out as 255 "function rejected", task does not
// exist (1, read as TMR_FUNCTION_COMPLETE) as 0 "function complete", task
// still allegiant (3, read as TMR_LUN_DOES_NOT_EXIST) as 2 "LUN does not
// exist", anything else as 255.
func LIO61ReassignWire(resp uint8) uint8 {
	switch resp {
	case pdu.TMFRespComplete:
		return pdu.TMFRespRejected
	case pdu.TMFRespNoTask:
		return pdu.TMFRespComplete
	case pdu.TMFRespStillAllegiant:
		return pdu.TMFRespNoLUN
	}
	return pdu.TMFRespRejected
}
