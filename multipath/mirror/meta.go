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

// mirrorMeta is the framing of a mirror leg's header (doc.go).
var mirrorMeta = metaFormat{magic: magic, version: version, minUnit: 4096, noMeta: ErrNoMetadata, what: "metadata", lun: "leg"}

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
	b := mirrorMeta.newBlock(unit)
	le := binary.LittleEndian
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
	return sealBlock(b)
}

func decodeHeader(b []byte) (*header, error) {
	if err := mirrorMeta.open(b); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
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
	if h.Index < 0 || h.Index >= maxLegs || !mirrorMeta.geometryOK(h.Chunk, h.Unit, h.BitmapBytes, h.Exported, h.BlockSize) {
		return nil, mirrorMeta.errFields()
	}
	return h, nil
}

func (h *header) layout() layout {
	return layout{unit: h.Unit, bitmapBytes: h.BitmapBytes, legSize: h.LegSize}
}

func (h *header) nchunks() int64 { return (h.Exported + h.Chunk - 1) / h.Chunk }

// readHeader reads the newest valid metadata slot of a leg.
func readHeader(ctx context.Context, d blockdev.Device) (*header, error) {
	return readNewestSlot(ctx, d, mirrorMeta, decodeHeader)
}

func (h *header) geometry() (int64, int64, int64, uint32, uint64) {
	return h.LegSize, h.Unit, h.BitmapBytes, h.BitmapCRC, h.Events
}
func (h *header) place(slot int, bitmap []uint64) { h.slot, h.bitmap = slot, bitmap }

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
