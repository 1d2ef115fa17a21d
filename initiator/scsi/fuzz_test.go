package scsi

import (
	"errors"
	"testing"
)

// Native fuzz targets, one per parser, seeded with the table cases. Each
// asserts that the parser does not panic, that it returns only this
// package's errors, and that what it decoded fits in its input.

func addSeeds(f *testing.F, seeds ...[]byte) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add([]byte{})
}

func checkErr(t *testing.T, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNoSense) {
		t.Fatalf("unexpected error type: %v", err)
	}
}

func FuzzParseInquiry(f *testing.F) {
	addSeeds(f, capTgtdInquiryLUN0, capTgtdInquiryLUN1, capIstgtInquiry, capLioInquiry)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseInquiry(b)
		checkErr(t, err)
		if (err == nil) != (len(b) >= 36) {
			t.Fatalf("len %d, err %v", len(b), err)
		}
		if err == nil && (len(d.Vendor) > 8 || len(d.Product) > 16 || len(d.Revision) > 4 || d.TPGS > 3) {
			t.Fatalf("fields out of range: %+v", d)
		}
		_ = d.DeviceType.String()
	})
}

func FuzzParseSupportedPages(f *testing.F) {
	addSeeds(f, capTgtdVPD00, capIstgtVPD00, capLioVPD00)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseSupportedPages(b)
		checkErr(t, err)
		if len(p.Pages) > max(0, len(b)-4) {
			t.Fatalf("%d pages from %d bytes", len(p.Pages), len(b))
		}
	})
}

func FuzzParseUnitSerialNumber(f *testing.F) {
	addSeeds(f, mustHex("0080000c2020626565663132330000 00"), mustHex("00800010616263"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseUnitSerialNumber(b)
		checkErr(t, err)
		if len(s) > max(0, len(b)-4) {
			t.Fatalf("serial %q from %d bytes", s, len(b))
		}
	})
}

func FuzzParseDeviceIdentification(f *testing.F) {
	addSeeds(f, capTgtdVPD83Short, capTgtdVPD83, capIstgtVPD83, capLioVPD83Short, capLioVPD83)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDeviceIdentification(b)
		checkErr(t, err)
		n := 4
		for _, g := range d.Designators {
			n += 4 + len(g.Value)
			if g.CodeSet > 15 || g.Association > 3 || g.Type > 15 || g.ProtocolID > 15 {
				t.Fatalf("field out of range: %+v", g)
			}
			_ = g.String()
		}
		if len(d.Designators) > 0 && n > len(b) {
			t.Fatalf("designators cover %d bytes of %d", n, len(b))
		}
		if w, ok := d.WWID(); ok != (w != "") && !(ok && w == "") {
			t.Fatalf("WWID %q, %v", w, ok)
		}
		d.RelativeTargetPort()
		d.TargetPortGroup()
	})
}

func FuzzParseBlockLimits(f *testing.F) {
	addSeeds(f, capTgtdVPDB0, capIstgtVPDB0, capLioVPDB0)
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseBlockLimits(b)
		checkErr(t, err)
		if err == nil && len(b) < 8+4 && l.MaxTransferLength != 0 {
			t.Fatalf("MaxTransferLength from %d bytes", len(b))
		}
	})
}

func FuzzParseBlockDeviceCharacteristics(f *testing.F) {
	addSeeds(f, capTgtdVPDB1, mustHex("00b1003c000100 03"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseBlockDeviceCharacteristics(b)
		checkErr(t, err)
		if c.FormFactor > 15 {
			t.Fatalf("form factor %d", c.FormFactor)
		}
	})
}

func FuzzParseLogicalBlockProvisioning(f *testing.F) {
	addSeeds(f, capTgtdVPDB2, capLioVPDB2, mustHex("00b200040ce70a20"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseLogicalBlockProvisioning(b)
		checkErr(t, err)
		if p.LBPRZ > 7 || p.ProvisioningType > 7 || p.MinimumPercentage > 31 {
			t.Fatalf("field out of range: %+v", p)
		}
	})
}

func FuzzParseReadCapacity(f *testing.F) {
	addSeeds(f, capTgtdRC10, capTgtdRC16, capIstgtRC16, capLioRC16, mustHex("ffffffff00001000"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c10, err := ParseReadCapacity10(b)
		checkErr(t, err)
		if (err == nil) != (len(b) >= 8) || c10.LastLBA > 0xffffffff {
			t.Fatalf("RC10 len %d: %+v, %v", len(b), c10, err)
		}
		c16, err := ParseReadCapacity16(b)
		checkErr(t, err)
		if (err == nil) != (len(b) >= 12) {
			t.Fatalf("RC16 len %d: %v", len(b), err)
		}
		_ = c16.Bytes()
		_ = c16.PhysicalBlockLength()
		if c16.LowestAlignedLBA > 0x3fff || c16.ProtectionType > 7 {
			t.Fatalf("field out of range: %+v", c16)
		}
	})
}

func FuzzParseLBAStatus(f *testing.F) {
	addSeeds(f, mustHex(`00000034 00000000
		0000000000000000 00000800 00 000000
		0000000000000800 00001000 01 000000
		0000000000001800 00000010 f2 000000`), mustHex("ffffffff000000000000000000000000 00000001 00 000000"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseLBAStatus(b)
		checkErr(t, err)
		if 8+16*len(d.Descriptors) > max(8, len(b)) {
			t.Fatalf("%d descriptors from %d bytes", len(d.Descriptors), len(b))
		}
		for _, s := range d.Descriptors {
			if s.Status > 15 {
				t.Fatalf("status %d", s.Status)
			}
		}
	})
}

func FuzzParseReportLUNs(f *testing.F) {
	addSeeds(f, capTgtdReportLUNs16, capTgtdReportLUNs24,
		mustHex("00000020 00000000 0000000000000000 00ff000000000000 4100000000000000 7fff000000000000"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseReportLUNs(b)
		checkErr(t, err)
		if 8+8*len(d.LUNs) > max(8, len(b)) {
			t.Fatalf("%d LUNs from %d bytes", len(d.LUNs), len(b))
		}
		if err == nil && !d.Truncated && uint64(len(d.LUNs)) != uint64(d.ListLength/8) {
			t.Fatalf("complete list of %d bytes gave %d LUNs", d.ListLength, len(d.LUNs))
		}
	})
}

func FuzzDecodeLUN(f *testing.F) {
	for _, s := range []string{"0000000000000000", "00ff000000000000", "4100000000000000", "7fff000000000000",
		"0001000200000000", "c101000000000000", "4005000000000000", "0105000000000000"} {
		f.Add(mustHex(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 8 {
			return
		}
		w := [8]byte(b[:8])
		v := DecodeLUN(w)
		if v > MaxFlatLUN {
			if EncodeLUN(v) != w {
				t.Fatalf("EncodeLUN(DecodeLUN(% x)) = % x", w, EncodeLUN(v))
			}
		} else if got := DecodeLUN(EncodeLUN(v)); got != v {
			t.Fatalf("DecodeLUN(EncodeLUN(%d)) = %d", v, got)
		}
	})
}

func FuzzParseModeSense(f *testing.F) {
	addSeeds(f, capTgtdModeSense6, capTgtdModeSense6BD, capIstgtModeSense6, capLioModeSense6,
		mustHex("002a00100100001000000000000000000000000000001000081204000000000000000000000000000000000000"))
	check := func(t *testing.T, m ModeSense, err error, n int) {
		checkErr(t, err)
		sum := 0
		for _, p := range m.Pages {
			sum += 2 + len(p.Data)
		}
		if sum > n {
			t.Fatalf("pages cover %d of %d bytes", sum, n)
		}
		m.WriteCacheEnabled()
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseModeSense6(b)
		check(t, m, err, len(b))
		m, err = ParseModeSense10(b)
		check(t, m, err, len(b))
	})
}

func FuzzParseReportTargetPortGroups(f *testing.F) {
	addSeeds(f, mustHex("0000001c"+rtpgDescs), mustHex("00000020 10 3c 0000"+rtpgDescs))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := ParseReportTargetPortGroups(b)
		checkErr(t, err)
		sum := 4
		for _, x := range g.Groups {
			sum += 8 + 4*len(x.Ports)
			_ = x.State.String()
		}
		if len(g.Groups) > 0 && sum > len(b) {
			t.Fatalf("groups cover %d of %d bytes", sum, len(b))
		}
	})
}

func FuzzParseSense(f *testing.F) {
	addSeeds(f, tgtdUASegment, istgtUASegment, lioUASegment,
		mustHex("0014 72 03 11 00 000000 0c 00 0a 80 00 0000000123456789"),
		mustHex("0028 73 05 24 00 000000 20 00 0a 00 00 00000000000000ff 01 0a 0000 0000000000000042 02 06 0000 800004 0000"),
		mustHex("0012 70 00 25 00000000 0a 01020304 24 00 00 c00002"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSenseData(b)
		checkErr(t, err)
		if err == nil {
			if s.ResponseCode < 0x70 || s.ResponseCode > 0x73 || s.Key > 15 {
				t.Fatalf("bad sense %+v", s)
			}
			if s.AsError().Error() == "" {
				t.Fatal("empty error string")
			}
		}
		if len(b) > 2 {
			_, err = ParseSense(b[2:])
			checkErr(t, err)
		}
		if err := CheckStatus(StatusCheckCondition, b); err == nil || err.Error() == "" {
			t.Fatalf("CheckStatus(CHECK CONDITION) = %v", err)
		}
		IsRetryable(CheckStatus(StatusCheckCondition, b))
	})
}
