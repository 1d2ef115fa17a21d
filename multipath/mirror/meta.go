package mirror

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

const (
	magic       = "LBMIRR01"
	version     = 1
	hdrCRCLen   = 512
	flagClean   = 1 << 0
	flagSplit   = 1 << 1 // this leg was split off (Split): a frozen image
	ownerActive = 1 << 0 // owner state word at header offset 328
	maxLegs     = 2
	wwidLen     = 64
	minLegBytes = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors returned by Create, Assemble and Reattach.
var (
	ErrNoMetadata   = errors.New("mirror: no valid mirror metadata on the leg")
	ErrSplitBrain   = errors.New("mirror: split brain: both legs were written without each other")
	ErrMismatch     = errors.New("mirror: legs belong to different mirrors")
	ErrNotInSync    = errors.New("mirror: leg does not hold a consistent copy")
	ErrLastLeg      = errors.New("mirror: refusing to fail the last in-sync leg")
	ErrTooSmall     = errors.New("mirror: leg too small")
	ErrHasMetadata  = errors.New("mirror: leg already holds mirror metadata")
	errMetaChecksum = errors.New("mirror: metadata checksum mismatch")
)

// UUID is a random 128-bit identifier.
type UUID [16]byte

func newUUID() UUID {
	var u UUID
	rand.Read(u[:])
	return u
}

func randID() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) | 1
}

func (u UUID) String() string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// MarshalText makes a UUID print as a string in JSON.
func (u UUID) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// layout is where the metadata sits on one leg.
type layout struct {
	unit        int64
	bitmapBytes int64
	legSize     int64
}

func (l layout) headerOff(slot int) int64 {
	end := l.legSize / l.unit * l.unit
	return end - int64(2-slot)*l.unit
}
func (l layout) bitmapOff(slot int) int64 {
	return l.headerOff(0) - int64(2-slot)*l.bitmapBytes
}
func (l layout) metaStart() int64 { return l.bitmapOff(0) }

func alignUp(v, a int64) int64   { return (v + a - 1) / a * a }
func alignDown(v, a int64) int64 { return v / a * a }

// geometry computes the shared geometry for legs of the given sizes.
func geometry(minLeg int64, bs int, chunk int64) (unit, bitmapBytes, exported int64, err error) {
	unit = max(4096, int64(bs))
	nmax := (minLeg + chunk - 1) / chunk
	bitmapBytes = alignUp((nmax+7)/8, unit)
	exported = alignDown(alignDown(minLeg, unit)-2*unit-2*bitmapBytes, int64(bs))
	if exported < chunk/2 || exported <= 0 {
		return 0, 0, 0, fmt.Errorf("%w: %d bytes leave no room for data with %d-byte chunks", ErrTooSmall, minLeg, chunk)
	}
	return unit, bitmapBytes, exported, nil
}

// header is the decoded superblock of one leg.
type header struct {
	Mirror, Leg, Peer UUID
	Index             int
	Flags             uint32
	LegSize           int64
	Exported          int64
	Chunk             int64
	BlockSize         int
	Unit              int64
	BitmapBytes       int64
	Events            uint64
	Gen, GenID        uint64
	GenTime           int64
	InSync            uint32
	BitmapCRC         uint32
	DroppedGen        uint64
	DroppedGenID      uint64
	Checkpoint        uint64
	ResyncTarget      int32
	Created           int64
	WWID, PeerWWID    string
	Updated           int64
	Owner             Owner // the active assembly, zero when none

	bitmap []uint64 // decoded with the header
	slot   int
}

func putStr(b []byte, s string) {
	copy(b, s)
}
func getStr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func (h *header) encode(unit int64) []byte {
	b := make([]byte, unit)
	le := binary.LittleEndian
	copy(b[0:8], magic)
	le.PutUint32(b[8:], version)
	copy(b[16:32], h.Mirror[:])
	copy(b[32:48], h.Leg[:])
	copy(b[48:64], h.Peer[:])
	le.PutUint32(b[64:], uint32(h.Index))
	le.PutUint32(b[68:], h.Flags)
	le.PutUint64(b[72:], uint64(h.LegSize))
	le.PutUint64(b[80:], uint64(h.Exported))
	le.PutUint64(b[88:], uint64(h.Chunk))
	le.PutUint32(b[96:], uint32(h.BlockSize))
	le.PutUint32(b[100:], uint32(h.Unit))
	le.PutUint64(b[104:], uint64(h.BitmapBytes))
	le.PutUint64(b[112:], h.Events)
	le.PutUint64(b[120:], h.Gen)
	le.PutUint64(b[128:], h.GenID)
	le.PutUint64(b[136:], uint64(h.GenTime))
	le.PutUint32(b[144:], h.InSync)
	le.PutUint32(b[148:], h.BitmapCRC)
	le.PutUint64(b[152:], h.DroppedGen)
	le.PutUint64(b[160:], h.DroppedGenID)
	le.PutUint64(b[168:], h.Checkpoint)
	le.PutUint32(b[176:], uint32(h.ResyncTarget))
	le.PutUint64(b[184:], uint64(h.Created))
	putStr(b[192:192+wwidLen], h.WWID)
	putStr(b[256:256+wwidLen], h.PeerWWID)
	le.PutUint64(b[320:], uint64(h.Updated))
	if o := h.Owner; o.Active {
		le.PutUint32(b[328:], ownerActive)
		le.PutUint32(b[332:], uint32(o.PID))
		le.PutUint64(b[336:], uint64(o.Since))
		le.PutUint64(b[344:], o.Assembly)
		le.PutUint64(b[352:], o.ProcStart)
		putStr(b[360:400], o.BootID)
		putStr(b[400:448], o.HostID)
		putStr(b[448:504], o.Host)
	}
	le.PutUint32(b[12:], crc32.Checksum(b[:hdrCRCLen], castagnoli))
	return b
}

func decodeHeader(b []byte) (*header, error) {
	if len(b) < hdrCRCLen || string(b[0:8]) != magic {
		return nil, ErrNoMetadata
	}
	le := binary.LittleEndian
	want := le.Uint32(b[12:])
	c := make([]byte, hdrCRCLen)
	copy(c, b[:hdrCRCLen])
	le.PutUint32(c[12:], 0)
	if crc32.Checksum(c, castagnoli) != want {
		return nil, errMetaChecksum
	}
	if v := le.Uint32(b[8:]); v != version {
		return nil, fmt.Errorf("mirror: metadata version %d not supported", v)
	}
	h := &header{
		Index:        int(le.Uint32(b[64:])),
		Flags:        le.Uint32(b[68:]),
		LegSize:      int64(le.Uint64(b[72:])),
		Exported:     int64(le.Uint64(b[80:])),
		Chunk:        int64(le.Uint64(b[88:])),
		BlockSize:    int(le.Uint32(b[96:])),
		Unit:         int64(le.Uint32(b[100:])),
		BitmapBytes:  int64(le.Uint64(b[104:])),
		Events:       le.Uint64(b[112:]),
		Gen:          le.Uint64(b[120:]),
		GenID:        le.Uint64(b[128:]),
		GenTime:      int64(le.Uint64(b[136:])),
		InSync:       le.Uint32(b[144:]),
		BitmapCRC:    le.Uint32(b[148:]),
		DroppedGen:   le.Uint64(b[152:]),
		DroppedGenID: le.Uint64(b[160:]),
		Checkpoint:   le.Uint64(b[168:]),
		ResyncTarget: int32(le.Uint32(b[176:])),
		Created:      int64(le.Uint64(b[184:])),
		WWID:         getStr(b[192 : 192+wwidLen]),
		PeerWWID:     getStr(b[256 : 256+wwidLen]),
		Updated:      int64(le.Uint64(b[320:])),
	}
	if le.Uint32(b[328:])&ownerActive != 0 {
		h.Owner = Owner{
			Active: true, PID: int(le.Uint32(b[332:])), Since: int64(le.Uint64(b[336:])),
			Assembly: le.Uint64(b[344:]), ProcStart: le.Uint64(b[352:]),
			BootID: getStr(b[360:400]), HostID: getStr(b[400:448]), Host: getStr(b[448:504]),
		}
	}
	copy(h.Mirror[:], b[16:32])
	copy(h.Leg[:], b[32:48])
	copy(h.Peer[:], b[48:64])
	if h.Index < 0 || h.Index >= maxLegs || h.Chunk <= 0 || h.Unit < 4096 || h.BitmapBytes <= 0 ||
		h.BitmapBytes%h.Unit != 0 || h.Exported <= 0 || h.BlockSize <= 0 || h.Chunk%int64(h.BlockSize) != 0 {
		return nil, fmt.Errorf("mirror: metadata fields out of range")
	}
	return h, nil
}

func (h *header) layout() layout {
	return layout{unit: h.Unit, bitmapBytes: h.BitmapBytes, legSize: h.LegSize}
}

func (h *header) nchunks() int64 { return (h.Exported + h.Chunk - 1) / h.Chunk }

func encodeBitmap(bits []uint64, n int64) []byte {
	b := make([]byte, n)
	for i, w := range bits {
		if int64(i*8+8) > n {
			break
		}
		binary.LittleEndian.PutUint64(b[i*8:], w)
	}
	return b
}

func decodeBitmap(b []byte, nchunks int64) []uint64 {
	bits := make([]uint64, (nchunks+63)/64)
	for i := range bits {
		if int64(i*8+8) <= int64(len(b)) {
			bits[i] = binary.LittleEndian.Uint64(b[i*8:])
		}
	}
	// Mask bits past the last chunk.
	if r := nchunks % 64; r != 0 && len(bits) > 0 {
		bits[len(bits)-1] &= (1 << r) - 1
	}
	return bits
}

// readHeader reads the newest valid metadata slot of a leg.
func readHeader(ctx context.Context, d blockdev.Device) (*header, error) {
	return readNewestSlot(ctx, d, 4096, decodeHeader, ErrNoMetadata, "metadata", "leg")
}

// slotted is what readNewestSlot needs of a decoded metadata header (the
// mirror's header, an async leg's asyncHeader): both keep two slots, each
// a header and a bitmap, at the end of the LUN.
type slotted interface {
	// geometry returns the header's LUN size, metadata unit, bitmap
	// length and CRC, and event counter.
	geometry() (legSize, unit, bitmapBytes int64, bitmapCRC uint32, events uint64)
	layout() layout
	nchunks() int64
	// place records where the header was read and its decoded bitmap.
	place(slot int, bitmap []uint64)
}

func (h *header) geometry() (int64, int64, int64, uint32, uint64) {
	return h.LegSize, h.Unit, h.BitmapBytes, h.BitmapCRC, h.Events
}
func (h *header) place(slot int, bitmap []uint64) { h.slot, h.bitmap = slot, bitmap }

// readNewestSlot reads both slots of d and returns the newest one whose
// header decodes, describes this LUN, and whose bitmap matches its CRC.
// minUnit is the smallest metadata unit; noMeta the error when there is
// none; what and lun name the metadata and the device in errors.
func readNewestSlot[H slotted](ctx context.Context, d blockdev.Device, minUnit int64,
	decode func([]byte) (H, error), noMeta error, what, lun string) (H, error) {
	var zero H
	size := d.Size()
	unit := max(minUnit, int64(d.BlockSize()))
	if size < 2*unit+minLegBytes/2 {
		return zero, noMeta
	}
	l := layout{unit: unit, legSize: size}
	var cands []H
	var slots []int
	var firstErr error
	for slot := 0; slot < 2; slot++ {
		b := make([]byte, unit)
		if err := d.ReadAt(ctx, b, l.headerOff(slot)); err != nil {
			return zero, fmt.Errorf("mirror: read %s header: %w", what, err)
		}
		h, err := decode(b)
		if err != nil {
			if firstErr == nil || errors.Is(firstErr, noMeta) {
				firstErr = err
			}
			continue
		}
		if hs, hu, _, _, _ := h.geometry(); hs != size || hu != unit {
			firstErr = fmt.Errorf("mirror: %s describes a %d-byte %s, the device has %d bytes", what, hs, lun, size)
			continue
		}
		cands, slots = append(cands, h), append(slots, slot)
	}
	if len(cands) == 2 {
		_, _, _, _, e0 := cands[0].geometry()
		_, _, _, _, e1 := cands[1].geometry()
		if e1 > e0 {
			cands[0], cands[1] = cands[1], cands[0]
			slots[0], slots[1] = slots[1], slots[0]
		}
	}
	for i, h := range cands {
		_, _, bmBytes, crc, _ := h.geometry()
		bm := make([]byte, bmBytes)
		if err := d.ReadAt(ctx, bm, h.layout().bitmapOff(slots[i])); err != nil {
			return zero, fmt.Errorf("mirror: read %s bitmap: %w", what, err)
		}
		if crc32.Checksum(bm, castagnoli) != crc {
			firstErr = fmt.Errorf("mirror: %s bitmap of slot %d: %w", what, slots[i], errMetaChecksum)
			continue
		}
		h.place(slots[i], decodeBitmap(bm, h.nchunks()))
		return h, nil
	}
	if firstErr == nil {
		firstErr = noMeta
	}
	if !errors.Is(firstErr, noMeta) {
		firstErr = fmt.Errorf("%w: %v", noMeta, firstErr)
	}
	return zero, firstErr
}

// writeSlot writes h with bitmap bits into the given slot of d, with FUA.
// Bitmap and header go out in parallel: a torn pair fails the header's
// bitmap CRC, so the other slot stays the newest valid one.
func writeSlot(ctx context.Context, d blockdev.Device, h *header, bits []uint64, slot int) error {
	bm := encodeBitmap(bits, h.BitmapBytes)
	h.BitmapCRC = crc32.Checksum(bm, castagnoli)
	hb := h.encode(h.Unit)
	l := h.layout()
	errc := make(chan error, 1)
	go func() { errc <- d.WriteAt(ctx, bm, l.bitmapOff(slot), true) }()
	err1 := d.WriteAt(ctx, hb, l.headerOff(slot), true)
	err2 := <-errc
	return errors.Join(err2, err1)
}

func wwidOf(d blockdev.Device) string {
	if id, ok := d.(blockdev.Identifier); ok {
		s := id.Identity().WWID
		if len(s) > wwidLen {
			s = s[:wwidLen]
		}
		return s
	}
	return ""
}

func legName(i int) string { return string(rune('A' + i)) }

func fmtTime(ns int64) string {
	if ns == 0 {
		return "never"
	}
	return time.Unix(0, ns).Format(time.RFC3339)
}
