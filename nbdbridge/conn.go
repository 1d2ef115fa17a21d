package nbdbridge

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/internal/rawsock"
)

// conn is one client connection.
type conn struct {
	s   *Server
	nc  net.Conn
	br  *bufio.Reader
	log *logrus.Entry

	noZeroes   bool
	structured bool
	metaAlloc  bool
	refusing   bool

	wmu  sync.Mutex // guards the reply queue (replyq.go) and werr
	werr error      // first write error; later replies are dropped

	// The reply queue (replyq.go): q and qrel are filled under wmu; the
	// spares and the scratch belong to the writer goroutine.
	q, spare *rawsock.Batch
	qrel     []*request // released once their replies are written
	sparerel []*request
	vec      [][]byte
	iov      []unix.Iovec
	wake     chan struct{}
	wquit    chan struct{}
	wexit    chan struct{}

	raw *rawsock.Sock // nil when nc has no descriptor

	budget *budget
	wg     sync.WaitGroup // requests in flight
}

func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{
		s:      s,
		nc:     nc,
		raw:    rawsock.New(nc),
		q:      new(rawsock.Batch),
		spare:  new(rawsock.Batch),
		log:    s.log.WithField("remote", addrString(nc.RemoteAddr())),
		budget: newBudget(s.opts.MaxInFlightBytes, s.opts.MaxInFlight),
	}
	c.br = bufio.NewReaderSize(rawsock.Reader(nc, c.raw), 64<<10)
	return c
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// drainWriteTimeout bounds how long a shutdown waits for a client that does
// not read its replies.
const drainWriteTimeout = 10 * time.Second

// request is one parsed transmission request.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	off    uint64
	length uint32
	buf    *[]byte                       // pooled payload buffer (WRITE data, READ destination)
	cost   int64                         // bytes taken from the budget
	start  int64                         // monotonic(): when its header arrived
	hdr    [structuredHeaderLen + 8]byte // its reply's header

	c      *conn
	onDone func(error) // r.asyncDone, made once per pooled request
}

// Requests are recycled (Server.reqs): at queue depth 32 a request and its
// completion callback were two allocations per I/O. A request is taken in
// the read loop and put back by release, the last thing that touches it:
// whoever queues its reply (reply) must not touch it afterwards, so the
// counters are updated before the reply (account).

// newRequest takes a request from the server's pool.
func (c *conn) newRequest() *request {
	r, _ := c.s.reqs.Get().(*request)
	if r == nil {
		r = new(request)
		r.onDone = r.asyncDone
	}
	r.c = c
	return r
}

// epoch anchors monotonic.
var epoch = time.Now()

// monotonic is nanoseconds on the monotonic clock: one clock read.
func monotonic() int64 { return int64(time.Since(epoch)) }

// transmit runs the read loop until DISC, EOF, a protocol error or ctx's
// cancellation, then waits for every request in flight to be answered.
func (c *conn) transmit(ctx context.Context) error {
	// Device calls finish even when ctx is cancelled: cancelling stops
	// reading new requests, and the ones in flight are drained.
	devCtx := context.WithoutCancel(ctx)
	stop := context.AfterFunc(ctx, func() {
		c.nc.SetReadDeadline(time.Now())
		// Replies in flight still go out, unless the client stops reading.
		c.nc.SetWriteDeadline(time.Now().Add(drainWriteTimeout))
		c.budget.close()
	})
	defer stop()
	c.startWriter()
	err := c.readLoop(ctx, devCtx)
	c.budget.close()
	c.wg.Wait()
	c.stopWriter()
	if ctx.Err() != nil {
		return nil
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) {
		c.log.Debug("nbd: client closed the connection")
		return nil
	}
	if err != nil {
		c.s.stats.protocolErrors.Add(1)
	}
	return err
}

func (c *conn) readLoop(ctx, devCtx context.Context) error {
	var hdr [requestHeaderLen]byte
	var arrived int64
	for {
		// Headers already buffered arrived with the last read from the
		// socket: one clock read per read, not per request.
		refill := c.br.Buffered() < requestHeaderLen
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("nbd: connection closed mid-request: %w", err)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
				return nil
			}
			return err
		}
		if refill || arrived == 0 {
			arrived = monotonic()
		}
		if m := binary.BigEndian.Uint32(hdr[0:4]); m != requestMagic {
			return fmt.Errorf("%w: bad request magic %#x", errProtocol, m)
		}
		if binary.BigEndian.Uint16(hdr[6:8]) == cmdDisc {
			// "the server MUST ... finish in-flight requests, then close".
			return nil
		}
		r := c.newRequest()
		r.flags = binary.BigEndian.Uint16(hdr[4:6])
		r.typ = binary.BigEndian.Uint16(hdr[6:8])
		r.cookie = binary.BigEndian.Uint64(hdr[8:16])
		r.off = binary.BigEndian.Uint64(hdr[16:24])
		r.length = binary.BigEndian.Uint32(hdr[24:28])
		r.start = arrived
		if err := c.dispatch(devCtx, r); err != nil {
			return err
		}
	}
}

// dispatch validates r, reads its payload and starts its worker. A returned
// error is connection-fatal; per-request errors become replies.
func (c *conn) dispatch(devCtx context.Context, r *request) error {
	s := c.s
	var payload int64 // bytes the client sends after the header
	if r.typ == cmdWrite {
		payload = int64(r.length)
	}
	errno := c.validate(r)
	if errno != 0 {
		// Stay in sync with the stream: discard any payload (bounded
		// memory; u32 length caps it at 4 GiB).
		if payload > 0 {
			if _, err := io.CopyN(io.Discard, c.br, payload); err != nil {
				return err
			}
		}
		// Replies are never written from the read loop: a client that
		// writes without reading would deadlock us both.
		if !c.budget.acquire(0) {
			return context.Canceled
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			s.stats.op(r.typ).errors.Add(1)
			c.account(r, 0)
			c.replyError(r, errno, "")
		}()
		return nil
	}
	var cost int64
	switch r.typ {
	case cmdRead, cmdWrite:
		cost = int64(r.length)
	}
	if !c.budget.acquire(cost) {
		return context.Canceled
	}
	r.cost = cost
	if cost > 0 {
		r.buf = s.pool.get(int(r.length))
	}
	if payload > 0 {
		if _, err := io.ReadFull(c.br, *r.buf); err != nil {
			c.release(r)
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return fmt.Errorf("nbd: connection closed mid-request: %w", io.ErrUnexpectedEOF)
			}
			return err
		}
	}
	c.wg.Add(1)
	if s.async != nil && (r.typ == cmdRead || r.typ == cmdWrite) && r.length > 0 {
		c.start(r)
		return nil
	}
	go func() {
		defer c.wg.Done()
		c.serve(devCtx, r)
	}()
	return nil
}

// release ends r: its buffer and budget are given back and r is recycled.
func (c *conn) release(r *request) {
	if r.buf != nil {
		c.s.pool.put(r.buf)
		r.buf = nil
	}
	c.budget.release(r.cost)
	r.cost = 0
	r.c = nil
	c.s.reqs.Put(r)
}

// validate applies the checks that need no device call and returns an NBD
// errno, or 0.
func (c *conn) validate(r *request) uint32 {
	s := c.s
	size := uint64(s.dev.Size())
	bs := uint64(s.minBS)
	ro := s.ReadOnly()
	switch r.typ {
	case cmdRead, cmdWrite, cmdTrim, cmdWriteZeroes, cmdBlockStatus, cmdCache:
	case cmdFlush:
		return 0
	default:
		return errInval // unknown command
	}
	if (r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes) && ro {
		return errPerm
	}
	if r.flags&cmdFlagFastZero != 0 {
		if r.typ != cmdWriteZeroes {
			return errInval
		}
		return errNotSup // never advertised; a fast-zero request may always fail fast
	}
	if r.off%bs != 0 || uint64(r.length)%bs != 0 {
		return errInval // unaligned to the advertised minimum block size
	}
	if (r.typ == cmdRead || r.typ == cmdWrite) && r.length > uint32(s.opts.MaxRequest) {
		return errOverflow
	}
	if r.off > size || uint64(r.length) > size-r.off {
		if r.typ == cmdWrite || r.typ == cmdWriteZeroes {
			return errNoSpc // "SHOULD return NBD_ENOSPC if it receives a write request ... beyond the size"
		}
		return errInval
	}
	switch r.typ {
	case cmdTrim:
		if s.trimmer == nil {
			return errInval // SEND_TRIM not advertised
		}
	case cmdBlockStatus:
		if !c.structured || !c.metaAlloc {
			return errInval // no context negotiated
		}
		if r.length == 0 {
			return errInval
		}
	}
	return 0
}
