package scsi

import "encoding/binary"

// LUN encoding (SAM-5 4.7). A LUN on the wire is 8 bytes; the first two
// bits of byte 0 select the address method:
//
//	00b peripheral device: byte 0 = BUS IDENTIFIER (0), byte 1 = LUN 0-255
//	01b flat space:        bytes 0-1 = 01b | 14-bit LUN
//	10b logical unit, 11b extended: not decoded here
//
// DecodeLUN maps the two single-level forms to their number. Anything else
// (other address methods, a non-zero bus identifier, or a second level in
// bytes 2-7) is returned as the whole 8 bytes read big-endian. That value
// is above MaxFlatLUN whenever byte 0, 1, 2 or 3 is non-zero — true of every
// multi-level or non-peripheral LUN a target reports in practice — so it
// does not collide with a single-level number; EncodeLUN maps values above
// MaxFlatLUN back unchanged, so EncodeLUN(DecodeLUN(x)) == x for such x.

// MaxFlatLUN is the largest LUN flat space addressing can express.
const MaxFlatLUN = 1<<14 - 1

// EncodeLUN encodes lun for the wire: peripheral device addressing for
// 0-255, flat space addressing for 256-16383, and the raw 8-byte
// big-endian value above that (see DecodeLUN).
func EncodeLUN(lun uint64) [8]byte {
	var b [8]byte
	switch {
	case lun < 256:
		b[1] = byte(lun)
	case lun <= MaxFlatLUN:
		b[0] = 0x40 | byte(lun>>8)
		b[1] = byte(lun)
	default:
		binary.BigEndian.PutUint64(b[:], lun)
	}
	return b
}

// DecodeLUN decodes an 8-byte LUN (see the SAM-5 4.7 note above).
func DecodeLUN(b [8]byte) uint64 {
	if binary.BigEndian.Uint64(b[:])&0xffffffffffff == 0 { // single level
		switch b[0] >> 6 {
		case 0:
			if b[0] == 0 {
				return uint64(b[1])
			}
		case 1:
			return uint64(b[0]&0x3f)<<8 | uint64(b[1])
		}
	}
	return binary.BigEndian.Uint64(b[:])
}

// ReportLUNsData is REPORT LUNS parameter data (SPC-4, "REPORT LUNS
// parameter data"):
//
//	bytes 0-3: LUN LIST LENGTH (n-7), a multiple of 8
//	bytes 4-7: reserved
//	bytes 8-n: 8-byte LUNs
type ReportLUNsData struct {
	LUNs []uint64 // decoded with DecodeLUN
	// ListLength is LUN LIST LENGTH; when the data returned was shorter,
	// Truncated is set and 8+ListLength is the allocation length that
	// returns the whole list.
	ListLength uint32
	Truncated  bool
}

// ParseReportLUNs decodes REPORT LUNS parameter data. Truncated data (an
// allocation length smaller than the list) yields the complete entries
// present and Truncated.
func ParseReportLUNs(b []byte) (ReportLUNsData, error) {
	if len(b) < 8 {
		return ReportLUNsData{}, errShort("REPORT LUNS data", len(b), 8)
	}
	d := ReportLUNsData{ListLength: binary.BigEndian.Uint32(b)}
	if d.ListLength%8 != 0 {
		return d, errBad("REPORT LUNS list length %d not a multiple of 8", d.ListLength)
	}
	body := b[8:]
	if uint64(d.ListLength) < uint64(len(body)) {
		body = body[:d.ListLength]
	} else if uint64(d.ListLength) > uint64(len(body)) {
		d.Truncated = true
	}
	d.LUNs = make([]uint64, 0, len(body)/8)
	for ; len(body) >= 8; body = body[8:] {
		d.LUNs = append(d.LUNs, DecodeLUN([8]byte(body[:8])))
	}
	return d, nil
}
