package scsi

import (
	"errors"
	"testing"
)

func TestParseReadCapacity10(t *testing.T) {
	c, err := ParseReadCapacity10(capTgtdRC10)
	if err != nil || c != (Capacity{LastLBA: 0x1ffff, BlockLength: 512}) {
		t.Fatalf("tgtd RC10 = %+v, %v", c, err)
	}
	if c.Blocks() != 131072 || c.Bytes() != 64<<20 || c.Need16() {
		t.Errorf("tgtd RC10: blocks %d bytes %d need16 %v", c.Blocks(), c.Bytes(), c.Need16())
	}
	c, err = ParseReadCapacity10(hx(t, "ffffffff 00001000"))
	if err != nil || !c.Need16() {
		t.Errorf("RC10 0xffffffff: %+v, %v; want Need16", c, err)
	}
	c, _ = ParseReadCapacity10(hx(t, "fffffffe 00001000"))
	if c.Need16() || c.Blocks() != 0xffffffff {
		t.Errorf("RC10 0xfffffffe: %+v", c)
	}
	if _, err := ParseReadCapacity10(capTgtdRC10[:7]); !errors.Is(err, ErrTruncated) {
		t.Errorf("7 bytes: err = %v", err)
	}
}

func TestParseReadCapacity16(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want Capacity
		phys uint64
	}{
		{"tgtd (4K physical)", capTgtdRC16, Capacity{LastLBA: 0x1ffff, BlockLength: 512, LBPPBE: 3}, 4096},
		{"istgt", capIstgtRC16, Capacity{LastLBA: 0x1ffff, BlockLength: 512}, 512},
		{"LIO", capLioRC16, Capacity{LastLBA: 0x1ffff, BlockLength: 512}, 512},
		{"hand-built thin, PI type 2, aligned 7", hx(t, "00000001ffffffff 00001000 05 23 c007 0000000000000000000000000000"),
			Capacity{LastLBA: 0x1ffffffff, BlockLength: 4096, ProtectionType: 2, ProtectionEnabled: true,
				PIExponent: 2, LBPPBE: 3, LBPME: true, LBPRZ: true, LowestAlignedLBA: 7}, 32768},
		{"12 bytes only", hx(t, "0000000000000fff 00000200"), Capacity{LastLBA: 0xfff, BlockLength: 512}, 512},
		{"15 bytes: partial lowest aligned LBA ignored", hx(t, "0000000000000fff 00000200 00 00 81"),
			Capacity{LastLBA: 0xfff, BlockLength: 512, LBPME: true}, 512},
	}
	for _, tt := range tests {
		got, err := ParseReadCapacity16(tt.in)
		if err != nil || got != tt.want || got.PhysicalBlockLength() != tt.phys {
			t.Errorf("%s:\n got %+v, %v (phys %d)\nwant %+v (phys %d)", tt.name, got, err, got.PhysicalBlockLength(), tt.want, tt.phys)
		}
	}
	if _, err := ParseReadCapacity16(capTgtdRC16[:11]); !errors.Is(err, ErrTruncated) {
		t.Errorf("11 bytes: err = %v", err)
	}
	huge := Capacity{LastLBA: 1<<64 - 2, BlockLength: 4096}
	if huge.Bytes() != 1<<64-1 {
		t.Errorf("Bytes does not saturate: %d", huge.Bytes())
	}
}
