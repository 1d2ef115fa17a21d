package scsi

import "encoding/binary"

// VPD page codes (SPC-4 and SBC-3 "Vital product data parameters").
const (
	VPDSupportedPages             = 0x00
	VPDUnitSerialNumber           = 0x80
	VPDDeviceIdentification       = 0x83
	VPDBlockLimits                = 0xb0
	VPDBlockDeviceCharacteristics = 0xb1
	VPDLogicalBlockProvisioning   = 0xb2
)

// VPDHeader is the 4-byte header every VPD page starts with (SPC-4,
// "VPD page format"):
//
//	byte 0: PERIPHERAL QUALIFIER (7-5) | PERIPHERAL DEVICE TYPE (4-0)
//	byte 1: PAGE CODE
//	byte 2-3: PAGE LENGTH (n-3)
type VPDHeader struct {
	Qualifier  byte
	DeviceType DeviceType
	Page       byte
	Length     uint16 // PAGE LENGTH: bytes after the header
}

// FullLength is the allocation length that returns the whole page.
func (h VPDHeader) FullLength() int { return 4 + int(h.Length) }

// ParseVPDHeader decodes the header of any VPD page. Use FullLength to
// size a second INQUIRY when the first was cut short.
func ParseVPDHeader(b []byte) (VPDHeader, error) {
	if len(b) < 4 {
		return VPDHeader{}, errShort("VPD page header", len(b), 4)
	}
	return VPDHeader{
		Qualifier:  b[0] >> 5,
		DeviceType: DeviceType(b[0] & 0x1f),
		Page:       b[1],
		Length:     binary.BigEndian.Uint16(b[2:]),
	}, nil
}

// vpdBody checks the header against page and returns the page body (after
// the header), clipped to what b holds, and whether it was clipped.
func vpdBody(b []byte, page byte) (VPDHeader, []byte, bool, error) {
	h, err := ParseVPDHeader(b)
	if err != nil {
		return h, nil, false, err
	}
	if h.Page != page {
		return h, nil, false, errBad("VPD page code 0x%02x, want 0x%02x", h.Page, page)
	}
	body := b[4:]
	if int(h.Length) < len(body) {
		return h, body[:h.Length], false, nil
	}
	return h, body, int(h.Length) > len(body), nil
}

// SupportedPages is the Supported VPD Pages page, 0x00 (SPC-4).
type SupportedPages struct {
	Pages     []byte
	Truncated bool // the list is longer than the data returned
}

// Has reports whether page is in the list.
func (s SupportedPages) Has(page byte) bool {
	for _, p := range s.Pages {
		if p == page {
			return true
		}
	}
	return false
}

// ParseSupportedPages decodes VPD page 0x00 (SPC-4).
func ParseSupportedPages(b []byte) (SupportedPages, error) {
	_, body, trunc, err := vpdBody(b, VPDSupportedPages)
	if err != nil {
		return SupportedPages{}, err
	}
	return SupportedPages{Pages: append([]byte(nil), body...), Truncated: trunc}, nil
}

// ParseUnitSerialNumber decodes VPD page 0x80, Unit Serial Number (SPC-4),
// returning the PRODUCT SERIAL NUMBER with its space/NUL padding trimmed.
// A truncated page returns the prefix it has with ErrTruncated.
func ParseUnitSerialNumber(b []byte) (string, error) {
	h, body, trunc, err := vpdBody(b, VPDUnitSerialNumber)
	if err != nil {
		return "", err
	}
	if trunc {
		return trimASCII(body), errShort("unit serial number page", len(b), h.FullLength())
	}
	return trimASCII(body), nil
}
