package pdu

import "encoding/binary"

// BHSLen is the length of the Basic Header Segment.
const BHSLen = 48

// BHS is a raw Basic Header Segment.
type BHS [BHSLen]byte

var be = binary.BigEndian

func (b *BHS) Opcode() Opcode             { return Opcode(b[0] & 0x3f) }
func (b *BHS) Immediate() bool            { return b[0]&0x40 != 0 }
func (b *BHS) TotalAHSLength() int        { return int(b[4]) * 4 }
func (b *BHS) DataSegmentLength() int     { return int(b[5])<<16 | int(b[6])<<8 | int(b[7]) }
func (b *BHS) ITT() uint32                { return be.Uint32(b[16:20]) }
func (b *BHS) SetDataSegmentLength(n int) { b[5], b[6], b[7] = byte(n>>16), byte(n>>8), byte(n) }

// Header holds the fields common to every PDU.
type Header struct {
	Opcode    Opcode
	Immediate bool
	Final     bool
	// AHSLength is the total AHS length in bytes (a multiple of 4).
	AHSLength int
	// DataLen is the DataSegmentLength in bytes, without padding.
	DataLen int
	// LUN is the 8-byte LUN field as a big-endian integer (SAM encoding;
	// see the scsi package for the conversion to a LUN number).
	LUN uint64
	// ITT is the Initiator Task Tag.
	ITT uint32
}

// Hdr returns the common header; every PDU type embeds one.
func (h *Header) Hdr() *Header { return h }

func (h *Header) marshal(b *BHS, op Opcode) {
	*b = BHS{}
	b[0] = byte(op)
	if h.Immediate {
		b[0] |= 0x40
	}
	if h.Final {
		b[1] = 0x80
	}
	b[4] = byte(h.AHSLength / 4)
	b.SetDataSegmentLength(h.DataLen)
	be.PutUint64(b[8:16], h.LUN)
	be.PutUint32(b[16:20], h.ITT)
	h.Opcode = op
}

func (h *Header) unmarshal(b *BHS) {
	h.Opcode = b.Opcode()
	h.Immediate = b.Immediate()
	h.Final = b[1]&0x80 != 0
	h.AHSLength = b.TotalAHSLength()
	h.DataLen = b.DataSegmentLength()
	h.LUN = be.Uint64(b[8:16])
	h.ITT = be.Uint32(b[16:20])
}

// PDU is implemented by every PDU type.
type PDU interface {
	Hdr() *Header
	// MarshalBHS writes the PDU's header into b. The caller sets
	// Hdr().DataLen (and AHSLength) to match what it sends after.
	MarshalBHS(b *BHS)
	// UnmarshalBHS decodes b into the PDU. It validates the fields the
	// codec can judge alone.
	UnmarshalBHS(b *BHS) error
}

var parsers = map[Opcode]func() PDU{
	OpNopOut:       func() PDU { return new(NopOut) },
	OpSCSICommand:  func() PDU { return new(SCSICommand) },
	OpTaskMgmtReq:  func() PDU { return new(TaskMgmtRequest) },
	OpLoginReq:     func() PDU { return new(LoginRequest) },
	OpTextReq:      func() PDU { return new(TextRequest) },
	OpDataOut:      func() PDU { return new(DataOut) },
	OpLogoutReq:    func() PDU { return new(LogoutRequest) },
	OpSNACK:        func() PDU { return new(SNACKRequest) },
	OpNopIn:        func() PDU { return new(NopIn) },
	OpSCSIResponse: func() PDU { return new(SCSIResponse) },
	OpTaskMgmtResp: func() PDU { return new(TaskMgmtResponse) },
	OpLoginResp:    func() PDU { return new(LoginResponse) },
	OpTextResp:     func() PDU { return new(TextResponse) },
	OpDataIn:       func() PDU { return new(DataIn) },
	OpLogoutResp:   func() PDU { return new(LogoutResponse) },
	OpR2T:          func() PDU { return new(R2T) },
	OpAsyncMessage: func() PDU { return new(AsyncMessage) },
	OpReject:       func() PDU { return new(Reject) },
}

// Parse decodes a BHS into a freshly allocated PDU of the right type. The hot
// path of an initiator switches on b.Opcode() and decodes into a reused value
// instead.
func Parse(b *BHS) (PDU, error) {
	newPDU, ok := parsers[b.Opcode()]
	if !ok {
		return nil, UnknownOpcodeError{b.Opcode()}
	}
	p := newPDU()
	if err := p.UnmarshalBHS(b); err != nil {
		return nil, err
	}
	return p, nil
}

// Pad returns the number of padding bytes after a segment of n bytes.
func Pad(n int) int { return (4 - n&3) & 3 }
