package faketarget

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// errCut is returned by a send a Config.Cut* hook replaced by closing
// the connection.
var errCut = errors.New("faketarget: connection cut (scripted)")

// Params are the values a connection negotiated at login.
type Params struct {
	// InitiatorMaxRecvDSL is the initiator's declaration: it bounds every
	// data segment the target sends.
	InitiatorMaxRecvDSL int
	// TargetMaxRecvDSL is the target's declaration: it bounds every data
	// segment the initiator sends.
	TargetMaxRecvDSL         int
	FirstBurstLength         int
	MaxBurstLength           int
	InitialR2T               bool
	ImmediateData            bool
	MaxOutstandingR2T        int
	HeaderDigest, DataDigest bool
	// ErrorRecoveryLevel negotiated (the minimum of the initiator's offer
	// and Config.ErrorRecoveryLevel).
	ErrorRecoveryLevel int
}

// LoginRecord is one Login Request the target received.
type LoginRecord struct {
	Req  pdu.LoginRequest
	Keys []pdu.KV
}

// Conn is one connection of the fake target. Its Send helpers are safe for
// concurrent use (from hooks and from test goroutines).
type Conn struct {
	t  *Target
	nc net.Conn
	r  *pdu.Reader

	wmu sync.Mutex // guards w; taken before mu
	w   *pdu.Writer

	mu sync.Mutex
	// Sequence numbers.
	statSN      uint32
	expCmdSN    uint32
	winFixed    bool
	winExp      uint32
	winMax      uint32
	winSize     int
	advMax      uint32 // largest valid MaxCmdSN advertised
	dataSN      map[uint32]uint32
	r2tSN       map[uint32]uint32
	lunOf       map[uint32]uint64
	delay       time.Duration
	params      Params
	logins      []LoginRecord
	received    []Received
	recvCh      chan struct{}
	writes      map[uint32]*writeTask
	textPending map[uint32][]byte
	nextTTT     uint32
	closeAfter  bool // close once the current login hook returns
	cid         uint16
	isid        [6]byte
	tsih        uint16

	erl erlState // ERL 1: what was sent, for SNACKs (erl.go)
	// CmdSN gaps left by Config.DropCommand: the dropped CmdSNs, and
	// the CmdSNs received beyond ExpCmdSN while a gap is open.
	gaps, ahead map[uint32]bool

	sess  *session    // MC/S and ERL 2 (session.go); nil otherwise
	statQ []*sessTask // tasks whose status went out here, by StatSN (under sess.mu)

	closeOnce sync.Once
	done      chan struct{}
	served    chan struct{} // closed when serve has returned
}

func newConn(t *Target, nc net.Conn) *Conn {
	return &Conn{
		t: t, nc: nc, r: pdu.NewReader(nc), w: pdu.NewWriter(nc),
		statSN: t.cfg.InitialStatSN, winSize: t.cfg.Window,
		dataSN: map[uint32]uint32{}, r2tSN: map[uint32]uint32{}, lunOf: map[uint32]uint64{},
		writes: map[uint32]*writeTask{}, recvCh: make(chan struct{}), nextTTT: 0x1000,
		done: make(chan struct{}), served: make(chan struct{}),
	}
}

// Target returns the connection's target.
func (c *Conn) Target() *Target { return c.t }

// Close closes the connection (the initiator sees EOF).
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.nc.Close()
	})
	return nil
}

// Done is closed when the connection is closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Params returns the negotiated values (valid after login).
func (c *Conn) Params() Params {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.params
}

// Logins returns the Login Requests received, in order.
func (c *Conn) Logins() []LoginRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]LoginRecord(nil), c.logins...)
}

// ISID, TSIH and CID of the login on this connection.
func (c *Conn) ISID() [6]byte { c.mu.Lock(); defer c.mu.Unlock(); return c.isid }
func (c *Conn) CID() uint16   { c.mu.Lock(); defer c.mu.Unlock(); return c.cid }

// Received returns the PDUs received in full feature phase, in order.
func (c *Conn) Received() []Received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Received(nil), c.received...)
}

// WaitFor waits until a received PDU satisfies match and returns the first
// one that does.
func (c *Conn) WaitFor(ctx context.Context, match func(Received) bool) (Received, error) {
	seen := 0
	for {
		c.mu.Lock()
		for ; seen < len(c.received); seen++ {
			if match(c.received[seen]) {
				r := c.received[seen]
				c.mu.Unlock()
				return r, nil
			}
		}
		ch := c.recvCh
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Received{}, fmt.Errorf("faketarget: waiting for a PDU: %w", ctx.Err())
		case <-c.done:
			// One last scan: the PDU may have arrived just before.
			c.mu.Lock()
			n := len(c.received)
			c.mu.Unlock()
			if seen == n {
				return Received{}, errors.New("faketarget: connection closed while waiting for a PDU")
			}
		}
	}
}

// WaitOpcode waits for the first received PDU with opcode op.
func (c *Conn) WaitOpcode(ctx context.Context, op pdu.Opcode) (Received, error) {
	return c.WaitFor(ctx, func(r Received) bool { return r.Opcode() == op })
}

func (c *Conn) record(r Received) {
	c.mu.Lock()
	r.MaxCmdSN = c.advMax
	if !c.t.cfg.NoRecord {
		c.received = append(c.received, r)
	}
	close(c.recvCh)
	c.recvCh = make(chan struct{})
	c.mu.Unlock()
}

// SetWindow fixes ExpCmdSN and MaxCmdSN for every following PDU, whatever
// commands arrive (ClearWindow returns to automatic values).
func (c *Conn) SetWindow(exp, max uint32) {
	c.mu.Lock()
	c.winFixed, c.winExp, c.winMax = true, exp, max
	c.mu.Unlock()
}

// SetWindowSize returns to automatic ExpCmdSN (the next CmdSN expected)
// with MaxCmdSN = ExpCmdSN + n - 1; n <= 0 is a zero window.
func (c *Conn) SetWindowSize(n int) {
	c.mu.Lock()
	c.winFixed, c.winSize = false, n
	c.mu.Unlock()
}

// ExpCmdSN returns the next CmdSN the target expects.
func (c *Conn) ExpCmdSN() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expCmdSN
}

// SetStatSN sets the StatSN of the next status the target sends.
func (c *Conn) SetStatSN(sn uint32) {
	c.mu.Lock()
	c.statSN = sn
	c.mu.Unlock()
}

// StatSN returns the StatSN the next status will carry.
func (c *Conn) StatSN() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statSN
}

// SetDelay delays every default answer to a SCSI command by d.
func (c *Conn) SetDelay(d time.Duration) {
	c.mu.Lock()
	c.delay = d
	c.mu.Unlock()
}

// window returns the ExpCmdSN/MaxCmdSN pair to put in the next PDU and
// records the advertised maximum. Call with mu held.
func (c *Conn) window() (exp, max uint32) {
	if c.sess != nil && !c.winFixed {
		exp, max = c.sess.window(c.winSize)
		if int32(max-(exp-1)) >= 0 && int32(max-c.advMax) > 0 {
			c.advMax = max
		}
		return exp, max
	}
	if c.winFixed {
		exp, max = c.winExp, c.winMax
	} else {
		exp = c.expCmdSN
		max = exp + uint32(c.winSize) - 1
		if c.winSize <= 0 {
			max = exp - 1
		}
	}
	// The initiator must ignore a pair with MaxCmdSN < ExpCmdSN - 1.
	if int32(max-(exp-1)) >= 0 && int32(max-c.advMax) > 0 {
		c.advMax = max
	}
	return exp, max
}

// fill sets StatSN, ExpCmdSN and MaxCmdSN in a target PDU, advancing
// StatSN for PDUs that carry status. Call with mu held.
func (c *Conn) fill(p pdu.PDU) {
	next := func(advance bool) uint32 {
		sn := c.statSN
		if advance {
			c.statSN++
		}
		return sn
	}
	switch q := p.(type) {
	case *pdu.SCSIResponse:
		q.StatSN = next(true)
		q.ExpCmdSN, q.MaxCmdSN = c.window()
		delete(c.dataSN, q.ITT)
		delete(c.r2tSN, q.ITT)
	case *pdu.DataIn:
		if q.HasStatus {
			q.StatSN = next(true)
			delete(c.dataSN, q.ITT)
			delete(c.r2tSN, q.ITT)
		}
		q.ExpCmdSN, q.MaxCmdSN = c.window()
	case *pdu.R2T:
		q.StatSN = c.statSN
		q.ExpCmdSN, q.MaxCmdSN = c.window()
	case *pdu.NopIn:
		q.StatSN = next(q.ITT != pdu.ReservedTag)
		q.ExpCmdSN, q.MaxCmdSN = c.window()
	case *pdu.TaskMgmtResponse:
		q.StatSN = next(true)
		q.ExpCmdSN, q.MaxCmdSN = c.window()
	case *pdu.TextResponse:
		q.StatSN = next(true)
		q.ExpCmdSN, q.MaxCmdSN = c.window()
	case *pdu.LogoutResponse:
		q.StatSN = next(true)
		q.ExpCmdSN, q.MaxCmdSN = c.window()
	case *pdu.AsyncMessage:
		q.StatSN = next(true)
		q.ExpCmdSN, q.MaxCmdSN = c.window()
	case *pdu.Reject:
		q.StatSN = next(true)
		q.ExpCmdSN, q.MaxCmdSN = c.window()
	case *pdu.LoginResponse:
		q.StatSN = next(true)
		q.ExpCmdSN, q.MaxCmdSN = c.window()
	}
}

// Send fills the sequence numbers of p (StatSN, ExpCmdSN, MaxCmdSN) and
// writes it with data.
func (c *Conn) Send(p pdu.PDU, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	c.fill(p)
	c.mu.Unlock()
	return c.w.WritePDU(p, data)
}

// SendAsIs writes p exactly as given (no sequence numbers filled in).
func (c *Conn) SendAsIs(p pdu.PDU, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.w.WritePDU(p, data)
}

// SendRaw writes b to the connection as is.
func (c *Conn) SendRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// Wire fills p's sequence numbers like Send and returns the bytes Send
// would write (with the negotiated digests) without writing them, so a test
// can corrupt them and use SendRaw.
func (c *Conn) Wire(p pdu.PDU, data []byte) []byte {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	c.fill(p)
	c.mu.Unlock()
	var b bytes.Buffer
	w := pdu.NewWriter(&b)
	w.HeaderDigest, w.DataDigest = c.w.HeaderDigest, c.w.DataDigest
	w.WritePDU(p, data)
	return b.Bytes()
}

// LUNOf returns the LUN field of the command with itt.
func (c *Conn) LUNOf(itt uint32) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lunOf[itt]
}

// SendDataIn sends one Data-In for d.ITT. TTT is set to 0xffffffff and
// DataSN taken from the task's counter; with d.HasStatus the PDU is final
// and carries status (and StatSN).
func (c *Conn) SendDataIn(d *pdu.DataIn, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if cut := c.t.cfg.CutDataIn; cut != nil && cut(d.ITT, c.dataSN[d.ITT]) {
		c.mu.Unlock()
		c.Close()
		return errCut
	}
	d.TTT = pdu.ReservedTag
	d.DataSN = c.dataSN[d.ITT]
	c.dataSN[d.ITT]++
	if d.HasStatus {
		d.Final = true
	}
	if d.LUN == 0 {
		d.LUN = c.lunOf[d.ITT]
	}
	c.fill(d)
	if c.params.ErrorRecoveryLevel > 0 || c.t.cfg.DataACK != nil {
		c.prepareDataIn(d, data)
	}
	sess := c.sess
	c.mu.Unlock()
	if sess != nil && d.HasStatus {
		sess.keepStatus(c, &pdu.SCSIResponse{Header: pdu.Header{ITT: d.ITT}, Status: d.Status,
			Underflow: d.Underflow, Overflow: d.Overflow, Residual: d.Residual, StatSN: d.StatSN}, nil, false)
	}
	return c.writeDataIn(d, data, false)
}

// SendStatus sends a SCSI Response with status and, if not nil, sense data
// for itt.
func (c *Conn) SendStatus(itt uint32, status uint8, sense []byte) error {
	return c.SendResponse(&pdu.SCSIResponse{Header: pdu.Header{ITT: itt}, Status: status}, sense)
}

// SendResponse sends r (sequence numbers and ExpDataSN filled in) with
// sense data, if any, prefixed by its 2-byte SenseLength.
func (c *Conn) SendResponse(r *pdu.SCSIResponse, sense []byte) error {
	var data []byte
	if len(sense) > 0 {
		data = binary.BigEndian.AppendUint16(nil, uint16(len(sense)))
		data = append(data, sense...)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	sess := c.sess
	if cut := c.t.cfg.CutStatus; cut != nil && cut(r.ITT) {
		// The task is done here, but its status goes with the
		// connection: kept for a reassign.
		c.mu.Unlock()
		if sess != nil {
			sess.keepStatus(c, r, data, true)
		}
		c.Close()
		return errCut
	}
	r.ExpDataSN = c.dataSN[r.ITT]
	c.fill(r)
	drop := c.keepStatus(r, data)
	c.mu.Unlock()
	if sess != nil {
		sess.keepStatus(c, r, data, false)
	}
	if drop {
		return nil
	}
	return c.w.WritePDU(r, data)
}

// SendR2T sends an R2T for itt; R2TSN comes from the task's counter.
func (c *Conn) SendR2T(itt, ttt, offset, length uint32) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	r := &pdu.R2T{Header: pdu.Header{ITT: itt, LUN: c.lunOf[itt]}, TTT: ttt, R2TSN: c.r2tSN[itt], BufferOffset: offset, DesiredLength: length}
	c.r2tSN[itt]++
	c.fill(r)
	c.mu.Unlock()
	return c.w.WritePDU(r, nil)
}

// SendNopIn sends an unsolicited NOP-In (ITT 0xffffffff). A TTT other than
// 0xffffffff asks the initiator for a NOP-Out answer.
func (c *Conn) SendNopIn(ttt uint32, lun uint64, data []byte) error {
	return c.Send(&pdu.NopIn{Header: pdu.Header{ITT: pdu.ReservedTag, LUN: lun}, TTT: ttt}, data)
}

// SendAsync sends an Async Message with event and parameters.
func (c *Conn) SendAsync(event uint8, p1, p2, p3 uint16, data []byte) error {
	return c.Send(&pdu.AsyncMessage{Header: pdu.Header{ITT: pdu.ReservedTag, LUN: 0}, Event: event, Param1: p1, Param2: p2, Param3: p3}, data)
}

// SendReject sends a Reject carrying the header of the rejected PDU.
func (c *Conn) SendReject(reason uint8, rejected pdu.BHS) error {
	return c.Send(&pdu.Reject{Header: pdu.Header{ITT: pdu.ReservedTag}, Reason: reason}, rejected[:])
}

// NewTTT returns a fresh Target Transfer Tag.
func (c *Conn) NewTTT() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextTTT++
	return c.nextTTT
}

// sleep waits d or until the connection closes.
func (c *Conn) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-c.done:
	}
}

// serve runs login and then the full feature phase until the connection
// ends.
func (c *Conn) serve() {
	defer close(c.served)
	defer func() {
		c.Close()
		c.mu.Lock()
		s := c.sess
		c.mu.Unlock()
		if s != nil {
			s.lost(c)
		}
	}()
	if err := c.login(); err != nil {
		return
	}
	if h := c.t.cfg.OnConnect; h != nil {
		h(c)
	}
	c.r.MaxData = 1 << 24 // oversize segments are recorded as violations, not refused
	var b pdu.BHS
	for {
		if err := c.r.ReadHeader(&b); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
				select {
				case <-c.done:
				default:
					c.t.violate("conn %d: reading a PDU: %v", c.cid, err)
				}
			}
			return
		}
		if b.TotalAHSLength() != 0 {
			c.t.violate("%v carries an AHS of %d bytes", b.Opcode(), b.TotalAHSLength())
		}
		data, err := c.r.ReadDataAlloc(&b)
		if err != nil {
			select {
			case <-c.done: // closed by the target (a test, a Cut* hook)
			default:
				c.t.violate("conn %d: reading data of %v: %v", c.cid, b.Opcode(), err)
			}
			return
		}
		if n, lim := len(data), c.Params().TargetMaxRecvDSL; n > lim {
			c.t.violate("%v itt %#x: data segment of %d bytes exceeds the target's MaxRecvDataSegmentLength %d", b.Opcode(), b.ITT(), n, lim)
		}
		p, err := pdu.Parse(&b)
		if err != nil {
			c.t.violate("unparsable PDU: %v", err)
			c.SendReject(pdu.RejectProtocolError, b)
			continue
		}
		if q, ok := p.(*pdu.SCSICommand); ok && c.t.cfg.DropCommand != nil && c.t.cfg.DropCommand(q.ITT, q.CmdSN) {
			c.record(Received{Raw: b, PDU: p, Data: data, At: time.Now(), Dropped: true})
			c.mu.Lock()
			if c.gaps == nil {
				c.gaps, c.ahead = map[uint32]bool{}, map[uint32]bool{}
			}
			c.gaps[q.CmdSN] = true
			c.mu.Unlock()
			continue
		}
		if c.sess != nil && !b.Opcode().IsTarget() {
			if lo, ok := p.(*pdu.LogoutRequest); !ok || lo.Reason == pdu.LogoutCloseSession || lo.CID == c.cid {
				// (A Logout for another connection carries that one's ExpStatSN.)
				c.sess.acked(c, binary.BigEndian.Uint32(b[28:]))
			}
		}
		if !b.Opcode().IsTarget() && b.Opcode() != pdu.OpLoginReq {
			c.record(Received{Raw: b, PDU: p, Data: data, At: time.Now()})
		} else {
			c.t.violate("initiator sent %v in full feature phase", b.Opcode())
			c.SendReject(pdu.RejectProtocolError, b)
			continue
		}
		if !c.dispatch(p, data, b) {
			return
		}
	}
}
