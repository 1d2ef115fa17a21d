package initiator

import (
	"net"
	"runtime"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// The write queue. Senders marshal their PDUs under conn.wmu (so PDUs are
// queued in CmdSN order) and then call flush, which wakes the connection's
// writer goroutine; the writer writes everything queued so far in one
// write/writev. Under load, while the writer is in the write syscall the
// senders keep queueing, and the next write carries all of their PDUs at
// once: fewer syscalls for us and fewer wakeups for the target, and no
// sender ever blocks in a syscall. Small PDUs are copied into an arena;
// large data segments are referenced: their owners wait for the task to
// finish, and a failed connection fails its tasks only after the writer
// has stopped (readLoop waits for it), so a caller's buffer is never read
// after Do returns and nothing of a dead connection is written later.

// qseg is one piece of the queue: a range of the arena, or an external slice.
type qseg struct {
	ext    []byte
	lo, hi int
}

// inlineData is the largest data segment copied into the arena.
const inlineData = 8192

// queueLocked appends one PDU to the write queue; wmu must be held.
func (c *conn) queueLocked(p pdu.PDU, data []byte) error {
	select {
	case <-c.done:
		return c.err
	default:
	}
	h := p.Hdr()
	h.DataLen = len(data)
	h.AHSLength = 0
	var bhs pdu.BHS
	p.MarshalBHS(&bhs)
	c.qbuf = append(c.qbuf, bhs[:]...)
	if c.p.HeaderDigest {
		c.qbuf = pdu.AppendDigest(c.qbuf, pdu.Digest(bhs[:]))
	}
	if n := len(data); n > 0 {
		var zero [4]byte
		pad := zero[:pdu.Pad(n)]
		if n <= inlineData {
			c.qbuf = append(c.qbuf, data...)
		} else {
			c.qsegs = append(c.qsegs, qseg{lo: c.qstart, hi: len(c.qbuf)}, qseg{ext: data})
			c.qstart = len(c.qbuf)
		}
		c.qbuf = append(c.qbuf, pad...)
		if c.p.DataDigest {
			c.qbuf = pdu.AppendDigest(c.qbuf, pdu.UpdateDigest(pdu.Digest(data), pad))
		}
	}
	if c.log.Logger.IsLevelEnabled(logrus.TraceLevel) {
		c.log.Tracef("-> %v itt=%#x len=%d", h.Opcode, h.ITT, len(data))
	}
	return nil
}

// flush wakes the writer.
func (c *conn) flush() {
	select {
	case c.wake <- struct{}{}:
	default: // already woken: it will see our PDUs
	}
}

// writer writes the queue whenever woken, until the connection fails.
func (c *conn) writer() {
	defer close(c.wexit)
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		// Let the senders that were woken with ours (a burst of
		// completions wakes many) queue their PDUs too: one write then
		// carries them all.
		runtime.Gosched()
		c.writeQueued()
	}
}

// writeQueued writes everything queued. Write errors fail the connection
// (every task on it then fails with the connection's error).
func (c *conn) writeQueued() {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	c.wmu.Lock()
	if c.qstart < len(c.qbuf) {
		c.qsegs = append(c.qsegs, qseg{lo: c.qstart, hi: len(c.qbuf)})
	}
	buf, segs := c.qbuf, c.qsegs
	c.qbuf, c.qsegs, c.qstart = c.sparebuf[:0], c.sparesegs[:0], 0
	c.wmu.Unlock()
	if len(segs) == 0 {
		c.sparebuf, c.sparesegs = buf, segs
		return
	}
	var err error
	if c.raw != nil {
		c.vec = c.vec[:0]
		for _, s := range segs {
			if s.ext != nil {
				c.vec = append(c.vec, s.ext)
			} else if s.hi > s.lo {
				c.vec = append(c.vec, buf[s.lo:s.hi])
			}
		}
		_, c.iov, err = c.raw.Writev(c.vec, c.iov)
		clear(c.vec)
	} else if len(segs) == 1 && segs[0].ext == nil {
		_, err = c.nc.Write(buf[segs[0].lo:segs[0].hi])
	} else {
		vec := make(net.Buffers, 0, len(segs))
		for _, s := range segs {
			if s.ext != nil {
				vec = append(vec, s.ext)
			} else if s.hi > s.lo {
				vec = append(vec, buf[s.lo:s.hi])
			}
		}
		_, err = vec.WriteTo(c.nc)
	}
	if err != nil {
		c.fail(err)
	}
	for i := range segs {
		segs[i].ext = nil // do not pin callers' buffers
	}
	// flushMu is still held: nobody else touches the spares.
	c.sparebuf, c.sparesegs = buf[:0], segs[:0]
}

// write queues one PDU and flushes.
func (c *conn) write(p pdu.PDU, data []byte) error {
	c.wmu.Lock()
	err := c.queueLocked(p, data)
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	c.flush()
	return nil
}
