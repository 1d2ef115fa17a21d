package faketarget

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// SCSI status bytes.
const (
	StatusGood                = 0x00
	StatusCheckCondition      = 0x02
	StatusBusy                = 0x08
	StatusReservationConflict = 0x18
	StatusTaskSetFull         = 0x28
)

// disk is one in-memory logical unit.
type disk struct {
	mu   sync.Mutex
	cfg  LUNConfig
	data []byte
}

func newDisk(l LUNConfig) *disk {
	return &disk{cfg: l, data: make([]byte, int(l.Blocks)*l.BlockSize)}
}

// Sense returns fixed-format sense data (SPC-4 4.5.3).
func Sense(key, asc, ascq byte) []byte {
	s := make([]byte, 18)
	s[0] = 0x70
	s[2] = key & 0x0f
	s[7] = 10
	s[12], s[13] = asc, ascq
	return s
}

func (c *Conn) checkCondition(itt uint32, key, asc, ascq byte) {
	c.SendStatus(itt, StatusCheckCondition, Sense(key, asc, ascq))
}

// command runs the default behaviour for a SCSI command.
func (c *Conn) command(q *pdu.SCSICommand, data []byte) {
	c.mu.Lock()
	delay := c.delay
	c.mu.Unlock()
	c.sleep(delay)
	var lb [8]byte
	binary.BigEndian.PutUint64(lb[:], q.LUN)
	d := c.t.disks[scsi.DecodeLUN(lb)]
	cdb := q.CDB[:]
	op := cdb[0]
	if d == nil && op != 0x12 && op != 0xa0 {
		c.checkCondition(q.ITT, 0x05, 0x25, 0x00) // LOGICAL UNIT NOT SUPPORTED
		return
	}
	be := binary.BigEndian
	switch op {
	case 0x00, 0x35, 0x91: // TEST UNIT READY, SYNCHRONIZE CACHE 10/16
		c.SendStatus(q.ITT, StatusGood, nil)
	case 0x12: // INQUIRY
		c.inquiry(q, d)
	case 0x25: // READ CAPACITY(10)
		b := make([]byte, 8)
		be.PutUint32(b, uint32(min(d.cfg.Blocks-1, 0xffffffff)))
		be.PutUint32(b[4:], uint32(d.cfg.BlockSize))
		c.DataIn(q, b)
	case 0x9e: // SERVICE ACTION IN(16)
		if cdb[1]&0x1f != 0x10 {
			c.checkCondition(q.ITT, 0x05, 0x24, 0x00)
			return
		}
		b := make([]byte, 32)
		be.PutUint64(b, d.cfg.Blocks-1)
		be.PutUint32(b[8:], uint32(d.cfg.BlockSize))
		c.DataIn(q, b[:min(32, int(be.Uint32(cdb[10:])))])
	case 0x28, 0x88, 0x2a, 0x8a: // READ/WRITE 10/16
		var lba uint64
		var n uint32
		if op == 0x28 || op == 0x2a {
			lba, n = uint64(be.Uint32(cdb[2:])), uint32(be.Uint16(cdb[7:]))
		} else {
			lba, n = be.Uint64(cdb[2:]), be.Uint32(cdb[10:])
		}
		if lba+uint64(n) > d.cfg.Blocks {
			c.checkCondition(q.ITT, 0x05, 0x21, 0x00) // LBA OUT OF RANGE
			return
		}
		bs := d.cfg.BlockSize
		off, length := int(lba)*bs, int(n)*bs
		if op == 0x28 || op == 0x88 {
			d.mu.Lock()
			b := append([]byte(nil), d.data[off:off+length]...)
			d.mu.Unlock()
			c.DataIn(q, b)
			return
		}
		c.startWrite(q, data, func(c *Conn, buf []byte) {
			d.mu.Lock()
			copy(d.data[off:off+length], buf)
			d.mu.Unlock()
			c.t.executed(q.CmdSN)
			r := &pdu.SCSIResponse{Header: pdu.Header{ITT: q.ITT}}
			if len(buf) < length {
				r.Underflow, r.Residual = true, uint32(length-len(buf))
			}
			c.SendResponse(r, nil)
		})
	case 0xa0: // REPORT LUNS
		b := make([]byte, 8, 8+8*len(c.t.cfg.LUNs))
		for _, l := range c.t.cfg.LUNs {
			f := scsi.EncodeLUN(l.Number)
			b = append(b, f[:]...)
		}
		be.PutUint32(b, uint32(len(b)-8))
		c.DataIn(q, b[:min(len(b), int(be.Uint32(cdb[6:])))])
	case 0x1a: // MODE SENSE(6): header only, not write-protected
		c.DataIn(q, []byte{3, 0, 0, 0}[:min(4, int(cdb[4]))])
	default:
		c.checkCondition(q.ITT, 0x05, 0x20, 0x00) // INVALID COMMAND OPERATION CODE
	}
}

func (c *Conn) inquiry(q *pdu.SCSICommand, d *disk) {
	cdb := q.CDB[:]
	alloc := int(binary.BigEndian.Uint16(cdb[3:]))
	var b []byte
	if cdb[1]&1 == 0 {
		b = make([]byte, 36)
		if d == nil {
			b[0] = 0x7f // qualifier 011b, no device
		}
		b[2], b[3], b[4], b[7] = 0x06, 0x12, 31, 0x02
		vendor := c.t.cfg.Vendor
		if vendor == "" {
			vendor = "LUNBRIDG"
		}
		copy(b[8:], fmt.Sprintf("%-8.8s%-16s%-4s", vendor, "FAKETARGET", "0001"))
	} else {
		if d == nil {
			c.checkCondition(q.ITT, 0x05, 0x25, 0x00)
			return
		}
		page := cdb[2]
		n := d.cfg.Number
		switch page {
		case 0x00:
			b = []byte{0, 0x00, 0, 4, 0x00, 0x80, 0x83, 0xb0}
		case 0x80:
			sn := fmt.Sprintf("FAKE%08d", n)
			b = append([]byte{0, 0x80, 0, byte(len(sn))}, sn...)
		case 0x83:
			naa := make([]byte, 16)
			naa[0] = 0x60
			copy(naa[1:], "\x01\x40\x5f\xa4\x4b")
			binary.BigEndian.PutUint64(naa[8:], n+1)
			b = append([]byte{0, 0x83, 0, 20, 0x01, 0x03, 0, 16}, naa...)
		case 0xb0:
			b = make([]byte, 64)
			b[1], b[3] = 0xb0, 0x3c
			binary.BigEndian.PutUint32(b[8:], 1024) // MAXIMUM TRANSFER LENGTH
		default:
			c.checkCondition(q.ITT, 0x05, 0x24, 0x00) // INVALID FIELD IN CDB
			return
		}
	}
	c.DataIn(q, b[:min(len(b), alloc)])
}

// DataIn answers a read command q with b in Data-In PDUs no larger than the
// initiator's MaxRecvDataSegmentLength, in sequences of at most
// MaxBurstLength, with status in the last Data-In (or in a SCSI Response
// with Config.SeparateStatus, or when there is no data).
func (c *Conn) DataIn(q *pdu.SCSICommand, b []byte) error {
	if c.sess != nil {
		c.sess.keepRead(q.ITT, b)
	}
	return c.dataInFrom(q, b, 0)
}

// dataInFrom is DataIn skipping the first from Data-In PDUs (a reassigned
// read re-sent from ExpDataSN).
func (c *Conn) dataInFrom(q *pdu.SCSICommand, b []byte, from int) error {
	p := c.Params()
	edtl := int(q.EDTL)
	n := min(len(b), edtl)
	var under, over bool
	var resid uint32
	switch {
	case len(b) < edtl:
		under, resid = true, uint32(edtl-len(b))
	case len(b) > edtl:
		over, resid = true, uint32(len(b)-edtl)
	}
	if !q.Read {
		n = 0
	}
	seq := 0
	for i, off := 0, 0; off < n; i++ {
		k := min(n-off, p.InitiatorMaxRecvDSL, p.MaxBurstLength-seq)
		last := off+k == n
		d := &pdu.DataIn{Header: pdu.Header{ITT: q.ITT, LUN: q.LUN}, BufferOffset: uint32(off)}
		seq += k
		if last || seq == p.MaxBurstLength {
			d.Final = true
			seq = 0
		}
		if last && !c.t.cfg.SeparateStatus {
			d.HasStatus, d.Status = true, StatusGood
			d.Underflow, d.Overflow, d.Residual = under, over, resid
		}
		if i >= from {
			if err := c.SendDataIn(d, b[off:off+k]); err != nil {
				return err
			}
		} else if last && !c.t.cfg.SeparateStatus {
			break // all data acknowledged: status alone below
		}
		off += k
		if last && !c.t.cfg.SeparateStatus {
			return nil
		}
	}
	return c.SendResponse(&pdu.SCSIResponse{Header: pdu.Header{ITT: q.ITT}, Underflow: under, Overflow: over, Residual: resid}, nil)
}
