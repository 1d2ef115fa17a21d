package mirror

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// metaCase drives one metadata format through the shared framing: the
// mirror's leg header and the asynchronous leg's header.
type metaCase struct {
	name   string
	f      metaFormat
	other  metaFormat // the other format: never taken for this one
	header func(legSize int64, events uint64) slotted
	encode func(h slotted) []byte
	decode func(b []byte) (slotted, error)
	write  func(ctx context.Context, d *blockdevtest.Mem, h slotted, bits []uint64, slot int) error
	read   func(ctx context.Context, d *blockdevtest.Mem) (slotted, error)
}

// metaGeometry is the geometry both formats' test headers use.
func metaGeometry(legSize int64) (unit, bitmapBytes, exported int64) {
	unit, bitmapBytes, exported, err := geometry(legSize, 512, testChunk)
	if err != nil {
		panic(err)
	}
	return unit, bitmapBytes, exported
}

func metaCases() []metaCase {
	mirror := metaCase{
		name: "mirror", f: mirrorMeta, other: asyncMeta,
		header: func(legSize int64, events uint64) slotted {
			unit, bmb, exp := metaGeometry(legSize)
			return &header{Mirror: newUUID(), Leg: newUUID(), Peer: newUUID(), Index: 1, LegSize: legSize,
				Exported: exp, Chunk: testChunk, BlockSize: 512, Unit: unit, BitmapBytes: bmb, Events: events,
				Gen: 3, GenID: 99, InSync: 2, WWID: "naa.6001405abc", PeerWWID: "naa.6001405def", Updated: 5,
				Owner: Owner{Active: true, PID: 42, Since: 7, Assembly: 9, BootID: "boot", HostID: "host", Host: "h"}}
		},
		encode: func(h slotted) []byte { return h.(*header).encode(h.(*header).Unit) },
		decode: func(b []byte) (slotted, error) { return decodeHeader(b) },
		write: func(ctx context.Context, d *blockdevtest.Mem, h slotted, bits []uint64, slot int) error {
			return writeSlot(ctx, d, h.(*header), bits, slot)
		},
		read: func(ctx context.Context, d *blockdevtest.Mem) (slotted, error) { return readHeader(ctx, d) },
	}
	async := metaCase{
		name: "async", f: asyncMeta, other: mirrorMeta,
		header: func(legSize int64, events uint64) slotted {
			unit, bmb, exp := metaGeometry(legSize)
			return &asyncHeader{Leg: newUUID(), Flags: asyncConsistent, LegSize: legSize, Exported: exp,
				Chunk: testChunk, BlockSize: 512, Unit: unit, BitmapBytes: bmb, Events: events, Epoch: 4, Seq: 11,
				AsOf: 12, Updated: 13, Created: 14, PrimaryWWID: "naa.6001405abc", WWID: "naa.6001405def"}
		},
		encode: func(h slotted) []byte { return h.(*asyncHeader).encode() },
		decode: func(b []byte) (slotted, error) { return decodeAsyncHeader(b) },
		write: func(ctx context.Context, d *blockdevtest.Mem, h slotted, bits []uint64, slot int) error {
			return writeAsyncSlot(ctx, d, h.(*asyncHeader), bits, slot)
		},
		read: func(ctx context.Context, d *blockdevtest.Mem) (slotted, error) { return readAsyncHeader(ctx, d) },
	}
	return []metaCase{mirror, async}
}

// TestMetaFormatsRoundTrip: each format's header decodes to what was
// encoded, and a block with a flipped bit, the other format's magic or
// another version is rejected with the format's own error.
func TestMetaFormatsRoundTrip(t *testing.T) {
	for _, c := range metaCases() {
		t.Run(c.name, func(t *testing.T) {
			h := c.header(testSize, 7)
			b := c.encode(h)
			if string(b[:8]) != c.f.magic {
				t.Fatalf("magic %q, want %q", b[:8], c.f.magic)
			}
			g, err := c.decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, h) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", g, h)
			}
			for _, off := range []int{0, 9, 12, 20, 40, 100, 200, 300, hdrCRCLen - 1} {
				bad := append([]byte(nil), b...)
				bad[off] ^= 1
				want := errMetaChecksum
				if off < 8 {
					want = c.f.noMeta // the magic itself
				}
				if _, err := c.decode(bad); !errors.Is(err, want) {
					t.Errorf("bit flipped at %d: %v, want %v", off, err, want)
				}
			}
			// The other format's header is no header of this one.
			foreign := append([]byte(nil), b...)
			copy(foreign, c.other.magic)
			if _, err := c.decode(sealBlock(foreign)); !errors.Is(err, c.f.noMeta) {
				t.Errorf("other format's magic: %v, want %v", err, c.f.noMeta)
			}
			// A later version with a valid CRC is refused, not misread.
			newer := append([]byte(nil), b...)
			binary.LittleEndian.PutUint32(newer[8:], c.f.version+1)
			if _, err := c.decode(sealBlock(newer)); err == nil || !strings.Contains(err.Error(), "not supported") {
				t.Errorf("version %d: %v, want not supported", c.f.version+1, err)
			}
			// Geometry out of range behind a valid CRC.
			zero := append([]byte(nil), b...)
			clear(zero[16:hdrCRCLen])
			if _, err := c.decode(sealBlock(zero)); err == nil || !strings.Contains(err.Error(), "out of range") {
				t.Errorf("zeroed fields: %v, want out of range", err)
			}
		})
	}
}

// TestMetaFormatsTornSlot: with both slots written, a torn newest slot of
// either format (garbage header, or a bitmap that no longer matches its
// header's CRC) leaves the older slot in force; with both torn the LUN
// reads as having no metadata of that format.
func TestMetaFormatsTornSlot(t *testing.T) {
	ctx := context.Background()
	for _, c := range metaCases() {
		for _, tear := range []string{"header", "bitmap"} {
			t.Run(c.name+"/"+tear, func(t *testing.T) {
				d := blockdevtest.NewMem(testSize, 512)
				bits := []uint64{0b1011}
				for slot, events := range []uint64{5, 6} {
					if err := c.write(ctx, d, c.header(testSize, events), bits, slot); err != nil {
						t.Fatal(err)
					}
				}
				g, err := c.read(ctx, d)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, _, _, ev := g.geometry(); ev != 6 {
					t.Fatalf("newest slot has events %d, want 6", ev)
				}
				tearSlot := func(slot int) {
					l := g.layout()
					off := l.headerOff(slot)
					if tear == "bitmap" {
						off = l.bitmapOff(slot)
					}
					if err := d.WriteAt(ctx, bytes.Repeat([]byte{0xee}, 512), off, false); err != nil {
						t.Fatal(err)
					}
				}
				tearSlot(1)
				g, err = c.read(ctx, d)
				if err != nil {
					t.Fatalf("torn slot 1: %v", err)
				}
				if _, _, _, _, ev := g.geometry(); ev != 5 {
					t.Fatalf("after tearing slot 1: events %d, want 5 (slot 0)", ev)
				}
				if got := decodeBitmapOf(g); !reflect.DeepEqual(got, bits) {
					t.Fatalf("bitmap %b, want %b", got, bits)
				}
				tearSlot(0)
				if _, err := c.read(ctx, d); !errors.Is(err, c.f.noMeta) {
					t.Fatalf("both slots torn: %v, want %v", err, c.f.noMeta)
				}
			})
		}
	}
}

// decodeBitmapOf is the decoded bitmap a read header carries.
func decodeBitmapOf(h slotted) []uint64 {
	switch h := h.(type) {
	case *header:
		return h.bitmap
	case *asyncHeader:
		return h.bitmap
	}
	return nil
}
