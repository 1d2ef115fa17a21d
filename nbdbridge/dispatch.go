package nbdbridge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/lunbridge/lunbridge/blockdev"
)

// Stage 3: dispatch reads a request's payload and runs it on the device,
// on the non-blocking path (start, asyncDone) or in a goroutine (serve);
// every path ends in exactly one reply (reply.go).

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

// serve performs one validated request and sends its reply.
// Every path sends exactly one reply, which takes ownership of r.
func (c *conn) serve(ctx context.Context, r *request) {
	s := c.s
	dev := s.dev
	off := int64(r.off)
	n := int64(r.length)
	fua := r.flags&cmdFlagFUA != 0
	var data []byte
	if r.buf != nil {
		data = *r.buf
	}
	var err error
	switch r.typ {
	case cmdRead:
		if n > 0 {
			err = dev.ReadAt(ctx, data, off)
		}
		if err == nil {
			c.account(r, n)
			c.replyRead(r, data)
			return
		}
	case cmdWrite:
		if n > 0 {
			err = dev.WriteAt(ctx, data, off, fua)
		} else if fua {
			err = dev.Flush(ctx)
		}
		if err == nil {
			c.account(r, n)
			c.replyOK(r)
			return
		}
	case cmdFlush:
		err = dev.Flush(ctx)
	case cmdTrim:
		if n > 0 {
			err = s.trimmer.Trim(ctx, off, n)
			if errors.Is(err, blockdev.ErrNotSupported) {
				err = nil // trimming is advisory: "the server MAY ... ignore"
			}
		}
		if err == nil && fua {
			err = dev.Flush(ctx)
		}
	case cmdWriteZeroes:
		if n > 0 {
			err = s.writeZeroes(ctx, off, n, r.flags&cmdFlagNoHole == 0)
		}
		if err == nil && fua {
			err = dev.Flush(ctx)
		}
	case cmdCache:
		// Advisory prefetch: nothing to do for a remote LUN.
	case cmdBlockStatus:
		if err = c.blockStatus(ctx, r); err == nil {
			return // replied
		}
	}
	if err != nil {
		c.failed(r, err)
		return
	}
	c.account(r, n)
	c.replyOK(r)
}

// start hands a READ or WRITE to the device's non-blocking path; the
// device's callback (asyncDone) queues the reply (never blocking: reply
// only appends to the reply queue) and ends the request.
func (c *conn) start(r *request) {
	data := *r.buf
	if r.typ == cmdRead {
		c.s.async.StartReadAt(data, int64(r.off), r.onDone)
	} else {
		c.s.async.StartWriteAt(data, int64(r.off), r.flags&cmdFlagFUA != 0, r.onDone)
	}
}

// asyncDone ends a request started by start, once, with the device's
// outcome.
func (r *request) asyncDone(err error) {
	c := r.c
	defer c.wg.Done()
	data := *r.buf
	switch {
	case err != nil:
		c.failed(r, err)
	case r.typ == cmdRead:
		c.account(r, int64(len(data)))
		c.replyRead(r, data)
	default:
		c.account(r, int64(len(data)))
		c.replyOK(r)
	}
}

// failed answers r with the NBD error for err.
func (c *conn) failed(r *request, err error) {
	c.s.stats.op(r.typ).errors.Add(1)
	c.log.WithError(err).WithField("op", cmdName(r.typ)).Debug("nbd: request failed")
	c.account(r, 0)
	c.replyError(r, errnoOf(r.typ, err), err.Error())
}

// account counts r (n payload bytes) before its reply is queued: once
// queued, r belongs to the writer. Its latency is added when the reply is
// written (writeQueued); a reply that cannot be written has already
// closed the connection.
func (c *conn) account(r *request, n int64) {
	st := c.s.stats.op(r.typ)
	st.requests.Add(1)
	if n > 0 && (r.typ == cmdRead || r.typ == cmdWrite) {
		st.bytes.Add(uint64(n))
	}
}

// writeZeroes uses the device's Zeroer, else writes zero buffers.
func (s *Server) writeZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	if s.zeroer != nil {
		err := s.zeroer.WriteZeroes(ctx, off, n, mayTrim)
		if !errors.Is(err, blockdev.ErrNotSupported) {
			return err
		}
	}
	s.zeroOnce.Do(func() {
		sz := 1 << 20
		if sz < s.minBS {
			sz = s.minBS
		}
		sz -= sz % s.minBS
		s.zeroBuf = make([]byte, sz)
	})
	for n > 0 {
		chunk := int64(len(s.zeroBuf))
		if chunk > n {
			chunk = n
		}
		if err := s.dev.WriteAt(ctx, s.zeroBuf[:chunk], off, false); err != nil {
			return err
		}
		off += chunk
		n -= chunk
	}
	return nil
}

// maxStatusDescriptors caps one BLOCK_STATUS reply (8 bytes per descriptor).
const maxStatusDescriptors = 64 << 10

// blockStatus answers NBD_CMD_BLOCK_STATUS for base:allocation. An error
// is for the caller to report; nil: the reply is queued.
func (c *conn) blockStatus(ctx context.Context, r *request) error {
	off := int64(r.off)
	end := off + int64(r.length)
	var exts []blockdev.Extent
	if c.s.extenter != nil {
		var err error
		exts, err = c.s.extenter.Extents(ctx, off, int64(r.length))
		if errors.Is(err, blockdev.ErrNotSupported) {
			exts, err = nil, nil
		}
		if err != nil {
			return err
		}
	}
	limit := maxStatusDescriptors
	if r.flags&cmdFlagReqOne != 0 {
		limit = 1
	}
	p := make([]byte, 0, 4+8*min(len(exts)+1, limit))
	p = binary.BigEndian.AppendUint32(p, metaAllocationID)
	type desc struct {
		n     int64
		flags uint32
	}
	var ds []desc
	pos := off
	for _, e := range exts {
		if e.Offset != pos || e.Length <= 0 {
			break // not contiguous: report what we have (or data below)
		}
		l := e.Length
		if pos+l > end {
			l = end - pos
		}
		f := uint32(e.Flags) & uint32(blockdev.ExtentHole|blockdev.ExtentZero)
		if k := len(ds) - 1; k >= 0 && ds[k].flags == f {
			ds[k].n += l
		} else {
			if len(ds) == limit {
				break
			}
			ds = append(ds, desc{l, f})
		}
		pos += l
		if pos >= end {
			break
		}
	}
	if len(ds) == 0 {
		// "Reporting a range as data is always a safe answer."
		ds = append(ds, desc{end - off, 0})
	}
	for _, d := range ds {
		p = binary.BigEndian.AppendUint32(p, uint32(d.n)) // d.n <= r.length: fits
		p = binary.BigEndian.AppendUint32(p, d.flags)
	}
	h := c.chunkHeader(r, replyFlagDone, replyBlockStatus, len(p))
	c.account(r, 0)
	c.reply(r, h, p)
	return nil
}
