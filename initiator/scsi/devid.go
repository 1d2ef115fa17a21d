package scsi

import (
	"encoding/binary"
	"encoding/hex"
	"strings"
)

// Designator code sets (SPC-4, "Device Identification VPD page").
const (
	CodeSetBinary = 1
	CodeSetASCII  = 2
	CodeSetUTF8   = 3
)

// Designator associations: what a designator names.
const (
	AssocLU           = 0 // the logical unit
	AssocTargetPort   = 1 // the target port the command went through
	AssocTargetDevice = 2 // the SCSI target device holding the LU
)

// Designator types (SPC-4, "DESIGNATOR TYPE field").
const (
	DesigVendorSpecific  = 0x0
	DesigT10VendorID     = 0x1
	DesigEUI64           = 0x2
	DesigNAA             = 0x3
	DesigRelTargetPort   = 0x4
	DesigTargetPortGroup = 0x5
	DesigLUGroup         = 0x6
	DesigMD5LUID         = 0x7
	DesigSCSIName        = 0x8
	DesigProtocolPort    = 0x9
	DesigUUID            = 0xa
)

// Designator is one designation descriptor of VPD page 0x83 (SPC-4,
// "Designation descriptor"):
//
//	byte 0: PROTOCOL IDENTIFIER (7-4) | CODE SET (3-0)
//	byte 1: PIV (7) | ASSOCIATION (5-4) | DESIGNATOR TYPE (3-0)
//	byte 3: DESIGNATOR LENGTH (n-3), then the designator
type Designator struct {
	ProtocolID  byte // valid when PIV is set; 5 = iSCSI
	CodeSet     byte
	PIV         bool
	Association byte
	Type        byte
	Value       []byte // a copy of the DESIGNATOR bytes
}

// DeviceIdentification is VPD page 0x83 (SPC-4, "Device Identification
// VPD page").
type DeviceIdentification struct {
	Designators []Designator
	// Truncated is set when the page is longer than the data returned
	// (e.g. INQUIRY with allocation length 64); Designators then holds
	// the complete descriptors only. Reissue with FullLength bytes.
	Truncated  bool
	FullLength int
}

// ParseDeviceIdentification decodes VPD page 0x83. Data cut short by the
// allocation length is accepted: the complete descriptors are returned and
// Truncated is set.
func ParseDeviceIdentification(b []byte) (DeviceIdentification, error) {
	h, body, trunc, err := vpdBody(b, VPDDeviceIdentification)
	if err != nil {
		return DeviceIdentification{}, err
	}
	d := DeviceIdentification{Truncated: trunc, FullLength: h.FullLength()}
	for len(body) > 0 {
		if len(body) < 4 {
			if !trunc {
				return d, errBad("designation descriptor: %d trailing bytes", len(body))
			}
			break
		}
		n := 4 + int(body[3])
		if n > len(body) {
			if !trunc {
				return d, errBad("designation descriptor length %d exceeds page", body[3])
			}
			break
		}
		d.Designators = append(d.Designators, Designator{
			ProtocolID:  body[0] >> 4,
			CodeSet:     body[0] & 0x0f,
			PIV:         body[1]&0x80 != 0,
			Association: (body[1] >> 4) & 0x03,
			Type:        body[1] & 0x0f,
			Value:       append([]byte(nil), body[4:n]...),
		})
		body = body[n:]
	}
	return d, nil
}

// WWID returns the preferred world wide identifier of the logical unit,
// formatted like Linux's sysfs "wwid" attribute, and false when the page
// has no usable LU designator. Only designators associated with the LU are
// considered, in this order of preference:
//
//	NAA (type 3): NAA 6 over NAA 5 over other NAA   "naa.6001405abfd0..."
//	EUI-64 (type 2)                                  "eui.0123456789abcdef"
//	SCSI name string (type 8), as is                 "iqn.2003-01.org...."
//	T10 vendor ID (type 1)                           "t10.LIO-ORG ..."
//
// Binary values are printed as lower-case hex.
func (d DeviceIdentification) WWID() (string, bool) {
	best, bestRank := -1, 0
	for i, g := range d.Designators {
		if g.Association != AssocLU || len(g.Value) == 0 {
			continue
		}
		if r := g.wwidRank(); r > bestRank {
			best, bestRank = i, r
		}
	}
	if best < 0 {
		return "", false
	}
	return d.Designators[best].String(), true
}

func (g Designator) wwidRank() int {
	switch g.Type {
	case DesigNAA:
		switch g.Value[0] >> 4 {
		case 6:
			return 7
		case 5:
			return 6
		}
		return 5
	case DesigEUI64:
		return 4
	case DesigSCSIName:
		return 3
	case DesigT10VendorID:
		return 2
	}
	return 0
}

// String formats the designator the way WWID does: "naa.<hex>",
// "eui.<hex>", the SCSI name string itself, "t10.<ascii>", and plain hex
// for other types.
func (g Designator) String() string {
	switch g.Type {
	case DesigNAA:
		return "naa." + hex.EncodeToString(g.Value)
	case DesigEUI64:
		return "eui." + hex.EncodeToString(g.Value)
	case DesigSCSIName:
		return g.text()
	case DesigT10VendorID:
		return "t10." + g.text()
	}
	return hex.EncodeToString(g.Value)
}

// text renders ASCII/UTF-8 designators without their NUL/space padding and
// binary ones as hex.
func (g Designator) text() string {
	if g.CodeSet == CodeSetASCII || g.CodeSet == CodeSetUTF8 {
		return strings.TrimRight(string(g.Value), " \x00")
	}
	return hex.EncodeToString(g.Value)
}

// NAAType returns the NAA field (high nibble) of an NAA designator, or 0
// for other types.
func (g Designator) NAAType() byte {
	if g.Type != DesigNAA || len(g.Value) == 0 {
		return 0
	}
	return g.Value[0] >> 4
}

// port16 decodes the 4-byte relative target port / target port group
// designators, whose identifier is in bytes 2-3.
func (d DeviceIdentification) port16(typ byte) (uint16, bool) {
	for _, g := range d.Designators {
		if g.Type == typ && g.Association == AssocTargetPort && len(g.Value) >= 4 {
			return binary.BigEndian.Uint16(g.Value[2:]), true
		}
	}
	return 0, false
}

// RelativeTargetPort returns the relative target port identifier (type 4)
// of the port this page was read through.
func (d DeviceIdentification) RelativeTargetPort() (uint16, bool) {
	return d.port16(DesigRelTargetPort)
}

// TargetPortGroup returns the target port group (type 5) of the port this
// page was read through; REPORT TARGET PORT GROUPS gives its ALUA state.
func (d DeviceIdentification) TargetPortGroup() (uint16, bool) {
	return d.port16(DesigTargetPortGroup)
}
