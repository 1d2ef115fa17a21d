// Package nulltarget is an iSCSI target for benchmarks only: one null disk
// (reads return zeroes, writes are discarded) served as cheaply per command
// as we can, so that an initiator measured against it shows its own cost
// rather than the target's (issue 24: tgtd's single event-loop thread caps
// every initiator at the same rate on a 2-core machine).
//
// Per connection, one goroutine does everything: it reads with one large
// buffered read as many PDUs as the socket holds, handles each in place
// (no hand-off, no allocation per command), queues the replies, and sends
// the whole batch with one writev when no complete PDU is left in its
// buffer. READ data is a shared zero page; WRITE data is skipped in the
// read buffer.
//
// It is not a target to store anything on and not a conformance reference:
// one connection per session, ERL 0, no digests, no authentication, no
// task management beyond "function complete". The tests keep using real
// targets (tgtd, istgt, LIO).
package nulltarget

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// Config describes the null disk.
type Config struct {
	TargetName string // default DefaultTargetName
	Size       int64  // bytes; default 1 GiB
	BlockSize  int    // default 512
	// Window is how many commands the initiator may have outstanding
	// (MaxCmdSN - ExpCmdSN + 1); default 128.
	Window uint32
}

// DefaultTargetName is the IQN served when Config.TargetName is empty.
const DefaultTargetName = "iqn.2026-12.org.lunbridge:null"

const (
	maxRecvDSL  = 256 << 10 // our MaxRecvDataSegmentLength
	maxBurst    = 16 << 20
	readBufSize = 512 << 10
	// flushAt bounds a batch: queued bytes beyond it are sent even when
	// more input is buffered.
	flushAt = 1 << 20
)

var zeroPage = make([]byte, 1<<20)

// Server serves Config on listeners.
type Server struct {
	cfg Config
	wg  sync.WaitGroup
}

// New returns a server for cfg (defaults filled in).
func New(cfg Config) *Server {
	if cfg.TargetName == "" {
		cfg.TargetName = DefaultTargetName
	}
	if cfg.Size <= 0 {
		cfg.Size = 1 << 30
	}
	if cfg.BlockSize <= 0 {
		cfg.BlockSize = 512
	}
	cfg.Size -= cfg.Size % int64(cfg.BlockSize)
	if cfg.Window == 0 {
		cfg.Window = 128
	}
	return &Server{cfg: cfg}
}

// Serve accepts connections on ln until it fails (closing ln ends it);
// it waits for the connections to end.
func (s *Server) Serve(ln net.Listener) error {
	defer s.wg.Wait()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer nc.Close()
			c := &conn{s: s, nc: nc, br: bufio.NewReaderSize(nc, readBufSize), maxSend: 8192}
			c.serve()
		}()
	}
}

// conn is one connection (and its one-connection session).
type conn struct {
	s  *Server
	nc net.Conn
	br *bufio.Reader

	// negotiated
	maxSend       int // the initiator's MaxRecvDataSegmentLength
	initialR2T    bool
	immediateData bool
	firstBurst    int
	maxBurstLen   int
	discovery     bool

	statSN, expCmdSN uint32
	ttt              uint32

	// the reply batch: headers are carved from hdrs, data slices point at
	// zeroPage or small reply buffers in small.
	iov    net.Buffers
	hdrs   []byte
	small  []byte
	queued int
}

func (c *conn) serve() {
	if err := c.login(); err != nil {
		return
	}
	var bhs pdu.BHS
	for {
		if _, err := io.ReadFull(c.br, bhs[:]); err != nil {
			return
		}
		if ahs := bhs.TotalAHSLength(); ahs > 0 {
			if _, err := c.br.Discard(ahs); err != nil {
				return
			}
		}
		if err := c.handle(&bhs); err != nil {
			return
		}
		if c.br.Buffered() < pdu.BHSLen || c.queued >= flushAt {
			if err := c.flush(); err != nil {
				return
			}
		}
	}
}

// flush sends the batch with one writev.
func (c *conn) flush() error {
	if len(c.iov) == 0 {
		return nil
	}
	_, err := c.iov.WriteTo(c.nc) // consumes c.iov
	c.iov = c.iov[:0]
	c.hdrs = c.hdrs[:0]
	c.small = c.small[:0]
	c.queued = 0
	return err
}

// header reserves a BHS in the batch.
func (c *conn) header() *pdu.BHS {
	if cap(c.hdrs)-len(c.hdrs) < pdu.BHSLen {
		// A fresh arena: the slices already queued keep the old one alive.
		c.hdrs = make([]byte, 0, 256*pdu.BHSLen)
	}
	n := len(c.hdrs)
	c.hdrs = c.hdrs[:n+pdu.BHSLen]
	return (*pdu.BHS)(c.hdrs[n : n+pdu.BHSLen])
}

// queue adds a marshalled header and its data segment (padded) to the batch.
func (c *conn) queue(h *pdu.BHS, data []byte) {
	c.iov = append(c.iov, h[:])
	c.queued += pdu.BHSLen
	if len(data) > 0 {
		c.iov = append(c.iov, data)
		c.queued += len(data)
		if p := pdu.Pad(len(data)); p > 0 {
			c.iov = append(c.iov, zeroPage[:p])
		}
	}
}

// keep copies b into the batch's small-reply arena.
func (c *conn) keep(b []byte) []byte {
	if cap(c.small)-len(c.small) < len(b) {
		c.small = make([]byte, 0, max(64<<10, len(b)))
	}
	n := len(c.small)
	c.small = append(c.small, b...)
	return c.small[n:len(c.small):len(c.small)]
}

func (c *conn) maxCmdSN() uint32 { return c.expCmdSN + c.s.cfg.Window - 1 }

// nextStatSN returns the StatSN of a status-carrying reply and advances it.
func (c *conn) nextStatSN() uint32 {
	sn := c.statSN
	c.statSN++
	return sn
}

func (c *conn) handle(b *pdu.BHS) error {
	dsl := b.DataSegmentLength()
	if dsl > maxRecvDSL {
		return fmt.Errorf("data segment of %d bytes", dsl)
	}
	padded := dsl + pdu.Pad(dsl)
	op := b.Opcode()
	if op != pdu.OpSCSICommand && op != pdu.OpDataOut {
		// Control PDUs keep their data (small); commands skip theirs.
		data := make([]byte, padded)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return err
		}
		return c.control(b, data[:dsl])
	}
	if op == pdu.OpDataOut {
		// Unsolicited or solicited data outside a command we wait for:
		// only a stray one gets here (writes consume theirs inline).
		_, err := c.br.Discard(padded)
		return err
	}
	var cmd pdu.SCSICommand
	cmd.UnmarshalBHS(b)
	if !cmd.Immediate {
		c.expCmdSN = cmd.CmdSN + 1
	}
	if cmd.Write && cmd.EDTL > 0 {
		if err := c.receiveWrite(&cmd, padded, dsl); err != nil {
			return err
		}
	} else if _, err := c.br.Discard(padded); err != nil {
		return err
	}
	c.scsi(&cmd)
	return nil
}

// receiveWrite takes a write's data: immediate, unsolicited Data-Out, then
// R2T by R2T. All of it is discarded.
func (c *conn) receiveWrite(cmd *pdu.SCSICommand, padded, dsl int) error {
	if _, err := c.br.Discard(padded); err != nil {
		return err
	}
	got := uint32(dsl)
	total := cmd.EDTL
	if !cmd.Final && got < total {
		// Unsolicited Data-Out up to FirstBurstLength, ending with F.
		if err := c.dataOut(cmd.ITT, &got); err != nil {
			return err
		}
	}
	var r2tsn uint32
	for got < total {
		want := min(total-got, uint32(c.maxBurstLen))
		c.ttt++
		if c.ttt == 0xffffffff {
			c.ttt = 1
		}
		var r pdu.R2T
		r.ITT, r.LUN, r.TTT = cmd.ITT, cmd.LUN, c.ttt
		r.StatSN, r.ExpCmdSN, r.MaxCmdSN = c.statSN, c.expCmdSN, c.maxCmdSN()
		r.R2TSN, r.BufferOffset, r.DesiredLength = r2tsn, got, want
		r2tsn++
		h := c.header()
		r.MarshalBHS(h)
		c.queue(h, nil)
		if err := c.flush(); err != nil {
			return err
		}
		if err := c.dataOut(cmd.ITT, &got); err != nil {
			return err
		}
	}
	return nil
}

// dataOut reads Data-Out PDUs of task itt up to the one with F, adding
// their lengths to *got.
func (c *conn) dataOut(itt uint32, got *uint32) error {
	var bhs pdu.BHS
	for {
		if _, err := io.ReadFull(c.br, bhs[:]); err != nil {
			return err
		}
		if bhs.Opcode() != pdu.OpDataOut || bhs.ITT() != itt {
			return fmt.Errorf("%v while waiting for Data-Out of task %#x", bhs.Opcode(), itt)
		}
		if ahs := bhs.TotalAHSLength(); ahs > 0 {
			if _, err := c.br.Discard(ahs); err != nil {
				return err
			}
		}
		n := bhs.DataSegmentLength()
		if n > maxRecvDSL {
			return fmt.Errorf("Data-Out of %d bytes", n)
		}
		if _, err := c.br.Discard(n + pdu.Pad(n)); err != nil {
			return err
		}
		*got += uint32(n)
		if bhs[1]&0x80 != 0 {
			return nil
		}
	}
}

// Sense keys and codes used.
const (
	statusGood      = 0x00
	statusCheckCond = 0x02
)

func (c *conn) scsi(cmd *pdu.SCSICommand) {
	cdb := cmd.CDB[:]
	bs := int64(c.s.cfg.BlockSize)
	blocks := c.s.cfg.Size / bs
	switch cdb[0] {
	case 0x28, 0x88: // READ(10), READ(16)
		var lba, n int64
		if cdb[0] == 0x28 {
			lba, n = int64(binary.BigEndian.Uint32(cdb[2:])), int64(binary.BigEndian.Uint16(cdb[7:]))
		} else {
			lba, n = int64(binary.BigEndian.Uint64(cdb[2:])), int64(binary.BigEndian.Uint32(cdb[10:]))
		}
		if lba+n > blocks || lba < 0 {
			c.checkCondition(cmd, 0x05, 0x21, 0x00) // LBA out of range
			return
		}
		c.dataIn(cmd, nil, int(min(n*bs, int64(cmd.EDTL))))
	case 0x2a, 0x8a, 0x2e, 0x8e: // WRITE(10/16), WRITE AND VERIFY
		c.status(cmd, statusGood, 0)
	case 0x00, 0x35, 0x91, 0x42, 0x41, 0x93: // TUR, SYNC CACHE(10/16), UNMAP, WRITE SAME(10/16)
		c.status(cmd, statusGood, 0)
	case 0x12: // INQUIRY
		c.inquiry(cmd)
	case 0x25: // READ CAPACITY(10)
		var d [8]byte
		last := uint32(0xffffffff)
		if blocks-1 < 0xffffffff {
			last = uint32(blocks - 1)
		}
		binary.BigEndian.PutUint32(d[0:], last)
		binary.BigEndian.PutUint32(d[4:], uint32(bs))
		c.dataIn(cmd, d[:], len(d))
	case 0x9e: // SERVICE ACTION IN(16)
		if cdb[1]&0x1f != 0x10 {
			c.checkCondition(cmd, 0x05, 0x24, 0x00)
			return
		}
		var d [32]byte
		binary.BigEndian.PutUint64(d[0:], uint64(blocks-1))
		binary.BigEndian.PutUint32(d[8:], uint32(bs))
		c.dataIn(cmd, d[:], len(d))
	case 0xa0: // REPORT LUNS: LUN 0
		var d [16]byte
		binary.BigEndian.PutUint32(d[0:], 8)
		c.dataIn(cmd, d[:], len(d))
	case 0x1a: // MODE SENSE(6): header only, no pages, write cache on
		d := []byte{3, 0, 0, 0}
		c.dataIn(cmd, d, len(d))
	case 0x5a: // MODE SENSE(10)
		d := []byte{0, 6, 0, 0, 0, 0, 0, 0}
		c.dataIn(cmd, d, len(d))
	default:
		c.checkCondition(cmd, 0x05, 0x20, 0x00) // invalid command operation code
	}
}

func (c *conn) inquiry(cmd *pdu.SCSICommand) {
	cdb := cmd.CDB[:]
	alloc := int(binary.BigEndian.Uint16(cdb[3:]))
	var d []byte
	if cdb[1]&1 == 0 {
		d = make([]byte, 36)
		d[0] = 0    // direct-access block device
		d[2] = 6    // SPC-4
		d[3] = 2    // response data format
		d[4] = 31   // additional length
		d[7] = 0x02 // CmdQue
		copy(d[8:16], "LUNBRIDG")
		copy(d[16:32], "NULL DISK       ")
		copy(d[32:36], "0001")
	} else {
		page := cdb[2]
		switch page {
		case 0x00:
			d = []byte{0, 0x00, 0, 4, 0x00, 0x80, 0x83, 0xb0}
		case 0x80:
			d = append([]byte{0, 0x80, 0, 8}, "NULL0001"...)
		case 0x83: // one NAA designator (binary, LU association)
			d = []byte{0, 0x83, 0, 12, 0x01, 0x03, 0x00, 0x08, 0x60, 0x01, 0x40, 0x5a, 0x11, 0x11, 0x00, 0x01}
		case 0xb0: // block limits: max transfer 32 MiB in blocks
			d = make([]byte, 64)
			d[1] = 0xb0
			binary.BigEndian.PutUint16(d[2:], 60)
			binary.BigEndian.PutUint32(d[8:], uint32((32<<20)/c.s.cfg.BlockSize))
		default:
			c.checkCondition(cmd, 0x05, 0x24, 0x00) // invalid field in CDB
			return
		}
	}
	c.dataIn(cmd, d, min(len(d), alloc))
}

// dataIn answers a read: data (or zeroes when nil) of n bytes, in
// segments the initiator accepts, the last one carrying the status.
func (c *conn) dataIn(cmd *pdu.SCSICommand, data []byte, n int) {
	n = min(n, int(cmd.EDTL))
	if data != nil {
		data = c.keep(data[:n])
	}
	var residual uint32
	under := uint32(n) < cmd.EDTL
	if under {
		residual = cmd.EDTL - uint32(n)
	}
	if n == 0 {
		c.status(cmd, statusGood, residual)
		return
	}
	var sn uint32
	for off := 0; off < n; {
		k := min(n-off, c.maxSend, len(zeroPage))
		last := off+k == n
		var d pdu.DataIn
		d.ITT, d.LUN, d.TTT = cmd.ITT, cmd.LUN, 0xffffffff
		d.DataSN, d.BufferOffset = sn, uint32(off)
		d.ExpCmdSN, d.MaxCmdSN = c.expCmdSN, c.maxCmdSN()
		d.DataLen = k
		if last {
			d.Final, d.HasStatus, d.Status = true, true, statusGood
			d.StatSN = c.nextStatSN()
			d.Underflow, d.Residual = under, residual
		}
		h := c.header()
		d.MarshalBHS(h)
		seg := zeroPage[:k]
		if data != nil {
			seg = data[off : off+k]
		}
		c.queue(h, seg)
		off += k
		sn++
	}
}

func (c *conn) status(cmd *pdu.SCSICommand, status uint8, residual uint32) {
	var r pdu.SCSIResponse
	r.ITT, r.Status = cmd.ITT, status
	r.StatSN, r.ExpCmdSN, r.MaxCmdSN = c.nextStatSN(), c.expCmdSN, c.maxCmdSN()
	if residual > 0 {
		r.Underflow, r.Residual = true, residual
	}
	h := c.header()
	r.MarshalBHS(h)
	c.queue(h, nil)
}

func (c *conn) checkCondition(cmd *pdu.SCSICommand, key, asc, ascq byte) {
	sense := make([]byte, 2+18)
	binary.BigEndian.PutUint16(sense, 18)
	s := sense[2:]
	s[0], s[2], s[7], s[12], s[13] = 0x70, key, 10, asc, ascq
	var r pdu.SCSIResponse
	r.ITT, r.Status = cmd.ITT, statusCheckCond
	r.StatSN, r.ExpCmdSN, r.MaxCmdSN = c.nextStatSN(), c.expCmdSN, c.maxCmdSN()
	r.DataLen = len(sense)
	h := c.header()
	r.MarshalBHS(h)
	c.queue(h, c.keep(sense))
}

// control handles NOP-Out, Text, Task Management, Logout and SNACK in
// full feature phase.
func (c *conn) control(b *pdu.BHS, data []byte) error {
	p, err := pdu.Parse(b)
	if err != nil {
		return err
	}
	if !p.Hdr().Immediate {
		if sn := binary.BigEndian.Uint32(b[24:28]); b.Opcode() != pdu.OpSNACK {
			c.expCmdSN = sn + 1
		}
	}
	switch q := p.(type) {
	case *pdu.NopOut:
		if q.ITT == 0xffffffff {
			return nil // an answer to a NOP-In we never send
		}
		var r pdu.NopIn
		r.ITT, r.TTT, r.LUN = q.ITT, 0xffffffff, q.LUN
		r.StatSN, r.ExpCmdSN, r.MaxCmdSN = c.nextStatSN(), c.expCmdSN, c.maxCmdSN()
		r.DataLen = len(data)
		h := c.header()
		r.MarshalBHS(h)
		c.queue(h, c.keep(data))
	case *pdu.TaskMgmtRequest:
		var r pdu.TaskMgmtResponse
		r.ITT = q.ITT
		r.StatSN, r.ExpCmdSN, r.MaxCmdSN = c.nextStatSN(), c.expCmdSN, c.maxCmdSN()
		h := c.header()
		r.MarshalBHS(h)
		c.queue(h, nil)
	case *pdu.TextRequest:
		var reply []byte
		if kvs, err := pdu.ParseText(data); err == nil {
			for _, kv := range kvs {
				if kv.Key == "SendTargets" {
					reply = pdu.AppendText(reply, pdu.KV{Key: "TargetName", Value: c.s.cfg.TargetName},
						pdu.KV{Key: "TargetAddress", Value: c.nc.LocalAddr().String() + ",1"})
				}
			}
		}
		var r pdu.TextResponse
		r.ITT, r.TTT, r.Final = q.ITT, 0xffffffff, true
		r.StatSN, r.ExpCmdSN, r.MaxCmdSN = c.nextStatSN(), c.expCmdSN, c.maxCmdSN()
		r.DataLen = len(reply)
		h := c.header()
		r.MarshalBHS(h)
		c.queue(h, c.keep(reply))
	case *pdu.LogoutRequest:
		var r pdu.LogoutResponse
		r.ITT = q.ITT
		r.StatSN, r.ExpCmdSN, r.MaxCmdSN = c.nextStatSN(), c.expCmdSN, c.maxCmdSN()
		h := c.header()
		r.MarshalBHS(h)
		c.queue(h, nil)
		c.flush()
		return io.EOF
	default:
		var r pdu.Reject
		r.Reason = 0x04 // protocol error
		r.StatSN, r.ExpCmdSN, r.MaxCmdSN = c.nextStatSN(), c.expCmdSN, c.maxCmdSN()
		r.DataLen = pdu.BHSLen
		h := c.header()
		r.MarshalBHS(h)
		c.queue(h, c.keep(b[:]))
	}
	return nil
}

// login runs the login phase: every offered key answered with the value
// the null target wants, AuthMethod None, stages advanced as asked.
func (c *conn) login() error {
	c.initialR2T, c.immediateData = true, true
	c.firstBurst, c.maxBurstLen = 65536, 262144
	var bhs pdu.BHS
	var text []byte
	for {
		if _, err := io.ReadFull(c.br, bhs[:]); err != nil {
			return err
		}
		if bhs.Opcode() != pdu.OpLoginReq {
			return fmt.Errorf("%v during login", bhs.Opcode())
		}
		var q pdu.LoginRequest
		if err := q.UnmarshalBHS(&bhs); err != nil {
			return err
		}
		n := q.DataLen
		if n > 64<<10 || len(text)+n > 256<<10 {
			return errors.New("login text too long")
		}
		seg := make([]byte, n+pdu.Pad(n))
		if _, err := io.ReadFull(c.br, seg); err != nil {
			return err
		}
		text = append(text, seg[:n]...)
		var r pdu.LoginResponse
		r.ITT, r.ISID, r.CSG = q.ITT, q.ISID, q.CSG
		r.VersionMax, r.VersionActive = 0, 0
		if q.Continue { // more text to come: ask for it
			r.Continue = false
			r.StatSN, r.ExpCmdSN, r.MaxCmdSN = c.statSN, q.CmdSN, q.CmdSN+c.s.cfg.Window-1
			c.sendLogin(&r, nil)
			continue
		}
		kvs, err := pdu.ParseText(text)
		text = text[:0]
		if err != nil {
			return err
		}
		reply := c.negotiate(kvs)
		if q.Transit {
			r.Transit, r.NSG = true, q.NSG
		}
		if q.Transit && q.NSG == pdu.StageFullFeature {
			r.TSIH = 1
		}
		c.statSN = q.ExpStatSN
		r.StatSN, r.ExpCmdSN, r.MaxCmdSN = c.nextStatSN(), q.CmdSN, q.CmdSN+c.s.cfg.Window-1
		c.expCmdSN = q.CmdSN
		if err := c.sendLogin(&r, reply); err != nil {
			return err
		}
		if r.Transit && r.NSG == pdu.StageFullFeature {
			if c.discovery {
				c.maxSend = max(c.maxSend, 8192)
			}
			return nil
		}
	}
}

func (c *conn) sendLogin(r *pdu.LoginResponse, text []byte) error {
	r.DataLen = len(text)
	h := c.header()
	r.MarshalBHS(h)
	c.queue(h, c.keep(text))
	return c.flush()
}

// negotiate answers the offered keys.
func (c *conn) negotiate(kvs []pdu.KV) []byte {
	var out []byte
	num := func(v string) int {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0
		}
		return n
	}
	for _, kv := range kvs {
		var ans string
		switch kv.Key {
		case "InitiatorName", "InitiatorAlias", "TargetName":
			continue // declarative
		case "SessionType":
			c.discovery = kv.Value == "Discovery"
			continue
		case "AuthMethod":
			ans = "None"
		case "HeaderDigest", "DataDigest":
			ans = "None"
		case "MaxConnections":
			ans = "1"
		case "ErrorRecoveryLevel":
			ans = "0"
		case "InitialR2T":
			c.initialR2T = kv.Value == "Yes"
			ans = kv.Value
		case "ImmediateData":
			c.immediateData = kv.Value == "Yes"
			ans = kv.Value
		case "MaxRecvDataSegmentLength":
			if n := num(kv.Value); n >= 512 {
				c.maxSend = min(n, 1<<24-1)
			}
			ans = strconv.Itoa(maxRecvDSL)
		case "MaxBurstLength":
			c.maxBurstLen = max(512, min(num(kv.Value), maxBurst))
			ans = strconv.Itoa(c.maxBurstLen)
		case "FirstBurstLength":
			c.firstBurst = max(512, min(num(kv.Value), maxBurst))
			ans = strconv.Itoa(c.firstBurst)
		case "DefaultTime2Wait":
			ans = "2"
		case "DefaultTime2Retain":
			ans = "0"
		case "MaxOutstandingR2T":
			ans = "1"
		case "DataPDUInOrder", "DataSequenceInOrder":
			ans = "Yes"
		default:
			ans = "NotUnderstood"
		}
		out = pdu.AppendText(out, pdu.KV{Key: kv.Key, Value: ans})
	}
	return out
}
