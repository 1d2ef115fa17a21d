package scsi

import (
	"bytes"
	"testing"
)

func TestCDBBuilders(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		// Bytes the libiscsi tools and qemu sent in the captures under
		// /work/shared/ref/captures (tgtd-none.pcap, lio-none.pcap) are
		// marked "capture".
		{"TestUnitReady capture", TestUnitReady(), "00 00 00 00 00 00"},
		{"Inquiry std 64 capture", Inquiry(false, 0, 64), "12 00 00 00 40 00"},
		{"Inquiry VPD 0x83 capture", Inquiry(true, 0x83, 0x4c), "12 01 83 00 4c 00"},
		{"Inquiry VPD 0xb0 capture", Inquiry(true, 0xb0, 64), "12 01 b0 00 40 00"},
		{"Inquiry big alloc", Inquiry(true, 0x80, 0x1234), "12 01 80 12 34 00"},
		{"ReadCapacity10 capture", ReadCapacity10(), "25 00 00000000 00 00 00 00"},
		{"ReadCapacity16 capture", ReadCapacity16(32), "9e 10 0000000000000000 00000020 00 00"},
		{"Read10 capture", Read10(0, 128, false), "28 00 00000000 00 0080 00"},
		{"Read10 fua", Read10(0x01020304, 0xfffe, true), "28 08 01020304 00 fffe 00"},
		{"Write10 capture", Write10(0x800, 0x200, false), "2a 00 00000800 00 0200 00"},
		{"Write10 fua", Write10(0xffffffff, 1, true), "2a 08 ffffffff 00 0001 00"},
		{"Read16", Read16(0x0102030405060708, 0x0a0b0c0d, false), "88 00 0102030405060708 0a0b0c0d 00 00"},
		{"Read16 fua", Read16(1, 2, true), "88 08 0000000000000001 00000002 00 00"},
		{"Write16", Write16(0xfffffffffffffffe, 0xffffffff, true), "8a 08 fffffffffffffffe ffffffff 00 00"},
		{"SynchronizeCache10 all capture", SynchronizeCache10(0, 0), "35 00 00000000 00 0000 00"},
		{"SynchronizeCache10 range", SynchronizeCache10(0x10203040, 0x5060), "35 00 10203040 00 5060 00"},
		{"SynchronizeCache16", SynchronizeCache16(0x1122334455667788, 0x99aabbcc), "91 00 1122334455667788 99aabbcc 00 00"},
		{"Unmap", Unmap(24), "42 00 00 00 00 00 00 0018 00"},
		{"WriteSame16 plain", WriteSame16(7, 8, false, false, false), "93 00 0000000000000007 00000008 00 00"},
		{"WriteSame16 unmap", WriteSame16(7, 8, true, false, false), "93 08 0000000000000007 00000008 00 00"},
		{"WriteSame16 anchor", WriteSame16(7, 8, true, true, false), "93 18 0000000000000007 00000008 00 00"},
		{"WriteSame16 ndob", WriteSame16(0x100000000, 0x10000, true, false, true), "93 09 0000000100000000 00010000 00 00"},
		{"GetLBAStatus", GetLBAStatus(0x0102030405060708, 0x1000), "9e 12 0102030405060708 00001000 00 00"},
		{"ReportLUNs capture", ReportLUNs(16), "a0 00 00 00 00 00 00000010 00 00"},
		{"ModeSense6 capture", ModeSense6(ModePageAll, 0, true, 0xff), "1a 08 3f 00 ff 00"},
		{"ModeSense6 with block descriptors", ModeSense6(ModePageAll, 0, false, 0xff), "1a 00 3f 00 ff 00"},
		{"ModeSense6 caching", ModeSense6(ModePageCaching, 0, true, 32), "1a 08 08 00 20 00"},
		{"ModeSense10", ModeSense10(ModePageAll, 0xff, true, 0x1000), "5a 08 3f ff 00 00 00 1000 00"},
		{"ReportTargetPortGroups", ReportTargetPortGroups(0x1000, false), "a3 0a 00 00 00 00 00001000 00 00"},
		{"ReportTargetPortGroups extended", ReportTargetPortGroups(0x1000, true), "a3 2a 00 00 00 00 00001000 00 00"},
	}
	for _, tt := range tests {
		want := hx(t, tt.want)
		if !bytes.Equal(tt.got, want) {
			t.Errorf("%s:\n got % x\nwant % x", tt.name, tt.got, want)
		}
	}
}

func TestReadWriteChooser(t *testing.T) {
	tests := []struct {
		lba    uint64
		blocks uint32
		fua    bool
		read   string
		write  string
	}{
		{0, 128, false, "28 00 00000000 00 0080 00", "2a 00 00000000 00 0080 00"},
		{0, 0xffff, true, "28 08 00000000 00 ffff 00", "2a 08 00000000 00 ffff 00"},
		// blocks > 65535 needs (16)
		{0, 0x10000, false, "88 00 0000000000000000 00010000 00 00", "8a 00 0000000000000000 00010000 00 00"},
		// last block 0xffffffff still fits (10)
		{0xfffffff0, 0x10, false, "28 00 fffffff0 00 0010 00", "2a 00 fffffff0 00 0010 00"},
		// one block beyond 32 bits needs (16)
		{0xfffffff0, 0x11, false, "88 00 00000000fffffff0 00000011 00 00", "8a 00 00000000fffffff0 00000011 00 00"},
		{0x100000000, 1, true, "88 08 0000000100000000 00000001 00 00", "8a 08 0000000100000000 00000001 00 00"},
		// zero blocks at an LBA past 32 bits
		{0x100000000, 0, false, "88 00 0000000100000000 00000000 00 00", "8a 00 0000000100000000 00000000 00 00"},
		// no overflow in lba+blocks
		{0xffffffffffffffff, 0xffffffff, false, "88 00 ffffffffffffffff ffffffff 00 00", "8a 00 ffffffffffffffff ffffffff 00 00"},
	}
	for _, tt := range tests {
		if got, want := ReadCDB(tt.lba, tt.blocks, tt.fua), hx(t, tt.read); !bytes.Equal(got, want) {
			t.Errorf("ReadCDB(%#x, %#x, %v) = % x, want % x", tt.lba, tt.blocks, tt.fua, got, want)
		}
		if got, want := WriteCDB(tt.lba, tt.blocks, tt.fua), hx(t, tt.write); !bytes.Equal(got, want) {
			t.Errorf("WriteCDB(%#x, %#x, %v) = % x, want % x", tt.lba, tt.blocks, tt.fua, got, want)
		}
		// Append forms append after existing bytes.
		got := AppendReadCDB([]byte{0xee}, tt.lba, tt.blocks, tt.fua)
		if want := append([]byte{0xee}, hx(t, tt.read)...); !bytes.Equal(got, want) {
			t.Errorf("AppendReadCDB = % x, want % x", got, want)
		}
	}
}

func TestAppendReadWriteNoAlloc(t *testing.T) {
	var buf [16]byte
	n := testing.AllocsPerRun(100, func() {
		_ = AppendReadCDB(buf[:0], 1<<40, 8, true)
		_ = AppendWriteCDB(buf[:0], 100, 8, false)
		_ = AppendRead10(buf[:0], 1, 1, false)
		_ = AppendWrite16(buf[:0], 1, 1, false)
	})
	if n != 0 {
		t.Fatalf("Append CDB builders allocate: %v allocs per run", n)
	}
}

func TestUnmapParameterList(t *testing.T) {
	got := UnmapParameterList([]UnmapDescriptor{
		{LBA: 0x0102030405060708, Blocks: 0x11223344},
		{LBA: 0x800, Blocks: 0x80},
	})
	want := hx(t, `
		0026 0020 00000000
		0102030405060708 11223344 00000000
		0000000000000800 00000080 00000000`)
	if !bytes.Equal(got, want) {
		t.Errorf("UnmapParameterList:\n got % x\nwant % x", got, want)
	}
	if got := UnmapParameterList(nil); !bytes.Equal(got, hx(t, "0006 0000 00000000")) {
		t.Errorf("empty UnmapParameterList = % x", got)
	}
	big := UnmapParameterList(make([]UnmapDescriptor, MaxUnmapDescriptors))
	if len(big) != 8+16*MaxUnmapDescriptors || int(big[0])<<8|int(big[1]) != len(big)-2 {
		t.Errorf("max UnmapParameterList header % x, len %d", big[:4], len(big))
	}
	defer func() {
		if recover() == nil {
			t.Error("UnmapParameterList with too many descriptors did not panic")
		}
	}()
	UnmapParameterList(make([]UnmapDescriptor, MaxUnmapDescriptors+1))
}

func TestFits10(t *testing.T) {
	for _, tt := range []struct {
		lba    uint64
		blocks uint32
		want   bool
	}{
		{0, 0, true}, {0, 0xffff, true}, {0, 0x10000, false},
		{0xffffffff, 1, true}, {0xffffffff, 2, false}, {0x100000000, 0, false},
		{1 << 63, 1, false},
	} {
		if got := Fits10(tt.lba, tt.blocks); got != tt.want {
			t.Errorf("Fits10(%#x, %#x) = %v, want %v", tt.lba, tt.blocks, got, tt.want)
		}
	}
}
