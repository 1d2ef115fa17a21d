package nvmetcp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// queue is one NVMe queue pair on one TCP connection.
type queue struct {
	qid     uint16
	conn    net.Conn
	r       *pdu.Reader
	opts    pdu.Options // framing of what we send (digests, CPDA)
	maxH2C  int         // MAXH2CDATA
	inline  int         // in-capsule data bytes allowed (0: none)
	icdoff  uint32      // in-capsule data offset in bytes
	timeout time.Duration
	log     *logrus.Entry
	onFail  func(*queue, error)
	// abort sends an Abort for a CID of this queue on the admin queue
	// (nil on the admin queue itself: there a stuck command ends the
	// connection).
	abort func(ctx context.Context, cid uint16)

	slots chan uint16 // free CIDs

	wmu  sync.Mutex
	wbuf []byte

	mu   sync.Mutex
	reqs []*request // by CID
	err  error      // set once the queue failed

	dead     chan struct{} // closed when the read loop exits
	failOnce sync.Once
}

type request struct {
	out  []byte // data to the controller
	in   []byte // buffer for data from the controller
	got  int    // C2HData bytes received
	sent int    // H2CData bytes sent
	done chan struct{}
	cqe  pdu.CQE
	err  error
}

// dialQueue opens a connection and runs ICReq/ICResp.
func dialQueue(ctx context.Context, cfg *Config, qid uint16, depth int) (*queue, error) {
	conn, err := cfg.Dial(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConnection, err)
	}
	q := &queue{qid: qid, conn: conn, timeout: cfg.CommandTimeout,
		log: cfg.Logger.WithField("qid", qid), dead: make(chan struct{})}
	if err := q.icReq(ctx, cfg); err != nil {
		conn.Close()
		return nil, err
	}
	q.slots = make(chan uint16, depth)
	q.reqs = make([]*request, depth)
	for i := range depth {
		q.slots <- uint16(i)
	}
	q.r.MaxData = cfg.MaxTransfer + 4096
	go q.readLoop()
	return q, nil
}

// icReq is connection initialisation (TCP transport, Section 3.6.2.2).
func (q *queue) icReq(ctx context.Context, cfg *Config) error {
	if d, ok := ctx.Deadline(); ok {
		q.conn.SetDeadline(d)
	} else {
		q.conn.SetDeadline(time.Now().Add(cfg.CommandTimeout))
	}
	defer q.conn.SetDeadline(time.Time{})
	req := &pdu.ICReq{HDGST: cfg.HeaderDigest, DDGST: cfg.DataDigest}
	if _, err := q.conn.Write(pdu.Options{}.AppendPDU(nil, req, 0)); err != nil {
		return fmt.Errorf("%w: ICReq: %v", ErrConnection, err)
	}
	q.r = pdu.NewReader(bufio.NewReaderSize(q.conn, 64<<10))
	var h pdu.Header
	if err := q.r.ReadHeader(&h); err != nil {
		return fmt.Errorf("%w: ICResp: %v", ErrConnection, err)
	}
	p, err := pdu.Parse(&h)
	if err != nil {
		return fmt.Errorf("%w: ICResp: %v", ErrProtocol, err)
	}
	if t, ok := p.(*pdu.TermReq); ok {
		return &TermError{FES: t.FES}
	}
	resp, ok := p.(*pdu.ICResp)
	if !ok {
		return fmt.Errorf("%w: %v instead of ICResp", ErrProtocol, h.Type)
	}
	// "The controller shall ... MAXH2CDATA ... shall be 4,096 or greater",
	// PFV 0 is the only version; digests are what we asked for or less.
	if resp.PFV != 0 || resp.MaxH2CData < 4096 || resp.CPDA > 31 ||
		(resp.HDGST && !cfg.HeaderDigest) || (resp.DDGST && !cfg.DataDigest) {
		return fmt.Errorf("%w: ICResp PFV %d MAXH2CDATA %d CPDA %d", ErrProtocol, resp.PFV, resp.MaxH2CData, resp.CPDA)
	}
	q.maxH2C = int(min(resp.MaxH2CData, 1<<24))
	q.opts = pdu.Options{HeaderDigest: resp.HDGST, DataDigest: resp.DDGST, DataAlign: (int(resp.CPDA) + 1) * 4}
	q.r.HeaderDigest, q.r.DataDigest = resp.HDGST, resp.DDGST
	return nil
}

// fail ends the queue: the connection is closed with a TCP reset
// (SO_LINGER 0), so nothing still queued in our kernel reaches the
// controller later (and restarts its keep-alive timer, see fence.go),
// and the read loop's exit fails every outstanding request with err.
func (q *queue) fail(err error) {
	q.failOnce.Do(func() {
		q.mu.Lock()
		q.err = err
		q.mu.Unlock()
		if tc, ok := q.conn.(interface{ SetLinger(int) error }); ok {
			tc.SetLinger(0)
		}
		q.conn.Close()
		if q.onFail != nil {
			q.onFail(q, err)
		}
	})
}

func (q *queue) failed() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// close ends the queue and waits for its read loop.
func (q *queue) close() {
	q.fail(fmt.Errorf("%w: queue closed", ErrConnection))
	<-q.dead
}

func (q *queue) readLoop() {
	err := q.readPDUs()
	q.fail(err)
	q.mu.Lock()
	if q.err != nil {
		err = q.err
	}
	for cid, r := range q.reqs {
		if r != nil {
			r.err = err
			q.reqs[cid] = nil
			close(r.done)
		}
	}
	q.mu.Unlock()
	close(q.dead)
}

func (q *queue) lookup(cid uint16) *request {
	q.mu.Lock()
	defer q.mu.Unlock()
	if int(cid) >= len(q.reqs) {
		return nil
	}
	return q.reqs[cid]
}

func (q *queue) complete(cid uint16, cqe pdu.CQE) {
	q.mu.Lock()
	r := q.reqs[cid]
	q.reqs[cid] = nil
	q.mu.Unlock()
	r.cqe = cqe
	close(r.done)
}

func (q *queue) readPDUs() error {
	var h pdu.Header
	for {
		if err := q.r.ReadHeader(&h); err != nil {
			var fe *pdu.FormatError
			switch {
			case errors.As(err, &fe), errors.Is(err, pdu.ErrTooLarge):
				q.term(pdu.FESInvalidHeader, h)
				return fmt.Errorf("%w: %v", ErrProtocol, err)
			case errors.Is(err, pdu.ErrHeaderDigest):
				q.term(pdu.FESHeaderDigest, h)
				return fmt.Errorf("%w: %v", ErrProtocol, err)
			}
			return fmt.Errorf("%w: %v", ErrConnection, err)
		}
		p, err := pdu.Parse(&h)
		if err != nil {
			q.term(pdu.FESInvalidHeader, h)
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		switch p := p.(type) {
		case *pdu.CapsuleResp:
			r := q.lookup(p.CQE.CID)
			if r == nil {
				return fmt.Errorf("%w: response for CID %d, not outstanding", ErrProtocol, p.CQE.CID)
			}
			if r.in != nil && r.got != len(r.in) && p.CQE.StatusField().OK() {
				return fmt.Errorf("%w: CID %d completed with %d of %d bytes", ErrProtocol, p.CQE.CID, r.got, len(r.in))
			}
			if r.out != nil && r.sent != len(r.out) && p.CQE.StatusField().OK() {
				return fmt.Errorf("%w: CID %d completed with %d of %d bytes sent", ErrProtocol, p.CQE.CID, r.sent, len(r.out))
			}
			q.complete(p.CQE.CID, p.CQE)
		case *pdu.C2HData:
			r := q.lookup(p.CCCID)
			if r == nil || r.in == nil {
				return fmt.Errorf("%w: C2HData for CID %d, no read outstanding", ErrProtocol, p.CCCID)
			}
			// Data must arrive in order and within the command's buffer.
			if int64(p.Offset) != int64(r.got) || int64(p.Offset)+int64(p.Length) > int64(len(r.in)) {
				return fmt.Errorf("%w: C2HData CID %d offset %d length %d, buffer %d, received %d",
					ErrProtocol, p.CCCID, p.Offset, p.Length, len(r.in), r.got)
			}
			if err := q.r.ReadData(&h, r.in[p.Offset:p.Offset+p.Length]); err != nil {
				return fmt.Errorf("%w: %v", ErrConnection, err)
			}
			r.got += int(p.Length)
			if p.Last && r.got != len(r.in) && p.Success {
				return fmt.Errorf("%w: C2HData CID %d SUCCESS after %d of %d bytes", ErrProtocol, p.CCCID, r.got, len(r.in))
			}
			if p.Success {
				q.complete(p.CCCID, pdu.CQE{CID: p.CCCID, SQID: q.qid})
			}
		case *pdu.R2T:
			r := q.lookup(p.CCCID)
			if r == nil || r.out == nil {
				return fmt.Errorf("%w: R2T for CID %d, no write outstanding", ErrProtocol, p.CCCID)
			}
			if int64(p.Offset) != int64(r.sent) || p.Length == 0 || int64(p.Offset)+int64(p.Length) > int64(len(r.out)) {
				return fmt.Errorf("%w: R2T CID %d offset %d length %d, data %d, sent %d",
					ErrProtocol, p.CCCID, p.Offset, p.Length, len(r.out), r.sent)
			}
			if err := q.sendH2C(p, r.out[p.Offset:p.Offset+p.Length]); err != nil {
				return err
			}
			r.sent += int(p.Length)
		case *pdu.TermReq:
			q.r.DiscardData(&h)
			return &TermError{FES: p.FES}
		default:
			return fmt.Errorf("%w: unexpected %v", ErrProtocol, h.Type)
		}
	}
}

// term sends an H2CTermReq, best effort, before the connection closes
// (TCP transport, Section 3.6.2.3).
func (q *queue) term(fes uint16, h pdu.Header) {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	q.conn.SetWriteDeadline(time.Now().Add(time.Second))
	q.conn.Write(pdu.AppendTermReq(nil, &pdu.TermReq{FES: fes, Data: h.Raw}))
}

// sendH2C answers an R2T with H2CData PDUs of at most MAXH2CDATA bytes.
func (q *queue) sendH2C(r2t *pdu.R2T, data []byte) error {
	off := r2t.Offset
	for len(data) > 0 {
		n := min(len(data), q.maxH2C)
		p := &pdu.H2CData{CCCID: r2t.CCCID, TTag: r2t.TTag, Offset: off, Length: uint32(n), Last: n == len(data)}
		if err := q.write(p, data[:n]); err != nil {
			return err
		}
		data, off = data[n:], off+uint32(n)
	}
	return nil
}

// write sends one PDU with its data in one writev.
func (q *queue) write(p pdu.PDU, data []byte) error {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	q.wbuf = q.opts.AppendPDU(q.wbuf[:0], p, len(data))
	bufs := net.Buffers{q.wbuf}
	if len(data) > 0 {
		bufs = append(bufs, data)
		if q.opts.DataDigest {
			bufs = append(bufs, pdu.AppendDataDigest(nil, data))
		}
	}
	q.conn.SetWriteDeadline(time.Now().Add(q.timeout))
	if _, err := bufs.WriteTo(q.conn); err != nil {
		err = fmt.Errorf("%w: %v", ErrConnection, err)
		q.fail(err)
		return err
	}
	return nil
}

// do runs one command: out is data to the controller (in-capsule when it
// fits, else on R2T), in a buffer the controller's data lands in.
func (q *queue) do(ctx context.Context, sqe pdu.SQE, out, in []byte) (pdu.CQE, error) {
	return q.doTimeout(ctx, sqe, out, in, q.timeout)
}

// doTimeout is do with its own command timeout; 0 waits without one (an
// Asynchronous Event Request completes only when an event happens).
func (q *queue) doTimeout(ctx context.Context, sqe pdu.SQE, out, in []byte, timeout time.Duration) (pdu.CQE, error) {
	var cid uint16
	select {
	case cid = <-q.slots:
	case <-q.dead:
		return pdu.CQE{}, q.deadErr()
	case <-ctx.Done():
		return pdu.CQE{}, ctx.Err()
	}
	r := &request{out: out, in: in, done: make(chan struct{})}
	if len(in) == 0 {
		r.in = nil
	}
	if len(out) == 0 {
		r.out = nil
	}
	sqe.CID = cid
	sqe.Flags |= pdu.PSDTSGL
	var capsule []byte
	switch {
	case len(out) > 0 && len(out) <= q.inline:
		sqe.SGL = pdu.SGL{Addr: uint64(q.icdoff), Length: uint32(len(out)), Type: pdu.SGLInCapsule}
		capsule = out
		r.sent = len(out)
		if q.icdoff > 0 {
			capsule = append(make([]byte, q.icdoff), out...)
		}
	case len(out) > 0:
		sqe.SGL = pdu.SGL{Length: uint32(len(out)), Type: pdu.SGLTransport}
	default:
		sqe.SGL = pdu.SGL{Length: uint32(len(in)), Type: pdu.SGLTransport}
	}
	q.mu.Lock()
	if q.err != nil {
		q.mu.Unlock()
		q.slots <- cid
		return pdu.CQE{}, q.deadErr()
	}
	q.reqs[cid] = r
	q.mu.Unlock()
	if err := q.write(&pdu.CapsuleCmd{SQE: sqe}, capsule); err != nil {
		<-r.done // the read loop's exit fails it
		return pdu.CQE{}, r.err
	}
	var expired <-chan time.Time
	if timeout > 0 {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-r.done:
	case <-expired:
		cause := fmt.Errorf("%w: %w: opcode %#x CID %d after %v", ErrConnection, ErrTimeout, sqe.Opcode, cid, q.timeout)
		if !q.giveUp(r, cid, cause) {
			return pdu.CQE{}, r.err
		}
		q.slots <- cid
		if r.cqe.StatusField().OK() {
			return r.cqe, nil // it finished after all
		}
		return pdu.CQE{}, fmt.Errorf("%w: opcode %#x CID %d aborted after %v (%v)", ErrTimeout, sqe.Opcode, cid, q.timeout, r.cqe.StatusField())
	case <-ctx.Done():
		if q.giveUp(r, cid, fmt.Errorf("%w: %v", ErrConnection, ctx.Err())) {
			q.slots <- cid
		}
		return pdu.CQE{}, ctx.Err()
	}
	if r.err != nil {
		return pdu.CQE{}, r.err
	}
	q.slots <- cid
	return r.cqe, nil
}

// giveUp ends a command the caller no longer waits for: an Abort on the
// admin queue (NVMe Base 2.0, Section 5.1), and when the command has not
// completed within a grace period after it, the connection goes. It
// returns whether the command completed (its CID is free again); either
// way the read loop no longer touches the caller's buffer.
func (q *queue) giveUp(r *request, cid uint16, cause error) bool {
	if q.abort != nil {
		grace := min(q.timeout, 5*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		q.abort(ctx, cid)
		cancel()
		t := time.NewTimer(grace)
		select {
		case <-r.done:
			t.Stop()
			return r.err == nil
		case <-t.C:
		}
	}
	q.fail(cause)
	<-r.done
	return r.err == nil
}

func (q *queue) deadErr() error {
	if err := q.failed(); err != nil {
		return err
	}
	return fmt.Errorf("%w: queue %d gone", ErrConnection, q.qid)
}

// isConnErr: the command failed with its connection, not with a status.
func isConnErr(err error) bool {
	var t *TermError
	return errors.Is(err, ErrConnection) || errors.Is(err, ErrProtocol) || errors.As(err, &t)
}
