package scsi

import "encoding/binary"

// Capacity is what READ CAPACITY(10) or (16) reports. For (10) only
// LastLBA and BlockLength are set.
type Capacity struct {
	// LastLBA is the RETURNED LOGICAL BLOCK ADDRESS: the last addressable
	// block, so the LU holds LastLBA+1 blocks (see Blocks).
	LastLBA     uint64
	BlockLength uint32 // LOGICAL BLOCK LENGTH IN BYTES

	// READ CAPACITY(16) only (SBC-3, "READ CAPACITY (16) parameter data").
	ProtectionType    byte // P_TYPE, byte 12 bits 3-1 (type = P_TYPE+1 when ProtectionEnabled)
	ProtectionEnabled bool // PROT_EN, byte 12 bit 0
	PIExponent        byte // P_I_EXPONENT, byte 13 bits 7-4
	// LBPPBE is LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: a physical
	// block holds 1<<LBPPBE logical blocks.
	LBPPBE byte
	LBPME  bool // logical block provisioning management enabled (thin)
	LBPRZ  bool // unmapped blocks read as zeros
	// LowestAlignedLBA is the first LBA aligned to a physical block.
	LowestAlignedLBA uint16
}

// Blocks returns the number of logical blocks (LastLBA+1).
func (c Capacity) Blocks() uint64 { return c.LastLBA + 1 }

// Bytes returns the capacity in bytes; it saturates instead of wrapping.
func (c Capacity) Bytes() uint64 {
	n := c.Blocks()
	if c.BlockLength != 0 && n > ^uint64(0)/uint64(c.BlockLength) {
		return ^uint64(0)
	}
	return n * uint64(c.BlockLength)
}

// PhysicalBlockLength returns BlockLength << LBPPBE.
func (c Capacity) PhysicalBlockLength() uint64 {
	return uint64(c.BlockLength) << (c.LBPPBE & 0x0f)
}

// Need16 reports that READ CAPACITY(10) could not express the capacity
// (RETURNED LOGICAL BLOCK ADDRESS 0xFFFFFFFF) and READ CAPACITY(16) must be
// used (SBC-3).
func (c Capacity) Need16() bool { return c.LastLBA == 0xffffffff }

// ParseReadCapacity10 decodes READ CAPACITY(10) parameter data (SBC-3,
// 8 bytes: last LBA, block length).
func ParseReadCapacity10(b []byte) (Capacity, error) {
	if len(b) < 8 {
		return Capacity{}, errShort("READ CAPACITY(10) data", len(b), 8)
	}
	return Capacity{
		LastLBA:     uint64(binary.BigEndian.Uint32(b)),
		BlockLength: binary.BigEndian.Uint32(b[4:]),
	}, nil
}

// ParseReadCapacity16 decodes READ CAPACITY(16) parameter data (SBC-3,
// 32 bytes). The first 12 bytes (last LBA, block length) are required;
// the flags in bytes 12-15 are zero when the data stops earlier.
func ParseReadCapacity16(b []byte) (Capacity, error) {
	if len(b) < 12 {
		return Capacity{}, errShort("READ CAPACITY(16) data", len(b), 12)
	}
	var p [16]byte
	copy(p[:], b)
	c := Capacity{
		LastLBA:           binary.BigEndian.Uint64(p[0:]),
		BlockLength:       binary.BigEndian.Uint32(p[8:]),
		ProtectionType:    (p[12] >> 1) & 0x07,
		ProtectionEnabled: p[12]&0x01 != 0,
		PIExponent:        p[13] >> 4,
		LBPPBE:            p[13] & 0x0f,
		LBPME:             p[14]&0x80 != 0,
		LBPRZ:             p[14]&0x40 != 0,
	}
	if len(b) >= 16 {
		c.LowestAlignedLBA = binary.BigEndian.Uint16(p[14:]) & 0x3fff
	}
	return c, nil
}
