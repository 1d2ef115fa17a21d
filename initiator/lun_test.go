package initiator_test

// LUN handle behaviour against the scripted fake target: retry policy for
// statuses that clear by themselves, provisioning (GET LBA STATUS, WRITE
// SAME) and identity checks inside a session.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockcopy"
	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

const statusTaskAborted = 0x40

// countingHook answers the first n commands with opcode op with status st
// (n < 0: all of them) and counts every command with that opcode.
type countingHook struct {
	mu    sync.Mutex
	op    byte
	st    uint8
	n     int
	count int
}

func (h *countingHook) hook(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
	if cmd.CDB[0] != h.op {
		return false
	}
	h.mu.Lock()
	h.count++
	answer := h.n < 0 || h.count <= h.n
	h.mu.Unlock()
	if !answer {
		return false
	}
	c.SendStatus(cmd.ITT, h.st, nil)
	return true
}

func (h *countingHook) seen() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count
}

// Review #8: TASK ABORTED (another nexus's LUN reset with TAS=1) means the
// command was not done, not that it failed: it is sent again.
func TestLUNTaskAbortedRetried(t *testing.T) {
	h := &countingHook{op: 0x2a, st: statusTaskAborted, n: 1}
	e := newEnv(t, faketarget.Config{OnCommand: h.hook}, nil)
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := lun.WriteAt(e.ctx, make([]byte, 512), 0, false); err != nil {
		t.Fatalf("WriteAt after one TASK ABORTED: %v", err)
	}
	if got := h.seen(); got != 2 {
		t.Errorf("%d WRITEs sent, want 2 (the aborted one again)", got)
	}
	e.noViolations()
}

// Review #13: BUSY, TASK SET FULL and TASK ABORTED are retried for at most
// the command timeout, then the command fails with an error that is both
// blockdev.ErrBusy (EIO at the edges) and the SCSI status.
func TestLUNTryAgainBounded(t *testing.T) {
	for _, st := range []uint8{faketarget.StatusBusy, faketarget.StatusTaskSetFull, statusTaskAborted} {
		t.Run(scsi.Status(st).String(), func(t *testing.T) {
			h := &countingHook{op: 0x2a, st: st, n: -1}
			const budget = 400 * time.Millisecond
			e := newEnv(t, faketarget.Config{OnCommand: h.hook}, func(c *initiator.Config) { c.CommandTimeout = budget })
			lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			err = lun.WriteAt(e.ctx, make([]byte, 512), 0, false)
			took := time.Since(t0)
			if !errors.Is(err, blockdev.ErrBusy) {
				t.Fatalf("WriteAt against a LUN answering %v forever: %v, want ErrBusy", scsi.Status(st), err)
			}
			var se *scsi.SenseError
			if !errors.As(err, &se) || se.Status != scsi.Status(st) {
				t.Errorf("error %v does not carry the SCSI status %v", err, scsi.Status(st))
			}
			if took < budget || took > budget+time.Second {
				t.Errorf("failed after %v, want about the command timeout %v", took, budget)
			}
			if h.seen() < 3 {
				t.Errorf("only %d attempts", h.seen())
			}
			t.Logf("after %v: %v", took.Round(time.Millisecond), err)
			e.noViolations()
		})
	}
}

// thin makes a fake target's LUN 0 (2048 blocks of 512 bytes) thin
// provisioned: READ CAPACITY(16) with LBPME (and LBPRZ when lbprz bit 0 is
// set), VPD B2 with the 3-bit LBPRZ field, GET LBA STATUS answered with
// descs, and every WRITE SAME(16) CDB recorded (answered GOOD).
type thin struct {
	lbprz byte
	descs []scsi.LBAStatus

	mu        sync.Mutex
	writeSame [][]byte
}

func (th *thin) hook(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
	cdb := cmd.CDB[:]
	be := binary.BigEndian
	switch {
	case cdb[0] == 0x9e && cdb[1]&0x1f == 0x10: // READ CAPACITY(16)
		b := make([]byte, 32)
		be.PutUint64(b, 2047)
		be.PutUint32(b[8:], 512)
		b[14] = 0x80 // LBPME
		if th.lbprz&1 != 0 {
			b[14] |= 0x40
		}
		c.DataIn(cmd, b[:min(32, int(be.Uint32(cdb[10:])))])
	case cdb[0] == 0x9e && cdb[1]&0x1f == 0x12: // GET LBA STATUS
		b := make([]byte, 8, 8+16*len(th.descs))
		for _, d := range th.descs {
			var x [16]byte
			be.PutUint64(x[:], d.LBA)
			be.PutUint32(x[8:], d.Blocks)
			x[12] = d.Status
			b = append(b, x[:]...)
		}
		be.PutUint32(b, uint32(len(b)-4))
		c.DataIn(cmd, b[:min(len(b), int(be.Uint32(cdb[10:])))])
	case cdb[0] == 0x12 && cdb[1]&1 != 0 && (cdb[2] == 0x00 || cdb[2] == 0xb2):
		b := []byte{0, 0x00, 0, 5, 0x00, 0x80, 0x83, 0xb0, 0xb2}
		if cdb[2] == 0xb2 {
			// LBPU, LBPWS, LBPRZ field, provisioning type thin.
			b = []byte{0, 0xb2, 0, 4, 0, 0x80 | 0x40 | th.lbprz<<2, 0x02, 0}
		}
		c.DataIn(cmd, b[:min(len(b), int(be.Uint16(cdb[3:])))])
	case cdb[0] == 0x93: // WRITE SAME(16)
		th.mu.Lock()
		th.writeSame = append(th.writeSame, append([]byte(nil), cdb...))
		th.mu.Unlock()
		c.SendStatus(cmd.ITT, faketarget.StatusGood, nil)
	default:
		return false
	}
	return true
}

// Review #5: SBC-4's provisioning status 3 (mapped) and 4 (unknown), like
// 0, are data even with LBPRZ; only 1 and 2 are holes. A backup that took
// them for zero holes lost the data there.
func TestLUNExtentsProvisioningStatus(t *testing.T) {
	th := &thin{lbprz: 1, descs: []scsi.LBAStatus{
		{LBA: 0, Blocks: 16, Status: scsi.LBAMappedOnly},
		{LBA: 16, Blocks: 16, Status: scsi.LBAUnknown},
		{LBA: 32, Blocks: 16, Status: scsi.LBAMapped},
		{LBA: 48, Blocks: 16, Status: 7}, // not defined yet: data
		{LBA: 64, Blocks: 64, Status: scsi.LBADeallocated},
		{LBA: 128, Blocks: 1920, Status: scsi.LBAAnchored},
	}}
	e := newEnv(t, faketarget.Config{OnCommand: th.hook}, nil)
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !lun.Thin() {
		t.Fatal("LUN not thin: the fake target's READ CAPACITY(16) hook did not take")
	}
	data := make([]byte, 64*512)
	for i := range data {
		data[i] = byte(i%251) + 1
	}
	if err := lun.WriteAt(e.ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	got, err := lun.Extents(e.ctx, 0, lun.Size())
	if err != nil {
		t.Fatal(err)
	}
	want := []blockdev.Extent{
		{Offset: 0, Length: 64 * 512},
		{Offset: 64 * 512, Length: lun.Size() - 64*512, Flags: blockdev.ExtentHole | blockdev.ExtentZero},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("extents %+v, want %+v", got, want)
	}
	// A copy of the LUN equals the LUN.
	f, err := os.Create(filepath.Join(t.TempDir(), "pull.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := blockcopy.ToFile(e.ctx, lun, f, blockcopy.Options{}); err != nil {
		t.Fatal(err)
	}
	img := make([]byte, len(data))
	if _, err := f.ReadAt(img, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img, data) {
		t.Fatal("the pulled image differs from the LUN where GET LBA STATUS said mapped or unknown")
	}
	e.noViolations()
}

// Review #5: LBPRZ=010b (provisioning initialization pattern) does not
// promise zeros: a deallocated extent is a hole but not known zero.
func TestLUNExtentsPatternIsNotZero(t *testing.T) {
	th := &thin{lbprz: 2, descs: []scsi.LBAStatus{{LBA: 0, Blocks: 2048, Status: scsi.LBADeallocated}}}
	e := newEnv(t, faketarget.Config{OnCommand: th.hook}, nil)
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := lun.Extents(e.ctx, 0, lun.Size())
	if err != nil {
		t.Fatal(err)
	}
	want := []blockdev.Extent{{Offset: 0, Length: lun.Size(), Flags: blockdev.ExtentHole}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("extents %+v, want %+v (a hole, not zero)", got, want)
	}
	e.noViolations()
}

// Review #16: WRITE SAME(16) sets UNMAP only when unmapped blocks read as
// zeros (LBPRZ bit 0); otherwise it writes the zero block.
func TestLUNWriteZeroesUnmapNeedsLBPRZ(t *testing.T) {
	for _, tc := range []struct {
		lbprz     byte
		mayTrim   bool
		wantUnmap bool
	}{
		{lbprz: 1, mayTrim: true, wantUnmap: true},
		{lbprz: 1, mayTrim: false, wantUnmap: false},
		{lbprz: 0, mayTrim: true, wantUnmap: false},
		{lbprz: 2, mayTrim: true, wantUnmap: false}, // initialization pattern
	} {
		th := &thin{lbprz: tc.lbprz}
		e := newEnv(t, faketarget.Config{OnCommand: th.hook}, nil)
		lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := lun.WriteZeroes(e.ctx, 4096, 8192, tc.mayTrim); err != nil {
			t.Fatal(err)
		}
		th.mu.Lock()
		cdbs := th.writeSame
		th.mu.Unlock()
		if len(cdbs) != 1 {
			t.Fatalf("LBPRZ %03b: %d WRITE SAME(16) sent, want 1", tc.lbprz, len(cdbs))
		}
		c := cdbs[0]
		if unmap := c[1]&0x08 != 0; unmap != tc.wantUnmap {
			t.Errorf("LBPRZ %03b mayTrim %v: WRITE SAME(16) UNMAP=%v, want %v (CDB % x)", tc.lbprz, tc.mayTrim, unmap, tc.wantUnmap, c)
		}
		if c[1]&0x01 != 0 || binary.BigEndian.Uint64(c[2:]) != 8 || binary.BigEndian.Uint32(c[10:]) != 16 {
			t.Errorf("CDB % x: want LBA 8, 16 blocks, NDOB 0", c)
		}
		e.noViolations()
	}
}

// idScript scripts identity changes on the fake target's LUN 0: ua, when
// set, answers the next READ or WRITE with that sense (once); serial, when
// set, replaces VPD 0x80's serial; hold, when set, keeps VPD 0x80 answers
// until it is closed. It counts READs and WRITEs that reached the disk.
type idScript struct {
	mu     sync.Mutex
	ua     []byte
	serial string
	hold   chan struct{}
	held   chan struct{} // receives when a VPD 0x80 request is being held
	writes int
	reads  int
	blocks uint64 // when set, READ CAPACITY(16) reports this many blocks
}

func (s *idScript) hook(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
	cdb := cmd.CDB[:]
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case cdb[0] == 0x28 || cdb[0] == 0x2a:
		if s.ua != nil {
			sense := s.ua
			s.ua = nil
			c.SendStatus(cmd.ITT, faketarget.StatusCheckCondition, sense)
			return true
		}
		if cdb[0] == 0x2a {
			s.writes++
		} else {
			s.reads++
		}
	case cdb[0] == 0x9e && cdb[1]&0x1f == 0x10 && s.blocks != 0:
		b := make([]byte, 32)
		binary.BigEndian.PutUint64(b, s.blocks-1)
		binary.BigEndian.PutUint32(b[8:], 512)
		c.DataIn(cmd, b[:min(32, int(binary.BigEndian.Uint32(cdb[10:])))])
		return true
	case cdb[0] == 0x12 && cdb[1]&1 != 0 && cdb[2] == 0x80 && s.serial != "":
		b := append([]byte{0, 0x80, 0, byte(len(s.serial))}, s.serial...)
		if hold := s.hold; hold != nil {
			go func() {
				s.held <- struct{}{}
				<-hold
				c.DataIn(cmd, b)
			}()
			return true
		}
		c.DataIn(cmd, b)
		return true
	}
	return false
}

func (s *idScript) set(f func(s *idScript)) {
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

func (s *idScript) counts() (reads, writes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads, s.writes
}

// Issue item 15: inside a session, a UNIT ATTENTION that can mean another
// disk behind the LUN number (here REPORTED LUNS DATA HAS CHANGED, 3F/0E)
// makes the handle identify the LU again before any further I/O; another
// serial fails the write without sending it, and every later command, as a
// failed check after a reconnect does.
func TestLUNIdentityChangedInSession(t *testing.T) {
	for _, path := range []string{"blocking", "nonblocking"} {
		t.Run(path, func(t *testing.T) {
			sc := &idScript{}
			e := newEnv(t, faketarget.Config{OnCommand: sc.hook}, nil)
			lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			if err := lun.WriteAt(e.ctx, buf, 0, false); err != nil {
				t.Fatal(err)
			}
			sc.set(func(s *idScript) { s.ua, s.serial = faketarget.Sense(0x06, 0x3f, 0x0e), "OTHERDISK0001" })
			if path == "blocking" {
				err = lun.WriteAt(e.ctx, buf, 4096, false)
			} else {
				done := make(chan error, 1)
				lun.StartWriteAt(buf, 4096, false, func(err error) { done <- err })
				select {
				case err = <-done:
				case <-e.ctx.Done():
					t.Fatal("StartWriteAt never completed")
				}
			}
			if !errors.Is(err, initiator.ErrLUNChanged) || !strings.Contains(err.Error(), "different disk") {
				t.Fatalf("write after 3F/0E with another serial behind the LUN: %v, want ErrLUNChanged", err)
			}
			t.Logf("refused: %v", err)
			if _, w := sc.counts(); w != 1 {
				t.Errorf("%d WRITEs reached the disk, want 1 (the one before the change)", w)
			}
			// Every later command fails the same way, on this LUN and on
			// the session.
			if err := lun.ReadAt(e.ctx, buf, 0); !errors.Is(err, initiator.ErrLUNChanged) {
				t.Errorf("read after the refusal: %v, want ErrLUNChanged", err)
			}
			if _, err := e.s.Do(e.ctx, read10(0, 1)); !errors.Is(err, initiator.ErrLUNChanged) {
				t.Errorf("session command after the refusal: %v, want ErrLUNChanged", err)
			}
			if r, w := sc.counts(); w != 1 || r != 0 {
				t.Errorf("%d READs, %d WRITEs reached the disk after the refusal", r, w-1)
			}
			e.noViolations()
		})
	}
}

// The same disk after a reset (29/00), or grown (2A/09), carries on: the
// write is sent again after the check.
func TestLUNIdentitySameDiskContinues(t *testing.T) {
	for _, ua := range [][]byte{faketarget.Sense(0x06, 0x29, 0x00), faketarget.Sense(0x06, 0x2a, 0x09), faketarget.Sense(0x05, 0x25, 0x00)} {
		sc := &idScript{}
		e := newEnv(t, faketarget.Config{OnCommand: sc.hook}, nil)
		lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
		if err != nil {
			t.Fatal(err)
		}
		inquiries := func() int { return len(vpdRequests(e.c, 0x80)) }
		before := inquiries()
		sc.set(func(s *idScript) { s.ua = ua })
		if err := lun.WriteAt(e.ctx, make([]byte, 4096), 0, false); err != nil {
			t.Fatalf("write after sense %x on the same disk: %v", ua[12:14], err)
		}
		if inquiries() == before {
			t.Errorf("sense %x: the LU was not identified again", ua[12:14])
		}
		if _, w := sc.counts(); w != 1 {
			t.Errorf("sense %x: %d WRITEs reached the disk, want 1", ua[12:14], w)
		}
		e.noViolations()
	}
}

// While the LU is being identified again, other I/O waits: a write issued
// meanwhile must not reach what may be another disk.
func TestLUNIdentityCheckHoldsOtherIO(t *testing.T) {
	sc := &idScript{held: make(chan struct{}, 4)}
	e := newEnv(t, faketarget.Config{OnCommand: sc.hook}, nil)
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var once sync.Once
	unhold := func() { once.Do(func() { close(release) }) }
	defer unhold() // a failing test must not leave the held answer behind
	sc.set(func(s *idScript) {
		s.ua, s.serial, s.hold = faketarget.Sense(0x06, 0x29, 0x00), "OTHERDISK0002", release
	})
	first := make(chan error, 1)
	go func() { first <- lun.WriteAt(e.ctx, make([]byte, 512), 0, false) }()
	select {
	case <-sc.held: // the check is under way
	case <-e.ctx.Done():
		t.Fatal("the LU was not identified again")
	}
	var others []chan error
	for i := 0; i < 3; i++ {
		ch := make(chan error, 1)
		others = append(others, ch)
		if i == 2 {
			lun.StartWriteAt(make([]byte, 512), 8192, false, func(err error) { ch <- err })
			continue
		}
		go func(off int64) { ch <- lun.WriteAt(e.ctx, make([]byte, 512), off, false) }(int64(i+1) * 4096)
	}
	time.Sleep(200 * time.Millisecond)
	if _, w := sc.counts(); w != 0 {
		t.Fatalf("%d WRITEs reached the disk while its identity was being checked", w)
	}
	unhold()
	for i, ch := range append(others, first) {
		select {
		case err := <-ch:
			if !errors.Is(err, initiator.ErrLUNChanged) {
				t.Errorf("write %d: %v, want ErrLUNChanged", i, err)
			}
		case <-e.ctx.Done():
			t.Fatalf("write %d never completed", i)
		}
	}
	if _, w := sc.counts(); w != 0 {
		t.Errorf("%d WRITEs reached the other disk", w)
	}
	e.noViolations()
}

// vpdRequests returns the INQUIRY commands for VPD page that c received.
func vpdRequests(c *faketarget.Conn, page byte) []*pdu.SCSICommand {
	var out []*pdu.SCSICommand
	for _, r := range ofOpcode(c.Received(), pdu.OpSCSICommand) {
		if q := r.PDU.(*pdu.SCSICommand); q.CDB[0] == 0x12 && q.CDB[1]&1 != 0 && q.CDB[2] == page {
			out = append(out, q)
		}
	}
	return out
}

// A LUN that reports another capacity after CAPACITY DATA HAS CHANGED is
// refused, growth included: on tgtd serial and WWID come from the target
// and LUN numbers, so size may be all that tells two disks apart.
func TestLUNIdentityCapacityChangeRefused(t *testing.T) {
	sc := &idScript{}
	e := newEnv(t, faketarget.Config{OnCommand: sc.hook}, nil)
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	sc.set(func(s *idScript) { s.ua, s.blocks = faketarget.Sense(0x06, 0x2a, 0x09), 4096 })
	err = lun.WriteAt(e.ctx, make([]byte, 4096), 0, false)
	if !errors.Is(err, initiator.ErrLUNChanged) || !strings.Contains(err.Error(), "size 1048576→2097152") {
		t.Fatalf("write after the LUN grew: %v, want ErrLUNChanged naming the sizes", err)
	}
	if _, w := sc.counts(); w != 0 {
		t.Errorf("%d WRITEs reached the disk", w)
	}
	e.noViolations()
}
