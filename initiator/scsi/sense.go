package scsi

import "encoding/binary"

// Sense is decoded sense data, fixed format (SPC-4 4.5.3, response codes
// 0x70 current / 0x71 deferred) or descriptor format (SPC-4 4.5.2, 0x72
// current / 0x73 deferred).
type Sense struct {
	ResponseCode byte // 0x70, 0x71, 0x72 or 0x73
	Descriptor   bool // descriptor format (0x72/0x73)
	Deferred     bool // error of an earlier command (0x71/0x73)
	Key          SenseKey
	ASC, ASCQ    byte

	// InfoValid says Info holds the INFORMATION field: in fixed format
	// when the VALID bit is set, in descriptor format when an Information
	// descriptor (type 0x00) with its VALID bit is present. For medium
	// and range errors it is usually the first failing LBA.
	InfoValid bool
	Info      uint64

	// CommandSpecific is the COMMAND-SPECIFIC INFORMATION field (fixed
	// format bytes 8-11, or the type 0x01 descriptor).
	CommandSpecific uint64

	// SenseKeySpecific holds the three SENSE KEY SPECIFIC bytes when
	// their SKSV bit is set (fixed bytes 15-17, or descriptor type 0x02);
	// SKSValid reports that.
	SKSValid         bool
	SenseKeySpecific [3]byte

	// ILI, EOM and Filemark are the fixed-format stream bits (descriptor
	// format carries them in a type 0x04 descriptor, decoded too).
	Filemark, EOM, ILI bool

	// Truncated is set when the data ended before the additional sense
	// length said it would; the fields present were still decoded.
	Truncated bool
}

// Fixed-format offsets (SPC-4 4.5.3).
const (
	fixedMinLen = 3  // response code, obsolete, flags+key
	fixedInfo   = 3  // INFORMATION, 4 bytes
	fixedAddl   = 7  // ADDITIONAL SENSE LENGTH
	fixedCSI    = 8  // COMMAND-SPECIFIC INFORMATION, 4 bytes
	fixedASC    = 12 // ADDITIONAL SENSE CODE
	fixedASCQ   = 13
	fixedSKS    = 15 // SKSV + sense key specific, 3 bytes
)

// ParseSense decodes bare sense data (no iSCSI SenseLength prefix). It
// accepts data truncated anywhere after the sense key: missing fields stay
// zero and Truncated is set.
func ParseSense(b []byte) (Sense, error) {
	var s Sense
	if len(b) == 0 {
		return s, ErrNoSense
	}
	s.ResponseCode = b[0] & 0x7f
	switch s.ResponseCode {
	case 0x70, 0x71:
		return parseFixedSense(b, s)
	case 0x72, 0x73:
		return parseDescriptorSense(b, s)
	}
	return s, errBad("sense response code 0x%02x", s.ResponseCode)
}

func parseFixedSense(b []byte, s Sense) (Sense, error) {
	if len(b) < fixedMinLen {
		return s, errShort("fixed sense data", len(b), fixedMinLen)
	}
	s.Deferred = s.ResponseCode == 0x71
	s.Filemark = b[2]&0x80 != 0
	s.EOM = b[2]&0x40 != 0
	s.ILI = b[2]&0x20 != 0
	s.Key = SenseKey(b[2] & 0x0f)
	if len(b) < fixedAddl+1 {
		s.Truncated = true
		if b[0]&0x80 != 0 && len(b) >= fixedInfo+4 {
			s.InfoValid = true
			s.Info = uint64(binary.BigEndian.Uint32(b[fixedInfo:]))
		}
		return s, nil
	}
	if b[0]&0x80 != 0 {
		s.InfoValid = true
		s.Info = uint64(binary.BigEndian.Uint32(b[fixedInfo:]))
	}
	// Honour the ADDITIONAL SENSE LENGTH: bytes beyond it are not sense
	// data even if the segment carries them.
	n := fixedAddl + 1 + int(b[fixedAddl])
	if n > len(b) {
		s.Truncated = true
		n = len(b)
	}
	b = b[:n]
	if len(b) >= fixedCSI+4 {
		s.CommandSpecific = uint64(binary.BigEndian.Uint32(b[fixedCSI:]))
	}
	if len(b) > fixedASC {
		s.ASC = b[fixedASC]
	}
	if len(b) > fixedASCQ {
		s.ASCQ = b[fixedASCQ]
	}
	if len(b) >= fixedSKS+3 && b[fixedSKS]&0x80 != 0 {
		s.SKSValid = true
		copy(s.SenseKeySpecific[:], b[fixedSKS:fixedSKS+3])
	}
	return s, nil
}

// Sense data descriptor types (SPC-4 4.5.2.1).
const (
	descInformation     = 0x00
	descCommandSpecific = 0x01
	descSenseKeySpec    = 0x02
	descStreamCommands  = 0x04
)

func parseDescriptorSense(b []byte, s Sense) (Sense, error) {
	if len(b) < 2 {
		return s, errShort("descriptor sense data", len(b), 2)
	}
	s.Descriptor = true
	s.Deferred = s.ResponseCode == 0x73
	s.Key = SenseKey(b[1] & 0x0f)
	if len(b) > 2 {
		s.ASC = b[2]
	}
	if len(b) > 3 {
		s.ASCQ = b[3]
	}
	if len(b) < 8 {
		s.Truncated = true
		return s, nil
	}
	n := 8 + int(b[7])
	if n > len(b) {
		s.Truncated = true
		n = len(b)
	}
	for d := b[8:n]; len(d) > 0; {
		if len(d) < 2 {
			s.Truncated = true
			break
		}
		dl := 2 + int(d[1])
		if dl > len(d) {
			s.Truncated = true
			break
		}
		s.decodeDescriptor(d[:dl])
		d = d[dl:]
	}
	return s, nil
}

func (s *Sense) decodeDescriptor(d []byte) {
	switch d[0] {
	case descInformation:
		// VALID bit in byte 2; INFORMATION in bytes 4-11.
		if len(d) >= 12 && d[2]&0x80 != 0 {
			s.InfoValid = true
			s.Info = binary.BigEndian.Uint64(d[4:])
		}
	case descCommandSpecific:
		if len(d) >= 12 {
			s.CommandSpecific = binary.BigEndian.Uint64(d[4:])
		}
	case descSenseKeySpec:
		if len(d) >= 7 && d[4]&0x80 != 0 {
			s.SKSValid = true
			copy(s.SenseKeySpecific[:], d[4:7])
		}
	case descStreamCommands:
		if len(d) >= 4 {
			s.Filemark = d[3]&0x80 != 0
			s.EOM = d[3]&0x40 != 0
			s.ILI = d[3]&0x20 != 0
		}
	}
}

// ParseSenseData decodes the data segment of an iSCSI SCSI Response that
// carries sense data: a 2-byte SenseLength followed by that many bytes of
// sense data (RFC 7143, Section 11.4.7). A SenseLength larger than the
// segment is clamped to what is there (Truncated is set). An empty segment
// or a zero SenseLength returns ErrNoSense.
func ParseSenseData(iscsiDataSegment []byte) (Sense, error) {
	b := iscsiDataSegment
	if len(b) < 2 {
		return Sense{}, ErrNoSense
	}
	n := int(binary.BigEndian.Uint16(b))
	if n == 0 {
		return Sense{}, ErrNoSense
	}
	b = b[2:]
	truncated := false
	if n > len(b) {
		n = len(b)
		truncated = true
	}
	s, err := ParseSense(b[:n])
	if truncated {
		s.Truncated = true
	}
	return s, err
}

// AsError converts s into the *SenseError of a CHECK CONDITION status.
func (s Sense) AsError() *SenseError {
	return &SenseError{
		Status:    StatusCheckCondition,
		Key:       s.Key,
		ASC:       s.ASC,
		ASCQ:      s.ASCQ,
		InfoValid: s.InfoValid,
		Info:      s.Info,
		Deferred:  s.Deferred,
		HasSense:  true,
	}
}
