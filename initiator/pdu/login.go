package pdu

// Login stages (RFC 7143, Section 11.12.3).
const (
	StageSecurity    = 0
	StageOperational = 1
	StageFullFeature = 3
)

// LoginRequest is a Login Request PDU (RFC 7143, Section 11.12).
// Login Requests are always immediate.
type LoginRequest struct {
	Header
	Transit, Continue      bool
	CSG, NSG               uint8
	VersionMax, VersionMin uint8
	ISID                   [6]byte
	TSIH                   uint16
	CID                    uint16
	CmdSN                  uint32
	ExpStatSN              uint32
}

func (p *LoginRequest) MarshalBHS(b *BHS) {
	p.Immediate = true
	p.Final = false
	p.Header.marshal(b, OpLoginReq)
	b[1] = flag(p.Transit, 0x80) | flag(p.Continue, 0x40) | (p.CSG&3)<<2 | p.NSG&3
	b[2] = p.VersionMax
	b[3] = p.VersionMin
	copy(b[8:14], p.ISID[:])
	be.PutUint16(b[14:], p.TSIH)
	be.PutUint16(b[20:], p.CID)
	be.PutUint32(b[24:], p.CmdSN)
	be.PutUint32(b[28:], p.ExpStatSN)
}

func (p *LoginRequest) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Final = false
	p.LUN = 0
	p.Transit = b[1]&0x80 != 0
	p.Continue = b[1]&0x40 != 0
	p.CSG = b[1] >> 2 & 3
	p.NSG = b[1] & 3
	p.VersionMax = b[2]
	p.VersionMin = b[3]
	copy(p.ISID[:], b[8:14])
	p.TSIH = be.Uint16(b[14:])
	p.CID = be.Uint16(b[20:])
	p.CmdSN = be.Uint32(b[24:])
	p.ExpStatSN = be.Uint32(b[28:])
	return checkLoginBits(OpLoginReq, p.Transit, p.Continue, p.CSG, p.NSG)
}

// LoginResponse is a Login Response PDU (RFC 7143, Section 11.13).
type LoginResponse struct {
	Header
	Transit, Continue          bool
	CSG, NSG                   uint8
	VersionMax, VersionActive  uint8
	ISID                       [6]byte
	TSIH                       uint16
	StatSN, ExpCmdSN, MaxCmdSN uint32
	StatusClass, StatusDetail  uint8
}

func (p *LoginResponse) MarshalBHS(b *BHS) {
	p.Final = false
	p.Header.marshal(b, OpLoginResp)
	b[1] = flag(p.Transit, 0x80) | flag(p.Continue, 0x40) | (p.CSG&3)<<2 | p.NSG&3
	b[2] = p.VersionMax
	b[3] = p.VersionActive
	copy(b[8:14], p.ISID[:])
	be.PutUint16(b[14:], p.TSIH)
	be.PutUint32(b[24:], p.StatSN)
	be.PutUint32(b[28:], p.ExpCmdSN)
	be.PutUint32(b[32:], p.MaxCmdSN)
	b[36] = p.StatusClass
	b[37] = p.StatusDetail
}

func (p *LoginResponse) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Final = false
	p.LUN = 0
	p.Transit = b[1]&0x80 != 0
	p.Continue = b[1]&0x40 != 0
	p.CSG = b[1] >> 2 & 3
	p.NSG = b[1] & 3
	p.VersionMax = b[2]
	p.VersionActive = b[3]
	copy(p.ISID[:], b[8:14])
	p.TSIH = be.Uint16(b[14:])
	p.StatSN = be.Uint32(b[24:])
	p.ExpCmdSN = be.Uint32(b[28:])
	p.MaxCmdSN = be.Uint32(b[32:])
	p.StatusClass = b[36]
	p.StatusDetail = b[37]
	if p.StatusClass != 0 {
		return nil // the bits do not matter on a failed login
	}
	return checkLoginBits(OpLoginResp, p.Transit, p.Continue, p.CSG, p.NSG)
}

func checkLoginBits(op Opcode, t, c bool, csg, nsg uint8) error {
	// "C=1 requires T=0" (Sections 11.12.2, 11.13.7).
	if t && c {
		return FormatError{op, "both T and C set"}
	}
	// Stage 2 is reserved (Section 11.12.3).
	if csg == 2 || csg == 3 || (t && nsg == 2) {
		return FormatError{op, "reserved login stage"}
	}
	if t && nsg <= csg {
		return FormatError{op, "transit to a stage that is not later"}
	}
	return nil
}
