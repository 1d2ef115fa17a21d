package faketarget

import (
	"bytes"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// ErrorRecoveryLevel 1 on the target side (RFC 7143, Sections 7.1.4,
// 11.16): every Data-In and status sent is kept so that a SNACK can be
// served, and scripted faults (Config.CorruptDataIn, CorruptDataInHeader,
// DropDataIn, DataACK, DropStatus, RejectSNACK, IgnoreSNACK) damage or
// withhold them. A Data SNACK sent after the command's status was
// acknowledged (ExpStatSN past it) is a violation.

// maxKeptStatus bounds the status PDUs kept for Status SNACKs.
const maxKeptStatus = 1024

type sentDataIn struct {
	d    pdu.DataIn
	data []byte
}

type sentStatus struct {
	rsp  *pdu.SCSIResponse
	din  *pdu.DataIn
	data []byte
}

// DataACKRecord is one DataACK SNACK the target received.
type DataACKRecord struct {
	TTT, BegRun uint32
}

type erlState struct {
	dataIn map[uint32][]sentDataIn // by ITT, the current command's Data-In
	status map[uint32]sentStatus   // by StatSN
	ackTTT map[uint32]bool         // TTTs of Data-In sent with the A bit
	statOf map[uint32]uint32       // by ITT, the StatSN of its status
	acks   []DataACKRecord
}

func (e *erlState) init() {
	if e.dataIn == nil {
		e.dataIn = map[uint32][]sentDataIn{}
		e.status = map[uint32]sentStatus{}
		e.ackTTT = map[uint32]bool{}
		e.statOf = map[uint32]uint32{}
	}
}

// DataACKs returns the DataACK SNACKs received so far.
func (c *Conn) DataACKs() []DataACKRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]DataACKRecord(nil), c.erl.acks...)
}

// prepareDataIn sets the A bit when scripted and keeps a copy of d for
// Data SNACKs. Call with mu held.
func (c *Conn) prepareDataIn(d *pdu.DataIn, data []byte) {
	e := &c.erl
	e.init()
	if h := c.t.cfg.DataACK; h != nil && c.params.ErrorRecoveryLevel > 0 && h(d.ITT, d.DataSN) {
		c.nextTTT++
		d.Ack, d.TTT = true, c.nextTTT
		e.ackTTT[d.TTT] = true
	}
	if c.params.ErrorRecoveryLevel == 0 {
		return
	}
	if d.DataSN == 0 {
		delete(e.dataIn, d.ITT) // a new command with this ITT
	}
	e.dataIn[d.ITT] = append(e.dataIn[d.ITT], sentDataIn{d: *d, data: bytes.Clone(data)})
	if d.HasStatus {
		cp := *d
		c.keep(d.StatSN, sentStatus{din: &cp, data: bytes.Clone(data)})
	}
}

func (c *Conn) keep(statSN uint32, s sentStatus) {
	e := &c.erl
	e.init()
	e.status[statSN] = s
	if s.rsp != nil {
		e.statOf[s.rsp.ITT] = statSN
	} else {
		e.statOf[s.din.ITT] = statSN
	}
	delete(e.status, statSN-maxKeptStatus)
}

// keepStatus keeps a SCSI Response for Status SNACKs and reports whether
// it is to be withheld (Config.DropStatus). Call with mu held.
func (c *Conn) keepStatus(r *pdu.SCSIResponse, data []byte) (drop bool) {
	if c.params.ErrorRecoveryLevel == 0 {
		return false
	}
	cp := *r
	c.keep(r.StatSN, sentStatus{rsp: &cp, data: bytes.Clone(data)})
	return c.t.cfg.DropStatus != nil && c.t.cfg.DropStatus(r.ITT, r.StatSN)
}

// writeDataIn writes d, damaged when scripted. Call with wmu held.
func (c *Conn) writeDataIn(d *pdu.DataIn, data []byte, resend bool) error {
	cfg := &c.t.cfg
	if cfg.DropDataIn != nil && cfg.DropDataIn(d.ITT, d.DataSN, resend) {
		return nil
	}
	badData := cfg.CorruptDataIn != nil && len(data) > 0 && cfg.CorruptDataIn(d.ITT, d.DataSN, resend)
	badHdr := cfg.CorruptDataInHeader != nil && c.w.HeaderDigest && cfg.CorruptDataInHeader(d.ITT, d.DataSN, resend)
	if !badData && !badHdr {
		return c.w.WritePDU(d, data)
	}
	var b bytes.Buffer
	w := pdu.NewWriter(&b)
	w.HeaderDigest, w.DataDigest = c.w.HeaderDigest, c.w.DataDigest
	w.WritePDU(d, data)
	raw := b.Bytes()
	if badHdr {
		raw[pdu.BHSLen] ^= 0x5a // first byte of the header digest
	}
	if badData {
		off := pdu.BHSLen
		if c.w.HeaderDigest {
			off += pdu.DigestLen
		}
		raw[off+len(data)/2] ^= 0x01
	}
	_, err := c.nc.Write(raw)
	return err
}

// snack serves a SNACK Request (ErrorRecoveryLevel > 0).
func (c *Conn) snack(q *pdu.SNACKRequest, raw pdu.BHS) {
	cfg := &c.t.cfg
	if cfg.RejectSNACK {
		c.SendReject(pdu.RejectSNACK, raw)
		return
	}
	if cfg.IgnoreSNACK {
		return
	}
	in := func(sn uint32) bool {
		return int32(sn-q.BegRun) >= 0 && (q.RunLength == 0 || int32(sn-(q.BegRun+q.RunLength)) < 0)
	}
	switch q.Type {
	case 0: // Data/R2T SNACK
		if q.ITT == pdu.ReservedTag || q.TTT != pdu.ReservedTag {
			c.t.violate("Data SNACK with ITT %#x TTT %#x", q.ITT, q.TTT)
		}
		c.mu.Lock()
		kept := append([]sentDataIn(nil), c.erl.dataIn[q.ITT]...)
		if sn, ok := c.erl.statOf[q.ITT]; ok && int32(q.ExpStatSN-sn) > 0 {
			// RFC 7143 11.16.1: "Data/R2T SNACK ... for a command MUST
			// precede status acknowledgement for the given command".
			c.t.violate("Data SNACK for ITT %#x with ExpStatSN %d: its status (StatSN %d) is already acknowledged", q.ITT, q.ExpStatSN, sn)
		}
		c.mu.Unlock()
		if len(kept) == 0 || !in(kept[len(kept)-1].d.DataSN) && q.RunLength == 0 {
			c.t.violate("Data SNACK for ITT %#x BegRun %d: nothing sent there", q.ITT, q.BegRun)
			c.SendReject(pdu.RejectProtocolError, raw)
			return
		}
		c.wmu.Lock()
		defer c.wmu.Unlock()
		for _, s := range kept {
			if in(s.d.DataSN) {
				d := s.d
				if err := c.writeDataIn(&d, s.data, true); err != nil {
					return
				}
			}
		}
	case 1: // Status SNACK
		if q.ITT != pdu.ReservedTag {
			c.t.violate("Status SNACK with ITT %#x (must be 0xffffffff)", q.ITT)
		}
		c.mu.Lock()
		var resend []sentStatus
		for sn := q.BegRun; in(sn) && int32(sn-c.statSN) < 0; sn++ {
			if s, ok := c.erl.status[sn]; ok {
				resend = append(resend, s)
			}
		}
		c.mu.Unlock()
		if len(resend) == 0 {
			c.t.violate("Status SNACK BegRun %d RunLength %d: no such status kept", q.BegRun, q.RunLength)
		}
		c.wmu.Lock()
		defer c.wmu.Unlock()
		for _, s := range resend {
			if s.rsp != nil {
				c.w.WritePDU(s.rsp, s.data)
			} else {
				c.writeDataIn(s.din, s.data, true)
			}
		}
	case 2: // DataACK
		c.mu.Lock()
		defer c.mu.Unlock()
		if q.ITT != pdu.ReservedTag || !c.erl.ackTTT[q.TTT] {
			c.t.violate("DataACK with ITT %#x TTT %#x: no Data-In with the A bit has that TTT", q.ITT, q.TTT)
		}
		c.erl.acks = append(c.erl.acks, DataACKRecord{TTT: q.TTT, BegRun: q.BegRun})
	default:
		c.t.violate("SNACK type %d not expected", q.Type)
		c.SendReject(pdu.RejectNotSupported, raw)
	}
}
