package scsi

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseSupportedPages(t *testing.T) {
	tests := []struct {
		in        []byte
		want      []byte
		truncated bool
	}{
		{capTgtdVPD00, []byte{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}, false},
		{capIstgtVPD00, []byte{0x00, 0x80, 0x83, 0x85, 0x86, 0x87, 0x88, 0xb0, 0xb1}, false},
		{capLioVPD00, []byte{0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2, 0xb3}, false},
		{capLioVPD00[:6], []byte{0x00, 0x80}, true},
		{hx(t, "00000002 0080 ffff"), []byte{0x00, 0x80}, false}, // bytes past PAGE LENGTH ignored
	}
	for _, tt := range tests {
		got, err := ParseSupportedPages(tt.in)
		if err != nil || !bytes.Equal(got.Pages, tt.want) || got.Truncated != tt.truncated {
			t.Errorf("ParseSupportedPages(% x) = %+v, %v; want %x truncated=%v", tt.in, got, err, tt.want, tt.truncated)
		}
	}
	p, _ := ParseSupportedPages(capTgtdVPD00)
	if !p.Has(VPDLogicalBlockProvisioning) || p.Has(0x86) {
		t.Errorf("Has: %+v", p)
	}
	if _, err := ParseSupportedPages(capTgtdVPDB2); !errors.Is(err, ErrMalformed) {
		t.Errorf("wrong page code: err = %v, want ErrMalformed", err)
	}
	if _, err := ParseSupportedPages([]byte{0, 0, 0}); !errors.Is(err, ErrTruncated) {
		t.Errorf("3 bytes: err = %v, want ErrTruncated", err)
	}
}

func TestParseUnitSerialNumber(t *testing.T) {
	got, err := ParseUnitSerialNumber(hx(t, "00 80 000c 20 20 62 65 65 66 31 32 33 00 00 00"))
	if err != nil || got != "beef123" {
		t.Errorf("serial = %q, %v", got, err)
	}
	got, err = ParseUnitSerialNumber(hx(t, "00 80 0010 6162 63"))
	if !errors.Is(err, ErrTruncated) || got != "abc" {
		t.Errorf("truncated serial = %q, %v", got, err)
	}
}

func TestVPDHeader(t *testing.T) {
	h, err := ParseVPDHeader(capLioVPD83Short)
	if err != nil || h.Page != 0x83 || h.Length != 0xa9 || h.FullLength() != 173 {
		t.Errorf("header = %+v, %v", h, err)
	}
}

func TestParseDeviceIdentification(t *testing.T) {
	type desig struct {
		proto, codeSet byte
		piv            bool
		assoc, typ     byte
		str            string
	}
	tests := []struct {
		name      string
		in        []byte
		truncated bool
		wwid      string
		relPort   int // -1: absent
		tpg       int
		desigs    []desig
	}{
		{"tgtd alloc 64 (cut)", capTgtdVPD83Short, true, "naa.3000000100000001", -1, -1, []desig{
			{0, CodeSetASCII, false, AssocLU, DesigT10VendorID, "t10.IET     00010001"},
			{0, CodeSetBinary, false, AssocLU, DesigNAA, "naa.3000000100000001"},
		}},
		{"tgtd full", capTgtdVPD83, false, "naa.60000000000000000e00000000010001", -1, -1, []desig{
			{0, CodeSetASCII, false, AssocLU, DesigT10VendorID, "t10.IET     00010001"},
			{0, CodeSetBinary, false, AssocLU, DesigNAA, "naa.3000000100000001"},
			{0, CodeSetBinary, false, AssocLU, DesigNAA, "naa.60000000000000000e00000000010001"},
		}},
		{"istgt", capIstgtVPD83, false, "naa.300000005b0e4102", 1, 1, []desig{
			{0, CodeSetBinary, false, AssocLU, DesigNAA, "naa.300000005b0e4102"},
			{0, CodeSetUTF8, false, AssocLU, DesigT10VendorID, "t10.FreeBSD iSCSI DISK      10000001"},
			{5, CodeSetUTF8, true, AssocTargetDevice, DesigSCSIName, "iqn.2024-01.test.istgt:disk1"},
			{5, CodeSetUTF8, true, AssocTargetPort, DesigSCSIName, "iqn.2024-01.test.istgt:disk1,t,0x0001"},
			{5, CodeSetBinary, true, AssocTargetPort, DesigRelTargetPort, "00000001"},
			{5, CodeSetBinary, true, AssocTargetPort, DesigTargetPortGroup, "00000001"},
			{5, CodeSetBinary, true, AssocTargetPort, DesigLUGroup, "00000001"},
		}},
		{"LIO alloc 64 (cut)", capLioVPD83Short, true, "naa.6001405abfd000000000000000000000", 1, -1, []desig{
			{0, CodeSetBinary, false, AssocLU, DesigNAA, "naa.6001405abfd000000000000000000000"},
			{0, CodeSetASCII, false, AssocLU, DesigT10VendorID, "t10.LIO-ORG FILEIO:vmlab-fd0"},
			{5, CodeSetBinary, true, AssocTargetPort, DesigRelTargetPort, "00000001"},
		}},
		{"LIO full", capLioVPD83, false, "naa.6001405abfd000000000000000000000", 1, 0, []desig{
			{0, CodeSetBinary, false, AssocLU, DesigNAA, "naa.6001405abfd000000000000000000000"},
			{0, CodeSetASCII, false, AssocLU, DesigT10VendorID, "t10.LIO-ORG FILEIO:vmlab-fd0"},
			{5, CodeSetBinary, true, AssocTargetPort, DesigRelTargetPort, "00000001"},
			{5, CodeSetBinary, true, AssocTargetPort, DesigTargetPortGroup, "00000000"},
			{0, CodeSetBinary, false, AssocLU, DesigLUGroup, "00000000"},
			{5, CodeSetUTF8, true, AssocTargetPort, DesigSCSIName, "iqn.2003-01.org.linux-iscsi.vmlab:t0,t,0x0001"},
			{5, CodeSetUTF8, true, AssocTargetDevice, DesigSCSIName, "iqn.2003-01.org.linux-iscsi.vmlab:t0"},
		}},
	}
	for _, tt := range tests {
		d, err := ParseDeviceIdentification(tt.in)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if d.Truncated != tt.truncated || d.FullLength != 4+int(tt.in[2])<<8+int(tt.in[3]) {
			t.Errorf("%s: Truncated %v FullLength %d", tt.name, d.Truncated, d.FullLength)
		}
		if w, ok := d.WWID(); !ok || w != tt.wwid {
			t.Errorf("%s: WWID = %q, %v; want %q", tt.name, w, ok, tt.wwid)
		}
		if p, ok := d.RelativeTargetPort(); (tt.relPort < 0) == ok || (ok && int(p) != tt.relPort) {
			t.Errorf("%s: RelativeTargetPort = %d, %v; want %d", tt.name, p, ok, tt.relPort)
		}
		if g, ok := d.TargetPortGroup(); (tt.tpg < 0) == ok || (ok && int(g) != tt.tpg) {
			t.Errorf("%s: TargetPortGroup = %d, %v; want %d", tt.name, g, ok, tt.tpg)
		}
		if len(d.Designators) != len(tt.desigs) {
			t.Errorf("%s: %d designators, want %d", tt.name, len(d.Designators), len(tt.desigs))
			continue
		}
		for i, g := range d.Designators {
			got := desig{g.ProtocolID, g.CodeSet, g.PIV, g.Association, g.Type, g.String()}
			if got != tt.desigs[i] {
				t.Errorf("%s: designator %d = %+v, want %+v", tt.name, i, got, tt.desigs[i])
			}
		}
	}
}

func TestWWIDPriority(t *testing.T) {
	// desig builds one designation descriptor.
	desig := func(codeSet, assocType byte, value string) string {
		v := value
		if codeSet != CodeSetBinary {
			v = ""
			for _, c := range []byte(value) {
				v += string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&15])
			}
		}
		n := len(v) / 2
		return "0" + hex2(codeSet)[1:] + hex2(assocType) + "00" + hex2(byte(n)) + v
	}
	page := func(ds ...string) []byte {
		body := ""
		for _, d := range ds {
			body += d
		}
		return hx(t, "0083"+hex2(byte(len(body)/2>>8))+hex2(byte(len(body)/2))+body)
	}
	t10 := desig(CodeSetASCII, 0x01, "ACME    DISK 42  ")
	name := desig(CodeSetUTF8, 0x08, "naa.600a0b80001234\x00\x00")
	eui := desig(CodeSetBinary, 0x02, "0011223344556677")
	naa5 := desig(CodeSetBinary, 0x03, "5000c50012345678")
	naa6 := desig(CodeSetBinary, 0x03, "600a0b800012345600000000deadbeef")
	naa2 := desig(CodeSetBinary, 0x03, "2000001122334455")
	portNAA6 := desig(CodeSetBinary, 0x13, "6000000000000000000000000000dead") // target port
	vendor := desig(CodeSetBinary, 0x00, "ff")
	tests := []struct {
		name string
		page []byte
		want string
	}{
		{"t10 only", page(t10), "t10.ACME    DISK 42"},
		{"name over t10", page(t10, name), "naa.600a0b80001234"},
		{"eui over name", page(t10, name, eui), "eui.0011223344556677"},
		{"naa over eui", page(eui, naa2), "naa.2000001122334455"},
		{"naa5 over other naa", page(naa2, naa5, eui), "naa.5000c50012345678"},
		{"naa6 over naa5", page(naa5, naa6, naa2), "naa.600a0b800012345600000000deadbeef"},
		{"port designators ignored", page(portNAA6, t10), "t10.ACME    DISK 42"},
		{"none", page(vendor, portNAA6), ""},
	}
	for _, tt := range tests {
		d, err := ParseDeviceIdentification(tt.page)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got, ok := d.WWID()
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("%s: WWID = %q, %v; want %q", tt.name, got, ok, tt.want)
		}
	}
}

func hex2(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}

func TestParseDeviceIdentificationMalformed(t *testing.T) {
	// A descriptor claiming more than PAGE LENGTH holds (the data is not
	// truncated) is malformed.
	if _, err := ParseDeviceIdentification(hx(t, "0083 0006 0103 0008 3000")); !errors.Is(err, ErrMalformed) {
		t.Errorf("overlong descriptor: err = %v, want ErrMalformed", err)
	}
	if _, err := ParseDeviceIdentification(hx(t, "0083 0002 0103")); !errors.Is(err, ErrMalformed) {
		t.Errorf("partial descriptor header: err = %v, want ErrMalformed", err)
	}
	if _, err := ParseDeviceIdentification(capTgtdVPD00); !errors.Is(err, ErrMalformed) {
		t.Errorf("page 0x00 as 0x83: err = %v", err)
	}
}

func TestParseBlockLimits(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want BlockLimits
	}{
		{"tgtd", capTgtdVPDB0, BlockLimits{MaxCompareAndWriteLength: 0x80, PageLength: 0x3c}},
		{"istgt", capIstgtVPDB0, BlockLimits{MaxCompareAndWriteLength: 0xff, OptimalTransferGranularity: 8,
			OptimalTransferLength: 0x800, PageLength: 0x3c}},
		{"LIO short page", capLioVPDB0, BlockLimits{WSNZ: true, MaxCompareAndWriteLength: 1,
			OptimalTransferGranularity: 1, MaxTransferLength: 0x4000, OptimalTransferLength: 0x4000, PageLength: 0x10}},
		{"hand-built full", hx(t, `00b0 003c 01 01 0008 00004000 00000800 00000100
			00400000 00000100 00000800 80000007 0000000000010000`+"00000000 00000000 00000000 00000000 00000000"),
			BlockLimits{WSNZ: true, MaxCompareAndWriteLength: 1, OptimalTransferGranularity: 8,
				MaxTransferLength: 0x4000, OptimalTransferLength: 0x800, MaxPrefetchLength: 0x100,
				MaxUnmapLBACount: 0x400000, MaxUnmapDescriptorCount: 0x100, OptimalUnmapGranularity: 0x800,
				UnmapGranularityAlignmentValid: true, UnmapGranularityAlignment: 7,
				MaxWriteSameLength: 0x10000, PageLength: 0x3c}},
		{"cut mid-field", hx(t, "00b0 003c 00 00 0000 0001"), BlockLimits{PageLength: 0x3c}},
	}
	for _, tt := range tests {
		got, err := ParseBlockLimits(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("%s:\n got %+v, %v\nwant %+v", tt.name, got, err, tt.want)
		}
	}
}

func TestParseBlockDeviceCharacteristics(t *testing.T) {
	got, err := ParseBlockDeviceCharacteristics(capTgtdVPDB1)
	if err != nil || got != (BlockDeviceCharacteristics{}) || got.NonRotating() {
		t.Errorf("tgtd: %+v, %v", got, err)
	}
	got, err = ParseBlockDeviceCharacteristics(hx(t, "00b1 003c 0001 00 03"))
	if err != nil || !got.NonRotating() || got.FormFactor != 3 {
		t.Errorf("ssd: %+v, %v", got, err)
	}
	got, err = ParseBlockDeviceCharacteristics(hx(t, "00b1 003c 1c20"))
	if err != nil || got.RotationRate != 7200 {
		t.Errorf("7200 rpm: %+v, %v", got, err)
	}
	if _, err := ParseBlockDeviceCharacteristics(hx(t, "00b1 003c 1c")); !errors.Is(err, ErrTruncated) {
		t.Errorf("cut rotation rate: err = %v", err)
	}
}

func TestParseLogicalBlockProvisioning(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want LogicalBlockProvisioning
	}{
		{"tgtd", capTgtdVPDB2, LogicalBlockProvisioning{}},
		{"LIO", capLioVPDB2, LogicalBlockProvisioning{}},
		{"thin, all bits", hx(t, "00b2 0004 0c e7 0a 20"), LogicalBlockProvisioning{ThresholdExponent: 12,
			LBPU: true, LBPWS: true, LBPWS10: true, LBPRZ: 1, ANCSup: true, DP: true,
			MinimumPercentage: 1, ProvisioningType: ProvisioningThin, ThresholdPercentage: 0x20}},
		{"SBC-4 LBPRZ 2, short page", hx(t, "00b2 0002 00 88"), LogicalBlockProvisioning{LBPU: true, LBPRZ: 2}},
	}
	for _, tt := range tests {
		got, err := ParseLogicalBlockProvisioning(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("%s:\n got %+v, %v\nwant %+v", tt.name, got, err, tt.want)
		}
	}
	if _, err := ParseLogicalBlockProvisioning(hx(t, "00b2 0004 00")); !errors.Is(err, ErrTruncated) {
		t.Errorf("cut page: err = %v", err)
	}
}
