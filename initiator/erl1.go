package initiator

import (
	"errors"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// ErrorRecoveryLevel 1: recovery within a command and within a connection
// (RFC 7143, Sections 7.1.4.1-2, 7.8, 11.16). Used only when the session
// negotiated ErrorRecoveryLevel >= 1; at level 0 none of this runs and the
// read loop treats every digest error and sequence gap as the protocol
// error that starts session recovery.
//
//   - A Data-In whose data digest fails is kept out of the caller's result:
//     its DataSN range becomes a gap of the task. When the task's status
//     arrives (the command is then complete at the target, which LIO needs
//     before it serves a Data SNACK) the completion is held and a Data/R2T
//     SNACK (type 0) re-requests every gap; the re-sent Data-In fills it
//     and the task completes with the held status.
//   - A header digest error discards the PDU (its data segment skipped by
//     the announced length, bounded by MaxRecvDataSegmentLength); the loss
//     then shows as a DataSN gap (Data SNACK) or a StatSN gap (Status
//     SNACK, type 1, for ExpStatSN.., with ExpStatSN held at the first
//     missing StatSN so the target keeps that status).
//   - A Data-In with the A bit is acknowledged with a DataACK SNACK
//     (type 2) for the DataSNs received without a gap.
//   - A Reject of a Data-Out for a data digest error needs nothing here:
//     the target asks again with a recovery R2T, served like any R2T
//     (every write task accepts R2Ts at this level).
//
// Everything is bounded: at most maxDataGaps gaps per task and maxStatGap
// missing StatSNs, maxSNACKTries re-requests of one range, consecutive
// header digest errors capped, and every SNACK answered within the
// SNACK timeout. A target that rejects a SNACK, does not answer it, or
// breaks these bounds ends the connection with a logged reason: the level
// 0 path (session recovery) takes over, with its ordering guarantees.

const (
	maxDataGaps       = 16
	maxStatGap        = 64
	maxSNACKTries     = 3
	maxHeaderDigErrs  = 3
	snackTimeoutFloor = time.Second
)

// dataGap is a DataSN range of a task's Data-In still to be received again.
type dataGap struct {
	nextSN, endSN uint32 // DataSNs [nextSN, endSN) missing
	next, end     int    // their bytes [next, end); end < 0: not known
	tries         int    // SNACKs sent for it
}

// erl1 reports whether the connection recovers at level 1.
func (c *conn) erl1() bool { return c.p.ErrorRecoveryLvl >= 1 }

// snackTimeout bounds the wait for the answer to a SNACK.
func (c *conn) snackTimeout() time.Duration {
	return max(c.s.tmfTimeout(), snackTimeoutFloor)
}

// erlFail ends the connection because level 1 recovery gave up; the
// session then recovers at level 0.
func (c *conn) erlFail(format string, args ...any) error {
	err := protoErr("ERL 1 recovery failed, falling back to session recovery: "+format, args...)
	c.log.Error(err)
	return err
}

// dataInERL1 handles a Data-In that does not continue the task's Data-In
// sequence: a re-sent PDU filling a gap, a duplicate, or one that follows
// PDUs lost to header digest errors. It returns handled=false when the PDU
// is the next in sequence after recording such a gap, so the normal path
// reads it.
func (c *conn) dataInERL1(b *pdu.BHS, t *task, d *pdu.DataIn) (handled bool, err error) {
	n, off := d.DataLen, int(d.BufferOffset)
	if int32(d.DataSN-t.expDataSN) < 0 {
		// Earlier DataSN: re-sent for a SNACK, or a duplicate.
		for i := range t.gaps {
			g := &t.gaps[i]
			if d.DataSN != g.nextSN {
				continue
			}
			if off != g.next || (g.end >= 0 && off+n > g.end) {
				return true, c.erlFail("re-sent Data-In DataSN %d at offset %d, expected offset %d (itt %#x)", d.DataSN, off, g.next, t.itt)
			}
			if err := c.r.ReadData(b, t.rbuf[off:off+n]); err != nil {
				if !errors.Is(err, pdu.ErrDataDigest) {
					return true, err
				}
				// Damaged again: ask once more (bounded) once the
				// rest of this answer is in.
				c.log.Warnf("re-sent Data-In DataSN %d of task %#x failed its data digest again", d.DataSN, t.itt)
				return true, c.resnack(t, g)
			}
			g.nextSN++
			g.next += n
			t.received = max(t.received, g.next)
			if g.nextSN == g.endSN {
				if g.end >= 0 && g.next != g.end {
					return true, c.erlFail("re-sent Data-In ended at offset %d, expected %d (itt %#x)", g.next, g.end, t.itt)
				}
				t.gaps = append(t.gaps[:i], t.gaps[i+1:]...)
			}
			if d.HasStatus && !t.held {
				t.resp = Response{Status: d.Status, Residual: d.Residual, Underflow: d.Underflow, Overflow: d.Overflow}
				return true, c.statusERL1(t, d.StatSN)
			}
			c.maybeRelease(t)
			return true, nil
		}
		// "Duplicate ... DataSNs MUST be discarded" (Section 7.9).
		c.log.Debugf("duplicate Data-In DataSN %d of task %#x discarded", d.DataSN, t.itt)
		return true, c.discardDamaged(b)
	}
	// A later DataSN: the PDUs between were lost (header digest errors).
	if off < t.received || off > len(t.rbuf) {
		return true, protoErr("Data-In DataSN %d at offset %d, expected DataSN %d at %d (itt %#x)", d.DataSN, off, t.expDataSN, t.received, t.itt)
	}
	if err := c.addGap(t, dataGap{nextSN: t.expDataSN, endSN: d.DataSN, next: t.received, end: off}); err != nil {
		return true, err
	}
	t.expDataSN, t.received = d.DataSN, off
	return false, nil
}

// addGap records a missing DataSN range of t.
func (c *conn) addGap(t *task, g dataGap) error {
	if len(t.gaps) >= maxDataGaps {
		return c.erlFail("more than %d damaged Data-In ranges in task %#x", maxDataGaps, t.itt)
	}
	c.log.Warnf("Data-In DataSN %d..%d of task %#x lost or damaged: will be re-requested by SNACK", g.nextSN, g.endSN-1, t.itt)
	t.gaps = append(t.gaps, g)
	return nil
}

// dataDigestERL1 handles a Data-In whose data digest failed (the whole
// PDU was read, so the stream is intact): its range becomes a gap.
func (c *conn) dataDigestERL1(t *task, d *pdu.DataIn) error {
	off := int(d.BufferOffset)
	return c.addGap(t, dataGap{nextSN: d.DataSN, endSN: d.DataSN + 1, next: off, end: off + d.DataLen})
}

// statusERL1 takes the status of t (already in t.resp) with StatSN sn:
// t completes at once, or, while Data-In is missing, the status is held
// and not acknowledged (ExpStatSN stays at sn: "Data/R2T SNACK ... for a
// command MUST precede status acknowledgement for the given command",
// RFC 7143 Section 11.16.1), and a Data SNACK re-requests every gap.
func (c *conn) statusERL1(t *task, sn uint32) error {
	if len(t.gaps) == 0 {
		if err := c.statSNERL1(sn, nil); err != nil {
			return err
		}
		t.resp.Received = t.received
		c.s.complete(t, nil)
		return nil
	}
	t.held = true
	if err := c.statSNERL1(sn, t); err != nil {
		return err
	}
	for i := range t.gaps {
		if err := c.sendDataSNACK(t, &t.gaps[i]); err != nil {
			return err
		}
	}
	return nil
}

// scsiResponseERL1 is handleSCSIResponse at ERL 1: a SCSI Response whose
// ExpDataSN is beyond the Data-In received reveals lost trailing Data-In
// (a gap of unknown length), and the status is held like a Data-In's.
func (c *conn) scsiResponseERL1(b *pdu.BHS, r *pdu.SCSIResponse) error {
	c.s.updateWindow(r.ExpCmdSN, r.MaxCmdSN)
	data, err := c.r.ReadDataAlloc(b)
	if err != nil {
		return err
	}
	t := c.s.lookup(r.ITT)
	if t == nil || t.kind != kindSCSI || t.held {
		// Unknown task, or a status re-sent while held: the StatSN
		// still counts.
		if t == nil || t.kind != kindSCSI {
			c.log.Debugf("SCSI Response for unknown task %#x dropped", r.ITT)
		}
		return c.statSNERL1(r.StatSN, nil)
	}
	if r.Response != 0 {
		if err := c.statSNERL1(r.StatSN, nil); err != nil {
			return err
		}
		c.s.complete(t, fmt.Errorf("iscsi: target failure (response 0x%02x) for task %#x", r.Response, r.ITT))
		return nil
	}
	if t.rbuf != nil && int32(r.ExpDataSN-t.expDataSN) > 0 {
		// The last Data-In PDUs were lost (header digest errors).
		if err := c.addGap(t, dataGap{nextSN: t.expDataSN, endSN: r.ExpDataSN, next: t.received, end: -1}); err != nil {
			return err
		}
		t.expDataSN = r.ExpDataSN
	}
	t.resp = c.scsiResp(r, data, 0)
	return c.statusERL1(t, r.StatSN)
}

// maybeRelease completes a held task once its last gap is filled, and
// then acknowledges its status.
func (c *conn) maybeRelease(t *task) {
	if len(t.gaps) > 0 || !t.held {
		return
	}
	t.snackGen.Add(1) // disarm the SNACK timer
	t.resp.Received = t.received
	c.log.Infof("task %#x recovered by SNACK", t.itt)
	c.s.complete(t, nil)
	c.publishExpStatSN()
}

// resnack asks again for a range whose re-sent PDU was damaged too.
func (c *conn) resnack(t *task, g *dataGap) error {
	if !t.held {
		return nil // asked for when the status arrives
	}
	return c.sendDataSNACK(t, g)
}

// sendDataSNACK sends a Data/R2T SNACK (type 0) for g and arms the SNACK
// timer. RunLength 0 ("all PDUs from BegRun", Section 11.16.1) is used for
// a range that reaches the task's last Data-In: LIO refuses BegRun +
// RunLength beyond its last DataSN even for an exact range.
func (c *conn) sendDataSNACK(t *task, g *dataGap) error {
	if g.tries >= maxSNACKTries {
		return c.erlFail("Data-In DataSN %d of task %#x still damaged after %d SNACKs", g.nextSN, t.itt, g.tries)
	}
	g.tries++
	run := g.endSN - g.nextSN
	if g.endSN == t.expDataSN {
		run = 0
	}
	sn := &pdu.SNACKRequest{Header: pdu.Header{ITT: t.itt, LUN: t.lun}, Type: 0, TTT: pdu.ReservedTag,
		ExpStatSN: c.expStatSN.Load(), BegRun: g.nextSN, RunLength: run}
	if err := c.write(sn, nil); err != nil {
		return err
	}
	gen := t.snackGen.Add(1)
	d, itt, beg := c.snackTimeout(), t.itt, g.nextSN
	time.AfterFunc(d, func() {
		if t.snackGen.Load() != gen || t.isFinished() {
			return
		}
		c.fail(c.erlFail("no answer to the Data SNACK for task %#x (DataSN %d) within %v", itt, beg, d))
	})
	return nil
}

// dataACK answers a Data-In with the A bit (Section 11.7.2: "the
// initiator MUST send a DataACK SNACK") acknowledging every DataSN up to
// it. With holes in the task's Data-In the DataACK must wait until they
// are filled; they are re-requested only once the status is in, and the
// status is then acknowledged through ExpStatSN, which covers the data
// ("sending a SNACK of type DataACK ... is not mandatory" then): so no
// DataACK is sent.
func (c *conn) dataACK(t *task, d *pdu.DataIn) error {
	if len(t.gaps) > 0 {
		c.log.Debugf("A bit of task %#x DataSN %d: holes before it, acknowledged with the status", t.itt, d.DataSN)
		return nil
	}
	return c.write(&pdu.SNACKRequest{Header: pdu.Header{ITT: pdu.ReservedTag, LUN: d.LUN}, Type: 2, TTT: d.TTT,
		ExpStatSN: c.expStatSN.Load(), BegRun: t.expDataSN}, nil)
}

// statSNERL1 checks a StatSN at level 1: a jump past the next expected
// StatSN means status PDUs were lost (header digest errors); they are
// re-requested with a Status SNACK, and ExpStatSN stays at the first
// missing one so the target keeps them.
func (c *conn) statSNERL1(sn uint32, hold *task) error {
	if !c.statInit {
		c.statInit, c.nextStat = true, c.expStatSN.Load()
	}
	next := c.nextStat
	d := int32(sn - next)
	switch {
	case d >= statSNWindow || d <= -statSNWindow:
		return protoErr("StatSN %d out of window (expected %d)", sn, next)
	case d == 0:
		c.nextStat = sn + 1
	case d > 0:
		if len(c.statMissing)+int(d) > maxStatGap {
			return c.erlFail("StatSN jumped from %d to %d", next, sn)
		}
		for x := next; x != sn; x++ {
			c.statMissing = append(c.statMissing, x)
		}
		c.nextStat = sn + 1
		c.log.Warnf("StatSN %d..%d missing: Status SNACK", next, sn-1)
		if err := c.sendStatusSNACK(next, uint32(d)); err != nil {
			return err
		}
	default:
		for i, x := range c.statMissing {
			if x == sn {
				c.statMissing = append(c.statMissing[:i], c.statMissing[i+1:]...)
				break
			}
		}
	}
	if len(c.statMissing) == 0 {
		c.statGen.Add(1) // disarm the Status SNACK timer
	}
	if hold != nil {
		hold.heldSN = sn
		c.statPinned = append(c.statPinned, hold)
	}
	c.publishExpStatSN()
	return nil
}

// publishExpStatSN sets ExpStatSN to the first StatSN that may not be
// acknowledged yet: a missing one, or one held by a task whose data is
// incomplete (a task finished otherwise, e.g. aborted, no longer holds).
func (c *conn) publishExpStatSN() {
	exp := c.nextStat
	for _, x := range c.statMissing {
		if int32(x-exp) < 0 {
			exp = x
		}
	}
	kept := c.statPinned[:0]
	for _, t := range c.statPinned {
		if t.isFinished() {
			continue
		}
		kept = append(kept, t)
		if int32(t.heldSN-exp) < 0 {
			exp = t.heldSN
		}
	}
	clear(c.statPinned[len(kept):])
	c.statPinned = kept
	c.expStatSN.Store(exp)
}

// sendStatusSNACK re-requests run status PDUs from beg (Section 11.16:
// ITT reserved for a Status SNACK) and arms the timer.
func (c *conn) sendStatusSNACK(beg, run uint32) error {
	c.statTries++
	if c.statTries > maxSNACKTries*maxStatGap {
		return c.erlFail("too many Status SNACKs on this connection")
	}
	if err := c.write(&pdu.SNACKRequest{Header: pdu.Header{ITT: pdu.ReservedTag}, Type: 1, TTT: pdu.ReservedTag,
		ExpStatSN: beg, BegRun: beg, RunLength: run}, nil); err != nil {
		return err
	}
	gen := c.statGen.Add(1)
	d := c.snackTimeout()
	time.AfterFunc(d, func() {
		if c.statGen.Load() == gen {
			c.fail(c.erlFail("no answer to the Status SNACK for StatSN %d within %v", beg, d))
		}
	})
	return nil
}

// headerDigestERL1 discards a PDU whose header digest failed: its data
// segment is skipped by the announced length (the header may be damaged
// anywhere, so the length is trusted only within MaxRecvDataSegmentLength;
// a wrong one desynchronizes the stream, which the next header digest
// catches). More than maxHeaderDigErrs in a row end the connection.
func (c *conn) headerDigestERL1(b *pdu.BHS, cause error) error {
	c.hdrErrs++
	if c.hdrErrs > maxHeaderDigErrs {
		return c.erlFail("%d header digest errors in a row: %v", c.hdrErrs, cause)
	}
	if n := b.DataSegmentLength(); n > c.r.MaxData {
		return c.erlFail("damaged header announces %d bytes (limit %d): %v", n, c.r.MaxData, cause)
	}
	c.log.Warnf("PDU discarded: %v", cause)
	return c.discardDamaged(b)
}

// discardDamaged skips a data segment whose digest is allowed to fail.
func (c *conn) discardDamaged(b *pdu.BHS) error {
	if err := c.r.DiscardData(b); err != nil && !errors.Is(err, pdu.ErrDataDigest) {
		return err
	}
	return nil
}

// rejectERL1 handles a Reject that ends level 1 recovery: a rejected SNACK.
func (c *conn) rejectERL1(reason uint8, op pdu.Opcode, itt uint32) error {
	if reason == pdu.RejectSNACK || op == pdu.OpSNACK {
		return c.erlFail("target rejected the SNACK (itt %#x): %s", itt, rejectReason(reason))
	}
	return nil
}

func (t *task) isFinished() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.finished
}
