package initiator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// LUN is a handle on one logical unit of a session. It implements
// blockdev.Device and its optional interfaces; every method is safe for
// concurrent use and pipelines through the session's command window.
type LUN struct {
	s      *Session
	number uint64
	field  uint64 // 8-byte LUN field

	Inquiry      scsi.InquiryData
	Serial       string
	DevID        scsi.DeviceIdentification
	Limits       scsi.BlockLimits
	HasLimits    bool
	Provisioning scsi.LogicalBlockProvisioning
	HasProv      bool
	Capacity     scsi.Capacity
	Rotation     uint16 // VPD B1 rotation rate (1 = non-rotating), 0 unknown
	WriteProtect bool
	Pages        scsi.SupportedPages

	bs       int
	size     int64
	maxXfer  int // bytes per READ/WRITE command
	wwid     string
	dpofua   bool // MODE SENSE: the LU honours FUA
	ownsSess bool
	closeMu  sync.Mutex
	closed   bool

	// probe marks a LUN value that only identifies the LU (OpenLUN
	// before it returns, the identity checks): its commands bypass id.
	probe bool
	id    idGate
}

var (
	_ blockdev.Device     = (*LUN)(nil)
	_ blockdev.Trimmer    = (*LUN)(nil)
	_ blockdev.Zeroer     = (*LUN)(nil)
	_ blockdev.Extenter   = (*LUN)(nil)
	_ blockdev.ReadOnlyer = (*LUN)(nil)
)

// maxCommandBytes caps one READ/WRITE so a huge request is split into
// several commands that pipeline (and no single task pins too much).
const maxCommandBytes = 4 << 20

// OpenLUN identifies LUN number lun on s: INQUIRY (standard and VPD 0x00,
// 0x80, 0x83, 0xB0, 0xB1, 0xB2), READ CAPACITY (16, falling back to 10),
// MODE SENSE for write protection. Unit attentions after login are absorbed.
// Before it returns, an ORDERED TEST UNIT READY waits for every older task
// in the LU's task set, an earlier session's included (barrier.go).
func OpenLUN(ctx context.Context, s *Session, lun uint64) (*LUN, error) {
	f := scsi.EncodeLUN(lun)
	l := &LUN{s: s, number: lun, field: binary.BigEndian.Uint64(f[:]), probe: true}
	if err := l.identify(ctx); err != nil {
		return nil, err
	}
	// Writes of an earlier session to this LU (a process this one
	// replaces, whose session the login may just have reinstated) may
	// still be in the target's backend (barrier.go): let them finish
	// before the caller's I/O.
	if err := l.drainOldTasks(ctx); err != nil {
		return nil, err
	}
	l.probe = false // not shared yet
	s.OnReconnect(l.verifyIdentity)
	return l, nil
}

// failLUNChanged makes err, a LUN's failed identity check inside the
// session, the session's permanent failure, as recover does for a failed
// check after a reconnect: the connections are dropped and every later
// command fails with err.
func (s *Session) failLUNChanged(err error) {
	s.recMu.Lock()
	if s.rec.fatal == nil {
		s.rec.fatal = err
	}
	s.recMu.Unlock()
	for _, c := range s.allConns() {
		c.fail(err)
	}
}

func (l *LUN) identify(ctx context.Context) error {
	// TEST UNIT READY first: it collects the UNIT ATTENTION every new
	// I_T nexus gets, and NOT READY shows up here.
	if err := l.exec(ctx, scsi.TestUnitReady(), nil, nil); err != nil {
		return fmt.Errorf("LUN %d: TEST UNIT READY: %w", l.number, err)
	}
	buf := make([]byte, 255)
	n, err := l.execN(ctx, scsi.Inquiry(false, 0, 255), buf)
	if err != nil {
		return fmt.Errorf("LUN %d: INQUIRY: %w", l.number, err)
	}
	if l.Inquiry, err = scsi.ParseInquiry(buf[:n]); err != nil {
		return fmt.Errorf("LUN %d: INQUIRY: %w", l.number, err)
	}
	if l.Inquiry.Vendor == "LIO-ORG" {
		l.s.lioTarget.Store(true)
	}
	if !l.Inquiry.Present() {
		return fmt.Errorf("%w: LUN %d does not exist on %s", blockdev.ErrInvalid, l.number, l.s.cfg.TargetName)
	}
	if l.Inquiry.DeviceType != 0 {
		return fmt.Errorf("LUN %d is a %v, not a disk (block device)", l.number, l.Inquiry.DeviceType)
	}
	if p, ok := l.vpd(ctx, 0x00); ok {
		l.Pages, _ = scsi.ParseSupportedPages(p)
	}
	if p, ok := l.vpd(ctx, 0x80); ok {
		l.Serial, _ = scsi.ParseUnitSerialNumber(p)
	}
	if p, ok := l.vpd(ctx, 0x83); ok {
		if d, err := scsi.ParseDeviceIdentification(p); err == nil {
			l.DevID = d
			l.wwid, _ = d.WWID()
		}
	}
	if p, ok := l.vpd(ctx, 0xb0); ok {
		if b, err := scsi.ParseBlockLimits(p); err == nil {
			l.Limits, l.HasLimits = b, true
		}
	}
	if p, ok := l.vpd(ctx, 0xb1); ok {
		if b, err := scsi.ParseBlockDeviceCharacteristics(p); err == nil {
			l.Rotation = b.RotationRate
		}
	}
	if p, ok := l.vpd(ctx, 0xb2); ok {
		if b, err := scsi.ParseLogicalBlockProvisioning(p); err == nil {
			l.Provisioning, l.HasProv = b, true
		}
	}
	if err := l.readCapacity(ctx); err != nil {
		return err
	}
	ms := make([]byte, 255)
	if n, err := l.execN(ctx, scsi.ModeSense6(0x3f, 0, true, 255), ms); err == nil {
		if m, err := scsi.ParseModeSense6(ms[:n]); err == nil {
			l.WriteProtect = m.WP
			l.dpofua = m.DPOFUA
		}
	}
	l.maxXfer = maxCommandBytes
	if l.HasLimits && l.Limits.MaxTransferLength > 0 {
		l.maxXfer = min(l.maxXfer, int(min(uint64(l.Limits.MaxTransferLength)*uint64(l.bs), 1<<30)))
	}
	l.maxXfer -= l.maxXfer % l.bs
	if l.maxXfer < l.bs {
		l.maxXfer = l.bs
	}
	return nil
}

func (l *LUN) readCapacity(ctx context.Context) error {
	buf := make([]byte, 32)
	n, err := l.execN(ctx, scsi.ReadCapacity16(32), buf)
	var c scsi.Capacity
	if err == nil {
		c, err = scsi.ParseReadCapacity16(buf[:n])
	}
	if err != nil {
		n, err2 := l.execN(ctx, scsi.ReadCapacity10(), buf[:8])
		if err2 != nil {
			return fmt.Errorf("LUN %d: READ CAPACITY: %w", l.number, err)
		}
		if c, err2 = scsi.ParseReadCapacity10(buf[:n]); err2 != nil {
			return fmt.Errorf("LUN %d: READ CAPACITY: %w", l.number, err2)
		}
	}
	if c.BlockLength < 512 || c.BlockLength > 1<<20 || c.BlockLength&(c.BlockLength-1) != 0 {
		return fmt.Errorf("LUN %d: unsupported block size %d", l.number, c.BlockLength)
	}
	l.Capacity = c
	l.bs = int(c.BlockLength)
	l.size = int64(c.Bytes())
	return nil
}

// vpd reads one VPD page when the target lists it (or when page 0 itself).
func (l *LUN) vpd(ctx context.Context, page byte) ([]byte, bool) {
	if page != 0 && len(l.Pages.Pages) > 0 && !l.Pages.Has(page) {
		return nil, false
	}
	if page != 0 && len(l.Pages.Pages) == 0 && page != 0x80 && page != 0x83 {
		return nil, false
	}
	buf := make([]byte, 1024)
	n, err := l.execN(ctx, scsi.Inquiry(true, page, uint16(len(buf))), buf)
	if err != nil {
		l.s.log.WithError(err).Debugf("VPD page %#02x not available", page)
		return nil, false
	}
	return buf[:n], true
}

// Number is the LUN number.
func (l *LUN) Number() uint64 { return l.number }

// Session returns the session the LUN is reached through.
func (l *LUN) Session() *Session { return l.s }

// WWID is the preferred identifier from VPD 0x83 ("naa.6001405...").
func (l *LUN) WWID() string { return l.wwid }

func (l *LUN) Size() int64    { return l.size }
func (l *LUN) BlockSize() int { return l.bs }

// ReadOnly reports the MODE SENSE write-protect bit.
func (l *LUN) ReadOnly() bool { return l.WriteProtect }

// MaxTransfer is the largest single command the handle issues, in bytes.
func (l *LUN) MaxTransfer() int { return l.maxXfer }

// Thin reports logical block provisioning management (LBPME): the target
// answers GET LBA STATUS.
func (l *LUN) Thin() bool { return l.Capacity.LBPME }

// Identity implements blockdev.Identifier.
func (l *LUN) Identity() blockdev.Identity {
	return blockdev.Identity{WWID: l.wwid, Serial: l.Serial, Size: l.size, Block: l.bs}
}

// SetOwnsSession makes Close log the session out as well.
func (l *LUN) SetOwnsSession(own bool) { l.ownsSess = own }

// Close releases the handle (and logs out when it owns the session).
func (l *LUN) Close() error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.ownsSess {
		return l.s.Close()
	}
	return nil
}

// retry policy for statuses that clear by themselves.
const (
	maxUARetries      = 8
	busyBackoffMax    = 200 * time.Millisecond
	defaultBusyBudget = 30 * time.Second
)

// exec runs a CDB with an exact-length transfer.
func (l *LUN) exec(ctx context.Context, cdb []byte, read, write []byte) error {
	resp, err := l.do(ctx, cdb, read, write)
	if err != nil {
		return err
	}
	if read != nil && resp.Received < len(read) {
		return fmt.Errorf("iscsi: short read: %d of %d bytes", resp.Received, len(read))
	}
	return nil
}

// execN runs a CDB whose data-in may be shorter than buf (INQUIRY, ...),
// returning the bytes received.
func (l *LUN) execN(ctx context.Context, cdb []byte, buf []byte) (int, error) {
	resp, err := l.do(ctx, cdb, buf, nil)
	if err != nil {
		return 0, err
	}
	return min(resp.Received, len(buf)), nil
}

// do runs one command, retrying UNIT ATTENTION (absorbed), BUSY, TASK SET
// FULL and TASK ABORTED (with backoff, for at most the command timeout) and
// NOT READY "becoming ready" (for at most NotReadyWait), and maps the rest
// to errors that wrap both the SCSI sense and the blockdev sentinel. A sense
// that may mean another disk (scsi.IsIdentityChange) is retried only after
// gate has identified the LU again.
func (l *LUN) do(ctx context.Context, cdb []byte, read, write []byte) (Response, error) {
	return l.doAttr(ctx, pdu.AttrSimple, cdb, read, write)
}

// doAttr is do with a task attribute.
func (l *LUN) doAttr(ctx context.Context, attr pdu.TaskAttr, cdb []byte, read, write []byte) (Response, error) {
	backoff := time.Millisecond
	var notReadySince, busySince time.Time
	busyTries := 0
	for attempt := 0; ; attempt++ {
		if !l.probe {
			if err := l.gate(ctx); err != nil {
				return Response{}, err
			}
		}
		resp, err := l.s.Do(ctx, &Command{LUN: l.field, CDB: cdb, Read: read, Write: write, Attr: attr})
		if err != nil {
			return resp, err
		}
		st := scsi.Status(resp.Status)
		if st.OK() {
			return resp, nil
		}
		serr := statusError(st, resp.Sense)
		wait := backoff
		if !l.probe && scsi.IsIdentityChange(serr) && attempt < maxUARetries {
			// Possibly another disk now: the retry waits in gate until
			// the LU is identified again.
			l.suspect(serr)
		}
		switch {
		case scsi.IsUnitAttention(serr) && attempt < maxUARetries:
			l.s.log.WithField("lun", l.number).Debugf("absorbed %v", serr)
			if f := l.s.cfg.OnUnitAttention; f != nil {
				f(l.number, serr)
			}
			continue
		case !l.probe && scsi.IsIdentityChange(serr) && attempt < maxUARetries:
			continue // LOGICAL UNIT NOT SUPPORTED: retried after the check
		case st == scsi.StatusBusy || st == scsi.StatusTaskSetFull || st == scsi.StatusTaskAborted:
			// Try again later: the device is fine but did not do the
			// command (TASK ABORTED: another I_T nexus's reset or PREEMPT
			// AND ABORT with TAS=1). Linux requeues all three, bounded by
			// the command's timeout; so do we.
			busyTries++
			if busySince.IsZero() {
				busySince = time.Now()
			}
			budget := l.busyBudget()
			left := budget - time.Since(busySince)
			if left <= 0 {
				return resp, &wrapped{sentinel: blockdev.ErrBusy,
					err: fmt.Errorf("iscsi: LUN %d: %w on %d attempts over %v (retry budget %v)",
						l.number, serr, busyTries, time.Since(busySince).Round(time.Millisecond), budget)}
			}
			wait = min(wait, left)
		case scsi.IsRetryable(serr) && !scsi.IsUnitAttention(serr):
			if notReadySince.IsZero() {
				notReadySince = time.Now()
			}
			if time.Since(notReadySince) > l.s.cfg.NotReadyWait {
				return resp, mapSense(serr)
			}
		default:
			return resp, mapSense(serr)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return resp, ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, busyBackoffMax)
	}
}

// busyBudget bounds how long one command is retried while the LU answers
// BUSY, TASK SET FULL or TASK ABORTED: the command timeout, the bound Linux
// puts on a requeued command, or its 30 s default when the timeout is
// disabled, so a LUN that answers BUSY forever still fails the request.
func (l *LUN) busyBudget() time.Duration {
	if d := l.s.cfg.CommandTimeout; d > 0 {
		return d
	}
	return defaultBusyBudget
}

func statusError(st scsi.Status, sense []byte) error {
	if st == scsi.StatusCheckCondition && len(sense) > 0 {
		if s, err := scsi.ParseSense(sense); err == nil {
			e := s.AsError()
			e.Status = st
			return e
		}
	}
	return &scsi.SenseError{Status: st}
}

// mapSense wraps a SCSI error with the blockdev sentinel the bridges map to
// errno or NBD errors.
func mapSense(err error) error {
	var sentinel error
	switch {
	case scsi.IsWriteProtect(err):
		sentinel = blockdev.ErrReadOnly
	case scsi.IsNoSpace(err):
		sentinel = blockdev.ErrNoSpace
	case scsi.IsOutOfRange(err):
		sentinel = blockdev.ErrOutOfRange
	case scsi.IsMedium(err):
		sentinel = blockdev.ErrMedium
	case scsi.IsUnsupported(err):
		sentinel = blockdev.ErrNotSupported
	default:
		return err
	}
	return &wrapped{sentinel: sentinel, err: err}
}

type wrapped struct{ sentinel, err error }

func (w *wrapped) Error() string   { return w.err.Error() }
func (w *wrapped) Unwrap() []error { return []error{w.err, w.sentinel} }

func (l *LUN) check(off, n int64) error {
	l.closeMu.Lock()
	closed := l.closed
	l.closeMu.Unlock()
	if closed {
		return blockdev.ErrClosed
	}
	if err := blockdev.CheckRange(l, off, n); err != nil {
		return fmt.Errorf("%w (offset %d, length %d, LUN of %d bytes in %d-byte blocks)", err, off, n, l.size, l.bs)
	}
	return nil
}

// ReadAt reads len(p) bytes at off, split into commands of at most
// MaxTransfer bytes that run in parallel.
func (l *LUN) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := l.check(off, int64(len(p))); err != nil {
		return err
	}
	return l.split(ctx, p, off, func(ctx context.Context, b []byte, o int64) error {
		var cdb [16]byte
		c := scsi.AppendReadCDB(cdb[:0], uint64(o/int64(l.bs)), uint32(len(b)/l.bs), false)
		return l.exec(ctx, c, b, nil)
	})
}

// WriteAt writes p at off; with fua the data is durable on return.
func (l *LUN) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := l.check(off, int64(len(p))); err != nil {
		return err
	}
	if l.WriteProtect {
		return fmt.Errorf("%w: LUN %d is write-protected", blockdev.ErrReadOnly, l.number)
	}
	return l.split(ctx, p, off, func(ctx context.Context, b []byte, o int64) error {
		var cdb [16]byte
		lba, n := uint64(o/int64(l.bs)), uint32(len(b)/l.bs)
		c := scsi.AppendWriteCDB(cdb[:0], lba, n, fua && l.dpofua)
		if err := l.exec(ctx, c, nil, b); err != nil || !fua || l.dpofua {
			return err
		}
		// The LU does not advertise FUA (LIO refuses it unless its write
		// cache is on): write, then synchronize that range.
		return l.syncRange(ctx, lba, n)
	})
}

func (l *LUN) split(ctx context.Context, p []byte, off int64, fn func(context.Context, []byte, int64) error) error {
	if len(p) <= l.maxXfer {
		if len(p) == 0 {
			return nil
		}
		return fn(ctx, p, off)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := 0; i < len(p); i += l.maxXfer {
		end := min(i+l.maxXfer, len(p))
		wg.Add(1)
		go func(b []byte, o int64) {
			defer wg.Done()
			if err := fn(ctx, b, o); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}(p[i:end], off+int64(i))
	}
	wg.Wait()
	return first
}

// Flush sends SYNCHRONIZE CACHE for the whole medium.
func (l *LUN) Flush(ctx context.Context) error {
	var cdb []byte
	if l.Capacity.Blocks() > 0xffffffff {
		cdb = scsi.SynchronizeCache16(0, 0)
	} else {
		cdb = scsi.SynchronizeCache10(0, 0)
	}
	err := l.exec(ctx, cdb, nil, nil)
	if errors.Is(err, blockdev.ErrNotSupported) {
		return nil // no volatile cache to flush
	}
	return err
}

// syncRange sends SYNCHRONIZE CACHE for blocks [lba, lba+n).
func (l *LUN) syncRange(ctx context.Context, lba uint64, n uint32) error {
	var cdb []byte
	if lba+uint64(n) > 0xffffffff || n > 0xffff {
		cdb = scsi.SynchronizeCache16(lba, n)
	} else {
		cdb = scsi.SynchronizeCache10(uint32(lba), uint16(n))
	}
	err := l.exec(ctx, cdb, nil, nil)
	if errors.Is(err, blockdev.ErrNotSupported) {
		return nil // no volatile cache
	}
	return err
}

// Trim deallocates [off, off+n) with UNMAP, within the target's limits.
func (l *LUN) Trim(ctx context.Context, off, n int64) error {
	if err := l.check(off, n); err != nil {
		return err
	}
	if l.WriteProtect {
		return blockdev.ErrReadOnly
	}
	if l.HasProv && !l.Provisioning.LBPU {
		return fmt.Errorf("%w: the LUN does not support UNMAP", blockdev.ErrNotSupported)
	}
	bs := int64(l.bs)
	lba, blocks := uint64(off/bs), uint64(n/bs)
	maxCount := uint64(0xffffffff)
	maxDesc := 64
	if l.HasLimits {
		if l.Limits.MaxUnmapLBACount > 0 && l.Limits.MaxUnmapLBACount != 0xffffffff {
			maxCount = uint64(l.Limits.MaxUnmapLBACount)
		}
		if c := l.Limits.MaxUnmapDescriptorCount; c > 0 && c < uint32(maxDesc) {
			maxDesc = int(c)
		}
	}
	for blocks > 0 {
		var descs []scsi.UnmapDescriptor
		var total uint64
		for len(descs) < maxDesc && blocks > 0 && total < maxCount {
			c := min(blocks, maxCount-total, 0xffffffff)
			descs = append(descs, scsi.UnmapDescriptor{LBA: lba, Blocks: uint32(c)})
			lba += c
			blocks -= c
			total += c
		}
		params := scsi.UnmapParameterList(descs)
		if err := l.exec(ctx, scsi.Unmap(uint16(len(params))), nil, params); err != nil {
			return err
		}
	}
	return nil
}

// WriteZeroes zeroes [off, off+n) with WRITE SAME(16) of a zero block,
// falling back to writing zero buffers. UNMAP is set only when mayTrim, the
// LUN supports it (LBPWS) and unmapped blocks read as zeros (LBPRZ bit 0),
// as Linux's sd does: elsewhere unmapped blocks may read back non-zero.
func (l *LUN) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	if err := l.check(off, n); err != nil {
		return err
	}
	if l.WriteProtect {
		return blockdev.ErrReadOnly
	}
	bs := int64(l.bs)
	unmap := mayTrim && l.HasProv && l.Provisioning.LBPWS && l.unmappedReadZero()
	maxBlocks := uint64(1 << 16)
	if l.HasLimits && l.Limits.MaxWriteSameLength > 0 {
		maxBlocks = min(l.Limits.MaxWriteSameLength, 0xffffffff)
	}
	zero := make([]byte, l.bs)
	lba, blocks := uint64(off/bs), uint64(n/bs)
	for blocks > 0 {
		c := min(blocks, maxBlocks)
		err := l.exec(ctx, scsi.WriteSame16(lba, uint32(c), unmap, false, false), nil, zero)
		if errors.Is(err, blockdev.ErrNotSupported) {
			return l.writeZeroBuffers(ctx, int64(lba)*bs, int64(blocks)*bs)
		}
		if err != nil {
			return err
		}
		lba += c
		blocks -= c
	}
	return nil
}

func (l *LUN) writeZeroBuffers(ctx context.Context, off, n int64) error {
	chunk := int64(min(l.maxXfer, 1<<20))
	zero := make([]byte, chunk)
	for n > 0 {
		k := min(n, chunk)
		if err := l.WriteAt(ctx, zero[:k], off, false); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// unmappedReadZero reports whether unmapped blocks read back as zeros:
// LBPRZ bit 0 of VPD page B2, or READ CAPACITY(16)'s LBPRZ bit (which SBC-4
// sets from that same bit). LBPRZ=010b (an initialization pattern) is not.
func (l *LUN) unmappedReadZero() bool {
	return (l.HasProv && l.Provisioning.UnmappedReadZero()) || l.Capacity.LBPRZ
}

// Extents reports allocation from GET LBA STATUS on thin LUNs; on thick
// LUNs the whole range is data.
func (l *LUN) Extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error) {
	if err := l.check(off, n); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, blockdev.ErrInvalid
	}
	if !l.Capacity.LBPME {
		return []blockdev.Extent{{Offset: off, Length: n}}, nil
	}
	bs := int64(l.bs)
	buf := make([]byte, 8+16*256)
	got, err := l.execN(ctx, scsi.GetLBAStatus(uint64(off/bs), uint32(len(buf))), buf)
	if err != nil {
		if errors.Is(err, blockdev.ErrNotSupported) {
			return []blockdev.Extent{{Offset: off, Length: n}}, nil
		}
		return nil, err
	}
	data, err := scsi.ParseLBAStatus(buf[:got])
	if err != nil {
		return nil, err
	}
	end := off + n
	var out []blockdev.Extent
	pos := off
	for _, d := range data.Descriptors {
		ds, de := int64(d.LBA)*bs, int64(d.LBA+uint64(d.Blocks))*bs
		if de <= pos || d.Blocks == 0 {
			continue
		}
		if ds > pos {
			break // a gap: stop; the caller asks again from pos
		}
		e := min(de, end)
		var f blockdev.ExtentFlags
		if d.Hole() {
			f = blockdev.ExtentHole
			if l.unmappedReadZero() {
				f |= blockdev.ExtentZero
			}
		}
		if k := len(out) - 1; k >= 0 && out[k].Flags == f {
			out[k].Length += e - pos
		} else {
			out = append(out, blockdev.Extent{Offset: pos, Length: e - pos, Flags: f})
		}
		pos = e
		if pos >= end {
			break
		}
	}
	if len(out) == 0 {
		// Nothing usable reported: data is the safe answer.
		out = []blockdev.Extent{{Offset: off, Length: min(n, int64(l.maxXfer))}}
	}
	return out, nil
}
