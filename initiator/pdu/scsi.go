package pdu

// TaskAttr is the SCSI task attribute of a command (RFC 7143, Section 11.3.1).
type TaskAttr uint8

const (
	AttrUntagged TaskAttr = 0
	AttrSimple   TaskAttr = 1
	AttrOrdered  TaskAttr = 2
	AttrHeadOfQ  TaskAttr = 3
	AttrACA      TaskAttr = 4
)

// SCSICommand is a SCSI Command PDU (RFC 7143, Section 11.3).
type SCSICommand struct {
	Header
	Read, Write bool
	Attr        TaskAttr
	// EDTL is the Expected Data Transfer Length.
	EDTL      uint32
	CmdSN     uint32
	ExpStatSN uint32
	CDB       [16]byte
}

func (p *SCSICommand) MarshalBHS(b *BHS) {
	p.Header.marshal(b, OpSCSICommand)
	if p.Read {
		b[1] |= 0x40
	}
	if p.Write {
		b[1] |= 0x20
	}
	b[1] |= byte(p.Attr) & 7
	be.PutUint32(b[20:], p.EDTL)
	be.PutUint32(b[24:], p.CmdSN)
	be.PutUint32(b[28:], p.ExpStatSN)
	copy(b[32:48], p.CDB[:])
}

func (p *SCSICommand) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Read = b[1]&0x40 != 0
	p.Write = b[1]&0x20 != 0
	p.Attr = TaskAttr(b[1] & 7)
	p.EDTL = be.Uint32(b[20:])
	p.CmdSN = be.Uint32(b[24:])
	p.ExpStatSN = be.Uint32(b[28:])
	copy(p.CDB[:], b[32:48])
	return nil
}

// SCSIResponse is a SCSI Response PDU (RFC 7143, Section 11.4).
type SCSIResponse struct {
	Header
	BidiOverflow, BidiUnderflow bool // o, u
	Overflow, Underflow         bool // O, U
	Response                    uint8
	Status                      uint8
	SNACKTag                    uint32
	StatSN, ExpCmdSN, MaxCmdSN  uint32
	ExpDataSN                   uint32
	BidiResidual, Residual      uint32
}

func (p *SCSIResponse) MarshalBHS(b *BHS) {
	p.Final = true
	p.Header.marshal(b, OpSCSIResponse)
	b[1] |= flag(p.BidiOverflow, 0x10) | flag(p.BidiUnderflow, 0x08) | flag(p.Overflow, 0x04) | flag(p.Underflow, 0x02)
	b[2] = p.Response
	b[3] = p.Status
	be.PutUint32(b[20:], p.SNACKTag)
	be.PutUint32(b[24:], p.StatSN)
	be.PutUint32(b[28:], p.ExpCmdSN)
	be.PutUint32(b[32:], p.MaxCmdSN)
	be.PutUint32(b[36:], p.ExpDataSN)
	be.PutUint32(b[40:], p.BidiResidual)
	be.PutUint32(b[44:], p.Residual)
}

func (p *SCSIResponse) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.BidiOverflow = b[1]&0x10 != 0
	p.BidiUnderflow = b[1]&0x08 != 0
	p.Overflow = b[1]&0x04 != 0
	p.Underflow = b[1]&0x02 != 0
	p.Response = b[2]
	p.Status = b[3]
	p.SNACKTag = be.Uint32(b[20:])
	p.StatSN = be.Uint32(b[24:])
	p.ExpCmdSN = be.Uint32(b[28:])
	p.MaxCmdSN = be.Uint32(b[32:])
	p.ExpDataSN = be.Uint32(b[36:])
	p.BidiResidual = be.Uint32(b[40:])
	p.Residual = be.Uint32(b[44:])
	// "O with U (or o with u) is a protocol error" (Section 11.4.5.1).
	if (p.Overflow && p.Underflow) || (p.BidiOverflow && p.BidiUnderflow) {
		return FormatError{OpSCSIResponse, "both overflow and underflow set"}
	}
	return nil
}

// DataOut is a SCSI Data-Out PDU (RFC 7143, Section 11.7).
type DataOut struct {
	Header
	TTT          uint32
	ExpStatSN    uint32
	DataSN       uint32
	BufferOffset uint32
}

func (p *DataOut) MarshalBHS(b *BHS) {
	p.Header.marshal(b, OpDataOut)
	be.PutUint32(b[20:], p.TTT)
	be.PutUint32(b[28:], p.ExpStatSN)
	be.PutUint32(b[36:], p.DataSN)
	be.PutUint32(b[40:], p.BufferOffset)
}

func (p *DataOut) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.TTT = be.Uint32(b[20:])
	p.ExpStatSN = be.Uint32(b[28:])
	p.DataSN = be.Uint32(b[36:])
	p.BufferOffset = be.Uint32(b[40:])
	return nil
}

// DataIn is a SCSI Data-In PDU (RFC 7143, Section 11.7).
type DataIn struct {
	Header
	Ack                        bool // A
	Overflow, Underflow        bool // O, U (valid with HasStatus)
	HasStatus                  bool // S
	Status                     uint8
	TTT                        uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
	DataSN                     uint32
	BufferOffset               uint32
	Residual                   uint32
}

func (p *DataIn) MarshalBHS(b *BHS) {
	p.Header.marshal(b, OpDataIn)
	b[1] |= flag(p.Ack, 0x40) | flag(p.Overflow, 0x04) | flag(p.Underflow, 0x02) | flag(p.HasStatus, 0x01)
	b[3] = p.Status
	be.PutUint32(b[20:], p.TTT)
	be.PutUint32(b[24:], p.StatSN)
	be.PutUint32(b[28:], p.ExpCmdSN)
	be.PutUint32(b[32:], p.MaxCmdSN)
	be.PutUint32(b[36:], p.DataSN)
	be.PutUint32(b[40:], p.BufferOffset)
	be.PutUint32(b[44:], p.Residual)
}

func (p *DataIn) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Ack = b[1]&0x40 != 0
	p.Overflow = b[1]&0x04 != 0
	p.Underflow = b[1]&0x02 != 0
	p.HasStatus = b[1]&0x01 != 0
	p.Status = b[3]
	p.TTT = be.Uint32(b[20:])
	p.StatSN = be.Uint32(b[24:])
	p.ExpCmdSN = be.Uint32(b[28:])
	p.MaxCmdSN = be.Uint32(b[32:])
	p.DataSN = be.Uint32(b[36:])
	p.BufferOffset = be.Uint32(b[40:])
	p.Residual = be.Uint32(b[44:])
	// "S=1 requires F=1" (Section 11.7.3).
	if p.HasStatus && !p.Final {
		return FormatError{OpDataIn, "S bit set without F bit"}
	}
	if p.HasStatus && p.Overflow && p.Underflow {
		return FormatError{OpDataIn, "both overflow and underflow set"}
	}
	return nil
}

// R2T is a Ready To Transfer PDU (RFC 7143, Section 11.8).
type R2T struct {
	Header
	TTT                        uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
	R2TSN                      uint32
	BufferOffset               uint32
	DesiredLength              uint32
}

func (p *R2T) MarshalBHS(b *BHS) {
	p.Final = true
	p.Header.marshal(b, OpR2T)
	be.PutUint32(b[20:], p.TTT)
	be.PutUint32(b[24:], p.StatSN)
	be.PutUint32(b[28:], p.ExpCmdSN)
	be.PutUint32(b[32:], p.MaxCmdSN)
	be.PutUint32(b[36:], p.R2TSN)
	be.PutUint32(b[40:], p.BufferOffset)
	be.PutUint32(b[44:], p.DesiredLength)
}

func (p *R2T) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.TTT = be.Uint32(b[20:])
	p.StatSN = be.Uint32(b[24:])
	p.ExpCmdSN = be.Uint32(b[28:])
	p.MaxCmdSN = be.Uint32(b[32:])
	p.R2TSN = be.Uint32(b[36:])
	p.BufferOffset = be.Uint32(b[40:])
	p.DesiredLength = be.Uint32(b[44:])
	// "An R2T never carries TTT 0xffffffff"; Desired Data Transfer Length
	// "MUST NOT be 0" (Section 11.8.4).
	if p.TTT == ReservedTag {
		return FormatError{OpR2T, "Target Transfer Tag 0xffffffff"}
	}
	if p.DesiredLength == 0 {
		return FormatError{OpR2T, "Desired Data Transfer Length 0"}
	}
	if p.DataLen != 0 {
		return FormatError{OpR2T, "R2T with a data segment"}
	}
	return nil
}

func flag(v bool, m byte) byte {
	if v {
		return m
	}
	return 0
}
