package nbdbridge

import (
	"net"
	"runtime"
)

// The reply queue. A finished request appends its reply to the queue and
// wakes the connection's writer goroutine instead of writing the socket
// itself; the writer sends everything queued so far in one writev. Under a
// deep queue (fio at QD32, the kernel's nbd driver) completions arrive in
// bursts, and one system call then carries many replies: less CPU per
// request for us and for the client. Headers and other small pieces are
// copied into an arena; read payloads are referenced, and the request (its
// pooled buffer and its share of the in-flight budget) is released only
// after the write that carried it, so the budget also bounds what waits
// here.

// qseg is one piece of the queue: a range of the arena, or an external slice.
type qseg struct {
	ext    []byte
	lo, hi int
}

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
			c.qbuf = append(c.qbuf, b...)
			continue
		}
		c.qsegs = append(c.qsegs, qseg{lo: c.qstart, hi: len(c.qbuf)}, qseg{ext: b})
		c.qstart = len(c.qbuf)
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
	if c.qstart < len(c.qbuf) {
		c.qsegs = append(c.qsegs, qseg{lo: c.qstart, hi: len(c.qbuf)})
	}
	buf, segs, rel := c.qbuf, c.qsegs, c.qrel
	c.qbuf, c.qsegs, c.qrel, c.qstart = c.sparebuf[:0], c.sparesegs[:0], c.sparerel[:0], 0
	failed := c.werr != nil
	c.wmu.Unlock()
	if len(segs) > 0 && !failed {
		c.vec = c.vec[:0]
		for _, s := range segs {
			if s.ext != nil {
				c.vec = append(c.vec, s.ext)
			} else if s.hi > s.lo {
				c.vec = append(c.vec, buf[s.lo:s.hi])
			}
		}
		var err error
		if c.raw != nil {
			_, c.iov, err = c.raw.Writev(c.vec, c.iov)
		} else {
			nb := net.Buffers(c.vec)
			_, err = nb.WriteTo(c.nc)
		}
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
	for i, r := range rel {
		c.release(r)
		rel[i] = nil
	}
	clear(segs) // do not pin payload buffers
	// Only the writer goroutine runs this: the spares are its own.
	c.sparebuf, c.sparesegs, c.sparerel = buf[:0], segs[:0], rel[:0]
}
