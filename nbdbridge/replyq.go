package nbdbridge

import (
	"runtime"

	"github.com/lunbridge/lunbridge/internal/rawsock"
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
