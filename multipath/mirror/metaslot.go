package mirror

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/lunbridge/lunbridge/blockdev"
)

// The framing both on-LUN metadata formats share: the mirror's legs
// (meta.go, doc.go) and the asynchronous leg (drmeta.go). Each keeps two
// slots at the end of the LUN, a bitmap and a one-unit header block each;
// a header block starts
//
//	0  magic [8]   8  version u32   12  CRC32C u32 of bytes 0-511 (this field zeroed)
//
// and a format's own fields follow. The newest slot whose header opens,
// describes this LUN and whose bitmap matches the CRC the header records
// wins, so a torn or corrupt slot leaves the other one in force.

// metaFormat names one metadata format: its magic and version, and how
// its absence and its errors read.
type metaFormat struct {
	magic   string // 8 bytes
	version uint32
	minUnit int64  // smallest metadata unit
	noMeta  error  // no header of this format in the slot
	what    string // the metadata in errors
	lun     string // the device in errors
}

// newBlock returns a header block of unit bytes with f's magic and
// version; the caller fills its fields from offset 16 and seals it.
func (f metaFormat) newBlock(unit int64) []byte {
	b := make([]byte, unit)
	copy(b[0:8], f.magic)
	binary.LittleEndian.PutUint32(b[8:], f.version)
	return b
}

// sealBlock sets the header CRC of a filled block (computed with the CRC
// field zeroed) and returns the block.
func sealBlock(b []byte) []byte {
	le := binary.LittleEndian
	le.PutUint32(b[12:], 0)
	le.PutUint32(b[12:], crc32.Checksum(b[:hdrCRCLen], castagnoli))
	return b
}

// open checks a header block's framing: f.noMeta without f's magic,
// errMetaChecksum when the CRC does not match (a torn or corrupt slot),
// an error for another version.
func (f metaFormat) open(b []byte) error {
	if len(b) < hdrCRCLen || string(b[0:8]) != f.magic {
		return f.noMeta
	}
	le := binary.LittleEndian
	want := le.Uint32(b[12:])
	c := append([]byte(nil), b[:hdrCRCLen]...)
	le.PutUint32(c[12:], 0)
	if crc32.Checksum(c, castagnoli) != want {
		return errMetaChecksum
	}
	if v := le.Uint32(b[8:]); v != f.version {
		return fmt.Errorf("mirror: %s version %d not supported", f.what, v)
	}
	return nil
}

// geometryOK is the range check both formats make of a decoded header's
// geometry.
func (f metaFormat) geometryOK(chunk, unit, bitmapBytes, exported int64, blockSize int) bool {
	return chunk > 0 && unit >= f.minUnit && bitmapBytes > 0 && bitmapBytes%unit == 0 &&
		exported > 0 && blockSize > 0 && chunk%int64(blockSize) == 0
}

// errFields is the error for a header whose fields are out of range.
func (f metaFormat) errFields() error {
	return fmt.Errorf("mirror: %s fields out of range", f.what)
}

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

// readNewestSlot reads both slots of d and returns the newest one whose
// header decodes, describes this LUN, and whose bitmap matches its CRC.
// f names the format, decode parses its header blocks.
func readNewestSlot[H slotted](ctx context.Context, d blockdev.Device, f metaFormat, decode func([]byte) (H, error)) (H, error) {
	var zero H
	size := d.Size()
	unit := max(f.minUnit, int64(d.BlockSize()))
	if size < 2*unit+minLegBytes/2 {
		return zero, f.noMeta
	}
	l := layout{unit: unit, legSize: size}
	var cands []H
	var slots []int
	var firstErr error
	for slot := 0; slot < 2; slot++ {
		b := make([]byte, unit)
		if err := d.ReadAt(ctx, b, l.headerOff(slot)); err != nil {
			return zero, fmt.Errorf("mirror: read %s header: %w", f.what, err)
		}
		h, err := decode(b)
		if err != nil {
			if firstErr == nil || errors.Is(firstErr, f.noMeta) {
				firstErr = err
			}
			continue
		}
		if hs, hu, _, _, _ := h.geometry(); hs != size || hu != unit {
			firstErr = fmt.Errorf("mirror: %s describes a %d-byte %s, the device has %d bytes", f.what, hs, f.lun, size)
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
			return zero, fmt.Errorf("mirror: read %s bitmap: %w", f.what, err)
		}
		if crc32.Checksum(bm, castagnoli) != crc {
			firstErr = fmt.Errorf("mirror: %s bitmap of slot %d: %w", f.what, slots[i], errMetaChecksum)
			continue
		}
		h.place(slots[i], decodeBitmap(bm, h.nchunks()))
		return h, nil
	}
	if firstErr == nil {
		firstErr = f.noMeta
	}
	if !errors.Is(firstErr, f.noMeta) {
		firstErr = fmt.Errorf("%w: %v", f.noMeta, firstErr)
	}
	return zero, firstErr
}
