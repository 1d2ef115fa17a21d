package scsi

import (
	"errors"
	"fmt"
	"testing"
)

// Sense data segments (SenseLength + sense) taken from SCSI Response PDUs
// in /work/shared/ref/captures.
var (
	// tgtd-none.pcap: first TEST UNIT READY of every session, UNIT
	// ATTENTION 29/00, fixed format, 18 bytes.
	tgtdUASegment = mustHex("0012 700006000000000a00000000290000000000")
	// istgt-none.pcap: same condition, VALID bit set (0xf0), INFORMATION 0.
	istgtUASegment = mustHex("0012 f00006000000000a00000000290000000000")
	// lio-none.pcap: UNIT ATTENTION 3F/0E REPORTED LUNS DATA HAS CHANGED;
	// SenseLength 0x60 (96) with 18 meaningful bytes and zero padding.
	lioUASegment = mustHex("0060700006000000000a000000003f0e00000000000000000000000000000000" +
		"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000")
)

func TestParseSenseData(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want Sense
		err  error
	}{
		{"tgtd UA capture", tgtdUASegment,
			Sense{ResponseCode: 0x70, Key: KeyUnitAttention, ASC: 0x29}, nil},
		{"istgt UA capture", istgtUASegment,
			Sense{ResponseCode: 0x70, Key: KeyUnitAttention, ASC: 0x29, InfoValid: true}, nil},
		{"lio UA capture", lioUASegment,
			Sense{ResponseCode: 0x70, Key: KeyUnitAttention, ASC: 0x3f, ASCQ: 0x0e}, nil},
		{"fixed medium error with info, deferred",
			mustHex("0012 f1 00 03 00001234 0a 00000000 11 00 00 000000"),
			Sense{ResponseCode: 0x71, Deferred: true, Key: KeyMediumError, ASC: 0x11, InfoValid: true, Info: 0x1234}, nil},
		{"fixed with SKSV and ILI",
			mustHex("0012 70 00 25 00000000 0a 01020304 24 00 00 c00002"),
			Sense{ResponseCode: 0x70, Key: KeyIllegalRequest, ILI: true, ASC: 0x24, CommandSpecific: 0x01020304,
				SKSValid: true, SenseKeySpecific: [3]byte{0xc0, 0x00, 0x02}}, nil},
		{"fixed cut after key", mustHex("0003 70 00 05"),
			Sense{ResponseCode: 0x70, Key: KeyIllegalRequest, Truncated: true}, nil},
		{"fixed cut before ASCQ", mustHex("000d 70 00 05 00000000 0a 00000000 21"),
			Sense{ResponseCode: 0x70, Key: KeyIllegalRequest, ASC: 0x21, Truncated: true}, nil},
		{"fixed additional length 0", mustHex("0008 70 00 02 00000000 00"),
			Sense{ResponseCode: 0x70, Key: KeyNotReady}, nil},
		{"SenseLength beyond segment", mustHex("0040 70 00 07 00000000 0a 00000000 27 07"),
			Sense{ResponseCode: 0x70, Key: KeyDataProtect, ASC: 0x27, ASCQ: 0x07, Truncated: true}, nil},
		{"descriptor with information",
			mustHex("0014 72 03 11 00 000000 0c 00 0a 80 00 0000000123456789"),
			Sense{ResponseCode: 0x72, Descriptor: true, Key: KeyMediumError, ASC: 0x11, InfoValid: true, Info: 0x123456789}, nil},
		{"descriptor deferred, info not valid, sks, cmd specific",
			mustHex("0028 73 05 24 00 000000 20 00 0a 00 00 00000000000000ff 01 0a 0000 0000000000000042 02 06 0000 800004 0000"),
			Sense{ResponseCode: 0x73, Descriptor: true, Deferred: true, Key: KeyIllegalRequest, ASC: 0x24,
				CommandSpecific: 0x42, SKSValid: true, SenseKeySpecific: [3]byte{0x80, 0, 4}}, nil},
		{"descriptor, no descriptors", mustHex("0008 72 06 2a 09 000000 00"),
			Sense{ResponseCode: 0x72, Descriptor: true, Key: KeyUnitAttention, ASC: 0x2a, ASCQ: 0x09}, nil},
		{"descriptor cut in header", mustHex("0003 72 0b 47"),
			Sense{ResponseCode: 0x72, Descriptor: true, Key: KeyAbortedCommand, ASC: 0x47, Truncated: true}, nil},
		{"descriptor cut in descriptor", mustHex("0014 72 03 11 00 000000 0c 00 0a 80 00 00000001"),
			Sense{ResponseCode: 0x72, Descriptor: true, Key: KeyMediumError, ASC: 0x11, Truncated: true}, nil},
		{"empty segment", nil, Sense{}, ErrNoSense},
		{"zero SenseLength", mustHex("0000"), Sense{}, ErrNoSense},
		{"one byte", mustHex("00"), Sense{}, ErrNoSense},
		{"bad response code", mustHex("0004 61 00 05 00"), Sense{ResponseCode: 0x61}, ErrMalformed},
		{"fixed too short", mustHex("0002 70 00"), Sense{ResponseCode: 0x70}, ErrTruncated},
	}
	for _, tt := range tests {
		got, err := ParseSenseData(tt.in)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
			continue
		}
		if got != tt.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
}

func TestSenseErrorStrings(t *testing.T) {
	tests := []struct {
		err  *SenseError
		want string
	}{
		{&SenseError{Status: StatusCheckCondition, HasSense: true, Key: KeyIllegalRequest, ASC: 0x21},
			"ILLEGAL REQUEST: LOGICAL BLOCK ADDRESS OUT OF RANGE (0x05/0x21/0x00)"},
		{&SenseError{Status: StatusCheckCondition, HasSense: true, Key: KeyDataProtect, ASC: 0x27},
			"DATA PROTECT: WRITE PROTECTED (0x07/0x27/0x00)"},
		{&SenseError{Status: StatusCheckCondition, HasSense: true, Key: KeyUnitAttention, ASC: 0x29},
			"UNIT ATTENTION: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (0x06/0x29/0x00)"},
		{&SenseError{Status: StatusCheckCondition, HasSense: true, Key: KeyMediumError, ASC: 0x11, InfoValid: true, Info: 7},
			"MEDIUM ERROR: UNRECOVERED READ ERROR (0x03/0x11/0x00)"},
		{&SenseError{Status: StatusCheckCondition, HasSense: true, Key: KeyNotReady, ASC: 0x04, ASCQ: 0x0a},
			"NOT READY: LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION (0x02/0x04/0x0a)"},
		{&SenseError{Status: StatusCheckCondition, HasSense: true, Key: KeyDataProtect, ASC: 0x27, ASCQ: 0x07},
			"DATA PROTECT: SPACE ALLOCATION FAILED WRITE PROTECT (0x07/0x27/0x07)"},
		{&SenseError{Status: StatusCheckCondition, HasSense: true, Key: KeyVendorSpecific, ASC: 0x80, ASCQ: 0x01},
			"VENDOR SPECIFIC: ASC 0x80,ASCQ 0x01 (0x09/0x80/0x01)"},
		{&SenseError{Status: StatusCheckCondition, HasSense: true, Key: KeyHardwareError, ASC: 0x44, Deferred: true},
			"HARDWARE ERROR: INTERNAL TARGET FAILURE (0x04/0x44/0x00) [deferred]"},
		{&SenseError{Status: StatusBusy}, "scsi status BUSY"},
		{&SenseError{Status: StatusReservationConflict}, "scsi status RESERVATION CONFLICT"},
		{&SenseError{Status: 0x22}, "scsi status status 0x22"},
		{&SenseError{Status: StatusCheckCondition}, "scsi status CHECK CONDITION without sense data"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestSenseKeyAndStatusNames(t *testing.T) {
	want := []string{"NO SENSE", "RECOVERED ERROR", "NOT READY", "MEDIUM ERROR", "HARDWARE ERROR",
		"ILLEGAL REQUEST", "UNIT ATTENTION", "DATA PROTECT", "BLANK CHECK", "VENDOR SPECIFIC",
		"COPY ABORTED", "ABORTED COMMAND", "EQUAL", "VOLUME OVERFLOW", "MISCOMPARE", "COMPLETED"}
	for k := range 16 {
		if got := SenseKey(k).String(); got != want[k] {
			t.Errorf("SenseKey(%d) = %q, want %q", k, got, want[k])
		}
	}
	for s, want := range map[Status]string{
		0x00: "GOOD", 0x02: "CHECK CONDITION", 0x04: "CONDITION MET", 0x08: "BUSY",
		0x18: "RESERVATION CONFLICT", 0x28: "TASK SET FULL", 0x30: "ACA ACTIVE", 0x40: "TASK ABORTED",
		0x14: "status 0x14",
	} {
		if got := s.String(); got != want {
			t.Errorf("Status(%#x) = %q, want %q", byte(s), got, want)
		}
	}
	if len(ascNames) < 60 {
		t.Errorf("ASC table has %d entries, want at least 60", len(ascNames))
	}
	for _, pair := range [][2]byte{{0x04, 0x00}, {0x04, 0x01}, {0x04, 0x03}, {0x2a, 0x01}, {0x2a, 0x06},
		{0x2a, 0x09}, {0x2a, 0x10}, {0x3f, 0x03}, {0x3f, 0x0e}, {0x38, 0x07}, {0x1d, 0x00}, {0x3a, 0x00},
		{0x20, 0x00}, {0x24, 0x00}, {0x25, 0x00}, {0x26, 0x00}, {0x44, 0x00}, {0x47, 0x00}, {0x4b, 0x00},
		{0x0c, 0x00}, {0x10, 0x01}, {0x0b, 0x00}} {
		if _, ok := ascNames[uint16(pair[0])<<8|uint16(pair[1])]; !ok {
			t.Errorf("ASC/ASCQ %02x/%02x missing from table", pair[0], pair[1])
		}
	}
}

func TestCheckStatusAndClassifiers(t *testing.T) {
	sense := func(key SenseKey, asc, ascq byte) []byte {
		return []byte{0, 18, 0x70, 0, byte(key), 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0}
	}
	type cls struct{ ua, retry, wp, oor, medium, nospace, resv, opcode, unsupp, capchg, lunchg bool }
	tests := []struct {
		name   string
		status Status
		data   []byte
		want   cls
	}{
		{"UA power on (tgtd capture)", StatusCheckCondition, tgtdUASegment, cls{ua: true, retry: true}},
		{"UA LUNs changed (LIO capture)", StatusCheckCondition, lioUASegment, cls{ua: true, retry: true, lunchg: true}},
		{"UA capacity changed", StatusCheckCondition, sense(KeyUnitAttention, 0x2a, 0x09), cls{ua: true, retry: true, capchg: true}},
		{"busy", StatusBusy, nil, cls{retry: true}},
		{"task set full", StatusTaskSetFull, nil, cls{retry: true}},
		{"reservation conflict", StatusReservationConflict, nil, cls{resv: true}},
		{"becoming ready", StatusCheckCondition, sense(KeyNotReady, 0x04, 0x01), cls{retry: true}},
		{"ALUA transitioning", StatusCheckCondition, sense(KeyNotReady, 0x04, 0x0a), cls{retry: true}},
		{"not ready manual intervention", StatusCheckCondition, sense(KeyNotReady, 0x04, 0x03), cls{}},
		{"medium not present", StatusCheckCondition, sense(KeyNotReady, 0x3a, 0x00), cls{}},
		{"aborted command", StatusCheckCondition, sense(KeyAbortedCommand, 0x47, 0x00), cls{retry: true}},
		{"aborted command protection", StatusCheckCondition, sense(KeyAbortedCommand, 0x10, 0x01), cls{}},
		{"write protected", StatusCheckCondition, sense(KeyDataProtect, 0x27, 0x00), cls{wp: true}},
		{"software write protected", StatusCheckCondition, sense(KeyDataProtect, 0x27, 0x02), cls{wp: true}},
		{"space allocation failed", StatusCheckCondition, sense(KeyDataProtect, 0x27, 0x07), cls{nospace: true}},
		{"out of range", StatusCheckCondition, sense(KeyIllegalRequest, 0x21, 0x00), cls{oor: true}},
		{"invalid opcode", StatusCheckCondition, sense(KeyIllegalRequest, 0x20, 0x00), cls{opcode: true, unsupp: true}},
		{"invalid field in CDB", StatusCheckCondition, sense(KeyIllegalRequest, 0x24, 0x00), cls{unsupp: true}},
		{"medium error", StatusCheckCondition, sense(KeyMediumError, 0x11, 0x00), cls{medium: true}},
		{"check condition no sense", StatusCheckCondition, nil, cls{}},
	}
	for _, tt := range tests {
		err := CheckStatus(tt.status, tt.data)
		if err == nil {
			t.Errorf("%s: CheckStatus = nil", tt.name)
			continue
		}
		// Wrapped errors must classify the same.
		wrapped := fmt.Errorf("lun 1: read: %w", err)
		for _, e := range []error{err, wrapped} {
			got := cls{IsUnitAttention(e), IsRetryable(e), IsWriteProtect(e), IsOutOfRange(e), IsMedium(e),
				IsNoSpace(e), IsReservationConflict(e), IsInvalidOpcode(e), IsUnsupported(e),
				IsCapacityChanged(e), IsLUNsChanged(e)}
			if got != tt.want {
				t.Errorf("%s (%v):\n got %+v\nwant %+v", tt.name, e, got, tt.want)
			}
		}
		var se *SenseError
		if !errors.As(wrapped, &se) || se.Status != tt.status {
			t.Errorf("%s: errors.As failed or wrong status: %v", tt.name, se)
		}
	}
	for _, s := range []Status{StatusGood, StatusConditionMet} {
		if err := CheckStatus(s, tgtdUASegment); err != nil {
			t.Errorf("CheckStatus(%v) = %v, want nil", s, err)
		}
	}
	var zero cls
	for _, e := range []error{nil, errors.New("other"), ErrTruncated} {
		got := cls{IsUnitAttention(e), IsRetryable(e), IsWriteProtect(e), IsOutOfRange(e), IsMedium(e),
			IsNoSpace(e), IsReservationConflict(e), IsInvalidOpcode(e), IsUnsupported(e),
			IsCapacityChanged(e), IsLUNsChanged(e)}
		if got != zero {
			t.Errorf("classifiers on %v = %+v", e, got)
		}
	}
}

// Issue item 15: the senses after which the LU behind a LUN number may be
// another disk.
func TestIsIdentityChange(t *testing.T) {
	se := func(key SenseKey, asc, ascq byte) error {
		return &SenseError{Status: StatusCheckCondition, Key: key, ASC: asc, ASCQ: ascq, HasSense: true}
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{se(KeyIllegalRequest, 0x25, 0x00), true}, // LOGICAL UNIT NOT SUPPORTED
		{se(KeyUnitAttention, 0x29, 0x00), true},  // power on, reset
		{se(KeyUnitAttention, 0x29, 0x03), true},  // bus device reset
		{se(KeyUnitAttention, 0x28, 0x00), true},  // medium may have changed
		{se(KeyUnitAttention, 0x2a, 0x09), true},  // capacity data changed
		{se(KeyUnitAttention, 0x3f, 0x0e), true},  // reported LUNs changed
		{se(KeyUnitAttention, 0x3f, 0x03), true},  // INQUIRY data changed
		{se(KeyUnitAttention, 0x3f, 0x05), true},  // device identifier changed
		{se(KeyUnitAttention, 0x2a, 0x06), false}, // ALUA state changed
		{se(KeyUnitAttention, 0x2a, 0x01), false}, // mode parameters changed
		{se(KeyUnitAttention, 0x47, 0x7f), false}, // iSCSI protocol event
		{se(KeyIllegalRequest, 0x21, 0x00), false},
		{se(KeyNotReady, 0x29, 0x00), false},
		{&SenseError{Status: StatusBusy}, false},
		{nil, false},
	} {
		if got := IsIdentityChange(tc.err); got != tc.want {
			t.Errorf("IsIdentityChange(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
