package initiator

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/rawsock"
)

// statSNWindow bounds how far a StatSN may run ahead of the expected one
// before the connection is declared broken (RFC 7143, Section 4.2.2.2 allows
// any constant up to 2**31-1; one connection never has more outstanding
// statuses than tasks).
const statSNWindow = 1 << 16

// conn is one TCP connection of a session in full feature phase.
type conn struct {
	s      *Session
	nc     net.Conn
	cid    uint16
	portal string
	log    *logrus.Entry

	r   *pdu.Reader
	raw *rawsock.Sock // nil when nc has no descriptor: nc's own Read/Write are used

	// readerYield: the read loop yielded to the writer (fillLimiter.Read),
	// which then writes at once instead of yielding in turn.
	readerYield atomic.Bool
	// queued counts the PDUs in the write queue (q), for that decision.
	queued atomic.Int32

	wmu sync.Mutex // guards the write queue; taken before Session.winMu
	// The write queue (writeq.go): q is filled under wmu while the writer,
	// holding flushMu, writes spare; flushMu also guards the scratch.
	q, spare *rawsock.Batch
	wbhs     pdu.BHS // queueLocked's scratch header
	flushMu  sync.Mutex
	vec      [][]byte
	iov      []unix.Iovec
	wake     chan struct{} // one token: the queue has something
	wexit    chan struct{} // closed when the writer has stopped

	// echoBusy is set while a ping echo (echoPing) is queued or being
	// written; echoQueued (under wmu) says the echo is in q.
	echoBusy   atomic.Bool
	echoQueued bool

	p         Params // this connection's parameters (digests, MaxXmitDSL are per connection)
	expStatSN atomic.Uint32
	lastRx    atomic.Int64 // UnixNano of the last bytes received

	// leaving is set (under wmu) once the connection takes no new
	// commands (a Logout of it is coming); loggedOut once it was logged
	// out on purpose, so its loss starts no recovery (connlogout.go).
	leaving, loggedOut atomic.Bool

	failOnce sync.Once
	err      error
	down     bool          // set under Session.taskMu once the read loop failed its tasks
	dead     bool          // set under Session.winMu with down: no CmdSN is given out for it any more
	done     chan struct{} // closed when the connection has failed

	lim fillLimiter // between the socket and the read loop's buffer

	// ERL 1 state of the read loop (erl1.go): the StatSN after the
	// highest seen, the StatSNs missing below it, the tasks whose status
	// is held (not acknowledged until their data is complete), Status
	// SNACKs sent, header digest errors in a row; statGen disarms a
	// SNACK timer.
	statInit    bool
	nextStat    uint32
	statMissing []uint32
	statPinned  []*task
	statTries   int
	hdrErrs     int
	statGen     atomic.Uint32

	// Reused decode targets for the read loop.
	din  pdu.DataIn
	rsp  pdu.SCSIResponse
	r2t  pdu.R2T
	nop  pdu.NopIn
	bhs  pdu.BHS
	exit chan struct{} // closed when the read loop has returned
}

func newConn(s *Session, nc net.Conn, cid uint16, portal string, r *pdu.Reader, expStatSN uint32, p Params) *conn {
	c := &conn{s: s, nc: nc, cid: cid, portal: portal, r: r, done: make(chan struct{}), exit: make(chan struct{}),
		wake: make(chan struct{}, 1), wexit: make(chan struct{}), q: new(rawsock.Batch), spare: new(rawsock.Batch)}
	c.log = s.log.WithField("conn", cid)
	c.raw = rawsock.New(nc)
	c.expStatSN.Store(expStatSN)
	c.p = p
	c.lastRx.Store(time.Now().UnixNano())
	r.RejectAHS = true
	r.HeaderDigest, r.DataDigest = p.HeaderDigest, p.DataDigest
	r.MaxData = p.MaxRecvDSL
	return c
}

// fail closes the connection once with err; the read loop then exits and
// fails every task of the connection.
func (c *conn) fail(err error) {
	c.failOnce.Do(func() {
		if err == nil {
			err = errors.New("connection closed")
		}
		c.err = &ConnError{Portal: c.portal, Err: err}
		close(c.done)
		c.nc.Close()
	})
}

func (c *conn) error() error {
	<-c.done
	return c.err
}

// readLoop dispatches incoming PDUs until the connection fails.
func (c *conn) readLoop() {
	defer close(c.exit)
	c.lim.r, c.lim.lastRx = rawsock.Reader(c.nc, c.raw), &c.lastRx
	c.lim.raw, c.lim.c = c.raw, c
	br := bufio.NewReaderSize(&c.lim, 64<<10)
	c.r.Reset(br)
	var err error
	for {
		if err = c.r.ReadHeader(&c.bhs); err != nil {
			if c.erl1() && errors.Is(err, pdu.ErrHeaderDigest) {
				if err = c.headerDigestERL1(&c.bhs, err); err == nil {
					continue
				}
			}
			break
		}
		c.hdrErrs = 0
		c.lim.limit = 0
		if err = c.dispatch(&c.bhs); err != nil {
			break
		}
		c.lim.co.completed(&c.bhs)
	}
	var fe pdu.FormatError
	if !errors.Is(err, ErrProtocol) && (errors.As(err, &fe) || errors.Is(err, pdu.ErrHeaderDigest) ||
		errors.Is(err, pdu.ErrDataDigest) || errors.Is(err, pdu.ErrDataTooLong)) {
		err = fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	select {
	case <-c.done: // closed on purpose (logout, Close, a writer's error)
	default:
		c.log.WithError(err).Debug("read loop ended")
	}
	c.fail(err)
	// No write of this connection may still be reading a caller's buffer
	// when its tasks are failed and their callers return.
	<-c.wexit
	c.s.connDown(c, c.err)
}

// statSN checks and advances ExpStatSN for a PDU that carries status.
func (c *conn) statSN(sn uint32) error {
	if c.erl1() {
		return c.statSNERL1(sn, nil)
	}
	exp := c.expStatSN.Load()
	d := int32(sn - exp)
	if d >= statSNWindow || d <= -statSNWindow {
		return protoErr("StatSN %d out of window (expected %d)", sn, exp)
	}
	if d >= 0 {
		c.expStatSN.Store(sn + 1)
	}
	return nil
}

func (c *conn) dispatch(b *pdu.BHS) error {
	if c.log.Logger.IsLevelEnabled(logrus.TraceLevel) {
		c.log.Tracef("<- %v itt=%#x len=%d", b.Opcode(), b.ITT(), b.DataSegmentLength())
	}
	if b.TotalAHSLength() != 0 {
		// "Response PDUs carry no AHS" (Section 11.2).
		return protoErr("%v carries an AHS", b.Opcode())
	}
	switch b.Opcode() {
	case pdu.OpDataIn:
		return c.handleDataIn(b)
	case pdu.OpSCSIResponse:
		return c.handleSCSIResponse(b)
	case pdu.OpR2T:
		return c.handleR2T(b)
	case pdu.OpNopIn:
		return c.handleNopIn(b)
	case pdu.OpTaskMgmtResp, pdu.OpTextResp, pdu.OpLogoutResp:
		return c.handleControl(b)
	case pdu.OpAsyncMessage:
		return c.handleAsync(b)
	case pdu.OpReject:
		return c.handleReject(b)
	case pdu.OpLoginResp:
		return protoErr("Login Response in full feature phase")
	}
	return fmt.Errorf("%w: %w", ErrProtocol, pdu.UnknownOpcodeError{Opcode: b.Opcode()})
}

func (c *conn) handleDataIn(b *pdu.BHS) error {
	d := &c.din
	if err := d.UnmarshalBHS(b); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	c.s.updateWindow(d.ExpCmdSN, d.MaxCmdSN)
	t := c.s.lookup(d.ITT)
	if t == nil || t.kind != kindSCSI {
		// Late data for a task already ended (aborted): drop it.
		if c.erl1() {
			return c.discardDamaged(b)
		}
		return c.r.DiscardData(b)
	}
	n := d.DataLen
	off := int(d.BufferOffset)
	if off > len(t.rbuf) || n > len(t.rbuf)-off {
		return protoErr("Data-In of %d bytes at offset %d exceeds the %d-byte read buffer (itt %#x)", n, off, len(t.rbuf), d.ITT)
	}
	if c.erl1() && (off != t.received || d.DataSN != t.expDataSN) {
		if handled, err := c.dataInERL1(b, t, d); handled || err != nil {
			return err
		}
	}
	if off != t.received {
		// DataPDUInOrder and DataSequenceInOrder are Yes (we offer Yes;
		// the result function is OR): "the data PDUs within sequences
		// MUST be at continuously increasing addresses and overlays are
		// forbidden" (Section 13.19). A gap or an overlap would leave
		// part of the buffer unwritten while received counts it.
		return protoErr("Data-In at offset %d, expected %d (DataPDUInOrder=Yes; itt %#x)", off, t.received, d.ITT)
	}
	if d.DataSN != t.expDataSN {
		return protoErr("Data-In DataSN %d, expected %d (itt %#x)", d.DataSN, t.expDataSN, d.ITT)
	}
	t.expDataSN++
	if err := c.r.ReadData(b, t.rbuf[off:off+n]); err != nil {
		if !c.erl1() || !errors.Is(err, pdu.ErrDataDigest) {
			return err
		}
		if err := c.dataDigestERL1(t, d); err != nil {
			return err
		}
	}
	if d.Ack && c.erl1() {
		// The A bit means nothing at level 0 (Section 11.7.2).
		if err := c.dataACK(t, d); err != nil {
			return err
		}
	}
	if n >= bigSegment {
		c.lim.limit = pdu.BHSLen
		if c.p.HeaderDigest {
			c.lim.limit += 4
		}
	}
	t.received += n
	if !d.HasStatus {
		return nil
	}
	if c.erl1() {
		t.resp = Response{Status: d.Status, Residual: d.Residual, Underflow: d.Underflow, Overflow: d.Overflow}
		return c.statusERL1(t, d.StatSN)
	}
	if err := c.statSN(d.StatSN); err != nil {
		return err
	}
	t.resp = Response{Status: d.Status, Residual: d.Residual, Underflow: d.Underflow, Overflow: d.Overflow, Received: t.received}
	c.s.complete(t, nil)
	return nil
}

func (c *conn) handleSCSIResponse(b *pdu.BHS) error {
	r := &c.rsp
	if err := r.UnmarshalBHS(b); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if c.erl1() {
		return c.scsiResponseERL1(b, r)
	}
	if err := c.statSN(r.StatSN); err != nil {
		return err
	}
	c.s.updateWindow(r.ExpCmdSN, r.MaxCmdSN)
	data, err := c.r.ReadDataAlloc(b)
	if err != nil {
		return err
	}
	t := c.s.lookup(r.ITT)
	if t == nil || t.kind != kindSCSI {
		c.log.Debugf("SCSI Response for unknown task %#x dropped", r.ITT)
		return nil
	}
	if r.Response != 0 {
		c.s.complete(t, fmt.Errorf("iscsi: target failure (response 0x%02x) for task %#x", r.Response, r.ITT))
		return nil
	}
	t.resp = c.scsiResp(r, data, t.received)
	c.s.complete(t, nil)
	return nil
}

// scsiResp builds the Response of a SCSI Response PDU with its data segment.
func (c *conn) scsiResp(r *pdu.SCSIResponse, data []byte, received int) Response {
	resp := Response{Status: r.Status, Residual: r.Residual, Underflow: r.Underflow, Overflow: r.Overflow, Received: received}
	if len(data) >= 2 {
		sl := int(data[0])<<8 | int(data[1])
		if sl > len(data)-2 {
			sl = len(data) - 2
		}
		resp.Sense = data[2 : 2+sl]
	}
	if r.Status == 0x02 && len(resp.Sense) == 0 {
		// "a SCSI Response with CHECK CONDITION and DataSegmentLength 0"
		// is a format error (Section 7.7); be lenient: report it.
		c.log.Warn("CHECK CONDITION without sense data")
	}
	return resp
}

func (c *conn) handleR2T(b *pdu.BHS) error {
	r := &c.r2t
	if err := r.UnmarshalBHS(b); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	c.s.updateWindow(r.ExpCmdSN, r.MaxCmdSN)
	t := c.s.lookup(r.ITT)
	if t == nil || t.kind != kindSCSI {
		return nil // task already ended
	}
	if t.wbuf == nil {
		return protoErr("R2T for a read task %#x", r.ITT)
	}
	if uint64(r.BufferOffset)+uint64(r.DesiredLength) > uint64(len(t.wbuf)) {
		return protoErr("R2T for %d bytes at offset %d beyond the %d-byte write (itt %#x)", r.DesiredLength, r.BufferOffset, len(t.wbuf), r.ITT)
	}
	if int(r.DesiredLength) > c.p.MaxBurstLength {
		return protoErr("R2T desired length %d exceeds MaxBurstLength %d", r.DesiredLength, c.p.MaxBurstLength)
	}
	if r.R2TSN != t.r2tSN && !c.s.reassignedTask(t) {
		return protoErr("R2TSN %d, expected %d (itt %#x)", r.R2TSN, t.r2tSN, r.ITT)
	}
	// After a TASK REASSIGN the target's recovery R2Ts may number on
	// from the lost connection's or start again: follow the target.
	t.r2tSN = r.R2TSN + 1
	select {
	case t.r2t <- r2tReq{conn: c, ttt: r.TTT, offset: r.BufferOffset, length: r.DesiredLength}:
	default:
		return protoErr("more outstanding R2Ts than MaxOutstandingR2T=%d (itt %#x)", c.p.MaxOutstandingR2T, r.ITT)
	}
	return nil
}

func (c *conn) handleNopIn(b *pdu.BHS) error {
	n := &c.nop
	if err := n.UnmarshalBHS(b); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	c.s.updateWindow(n.ExpCmdSN, n.MaxCmdSN)
	data, err := c.r.ReadDataAlloc(b)
	if err != nil {
		return err
	}
	if n.ITT == pdu.ReservedTag {
		// StatSN is not advanced by an unsolicited NOP-In (Section 11.19.2).
		if n.TTT != pdu.ReservedTag {
			c.echoPing(n, data)
		}
		return nil
	}
	if err := c.statSN(n.StatSN); err != nil {
		return err
	}
	if t := c.s.lookup(n.ITT); t != nil && t.kind == kindNop {
		cp := *n
		t.ctl, t.ctlData = &cp, data
		c.s.complete(t, nil)
	}
	return nil
}

// maxEcho caps the ping data echoed to one target ping: the echo of a
// 16 MiB MaxRecvDataSegmentLength ping would otherwise sit in the write
// queue. Section 11.18.5 limits reflected data anyway.
const maxEcho = 64 << 10

// echoPing answers a target ping (NOP-In with a Target Transfer Tag) with
// a NOP-Out copying the TTT, LUN and ping data, I=1. At most one echo per
// connection is queued and not yet written: a target that keeps pinging
// but does not read our socket must not grow the write queue without
// bound, so further pings are dropped until the writer has written it
// (a target whose pings go unanswered fails the connection, which is the
// right outcome for a target that does not read). Runs on the read loop.
func (c *conn) echoPing(n *pdu.NopIn, data []byte) {
	if !c.echoBusy.CompareAndSwap(false, true) {
		c.log.Debugf("target ping (TTT %#x) dropped: the echo of an earlier one is not yet written", n.TTT)
		return
	}
	data = data[:min(len(data), maxEcho, c.p.MaxXmitDSL)]
	reply := &pdu.NopOut{Header: pdu.Header{Immediate: true, Final: true, ITT: pdu.ReservedTag, LUN: n.LUN}, TTT: n.TTT}
	c.wmu.Lock()
	c.s.winMu.Lock()
	sn := c.s.cmdSN
	c.s.winMu.Unlock()
	setSN(reply, sn, c.expStatSN.Load())
	err := c.queueLocked(reply, data)
	if err == nil {
		c.echoQueued = true // cleared by writeQueued once written
	}
	c.wmu.Unlock()
	if err != nil {
		c.echoBusy.Store(false)
		return
	}
	c.flush()
}

// setSN fills CmdSN and ExpStatSN of an initiator control PDU.
func setSN(p pdu.PDU, cmdSN, expStatSN uint32) {
	switch q := p.(type) {
	case *pdu.NopOut:
		q.CmdSN, q.ExpStatSN = cmdSN, expStatSN
	case *pdu.TaskMgmtRequest:
		q.CmdSN, q.ExpStatSN = cmdSN, expStatSN
	case *pdu.LogoutRequest:
		q.CmdSN, q.ExpStatSN = cmdSN, expStatSN
	case *pdu.TextRequest:
		q.CmdSN, q.ExpStatSN = cmdSN, expStatSN
	}
}

func (c *conn) handleControl(b *pdu.BHS) error {
	p, err := pdu.Parse(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	var statSN, exp, max uint32
	switch q := p.(type) {
	case *pdu.TaskMgmtResponse:
		statSN, exp, max = q.StatSN, q.ExpCmdSN, q.MaxCmdSN
	case *pdu.TextResponse:
		statSN, exp, max = q.StatSN, q.ExpCmdSN, q.MaxCmdSN
	case *pdu.LogoutResponse:
		statSN, exp, max = q.StatSN, q.ExpCmdSN, q.MaxCmdSN
	}
	if err := c.statSN(statSN); err != nil {
		return err
	}
	c.s.updateWindow(exp, max)
	data, err := c.r.ReadDataAlloc(b)
	if err != nil {
		return err
	}
	t := c.s.lookup(p.Hdr().ITT)
	if t == nil {
		c.log.Debugf("%v for unknown task %#x dropped", b.Opcode(), p.Hdr().ITT)
		return nil
	}
	want := map[pdu.Opcode]taskKind{pdu.OpTaskMgmtResp: kindTMF, pdu.OpTextResp: kindText, pdu.OpLogoutResp: kindLogout}[b.Opcode()]
	if t.kind != want {
		return protoErr("%v answers a task of another kind (itt %#x)", b.Opcode(), p.Hdr().ITT)
	}
	t.ctl, t.ctlData = p, data
	if tm, ok := p.(*pdu.TaskMgmtResponse); ok {
		c.s.tmfDone(t, tm)
	}
	c.s.complete(t, nil)
	return nil
}

// readStatusPDU decodes a status-carrying PDU into p, checks and advances
// StatSN, applies the window, and reads its (bounded) data segment.
func (c *conn) readStatusPDU(b *pdu.BHS, p pdu.PDU, sns func() (statSN, exp, max uint32)) ([]byte, error) {
	if err := p.UnmarshalBHS(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	statSN, exp, max := sns()
	if err := c.statSN(statSN); err != nil {
		return nil, err
	}
	c.s.updateWindow(exp, max)
	return c.r.ReadDataAlloc(b)
}

func (c *conn) handleAsync(b *pdu.BHS) error {
	var a pdu.AsyncMessage
	data, err := c.readStatusPDU(b, &a, func() (uint32, uint32, uint32) { return a.StatSN, a.ExpCmdSN, a.MaxCmdSN })
	if err != nil {
		return err
	}
	c.s.asyncEvent(c, &a, data)
	return nil
}

func (c *conn) handleReject(b *pdu.BHS) error {
	var r pdu.Reject
	data, err := c.readStatusPDU(b, &r, func() (uint32, uint32, uint32) { return r.StatSN, r.ExpCmdSN, r.MaxCmdSN })
	if err != nil {
		return err
	}
	var itt uint32 = pdu.ReservedTag
	var op pdu.Opcode
	if len(data) >= pdu.BHSLen {
		var rb pdu.BHS
		copy(rb[:], data)
		itt, op = rb.ITT(), rb.Opcode()
	}
	err = fmt.Errorf("iscsi: target rejected %v (itt %#x): %s", op, itt, rejectReason(r.Reason))
	c.log.Warn(err)
	if c.erl1() {
		if err := c.rejectERL1(r.Reason, op, itt); err != nil {
			return err
		}
	}
	switch r.Reason {
	case pdu.RejectWaitingLogout, pdu.RejectProtocolError, pdu.RejectNegotiationReset:
		// The connection is unusable for new commands: recover it.
		return err
	}
	if t := c.s.lookup(itt); t != nil && t.kind != kindSCSI {
		// A SCSI task always gets a response too (Section 7.3); control
		// exchanges do not.
		c.s.complete(t, err)
	}
	return nil
}

func rejectReason(r uint8) string {
	names := map[uint8]string{
		0x02: "data digest error", 0x03: "SNACK reject", 0x04: "protocol error",
		0x05: "command not supported", 0x06: "too many immediate commands", 0x07: "task in progress",
		0x08: "invalid data ack", 0x09: "invalid PDU field", 0x0a: "out of resources",
		0x0b: "negotiation reset", 0x0c: "waiting for logout",
	}
	if n, ok := names[r]; ok {
		return fmt.Sprintf("%s (0x%02x)", n, r)
	}
	return fmt.Sprintf("reason 0x%02x", r)
}

// bigSegment is the Data-In size from which the next PDU is expected to be
// large too.
const bigSegment = 32 << 10

// fillLimiter caps how much one refill of the read loop's buffer takes from
// the socket. After a large Data-In segment the next PDU is most likely
// large as well: refilling only its header lets its data segment go from
// the socket straight into the caller's buffer, instead of up to 64 KiB of
// it through the read buffer and a copy (perf: 7% of the CPU of 1 MiB
// reads was that copy). Small PDUs keep whole-buffer refills, many PDUs
// per system call. The read loop sets limit after a large segment and
// clears it once the next header is in, so the data read is never limited.
//
// It also stamps lastRx whenever bytes arrive: once per socket read, not
// once per PDU (a clock read per PDU was 1-2% of the CPU at 4 KiB).
type fillLimiter struct {
	r      io.Reader
	limit  int // 0: no limit
	lastRx *atomic.Int64

	// Receive coalescing (coalesce.go), when the socket is raw.
	raw *rawsock.Sock
	c   *conn
	co  coalescer
}

func (f *fillLimiter) Read(p []byte) (int, error) {
	if f.limit > 0 && len(p) > f.limit {
		p = p[:f.limit]
	}
	var n int
	var err error
	if q := int(f.c.queued.Load()); q > 0 && len(f.c.wake) > 0 && 4*q >= f.c.s.tasksPerConn() {
		// Commands queued by the PDUs just dispatched (a completion that
		// starts the next I/O), a quarter or more of those in flight: let
		// the writer send them before this goroutine reads on, so the
		// target has them while we work. Without this, on one P the writer
		// runs only once the read loop finds the socket empty, the target
		// runs dry meanwhile and the queue drains in bursts (null target,
		// 4 KiB reads at QD32: 262k-270k IOPS without, 381k-401k with,
		// same CPU per I/O). Fewer queued than that (a slower target that
		// answers a few at a time, tgtd): reading on first lets one write
		// carry more.
		f.c.readerYield.Store(true)
		runtime.Gosched()
	}
	if f.raw != nil {
		var how rawsock.Wait
		n, how, err = f.raw.ReadCoalesced(p, f.lowat, coalesceWait)
		switch how {
		case rawsock.WaitAny:
			f.co.plain(n)
		case rawsock.WaitLowat, rawsock.WaitTimer:
			f.co.waited(how == rawsock.WaitTimer)
		}
		f.co.received(n)
	} else {
		n, err = f.r.Read(p)
	}
	if n > 0 {
		f.lastRx.Store(time.Now().UnixNano())
	}
	return n, err
}

// lowat is ReadCoalesced's byte count for the next wait.
func (f *fillLimiter) lowat() int {
	return f.co.lowat(f.c.s.tasksPerConn)
}
