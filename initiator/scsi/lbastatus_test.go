package scsi

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseLBAStatus(t *testing.T) {
	// Three descriptors: mapped, deallocated, anchored (hand-built per
	// SBC-3; the captures hold no GET LBA STATUS exchange).
	full := hx(t, `00000034 00000000
		0000000000000000 00000800 00 000000
		0000000000000800 00001000 01 000000
		0000000000001800 00000010 f2 000000`)
	three := []LBAStatus{
		{LBA: 0, Blocks: 0x800, Status: LBAMapped},
		{LBA: 0x800, Blocks: 0x1000, Status: LBADeallocated},
		{LBA: 0x1800, Blocks: 0x10, Status: LBAAnchored},
	}
	tests := []struct {
		name      string
		in        []byte
		want      []LBAStatus
		truncated bool
		err       error
	}{
		{"three", full, three, false, nil},
		{"cut mid third", full[:8+16*2+5], three[:2], true, nil},
		{"cut to header", full[:8], []LBAStatus{}, true, nil},
		{"extra bytes past length ignored", append(append([]byte{}, full...), 0xff, 0xff), three, false, nil},
		{"length shorter than data", hx(t, "00000014 00000000 0000000000000000 00000800 01 000000 0000000000000800 00001000 01 000000"),
			[]LBAStatus{{LBA: 0, Blocks: 0x800, Status: 1}}, false, nil},
		{"length not multiple of 16", hx(t, "00000006 00000000 0000"), []LBAStatus{}, true, nil},
		{"no descriptors", hx(t, "00000004 00000000"), []LBAStatus{}, false, nil},
		{"huge claimed length", hx(t, "ffffffff 00000000 0000000000000000 00000001 00 000000"),
			[]LBAStatus{{Blocks: 1}}, true, nil},
		{"length below header", hx(t, "00000003 00000000"), nil, false, ErrMalformed},
		{"short header", hx(t, "00000004 000000"), nil, false, ErrTruncated},
	}
	for _, tt := range tests {
		got, err := ParseLBAStatus(tt.in)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if !reflect.DeepEqual(got.Descriptors, tt.want) || got.Truncated != tt.truncated {
			t.Errorf("%s:\n got %+v\nwant %+v truncated=%v", tt.name, got, tt.want, tt.truncated)
		}
	}
}

// Review #5: only deallocated (1) and anchored (2) are holes; SBC-4's
// mapped (3) and unknown (4), 0, and values not yet defined are data.
func TestLBAStatusHole(t *testing.T) {
	for st := 0; st < 16; st++ {
		want := st == 1 || st == 2
		if got := (LBAStatus{Status: byte(st)}).Hole(); got != want {
			t.Errorf("provisioning status %d: Hole() = %v, want %v", st, got, want)
		}
	}
}

// Review #5: LBPRZ xx1b means unmapped blocks read as zeros; 010b is the
// "provisioning initialization pattern", which need not be zeros.
func TestUnmappedReadZero(t *testing.T) {
	for lbprz := byte(0); lbprz < 8; lbprz++ {
		want := lbprz&1 != 0
		if got := (LogicalBlockProvisioning{LBPRZ: lbprz}).UnmappedReadZero(); got != want {
			t.Errorf("LBPRZ %03b: UnmappedReadZero() = %v, want %v", lbprz, got, want)
		}
	}
}
