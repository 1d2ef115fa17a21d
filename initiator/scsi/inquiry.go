package scsi

import (
	"fmt"
	"strings"
)

// DeviceType is the PERIPHERAL DEVICE TYPE of INQUIRY data (SPC-4,
// "Peripheral device type" table).
type DeviceType byte

// Peripheral device types a block initiator meets.
const (
	TypeDisk        DeviceType = 0x00
	TypeTape        DeviceType = 0x01
	TypeProcessor   DeviceType = 0x03
	TypeWORM        DeviceType = 0x04
	TypeCDROM       DeviceType = 0x05
	TypeOptical     DeviceType = 0x07
	TypeChanger     DeviceType = 0x08
	TypeController  DeviceType = 0x0c // storage array controller (RAID)
	TypeEnclosure   DeviceType = 0x0d
	TypeRBC         DeviceType = 0x0e
	TypeOSD         DeviceType = 0x11
	TypeZBC         DeviceType = 0x14 // host-managed zoned block device
	TypeWellKnownLU DeviceType = 0x1e
	TypeNoDevice    DeviceType = 0x1f // unknown or no device type
)

var deviceTypeNames = map[DeviceType]string{
	0x00: "disk",
	0x01: "tape",
	0x02: "printer",
	0x03: "processor",
	0x04: "worm",
	0x05: "cd/dvd",
	0x06: "scanner",
	0x07: "optical",
	0x08: "changer",
	0x09: "communications",
	0x0c: "controller",
	0x0d: "enclosure",
	0x0e: "rbc",
	0x0f: "card reader",
	0x10: "bridge",
	0x11: "osd",
	0x12: "adc",
	0x13: "security manager",
	0x14: "zbc",
	0x1e: "well known lu",
	0x1f: "no device",
}

// String returns a short lower-case name ("disk", "controller", ...).
func (t DeviceType) String() string {
	if n, ok := deviceTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type 0x%02x", byte(t))
}

// Peripheral qualifier values (SPC-4).
const (
	QualifierConnected    = 0 // a device of this type is (or may be) connected
	QualifierNotConnected = 1 // supported, but not connected now
	QualifierNotSupported = 3 // no logical unit at this LUN
)

// TPGS values: asymmetric logical unit access support (SPC-4).
const (
	TPGSNone     = 0 // no ALUA
	TPGSImplicit = 1 // implicit ALUA only
	TPGSExplicit = 2 // explicit ALUA only (SET TARGET PORT GROUPS)
	TPGSBoth     = 3
)

// InquiryData is standard INQUIRY data (SPC-4, "Standard INQUIRY data").
type InquiryData struct {
	Qualifier  byte // peripheral qualifier, bits 7-5 of byte 0
	DeviceType DeviceType
	Removable  bool // RMB
	Version    byte // 0x05 SPC-3, 0x06 SPC-4, 0x07 SPC-5
	NormACA    bool
	HiSup      bool
	// ResponseFormat is RESPONSE DATA FORMAT; 2 is the only current value.
	ResponseFormat byte
	SCCS           bool // embedded storage array controller
	ACC            bool
	TPGS           byte // TPGSNone..TPGSBoth
	ThirdPartyCopy bool // 3PC
	Protect        bool // supports protection information
	EncServ        bool
	MultiP         bool
	CmdQue         bool
	Vendor         string // T10 VENDOR IDENTIFICATION, trimmed
	Product        string // PRODUCT IDENTIFICATION, trimmed
	Revision       string // PRODUCT REVISION LEVEL, trimmed
	// AdditionalLength is byte 4: the full data is AdditionalLength+5
	// bytes, which may be more than was returned.
	AdditionalLength byte
}

// Standard INQUIRY data is at least 36 bytes (SPC-4: "The standard INQUIRY
// data ... shall contain at least 36 bytes").
const inquiryMinLen = 36

// ParseInquiry decodes standard INQUIRY data (SPC-4). It needs the
// first 36 bytes; later bytes (version descriptors) are ignored.
func ParseInquiry(b []byte) (InquiryData, error) {
	var d InquiryData
	if len(b) < inquiryMinLen {
		return d, errShort("standard INQUIRY data", len(b), inquiryMinLen)
	}
	d.Qualifier = b[0] >> 5
	d.DeviceType = DeviceType(b[0] & 0x1f)
	d.Removable = b[1]&0x80 != 0
	d.Version = b[2]
	d.NormACA = b[3]&0x20 != 0
	d.HiSup = b[3]&0x10 != 0
	d.ResponseFormat = b[3] & 0x0f
	d.AdditionalLength = b[4]
	d.SCCS = b[5]&0x80 != 0
	d.ACC = b[5]&0x40 != 0
	d.TPGS = (b[5] >> 4) & 0x03
	d.ThirdPartyCopy = b[5]&0x08 != 0
	d.Protect = b[5]&0x01 != 0
	d.EncServ = b[6]&0x40 != 0
	d.MultiP = b[6]&0x10 != 0
	d.CmdQue = b[7]&0x02 != 0
	d.Vendor = trimASCII(b[8:16])
	d.Product = trimASCII(b[16:32])
	d.Revision = trimASCII(b[32:36])
	return d, nil
}

// Present reports whether a logical unit is attached at this LUN: the
// qualifier is not 011b and the device type is not 0x1f.
func (d InquiryData) Present() bool {
	return d.Qualifier != QualifierNotSupported && d.DeviceType != TypeNoDevice
}

// trimASCII trims the space and NUL padding SPC-4 allows around ASCII
// fields.
func trimASCII(b []byte) string {
	return strings.Trim(string(b), " \x00")
}
