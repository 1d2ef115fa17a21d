package scsi

import "encoding/binary"

// Operation codes used by this package (SPC-4 Annex D, SBC-3 "Commands for direct access block devices").
const (
	OpTestUnitReady      = 0x00
	OpInquiry            = 0x12
	OpModeSense6         = 0x1a
	OpReadCapacity10     = 0x25
	OpRead10             = 0x28
	OpWrite10            = 0x2a
	OpSynchronizeCache10 = 0x35
	OpUnmap              = 0x42
	OpModeSense10        = 0x5a
	OpRead16             = 0x88
	OpWrite16            = 0x8a
	OpSynchronizeCache16 = 0x91
	OpWriteSame16        = 0x93
	OpServiceActionIn16  = 0x9e
	OpReportLUNs         = 0xa0
	OpMaintenanceIn      = 0xa3
)

// Service actions of SERVICE ACTION IN(16) and MAINTENANCE IN.
const (
	SAReadCapacity16         = 0x10 // SBC-3 READ CAPACITY(16)
	SAGetLBAStatus           = 0x12 // SBC-3 GET LBA STATUS
	SAReportTargetPortGroups = 0x0a // SPC-4 REPORT TARGET PORT GROUPS
)

// TestUnitReady builds TEST UNIT READY (SPC-4).
func TestUnitReady() []byte { return make([]byte, 6) }

// Inquiry builds INQUIRY (SPC-4). With evpd false page must be 0 (the
// standard INQUIRY data); with evpd true page names the VPD page.
func Inquiry(evpd bool, page byte, allocLen uint16) []byte {
	c := make([]byte, 6)
	c[0] = OpInquiry
	if evpd {
		c[1] = 0x01
	}
	c[2] = page
	binary.BigEndian.PutUint16(c[3:], allocLen)
	return c
}

// ReadCapacity10 builds READ CAPACITY(10) (SBC-3).
func ReadCapacity10() []byte {
	c := make([]byte, 10)
	c[0] = OpReadCapacity10
	return c
}

// ReadCapacity16 builds READ CAPACITY(16), SERVICE ACTION IN(16) with
// service action 0x10 (SBC-3). 32 is the full parameter data length.
func ReadCapacity16(allocLen uint32) []byte {
	c := make([]byte, 16)
	c[0] = OpServiceActionIn16
	c[1] = SAReadCapacity16
	binary.BigEndian.PutUint32(c[10:], allocLen)
	return c
}

// SynchronizeCache10 builds SYNCHRONIZE CACHE(10) (SBC-3). lba 0 and
// blocks 0 ask for the whole medium.
func SynchronizeCache10(lba uint32, blocks uint16) []byte {
	c := make([]byte, 10)
	c[0] = OpSynchronizeCache10
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

// SynchronizeCache16 builds SYNCHRONIZE CACHE(16) (SBC-3). lba 0 and
// blocks 0 ask for the whole medium.
func SynchronizeCache16(lba uint64, blocks uint32) []byte {
	c := make([]byte, 16)
	c[0] = OpSynchronizeCache16
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

// Unmap builds UNMAP (SBC-3); paramListLen is the length of the
// parameter list built by UnmapParameterList. The ANCHOR bit is left clear.
func Unmap(paramListLen uint16) []byte {
	c := make([]byte, 10)
	c[0] = OpUnmap
	binary.BigEndian.PutUint16(c[7:], paramListLen)
	return c
}

// UnmapDescriptor is one UNMAP block descriptor (SBC-3).
type UnmapDescriptor struct {
	LBA    uint64
	Blocks uint32
}

// MaxUnmapDescriptors is the most descriptors one UNMAP parameter list can
// carry: its 16-bit UNMAP DATA LENGTH counts 6 header bytes plus 16 per
// descriptor. Targets usually allow far fewer (BlockLimits).
const MaxUnmapDescriptors = (0xffff - 6) / 16

// UnmapParameterList builds the UNMAP parameter list (SBC-3): an
// 8-byte header followed by one 16-byte descriptor per entry. It panics
// when given more than MaxUnmapDescriptors descriptors, a caller bug that
// cannot be expressed on the wire; split the list per
// BlockLimits.MaxUnmapDescriptorCount first.
func UnmapParameterList(descs []UnmapDescriptor) []byte {
	if len(descs) > MaxUnmapDescriptors {
		panic("scsi: UnmapParameterList: too many descriptors")
	}
	n := 16 * len(descs)
	b := make([]byte, 8+n)
	binary.BigEndian.PutUint16(b[0:], uint16(6+n))
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	for i, d := range descs {
		p := b[8+16*i:]
		binary.BigEndian.PutUint64(p, d.LBA)
		binary.BigEndian.PutUint32(p[8:], d.Blocks)
	}
	return b
}

// WriteSame16 builds WRITE SAME(16) (SBC-3; NDOB from SBC-4). unmap
// lets the target deallocate the blocks, anchor anchors them instead, and
// ndob (no data-out buffer) means "write zeros" without sending a block.
func WriteSame16(lba uint64, blocks uint32, unmap, anchor, ndob bool) []byte {
	c := make([]byte, 16)
	c[0] = OpWriteSame16
	if anchor {
		c[1] |= 0x10
	}
	if unmap {
		c[1] |= 0x08
	}
	if ndob {
		c[1] |= 0x01
	}
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

// GetLBAStatus builds GET LBA STATUS, SERVICE ACTION IN(16) with service
// action 0x12 (SBC-3), starting at lba.
func GetLBAStatus(lba uint64, allocLen uint32) []byte {
	c := make([]byte, 16)
	c[0] = OpServiceActionIn16
	c[1] = SAGetLBAStatus
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], allocLen)
	return c
}

// ReportLUNs builds REPORT LUNS (SPC-4) with SELECT REPORT 0 (all
// logical units addressed through this I_T nexus, well-known LUs excluded).
// SPC-4 requires allocLen to be at least 16.
func ReportLUNs(allocLen uint32) []byte {
	c := make([]byte, 12)
	c[0] = OpReportLUNs
	binary.BigEndian.PutUint32(c[6:], allocLen)
	return c
}

// ModePageAll asks MODE SENSE for every page.
const ModePageAll = 0x3f

// ModeSense6 builds MODE SENSE(6) (SPC-4) for the current values of
// page/subpage. dbd disables block descriptors.
func ModeSense6(page, subpage byte, dbd bool, allocLen uint8) []byte {
	c := make([]byte, 6)
	c[0] = OpModeSense6
	if dbd {
		c[1] = 0x08
	}
	c[2] = page & 0x3f
	c[3] = subpage
	c[4] = allocLen
	return c
}

// ModeSense10 builds MODE SENSE(10) (SPC-4) for the current values of
// page/subpage. dbd disables block descriptors; LLBAA is left clear.
func ModeSense10(page, subpage byte, dbd bool, allocLen uint16) []byte {
	c := make([]byte, 10)
	c[0] = OpModeSense10
	if dbd {
		c[1] = 0x08
	}
	c[2] = page & 0x3f
	c[3] = subpage
	binary.BigEndian.PutUint16(c[7:], allocLen)
	return c
}

// ReportTargetPortGroups builds REPORT TARGET PORT GROUPS, MAINTENANCE IN
// with service action 0x0a (SPC-4). extended asks for the extended
// header (PARAMETER DATA FORMAT 001b); ParseReportTargetPortGroups accepts
// either format.
func ReportTargetPortGroups(allocLen uint32, extended bool) []byte {
	c := make([]byte, 12)
	c[0] = OpMaintenanceIn
	c[1] = SAReportTargetPortGroups
	if extended {
		c[1] |= 0x20
	}
	binary.BigEndian.PutUint32(c[6:], allocLen)
	return c
}
