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
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockcopy"
	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/faketarget"
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
