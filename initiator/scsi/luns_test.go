package scsi

import (
	"errors"
	"reflect"
	"testing"
)

func TestEncodeDecodeLUN(t *testing.T) {
	tests := []struct {
		lun  uint64
		wire string
	}{
		{0, "0000000000000000"},
		{1, "0001000000000000"},
		{255, "00ff000000000000"},
		{256, "4100000000000000"},
		{0x1234, "5234000000000000"},
		{MaxFlatLUN, "7fff000000000000"},
		// Values above MaxFlatLUN are the raw 8 bytes.
		{0x0001000200000000, "0001000200000000"}, // two-level peripheral
		{0xc101000000000000, "c101000000000000"}, // extended addressing
		{0x8123000000000000, "8123000000000000"}, // logical unit addressing
	}
	for _, tt := range tests {
		wire := [8]byte(hx(t, tt.wire))
		if got := EncodeLUN(tt.lun); got != wire {
			t.Errorf("EncodeLUN(%#x) = % x, want % x", tt.lun, got, wire)
		}
		if got := DecodeLUN(wire); got != tt.lun {
			t.Errorf("DecodeLUN(% x) = %#x, want %#x", wire, got, tt.lun)
		}
	}
	// Non-canonical but valid: flat addressing of a small LUN, and a
	// peripheral bus identifier.
	if got := DecodeLUN([8]byte(hx(t, "4005000000000000"))); got != 5 {
		t.Errorf("flat LUN 5 decoded as %d", got)
	}
	if got := DecodeLUN([8]byte(hx(t, "0105000000000000"))); got != 0x0105000000000000 {
		t.Errorf("bus 1 LUN 5 decoded as %#x", got)
	}
}

func TestParseReportLUNs(t *testing.T) {
	tests := []struct {
		name      string
		in        []byte
		luns      []uint64
		listLen   uint32
		truncated bool
		err       error
	}{
		{"tgtd alloc 16 (cut)", capTgtdReportLUNs16, []uint64{0}, 16, true, nil},
		{"tgtd alloc 24", capTgtdReportLUNs24, []uint64{0, 1}, 16, false, nil},
		{"peripheral and flat", hx(t, "00000020 00000000 0000000000000000 00ff000000000000 4100000000000000 7fff000000000000"),
			[]uint64{0, 255, 256, 16383}, 32, false, nil},
		{"empty list", hx(t, "00000000 00000000"), []uint64{}, 0, false, nil},
		{"partial entry", hx(t, "00000010 00000000 0000000000000000 0001"), []uint64{0}, 16, true, nil},
		{"huge list length", hx(t, "fffffff8 00000000 0003000000000000"), []uint64{3}, 0xfffffff8, true, nil},
		{"bytes after list ignored", hx(t, "00000008 00000000 0002000000000000 0003000000000000"), []uint64{2}, 8, false, nil},
		{"list length not multiple of 8", hx(t, "00000009 00000000 0002000000000000 00"), nil, 9, false, ErrMalformed},
		{"short header", hx(t, "00000008 000000"), nil, 0, false, ErrTruncated},
	}
	for _, tt := range tests {
		got, err := ParseReportLUNs(tt.in)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if !reflect.DeepEqual(got.LUNs, tt.luns) || got.ListLength != tt.listLen || got.Truncated != tt.truncated {
			t.Errorf("%s: got %+v, want LUNs %v len %d truncated %v", tt.name, got, tt.luns, tt.listLen, tt.truncated)
		}
	}
}
