package nbdbridge

import (
	"encoding/binary"
	"errors"
	"runtime"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/internal/rawsock"
)

// Stage 4 of a request's life: its reply is encoded (simple or
// structured; the encoders are at the end of this file) and queued. The
// reply queue: a finished request appends its reply to the queue and wakes
// the connection's writer goroutine instead of writing the socket
// itself; the writer sends everything queued so far in one writev. Under a
// deep queue (fio at QD32, the kernel's nbd driver) completions arrive in
// bursts, and one system call then carries many replies: less CPU per
// request for us and for the client. Headers and other small pieces are
// copied into an arena; read payloads are referenced, and the request (its
// pooled buffer and its share of the in-flight budget) is released only
// after the write that carried it, so the budget also bounds what waits
// here.

// inlineReply is the largest piece copied into the arena.
const inlineReply = 4096

// reply queues one reply for r and takes ownership of r: it is released
// after the reply is written, or at once when the connection already
// failed (the returned error).
func (c *conn) reply(r *request, bufs ...[]byte) error {
	c.wmu.Lock()
	if c.werr != nil {
		err := c.werr
		c.wmu.Unlock()
		c.release(r)
		return err
	}
	for _, b := range bufs {
		if len(b) <= inlineReply {
			c.q.Append(b)
		} else {
			c.q.AppendRef(b)
		}
	}
	c.qrel = append(c.qrel, r)
	c.wmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // already woken: it will see this reply
	}
	return nil
}

// writer writes the queue whenever woken; told to quit, it writes what is
// left and returns.
func (c *conn) writer() {
	defer close(c.wexit)
	for {
		select {
		case <-c.wake:
		case <-c.wquit:
			c.writeQueued()
			return
		}
		// Let the other requests completed in the same burst queue
		// their replies too: one write then carries them all.
		runtime.Gosched()
		c.writeQueued()
	}
}

func (c *conn) startWriter() {
	c.wake = make(chan struct{}, 1)
	c.wquit = make(chan struct{})
	c.wexit = make(chan struct{})
	go c.writer()
}

// stopWriter flushes the queue and stops the writer; every request queued
// before it was called is released when it returns.
func (c *conn) stopWriter() {
	close(c.wquit)
	<-c.wexit
}

// writeQueued writes and releases everything queued. The first write error
// closes the connection (unblocking the read loop); replies queued later
// are dropped and their requests released.
func (c *conn) writeQueued() {
	c.wmu.Lock()
	b, rel := c.q, c.qrel
	c.q, c.qrel = c.spare, c.sparerel[:0] // both empty: the last write reset them
	c.spare = b
	failed := c.werr != nil
	c.wmu.Unlock()
	if !b.Empty() && !failed {
		c.vec = b.Vec(c.vec[:0])
		var err error
		c.iov, err = rawsock.Write(c.nc, c.raw, c.vec, c.iov)
		clear(c.vec)
		if err != nil {
			c.wmu.Lock()
			if c.werr == nil {
				c.werr = err
			}
			c.wmu.Unlock()
			c.nc.Close() // unblocks the read loop
		}
	}
	var now int64
	if len(rel) > 0 {
		now = monotonic()
	}
	for i, r := range rel {
		if r.start != 0 {
			c.s.stats.op(r.typ).latencyNs.Add(uint64(now - r.start))
		}
		c.release(r)
		rel[i] = nil
	}
	b.Reset() // do not pin payload buffers
	// Only the writer goroutine runs this: the spares are its own.
	c.sparerel = rel[:0]
}

// chunkHeader builds a structured reply chunk's header in r.hdr (room for
// the 8-byte offset of OFFSET_DATA after it).
func (c *conn) chunkHeader(r *request, flags, typ uint16, n int) []byte {
	cookie := r.cookie
	h := r.hdr[:0]
	h = binary.BigEndian.AppendUint32(h, structuredMagic)
	h = binary.BigEndian.AppendUint16(h, flags)
	h = binary.BigEndian.AppendUint16(h, typ)
	h = binary.BigEndian.AppendUint64(h, cookie)
	h = binary.BigEndian.AppendUint32(h, uint32(n))
	return h
}

func (c *conn) replyRead(r *request, data []byte) error {
	if !c.structured {
		return c.reply(r, c.simpleHeader(r, 0), data)
	}
	if len(data) == 0 {
		return c.reply(r, c.chunkHeader(r, replyFlagDone, replyNone, 0))
	}
	// One OFFSET_DATA chunk: never fragmented, so NBD_CMD_FLAG_DF holds.
	h := c.chunkHeader(r, replyFlagDone, replyOffsetData, 8+len(data))
	h = binary.BigEndian.AppendUint64(h, r.off)
	return c.reply(r, h, data)
}

func (c *conn) replyOK(r *request) error {
	return c.reply(r, c.simpleHeader(r, 0))
}

func (c *conn) replyError(r *request, errno uint32, msg string) error {
	if !c.structured {
		return c.reply(r, c.simpleHeader(r, errno))
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	p := make([]byte, 0, 6+len(msg))
	p = binary.BigEndian.AppendUint32(p, errno)
	p = binary.BigEndian.AppendUint16(p, uint16(len(msg)))
	p = append(p, msg...)
	return c.reply(r, c.chunkHeader(r, replyFlagDone, replyError, len(p)), p)
}

// simpleHeader builds a simple reply's header in r.hdr.
func (c *conn) simpleHeader(r *request, errno uint32) []byte {
	cookie := r.cookie
	h := r.hdr[:0]
	h = binary.BigEndian.AppendUint32(h, simpleMagic)
	h = binary.BigEndian.AppendUint32(h, errno)
	h = binary.BigEndian.AppendUint64(h, cookie)
	return h
}

// errnoOf maps a device error to an NBD error value at the edge.
func errnoOf(typ uint16, err error) uint32 {
	switch {
	case errors.Is(err, blockdev.ErrReadOnly):
		return errPerm
	case errors.Is(err, blockdev.ErrOutOfRange):
		if typ == cmdWrite || typ == cmdWriteZeroes {
			return errNoSpc
		}
		return errInval
	case errors.Is(err, blockdev.ErrInvalid):
		return errInval
	case errors.Is(err, blockdev.ErrNoSpace):
		return errNoSpc
	case errors.Is(err, blockdev.ErrNotSupported):
		// NBD_ENOTSUP is reserved for fast-zero requests.
		return errInval
	case errors.Is(err, blockdev.ErrMedium):
		return errIO
	default:
		return errIO
	}
}

func cmdName(t uint16) string {
	if int(t) < len(cmdNames) {
		return cmdNames[t]
	}
	return "unknown"
}
