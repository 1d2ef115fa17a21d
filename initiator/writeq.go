package initiator

import (
	"runtime"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/rawsock"
)

// The write queue. Senders marshal their PDUs under conn.wmu (so PDUs are
// queued in CmdSN order) and then call flush, which wakes the connection's
// writer goroutine; the writer writes everything queued so far in one
// write/writev. Under load, while the writer is in the write syscall the
// senders keep queueing, and the next write carries all of their PDUs at
// once: fewer syscalls for us and fewer wakeups for the target, and no
// sender ever blocks in a syscall. Small PDUs are copied into an arena;
// large data segments are referenced (rawsock.Batch): their owners wait for the task to
// finish, and a failed connection fails its tasks only after the writer
// has stopped (readLoop waits for it), so a caller's buffer is never read
// after Do returns and nothing of a dead connection is written later.

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
	bhs := &c.wbhs // a local would escape through the interface call
	p.MarshalBHS(bhs)
	var d4 [4]byte
	q := c.q
	c.queued.Add(1)
	q.Append(bhs[:])
	if c.p.HeaderDigest {
		q.Append(pdu.AppendDigest(d4[:0], pdu.Digest(bhs[:])))
	}
	if n := len(data); n > 0 {
		var zero [4]byte
		pad := zero[:pdu.Pad(n)]
		if n <= inlineData {
			q.Append(data)
		} else {
			q.AppendRef(data)
		}
		q.Append(pad)
		if c.p.DataDigest {
			q.Append(pdu.AppendDigest(d4[:0], pdu.UpdateDigest(pdu.Digest(data), pad)))
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
		// carries them all. Not when the read loop yielded to us: its
		// completions have queued theirs, and yielding back would let it
		// read on before the commands are out.
		if !c.readerYield.Swap(false) {
			runtime.Gosched()
		}
		c.writeQueued()
	}
}

// writeQueued writes everything queued. Write errors fail the connection
// (every task on it then fails with the connection's error).
func (c *conn) writeQueued() {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	c.wmu.Lock()
	b := c.q
	c.q, c.spare = c.spare, b // the spare is empty: the last write reset it
	c.queued.Store(0)
	echo := c.echoQueued
	c.echoQueued = false
	c.wmu.Unlock()
	if echo {
		// The ping echo in b is out (or the connection failed): the
		// next target ping may be answered.
		defer c.echoBusy.Store(false)
	}
	if b.Empty() {
		return
	}
	c.vec = b.Vec(c.vec[:0])
	var err error
	c.iov, err = rawsock.Write(c.nc, c.raw, c.vec, c.iov)
	clear(c.vec) // do not pin callers' buffers
	if err != nil {
		c.fail(err)
	}
	b.Reset() // flushMu is still held: nobody else touches the spare
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
