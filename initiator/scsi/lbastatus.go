package scsi

import "encoding/binary"

// Provisioning status of an LBA status descriptor (SBC-4, "LBA status
// descriptor"; sg3_utils decodes the same values). Only deallocated and
// anchored extents are holes; every other value, including ones a later
// standard may add, is data.
const (
	LBAMapped      = 0 // mapped, or unknown (SBC-3: mapped)
	LBADeallocated = 1
	LBAAnchored    = 2
	LBAMappedOnly  = 3 // SBC-4: mapped
	LBAUnknown     = 4 // SBC-4: unknown
)

// LBAStatus is one LBA status descriptor of GET LBA STATUS parameter data
// (SBC-3, "LBA status descriptor"): 16 bytes, LBA (0-7), NUMBER OF LOGICAL
// BLOCKS (8-11), PROVISIONING STATUS (byte 12 bits 3-0).
type LBAStatus struct {
	LBA    uint64
	Blocks uint32
	Status byte // LBAMapped, LBADeallocated, LBAAnchored, LBAMappedOnly, LBAUnknown
}

// Hole reports whether the extent is unallocated: deallocated or anchored.
// Mapped, unknown and unrecognised statuses are data.
func (s LBAStatus) Hole() bool { return s.Status == LBADeallocated || s.Status == LBAAnchored }

// LBAStatusData is GET LBA STATUS parameter data (SBC-3):
//
//	bytes 0-3: PARAMETER DATA LENGTH (n-3)
//	bytes 4-7: reserved
//	bytes 8-n: 16-byte LBA status descriptors
type LBAStatusData struct {
	Descriptors []LBAStatus
	// Truncated is set when PARAMETER DATA LENGTH promises more than
	// was returned; Descriptors holds the complete ones.
	Truncated bool
}

// ParseLBAStatus decodes GET LBA STATUS parameter data. Data cut short
// anywhere after the 8-byte header is accepted: complete descriptors are
// returned and Truncated is set. A trailing partial descriptor is ignored.
func ParseLBAStatus(b []byte) (LBAStatusData, error) {
	if len(b) < 8 {
		return LBAStatusData{}, errShort("GET LBA STATUS data", len(b), 8)
	}
	var d LBAStatusData
	n := 4 + uint64(binary.BigEndian.Uint32(b))
	if n < 8 {
		return d, errBad("GET LBA STATUS parameter data length %d", n-4)
	}
	if n > uint64(len(b)) {
		d.Truncated = true
		n = uint64(len(b))
	}
	body := b[8:n]
	if len(body)%16 != 0 {
		d.Truncated = true
	}
	d.Descriptors = make([]LBAStatus, 0, len(body)/16)
	for ; len(body) >= 16; body = body[16:] {
		d.Descriptors = append(d.Descriptors, LBAStatus{
			LBA:    binary.BigEndian.Uint64(body),
			Blocks: binary.BigEndian.Uint32(body[8:]),
			Status: body[12] & 0x0f,
		})
	}
	return d, nil
}
