package scsi

import (
	"errors"
	"testing"
)

func TestParseModeSense6Captures(t *testing.T) {
	type page struct{ code, sub byte }
	tests := []struct {
		name       string
		in         []byte
		dpofua     bool
		bdl        uint16
		pages      []page
		wce, wceOK bool
	}{
		{"tgtd", capTgtdModeSense6, true, 0, []page{{0, 0}, {2, 0}, {8, 0}, {0x0a, 0}, {0x0a, 1}, {0x1c, 0}}, true, true},
		{"tgtd with block descriptor", capTgtdModeSense6BD, true, 8, []page{{0, 0}, {2, 0}, {8, 0}, {0x0a, 0}, {0x0a, 1}, {0x1c, 0}}, true, true},
		{"istgt", capIstgtModeSense6, false, 0, []page{{1, 0}, {2, 0}, {7, 0}, {8, 0}, {0x0a, 0}, {0x10, 0}, {0x1a, 0}, {0x1c, 0}}, true, true},
		{"LIO", capLioModeSense6, false, 0, []page{{1, 0}, {8, 0}, {0x0a, 0}, {0x1c, 0}}, false, true},
	}
	for _, tt := range tests {
		m, err := ParseModeSense6(tt.in)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if m.WP || m.DPOFUA != tt.dpofua || m.BlockDescriptorLength != tt.bdl || m.Truncated ||
			int(m.DataLength)+1 != len(tt.in) {
			t.Errorf("%s: header %+v", tt.name, m)
		}
		if len(m.Pages) != len(tt.pages) {
			t.Errorf("%s: %d pages, want %d", tt.name, len(m.Pages), len(tt.pages))
			continue
		}
		for i, p := range m.Pages {
			if (page{p.Code, p.Subpage}) != tt.pages[i] {
				t.Errorf("%s: page %d = %02x/%02x, want %v", tt.name, i, p.Code, p.Subpage, tt.pages[i])
			}
		}
		if wce, ok := m.WriteCacheEnabled(); wce != tt.wce || ok != tt.wceOK {
			t.Errorf("%s: WriteCacheEnabled = %v, %v", tt.name, wce, ok)
		}
	}
}

func TestParseModeSenseHeaders(t *testing.T) {
	m, err := ParseModeSense6(hx(t, "03 00 80 00"))
	if err != nil || !m.WP || m.DPOFUA || len(m.Pages) != 0 || m.Truncated {
		t.Errorf("WP header: %+v, %v", m, err)
	}
	m, err = ParseModeSense10(hx(t, "0006 00 90 01 00 0000"))
	if err != nil || !m.WP || !m.DPOFUA || !m.LongLBA || m.Truncated {
		t.Errorf("MODE SENSE(10) WP header: %+v, %v", m, err)
	}
	// MODE SENSE(10) with a 16-byte long LBA block descriptor and a caching page.
	m, err = ParseModeSense10(hx(t, "002a 00 10 01 00 0010 00000000000000000000000000001000 0812 04 00000000000000000000000000000000 00"))
	if err != nil || m.WP || m.BlockDescriptorLength != 16 || len(m.Pages) != 1 || m.Truncated {
		t.Fatalf("MODE SENSE(10) with pages: %+v, %v", m, err)
	}
	if wce, ok := m.WriteCacheEnabled(); !wce || !ok {
		t.Errorf("WCE = %v, %v", wce, ok)
	}
	// Cut inside a page: the complete pages are kept.
	m, err = ParseModeSense6(capLioModeSense6[:30])
	if err != nil || !m.Truncated || len(m.Pages) != 1 {
		t.Errorf("cut MODE SENSE(6): %+v, %v", m, err)
	}
	if _, ok := m.WriteCacheEnabled(); ok {
		t.Error("WriteCacheEnabled ok without caching page")
	}
	// Block descriptor length beyond the data.
	m, err = ParseModeSense6(hx(t, "0b 00 00 08 0000"))
	if err != nil || !m.Truncated || len(m.Pages) != 0 {
		t.Errorf("BDL beyond data: %+v, %v", m, err)
	}
	if _, err := ParseModeSense6(hx(t, "03 00 80")); !errors.Is(err, ErrTruncated) {
		t.Errorf("3-byte header: %v", err)
	}
	if _, err := ParseModeSense10(hx(t, "0006 00 80 00 00 00")); !errors.Is(err, ErrTruncated) {
		t.Errorf("7-byte header: %v", err)
	}
}
