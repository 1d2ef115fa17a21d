package scsi

import "encoding/binary"

// ModeSense is the decoded MODE SENSE(6)/(10) parameter data (SPC-4, "Mode
// parameter list"): the header, and the pages that follow the block
// descriptors.
//
//	MODE SENSE(6) header:  0 MODE DATA LENGTH, 1 MEDIUM TYPE,
//	                       2 DEVICE-SPECIFIC PARAMETER, 3 BLOCK DESCRIPTOR LENGTH
//	MODE SENSE(10) header: 0-1 MODE DATA LENGTH, 2 MEDIUM TYPE,
//	                       3 DEVICE-SPECIFIC PARAMETER, 4 LONGLBA (bit 0),
//	                       6-7 BLOCK DESCRIPTOR LENGTH
type ModeSense struct {
	DataLength     uint16 // MODE DATA LENGTH (bytes after the length field)
	MediumType     byte
	DeviceSpecific byte
	// WP is the write-protect bit of the direct-access device-specific
	// parameter (SBC-3, bit 7): the LU is read-only.
	WP bool
	// DPOFUA says the LU honours DPO and FUA (SBC-3, bit 4).
	DPOFUA                bool
	LongLBA               bool // MODE SENSE(10) only
	BlockDescriptorLength uint16
	Pages                 []ModePage
	// Truncated is set when the data stops before MODE DATA LENGTH says;
	// Pages holds the complete pages.
	Truncated bool
}

// ModePage is one mode page (SPC-4, "Mode page format"). Data excludes
// the 2-byte (page_0) or 4-byte (sub_page) page header.
type ModePage struct {
	Code    byte // PAGE CODE, 6 bits
	Subpage byte
	PS      bool // parameters savable
	Data    []byte
}

// Mode page codes (SBC-3).
const (
	ModePageCaching = 0x08
	ModePageControl = 0x0a
)

// ParseModeSense6 decodes MODE SENSE(6) parameter data.
func ParseModeSense6(b []byte) (ModeSense, error) {
	if len(b) < 4 {
		return ModeSense{}, errShort("MODE SENSE(6) header", len(b), 4)
	}
	m := ModeSense{
		DataLength:            uint16(b[0]),
		MediumType:            b[1],
		DeviceSpecific:        b[2],
		BlockDescriptorLength: uint16(b[3]),
	}
	return m.parseRest(b, 1, 4)
}

// ParseModeSense10 decodes MODE SENSE(10) parameter data.
func ParseModeSense10(b []byte) (ModeSense, error) {
	if len(b) < 8 {
		return ModeSense{}, errShort("MODE SENSE(10) header", len(b), 8)
	}
	m := ModeSense{
		DataLength:            binary.BigEndian.Uint16(b),
		MediumType:            b[2],
		DeviceSpecific:        b[3],
		LongLBA:               b[4]&0x01 != 0,
		BlockDescriptorLength: binary.BigEndian.Uint16(b[6:]),
	}
	return m.parseRest(b, 2, 8)
}

// parseRest decodes the flags and pages; lenField is the size of MODE
// DATA LENGTH, hdr the header size.
func (m ModeSense) parseRest(b []byte, lenField, hdr int) (ModeSense, error) {
	m.WP = m.DeviceSpecific&0x80 != 0
	m.DPOFUA = m.DeviceSpecific&0x10 != 0
	end := lenField + int(m.DataLength)
	if end > len(b) {
		m.Truncated = true
		end = len(b)
	}
	if end < hdr {
		// MODE DATA LENGTH smaller than the header: trust the header only.
		return m, nil
	}
	start := hdr + int(m.BlockDescriptorLength)
	if start > end {
		m.Truncated = true
		return m, nil
	}
	for p := b[start:end]; len(p) > 0; {
		if len(p) < 2 {
			m.Truncated = true
			break
		}
		pg := ModePage{Code: p[0] & 0x3f, PS: p[0]&0x80 != 0}
		var h, n int
		if p[0]&0x40 != 0 { // SPF: sub_page format
			if len(p) < 4 {
				m.Truncated = true
				break
			}
			pg.Subpage = p[1]
			h, n = 4, int(binary.BigEndian.Uint16(p[2:]))
		} else {
			h, n = 2, int(p[1])
		}
		if h+n > len(p) {
			m.Truncated = true
			break
		}
		pg.Data = append([]byte(nil), p[h:h+n]...)
		m.Pages = append(m.Pages, pg)
		p = p[h+n:]
	}
	return m, nil
}

// Page returns the first page with the given code and subpage.
func (m ModeSense) Page(code, subpage byte) (ModePage, bool) {
	for _, p := range m.Pages {
		if p.Code == code && p.Subpage == subpage {
			return p, true
		}
	}
	return ModePage{}, false
}

// WriteCacheEnabled reports the WCE bit of the Caching mode page (SBC-3,
// byte 2 bit 2 of the page); ok is false when the page is absent or short.
// With WCE clear SYNCHRONIZE CACHE is not needed for durability.
func (m ModeSense) WriteCacheEnabled() (wce, ok bool) {
	p, found := m.Page(ModePageCaching, 0)
	if !found || len(p.Data) < 1 {
		return false, false
	}
	return p.Data[0]&0x04 != 0, true
}
