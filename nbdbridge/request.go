package nbdbridge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Stage 2 of a request's life (conn.go accepts and runs the connection):
// the read loop takes each request header off the socket, checks what
// needs no device call, and hands the request to dispatch (dispatch.go).

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

// epoch anchors monotonic.
var epoch = time.Now()

// monotonic is nanoseconds on the monotonic clock: one clock read.
func monotonic() int64 { return int64(time.Since(epoch)) }

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
