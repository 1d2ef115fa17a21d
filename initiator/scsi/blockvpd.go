package scsi

import "encoding/binary"

// BlockLimits is the Block Limits VPD page, 0xB0 (SBC-3, "Block Limits VPD
// page"). Fields a short page does not reach are zero, which SBC-3 defines
// as "no limit reported" for all of them. Lengths are in logical blocks.
type BlockLimits struct {
	WSNZ                           bool   // WRITE SAME with 0 blocks not supported
	MaxCompareAndWriteLength       uint8  // byte 5
	OptimalTransferGranularity     uint16 // bytes 6-7
	MaxTransferLength              uint32 // bytes 8-11
	OptimalTransferLength          uint32 // bytes 12-15
	MaxPrefetchLength              uint32 // bytes 16-19
	MaxUnmapLBACount               uint32 // bytes 20-23
	MaxUnmapDescriptorCount        uint32 // bytes 24-27
	OptimalUnmapGranularity        uint32 // bytes 28-31
	UnmapGranularityAlignmentValid bool   // UGAVALID, byte 32 bit 7
	UnmapGranularityAlignment      uint32 // bytes 32-35, 31 bits
	MaxWriteSameLength             uint64 // bytes 36-43
	// PageLength is the PAGE LENGTH the target reported (0x3C for a full
	// SBC-3 page; LIO sends 0x10).
	PageLength uint16
}

// ParseBlockLimits decodes VPD page 0xB0. Short pages are accepted.
func ParseBlockLimits(b []byte) (BlockLimits, error) {
	h, body, _, err := vpdBody(b, VPDBlockLimits)
	if err != nil {
		return BlockLimits{}, err
	}
	// Offsets below are page offsets; body starts at page byte 4. A field
	// the data does not wholly cover stays zero.
	var p [64]byte
	n := 4 + copy(p[4:], body)
	u16 := func(off int) uint16 {
		if off+2 > n {
			return 0
		}
		return binary.BigEndian.Uint16(p[off:])
	}
	u32 := func(off int) uint32 {
		if off+4 > n {
			return 0
		}
		return binary.BigEndian.Uint32(p[off:])
	}
	l := BlockLimits{PageLength: h.Length}
	l.WSNZ = p[4]&0x01 != 0
	l.MaxCompareAndWriteLength = p[5]
	l.OptimalTransferGranularity = u16(6)
	l.MaxTransferLength = u32(8)
	l.OptimalTransferLength = u32(12)
	l.MaxPrefetchLength = u32(16)
	l.MaxUnmapLBACount = u32(20)
	l.MaxUnmapDescriptorCount = u32(24)
	l.OptimalUnmapGranularity = u32(28)
	ugran := u32(32)
	l.UnmapGranularityAlignmentValid = ugran&0x80000000 != 0
	l.UnmapGranularityAlignment = ugran & 0x7fffffff
	if n >= 44 {
		l.MaxWriteSameLength = binary.BigEndian.Uint64(p[36:])
	}
	return l, nil
}

// BlockDeviceCharacteristics is VPD page 0xB1 (SBC-3, "Block Device
// Characteristics VPD page").
type BlockDeviceCharacteristics struct {
	// RotationRate is MEDIUM ROTATION RATE: 0 not reported, 1 non-rotating
	// (solid state), 0x0401-0xFFFE nominal rpm.
	RotationRate uint16
	ProductType  byte // byte 6
	FormFactor   byte // NOMINAL FORM FACTOR, byte 7 bits 3-0
}

// NonRotating reports solid-state media (MEDIUM ROTATION RATE 1).
func (c BlockDeviceCharacteristics) NonRotating() bool { return c.RotationRate == 1 }

// ParseBlockDeviceCharacteristics decodes VPD page 0xB1. The page must
// reach the rotation rate (bytes 4-5); later fields are zero if absent.
func ParseBlockDeviceCharacteristics(b []byte) (BlockDeviceCharacteristics, error) {
	_, body, _, err := vpdBody(b, VPDBlockDeviceCharacteristics)
	if err != nil {
		return BlockDeviceCharacteristics{}, err
	}
	if len(body) < 2 {
		return BlockDeviceCharacteristics{}, errShort("block device characteristics page", 4+len(body), 6)
	}
	var p [4]byte
	copy(p[:], body)
	return BlockDeviceCharacteristics{
		RotationRate: binary.BigEndian.Uint16(p[0:]),
		ProductType:  p[2],
		FormFactor:   p[3] & 0x0f,
	}, nil
}

// Provisioning types of the Logical Block Provisioning page.
const (
	ProvisioningFull     = 0 // fully provisioned (or not reported)
	ProvisioningResource = 1 // resource provisioned
	ProvisioningThin     = 2 // thin provisioned
)

// LogicalBlockProvisioning is VPD page 0xB2 (SBC-3, "Logical Block
// Provisioning VPD page").
type LogicalBlockProvisioning struct {
	ThresholdExponent byte
	LBPU              bool // UNMAP supported
	LBPWS             bool // WRITE SAME(16) with UNMAP supported
	LBPWS10           bool // WRITE SAME(10) with UNMAP supported
	// LBPRZ is the 3-bit SBC-4 field (bits 4-2); SBC-3 defined only its
	// low bit. xx1b: unmapped blocks read as zeros. 010b: they read as
	// the "provisioning initialization pattern", which need not be zeros.
	// 000b: what they read is not specified. Use UnmappedReadZero.
	LBPRZ               byte
	ANCSup              bool // anchored LBAs supported
	DP                  bool // provisioning group descriptor present
	MinimumPercentage   byte // SBC-4, byte 6 bits 7-3
	ProvisioningType    byte // ProvisioningFull/Resource/Thin
	ThresholdPercentage byte
}

// UnmappedReadZero reports whether unmapped (deallocated or anchored)
// blocks read as zeros: LBPRZ bit 0 (SBC-4, xx1b).
func (p LogicalBlockProvisioning) UnmappedReadZero() bool { return p.LBPRZ&1 != 0 }

// ParseLogicalBlockProvisioning decodes VPD page 0xB2. It needs bytes 4-5;
// bytes 6-7 are zero if absent. Designators after byte 7 are ignored.
func ParseLogicalBlockProvisioning(b []byte) (LogicalBlockProvisioning, error) {
	_, body, _, err := vpdBody(b, VPDLogicalBlockProvisioning)
	if err != nil {
		return LogicalBlockProvisioning{}, err
	}
	if len(body) < 2 {
		return LogicalBlockProvisioning{}, errShort("logical block provisioning page", 4+len(body), 6)
	}
	var p [4]byte
	copy(p[:], body)
	return LogicalBlockProvisioning{
		ThresholdExponent:   p[0],
		LBPU:                p[1]&0x80 != 0,
		LBPWS:               p[1]&0x40 != 0,
		LBPWS10:             p[1]&0x20 != 0,
		LBPRZ:               (p[1] >> 2) & 0x07,
		ANCSup:              p[1]&0x02 != 0,
		DP:                  p[1]&0x01 != 0,
		MinimumPercentage:   p[2] >> 3,
		ProvisioningType:    p[2] & 0x07,
		ThresholdPercentage: p[3],
	}, nil
}
