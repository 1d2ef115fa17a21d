package mirror

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"

	"github.com/lunbridge/lunbridge/blockdev"
)

// On-leg metadata of an asynchronous (disaster-recovery) leg (drleg.go).
// It sits at the end of the remote LUN in the layout of a synchronous
// leg's (doc.go): two bitmap slots, then two header slots of one unit each,
// the newest valid slot winning; the data starts at offset 0, so the remote
// alone is a plain image of the primary. The magic differs from a
// synchronous leg's, so neither is ever taken for the other.
//
// Header (little endian, CRC32C over the first 512 bytes with the CRC
// field zeroed):
//
//	0   magic "LBASYNC1"   8   version u32      12  header CRC u32
//	16  async leg UUID [16]                      32  flags u32
//	36  bitmap CRC u32     40  leg size u64     48  exported size u64
//	56  chunk size u64     64  block size u32   68  unit u32
//	72  bitmap bytes u64   80  events u64       88  epoch u64
//	96  sequence u64       104 as-of time i64   112 updated i64
//	120 created i64        128 primary WWID [64] 192 this leg's WWID [64]
//	256 reserved
//
// Flags: bit 0 consistent: the data area is the primary's content after a
// prefix of its acknowledged writes, namely after write `sequence` of
// `epoch` (an epoch starts each time the leg becomes consistent again
// after a resync), acknowledged at `as-of`: the recovery point. Without
// it the leg is being resynced chunk by chunk (pull-ahead, re-add, first
// copy) and holds a mix: it is not usable as a disaster-recovery image,
// like DRBD's Inconsistent. Bit 1 clean: written by a clean Close, and the
// bitmap lists every chunk that may differ from the primary; an assembly
// finding it not clean (the process died) resyncs every chunk.
const (
	asyncMagic       = "LBASYNC1"
	asyncVersion     = 1
	asyncConsistent  = 1 << 0
	asyncClean       = 1 << 1
	asyncDefaultUnit = 4096
)

// asyncMeta is the framing of an async leg's header.
var asyncMeta = metaFormat{magic: asyncMagic, version: asyncVersion, minUnit: asyncDefaultUnit,
	noMeta: ErrAsyncNoMetadata, what: "asynchronous-leg metadata", lun: "LUN"}

// Errors of the asynchronous leg.
var (
	ErrAsyncNoMetadata = errors.New("mirror: no asynchronous-leg metadata on the remote LUN")
	ErrAsyncMismatch   = errors.New("mirror: the remote LUN is the asynchronous leg of another primary")
)

type asyncHeader struct {
	Leg         UUID
	Flags       uint32
	BitmapCRC   uint32
	LegSize     int64
	Exported    int64
	Chunk       int64
	BlockSize   int
	Unit        int64
	BitmapBytes int64
	Events      uint64
	Epoch, Seq  uint64
	AsOf        int64
	Updated     int64
	Created     int64
	PrimaryWWID string
	WWID        string
	bitmap      []uint64
	slot        int
}

func (h *asyncHeader) layout() layout {
	return layout{unit: h.Unit, bitmapBytes: h.BitmapBytes, legSize: h.LegSize}
}

func (h *asyncHeader) nchunks() int64 { return (h.Exported + h.Chunk - 1) / h.Chunk }

func (h *asyncHeader) encode() []byte {
	b := asyncMeta.newBlock(h.Unit)
	le := binary.LittleEndian
	copy(b[16:32], h.Leg[:])
	le.PutUint32(b[32:], h.Flags)
	le.PutUint32(b[36:], h.BitmapCRC)
	le.PutUint64(b[40:], uint64(h.LegSize))
	le.PutUint64(b[48:], uint64(h.Exported))
	le.PutUint64(b[56:], uint64(h.Chunk))
	le.PutUint32(b[64:], uint32(h.BlockSize))
	le.PutUint32(b[68:], uint32(h.Unit))
	le.PutUint64(b[72:], uint64(h.BitmapBytes))
	le.PutUint64(b[80:], h.Events)
	le.PutUint64(b[88:], h.Epoch)
	le.PutUint64(b[96:], h.Seq)
	le.PutUint64(b[104:], uint64(h.AsOf))
	le.PutUint64(b[112:], uint64(h.Updated))
	le.PutUint64(b[120:], uint64(h.Created))
	putStr(b[128:128+wwidLen], h.PrimaryWWID)
	putStr(b[192:192+wwidLen], h.WWID)
	return sealBlock(b)
}

func decodeAsyncHeader(b []byte) (*asyncHeader, error) {
	if err := asyncMeta.open(b); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	h := &asyncHeader{
		Flags: le.Uint32(b[32:]), BitmapCRC: le.Uint32(b[36:]),
		LegSize: int64(le.Uint64(b[40:])), Exported: int64(le.Uint64(b[48:])),
		Chunk: int64(le.Uint64(b[56:])), BlockSize: int(le.Uint32(b[64:])),
		Unit: int64(le.Uint32(b[68:])), BitmapBytes: int64(le.Uint64(b[72:])),
		Events: le.Uint64(b[80:]), Epoch: le.Uint64(b[88:]), Seq: le.Uint64(b[96:]),
		AsOf: int64(le.Uint64(b[104:])), Updated: int64(le.Uint64(b[112:])),
		Created:     int64(le.Uint64(b[120:])),
		PrimaryWWID: getStr(b[128 : 128+wwidLen]), WWID: getStr(b[192 : 192+wwidLen]),
	}
	copy(h.Leg[:], b[16:32])
	if !asyncMeta.geometryOK(h.Chunk, h.Unit, h.BitmapBytes, h.Exported, h.BlockSize) {
		return nil, asyncMeta.errFields()
	}
	return h, nil
}

// readAsyncHeader reads the newest valid metadata slot of an async leg.
func readAsyncHeader(ctx context.Context, d blockdev.Device) (*asyncHeader, error) {
	return readNewestSlot(ctx, d, asyncMeta, decodeAsyncHeader)
}

func (h *asyncHeader) geometry() (int64, int64, int64, uint32, uint64) {
	return h.LegSize, h.Unit, h.BitmapBytes, h.BitmapCRC, h.Events
}
func (h *asyncHeader) place(slot int, bitmap []uint64) { h.slot, h.bitmap = slot, bitmap }

// writeAsyncSlot writes h and bits into slot of d with FUA (bitmap, then
// header: a torn pair fails the header's bitmap CRC).
func writeAsyncSlot(ctx context.Context, d blockdev.Device, h *asyncHeader, bits []uint64, slot int) error {
	bm := encodeBitmap(bits, h.BitmapBytes)
	h.BitmapCRC = crc32.Checksum(bm, castagnoli)
	l := h.layout()
	if err := d.WriteAt(ctx, bm, l.bitmapOff(slot), true); err != nil {
		return err
	}
	return d.WriteAt(ctx, h.encode(), l.headerOff(slot), true)
}

// AsyncInfo is what an async leg's own metadata says (InspectAsync), for
// a disaster-recovery site deciding whether the remote image is usable.
type AsyncInfo struct {
	Leg        UUID   `json:"uuid"`
	Consistent bool   `json:"consistent"`
	Clean      bool   `json:"clean"`
	Epoch      uint64 `json:"epoch"`
	Sequence   uint64 `json:"sequence"`
	AsOf       int64  `json:"as_of_unix_ns"`
	Updated    int64  `json:"updated_unix_ns"`
	Exported   int64  `json:"size"`
	Dirty      int64  `json:"dirty_chunks"`
	Primary    string `json:"primary_wwid,omitempty"`
}

// InspectAsync reads an asynchronous leg's metadata without writing.
func InspectAsync(ctx context.Context, d blockdev.Device) (AsyncInfo, error) {
	h, err := readAsyncHeader(ctx, d)
	if err != nil {
		return AsyncInfo{}, err
	}
	return AsyncInfo{Leg: h.Leg, Consistent: h.Flags&asyncConsistent != 0, Clean: h.Flags&asyncClean != 0,
		Epoch: h.Epoch, Sequence: h.Seq, AsOf: h.AsOf, Updated: h.Updated, Exported: h.Exported,
		Dirty: bitset(h.bitmap).count(), Primary: h.PrimaryWWID}, nil
}
