package faketarget

import (
	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// writeTask collects the data of one write command: immediate data, an
// unsolicited burst and R2T-solicited sequences (RFC 7143, Section 4.2.5.2).
type writeTask struct {
	cmd    pdu.SCSICommand
	buf    []byte
	got    int
	finish func(*Conn, []byte)
	contig int // data received in order from offset 0

	unsolOff  int    // next expected unsolicited offset
	unsolEnd  int    // end of the first burst
	unsolSN   uint32 // next expected unsolicited DataSN
	unsolDone bool

	next int         // next offset to solicit
	r2ts []*r2tState // outstanding, oldest first
}

type r2tState struct {
	ttt       uint32
	off, end  int
	next      int
	expDataSN uint32
}

// startWrite begins collecting the data of write command q (imm is its
// immediate data); finish runs with the data once all of it is in.
func (c *Conn) startWrite(q *pdu.SCSICommand, imm []byte, finish func(*Conn, []byte)) {
	p := c.Params()
	edtl := int(q.EDTL)
	w := &writeTask{cmd: *q, buf: make([]byte, edtl), finish: finish}
	w.got = copy(w.buf, imm)
	w.contig = w.got
	w.unsolOff, w.next = w.got, w.got
	if !q.Final && edtl > w.got {
		w.unsolEnd = min(p.FirstBurstLength, edtl)
		w.next = w.unsolEnd
	} else {
		w.unsolDone = true
	}
	c.mu.Lock()
	c.writes[q.ITT] = w
	c.mu.Unlock()
	c.progress(w)
}

// progress sends R2Ts while the task may have more outstanding, and
// completes it when every byte is in.
func (c *Conn) progress(w *writeTask) {
	p := c.Params()
	edtl := len(w.buf)
	if w.unsolDone {
		for len(w.r2ts) < p.MaxOutstandingR2T && w.next < edtl {
			n := min(edtl-w.next, p.MaxBurstLength)
			if c.t.cfg.R2TSize > 0 {
				n = min(n, c.t.cfg.R2TSize)
			}
			r := &r2tState{ttt: c.NewTTT(), off: w.next, end: w.next + n, next: w.next}
			w.r2ts = append(w.r2ts, r)
			w.next += n
			c.SendR2T(w.cmd.ITT, r.ttt, uint32(r.off), uint32(n))
		}
	}
	if w.unsolDone && len(w.r2ts) == 0 && w.next >= edtl {
		c.mu.Lock()
		delete(c.writes, w.cmd.ITT)
		c.mu.Unlock()
		w.finish(c, w.buf[:min(w.got, edtl)])
	}
}

// dataOut handles a Data-Out for a default write task and checks it
// against RFC 7143, Sections 11.7 and 4.2.5.2.
func (c *Conn) dataOut(d *pdu.DataOut, data []byte) {
	c.mu.Lock()
	w := c.writes[d.ITT]
	c.mu.Unlock()
	if w == nil {
		return // aborted, or a command a hook handled
	}
	if cut := c.t.cfg.CutDataOut; cut != nil && cut(d.ITT, d.BufferOffset) {
		c.Close()
		return
	}
	p := c.Params()
	v := func(format string, args ...any) {
		c.t.violate("Data-Out itt %#x TTT %#x DataSN %d offset %d len %d: "+format,
			append([]any{d.ITT, d.TTT, d.DataSN, d.BufferOffset, len(data)}, args...)...)
	}
	off, end := int(d.BufferOffset), int(d.BufferOffset)+len(data)
	if end > len(w.buf) {
		v("beyond the Expected Data Transfer Length %d", len(w.buf))
		return
	}
	if d.LUN != w.cmd.LUN {
		v("LUN %#x differs from the command's %#x", d.LUN, w.cmd.LUN)
	}
	if d.TTT == pdu.ReservedTag {
		switch {
		case p.InitialR2T:
			v("unsolicited Data-Out with InitialR2T=Yes")
		case w.unsolDone:
			v("unsolicited Data-Out after the unsolicited burst ended")
		}
		if d.DataSN != w.unsolSN {
			v("DataSN %d, expected %d", d.DataSN, w.unsolSN)
		}
		if off != w.unsolOff {
			v("offset %d, expected %d", off, w.unsolOff)
		}
		if end > w.unsolEnd {
			v("unsolicited data beyond FirstBurstLength (%d)", w.unsolEnd)
		}
		w.unsolSN = d.DataSN + 1
		w.unsolOff = end
		w.got += copy(w.buf[off:], data)
		if off <= w.contig {
			w.contig = max(w.contig, end)
		}
		if d.Final {
			if end != w.unsolEnd {
				v("unsolicited data ends at %d; it MUST equal min(FirstBurstLength, EDTL) = %d", end, w.unsolEnd)
				w.next = end
			}
			w.unsolDone = true
		} else if end == w.unsolEnd {
			v("last unsolicited Data-Out without the F bit")
		}
		c.progress(w)
		return
	}
	var r *r2tState
	idx := -1
	for i, x := range w.r2ts {
		if x.ttt == d.TTT {
			r, idx = x, i
		}
	}
	if r == nil {
		v("Target Transfer Tag %#x matches no outstanding R2T", d.TTT)
		return
	}
	if idx != 0 && r.next == r.off {
		v("R2T at offset %d answered before the earlier R2T at offset %d was complete", r.off, w.r2ts[0].off)
	}
	if d.DataSN != r.expDataSN {
		v("DataSN %d, expected %d (DataSN restarts at 0 for each R2T)", d.DataSN, r.expDataSN)
	}
	if off != r.next {
		v("offset %d, expected %d (R2T %d+%d)", off, r.next, r.off, r.end-r.off)
	}
	if end > r.end {
		v("beyond the R2T's range %d-%d", r.off, r.end)
	}
	r.expDataSN = d.DataSN + 1
	r.next = end
	w.got += copy(w.buf[off:], data)
	if off <= w.contig {
		w.contig = max(w.contig, end)
	}
	if end >= r.end || d.Final {
		if !d.Final {
			v("last Data-Out of the R2T without the F bit")
		} else if end < r.end {
			v("F bit before the R2T's %d bytes were sent", r.end-r.off)
		}
		w.r2ts = append(w.r2ts[:idx], w.r2ts[idx+1:]...)
		if end < r.end {
			// Do not hang: fail the command.
			c.mu.Lock()
			delete(c.writes, w.cmd.ITT)
			c.mu.Unlock()
			c.checkCondition(w.cmd.ITT, 0x0b, 0x0c, 0x0d) // ABORTED COMMAND: NOT ENOUGH UNSOLICITED DATA
			return
		}
	}
	c.progress(w)
}
