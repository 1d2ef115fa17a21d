package nbdbridge

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
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

	wmu  sync.Mutex // guards the reply queue (reply.go) and werr
	werr error      // first write error; later replies are dropped

	// The reply queue (reply.go): q and qrel are filled under wmu; the
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
