package nbdbridge

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev"
)

// Defaults for Options fields left zero.
const (
	DefaultMaxRequest       = 32 << 20
	DefaultPreferredBlock   = 64 << 10
	DefaultMaxInFlightBytes = 64 << 20
	DefaultMaxInFlight      = 128
	DefaultHandshakeTimeout = 30 * time.Second
)

// Options configure a Server.
type Options struct {
	// ExportName is the export's name; clients may also ask for "" (the
	// default export). Any other name is refused.
	ExportName string
	// Description is sent as NBD_INFO_DESCRIPTION when non-empty.
	Description string
	// ReadOnly advertises NBD_FLAG_READ_ONLY and refuses writes with EPERM,
	// in addition to a device that reports ReadOnly() itself.
	ReadOnly bool
	// MaxRequest is the maximum payload (READ/WRITE length) advertised in
	// NBD_INFO_BLOCK_SIZE; default 32 MiB.
	MaxRequest int
	// PreferredBlock is the preferred block size advertised; default 64 KiB
	// (raised to the device block size if smaller).
	PreferredBlock int
	// MultiConn advertises NBD_FLAG_CAN_MULTI_CONN: a FLUSH on any connection
	// makes writes completed on every connection durable. True when all
	// connections share one device (one iSCSI session). DefaultOptions sets it.
	MultiConn bool
	// MaxInFlightBytes bounds the payload bytes of requests being served per
	// connection (at least MaxRequest); default 64 MiB.
	MaxInFlightBytes int64
	// MaxInFlight bounds the requests being served per connection; default 128.
	MaxInFlight int
	// MaxConnections bounds simultaneous clients of Serve; extra clients get
	// NBD_REP_ERR_POLICY to every option. 0 means unlimited.
	MaxConnections int
	// OneShot makes Serve return once the first client has come and every
	// client has gone (like qemu-nbd without -t).
	OneShot bool
	// HandshakeTimeout bounds the option phase; default 30s.
	HandshakeTimeout time.Duration
	// Logger receives connection-level events; nil means silent.
	Logger *logrus.Entry
}

// DefaultOptions returns the options lunbridge uses unless told otherwise.
func DefaultOptions() Options {
	return Options{MultiConn: true}
}

// Server serves one device to any number of NBD connections.
type Server struct {
	dev    blockdev.Device
	opts   Options
	log    *logrus.Entry
	stats  counters
	minBS  int
	prefBS int

	trimmer  blockdev.Trimmer
	async    blockdev.AsyncIO // nil: one goroutine per request
	zeroer   blockdev.Zeroer
	extenter blockdev.Extenter
	pool     *bufPool
	reqs     sync.Pool // *request (conn.go)
	zeroBuf  []byte
	zeroOnce sync.Once
}

// NewServer returns a server for dev. It does not take ownership: the caller
// flushes and closes dev after serving ends.
func NewServer(dev blockdev.Device, opts Options) *Server {
	if opts.MaxRequest <= 0 {
		opts.MaxRequest = DefaultMaxRequest
	}
	bs := dev.BlockSize()
	if bs <= 0 {
		bs = 1
	}
	if opts.MaxRequest < bs {
		opts.MaxRequest = bs
	}
	opts.MaxRequest -= opts.MaxRequest % bs
	if opts.PreferredBlock <= 0 {
		opts.PreferredBlock = DefaultPreferredBlock
	}
	if opts.PreferredBlock < bs {
		opts.PreferredBlock = bs
	}
	if opts.PreferredBlock > opts.MaxRequest {
		opts.PreferredBlock = opts.MaxRequest
	}
	if opts.MaxInFlightBytes <= 0 {
		opts.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if opts.MaxInFlightBytes < int64(opts.MaxRequest) {
		opts.MaxInFlightBytes = int64(opts.MaxRequest)
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	log := opts.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		l.SetLevel(logrus.PanicLevel)
		log = logrus.NewEntry(l)
	}
	s := &Server{dev: dev, opts: opts, log: log, minBS: bs, prefBS: opts.PreferredBlock, pool: newBufPool(opts.MaxRequest)}
	s.trimmer, _ = dev.(blockdev.Trimmer)
	s.async, _ = dev.(blockdev.AsyncIO)
	s.zeroer, _ = dev.(blockdev.Zeroer)
	s.extenter, _ = dev.(blockdev.Extenter)
	return s
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// ReadOnly reports whether the export refuses writes.
func (s *Server) ReadOnly() bool {
	if s.opts.ReadOnly {
		return true
	}
	ro, ok := s.dev.(blockdev.ReadOnlyer)
	return ok && ro.ReadOnly()
}

// TransmissionFlags returns the flags advertised to a client; structured
// tells whether structured replies were negotiated (SEND_DF needs them).
// The kernel attach passes TransmissionFlags(false) as NBD_ATTR_SERVER_FLAGS.
func (s *Server) TransmissionFlags(structured bool) uint16 {
	f := FlagHasFlags | FlagSendFlush | FlagSendCache
	if s.ReadOnly() {
		f |= FlagReadOnly
	} else {
		f |= FlagSendFUA | FlagSendWriteZeroes
		if s.trimmer != nil {
			f |= FlagSendTrim
		}
	}
	if structured {
		f |= FlagSendDF
	}
	if s.opts.MultiConn {
		f |= FlagCanMultiConn
	}
	return f
}

// Device returns the served device.
func (s *Server) Device() blockdev.Device { return s.dev }

// Serve accepts connections on l until ctx is cancelled (or, with OneShot,
// until the first clients are gone). It then closes l, stops reading new
// requests on every connection, waits for the requests in flight to be
// answered, and returns. It does not close the device.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		active   int
		everSeen bool
	)
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	var acceptErr error
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				acceptErr = err
			}
			break
		}
		mu.Lock()
		refuse := s.opts.MaxConnections > 0 && active >= s.opts.MaxConnections
		if !refuse {
			active++
			everSeen = true
		}
		mu.Unlock()
		s.stats.connections.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if refuse {
				s.log.WithField("remote", nc.RemoteAddr().String()).Warn("nbd: refusing client: connection limit reached")
				s.refuse(ctx, nc)
				return
			}
			err := s.ServeConn(ctx, nc)
			if err != nil && ctx.Err() == nil {
				s.log.WithError(err).Info("nbd: connection ended")
			}
			mu.Lock()
			active--
			done := s.opts.OneShot && everSeen && active == 0
			mu.Unlock()
			if done {
				cancel()
			}
		}()
	}
	cancel()
	wg.Wait()
	return acceptErr
}

// ServeConn runs the handshake and then the transmission phase on nc, and
// closes nc. It returns nil after a clean NBD_CMD_DISC or when ctx is
// cancelled (after the requests in flight were answered).
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) error {
	defer nc.Close()
	s.stats.active.Add(1)
	defer s.stats.active.Add(-1)
	c := s.newConn(nc)
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	nc.SetDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	hs, err := c.handshake()
	if !stop() || ctx.Err() != nil {
		return nil
	}
	if err != nil {
		s.stats.protocolErrors.Add(1)
		return err
	}
	if hs.done {
		return nil // client aborted the handshake
	}
	nc.SetDeadline(time.Time{})
	c.structured = hs.structured
	c.metaAlloc = hs.metaAlloc
	return c.transmit(ctx)
}

// ServeTransmission serves nc without a handshake, with simple replies only:
// the kernel's end of a socketpair handed to /dev/nbdX speaks this way.
func (s *Server) ServeTransmission(ctx context.Context, nc net.Conn) error {
	defer nc.Close()
	s.stats.active.Add(1)
	defer s.stats.active.Add(-1)
	return s.newConn(nc).transmit(ctx)
}

// refuse answers a client over the connection limit: every option gets
// NBD_REP_ERR_POLICY so clients print a reason instead of a broken pipe.
func (s *Server) refuse(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	c := s.newConn(nc)
	c.refusing = true
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stop()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	c.handshake()
}
