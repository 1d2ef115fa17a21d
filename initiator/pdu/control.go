package pdu

// TaskMgmtFunction codes (RFC 7143, Section 11.5.1).
const (
	TMFAbortTask        = 1
	TMFAbortTaskSet     = 2
	TMFClearACA         = 3
	TMFClearTaskSet     = 4
	TMFLogicalUnitReset = 5
	TMFTargetWarmReset  = 6
	TMFTargetColdReset  = 7
	TMFTaskReassign     = 8
)

// TaskMgmtRequest is a Task Management Function Request (RFC 7143, Section 11.5).
type TaskMgmtRequest struct {
	Header
	Function  uint8
	RTT       uint32 // Referenced Task Tag
	CmdSN     uint32
	ExpStatSN uint32
	RefCmdSN  uint32
	ExpDataSN uint32
}

func (p *TaskMgmtRequest) MarshalBHS(b *BHS) {
	p.Final = true
	p.Header.marshal(b, OpTaskMgmtReq)
	b[1] |= p.Function & 0x7f
	be.PutUint32(b[20:], p.RTT)
	be.PutUint32(b[24:], p.CmdSN)
	be.PutUint32(b[28:], p.ExpStatSN)
	be.PutUint32(b[32:], p.RefCmdSN)
	be.PutUint32(b[36:], p.ExpDataSN)
}

func (p *TaskMgmtRequest) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Function = b[1] & 0x7f
	p.RTT = be.Uint32(b[20:])
	p.CmdSN = be.Uint32(b[24:])
	p.ExpStatSN = be.Uint32(b[28:])
	p.RefCmdSN = be.Uint32(b[32:])
	p.ExpDataSN = be.Uint32(b[36:])
	return nil
}

// TMF response codes (RFC 7143, Section 11.6.1).
const (
	TMFRespComplete        = 0
	TMFRespNoTask          = 1
	TMFRespNoLUN           = 2
	TMFRespStillAllegiant  = 3
	TMFRespNoReassign      = 4
	TMFRespNotSupported    = 5
	TMFRespAuthFailed      = 6
	TMFRespFunctionSucceed = 7
	TMFRespRejected        = 255
)

// TaskMgmtResponse is a Task Management Function Response (RFC 7143, Section 11.6).
type TaskMgmtResponse struct {
	Header
	Response                   uint8
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

func (p *TaskMgmtResponse) MarshalBHS(b *BHS) {
	p.Final = true
	p.Header.marshal(b, OpTaskMgmtResp)
	b[2] = p.Response
	be.PutUint32(b[24:], p.StatSN)
	be.PutUint32(b[28:], p.ExpCmdSN)
	be.PutUint32(b[32:], p.MaxCmdSN)
}

func (p *TaskMgmtResponse) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Response = b[2]
	p.StatSN = be.Uint32(b[24:])
	p.ExpCmdSN = be.Uint32(b[28:])
	p.MaxCmdSN = be.Uint32(b[32:])
	return nil
}

// AsyncMessage is an Asynchronous Message PDU (RFC 7143, Section 11.9).
type AsyncMessage struct {
	Header
	StatSN, ExpCmdSN, MaxCmdSN uint32
	Event                      uint8
	VCode                      uint8
	Param1, Param2, Param3     uint16
}

func (p *AsyncMessage) MarshalBHS(b *BHS) {
	p.Final = true
	p.Header.marshal(b, OpAsyncMessage)
	be.PutUint32(b[24:], p.StatSN)
	be.PutUint32(b[28:], p.ExpCmdSN)
	be.PutUint32(b[32:], p.MaxCmdSN)
	b[36] = p.Event
	b[37] = p.VCode
	be.PutUint16(b[38:], p.Param1)
	be.PutUint16(b[40:], p.Param2)
	be.PutUint16(b[42:], p.Param3)
}

func (p *AsyncMessage) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.StatSN = be.Uint32(b[24:])
	p.ExpCmdSN = be.Uint32(b[28:])
	p.MaxCmdSN = be.Uint32(b[32:])
	p.Event = b[36]
	p.VCode = b[37]
	p.Param1 = be.Uint16(b[38:])
	p.Param2 = be.Uint16(b[40:])
	p.Param3 = be.Uint16(b[42:])
	return nil
}

// TextRequest is a Text Request PDU (RFC 7143, Section 11.10).
type TextRequest struct {
	Header
	Continue  bool
	TTT       uint32
	CmdSN     uint32
	ExpStatSN uint32
}

func (p *TextRequest) MarshalBHS(b *BHS) {
	p.Header.marshal(b, OpTextReq)
	b[1] |= flag(p.Continue, 0x40)
	be.PutUint32(b[20:], p.TTT)
	be.PutUint32(b[24:], p.CmdSN)
	be.PutUint32(b[28:], p.ExpStatSN)
}

func (p *TextRequest) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Continue = b[1]&0x40 != 0
	p.TTT = be.Uint32(b[20:])
	p.CmdSN = be.Uint32(b[24:])
	p.ExpStatSN = be.Uint32(b[28:])
	if p.Continue && p.Final {
		return FormatError{OpTextReq, "both F and C set"}
	}
	return nil
}

// TextResponse is a Text Response PDU (RFC 7143, Section 11.11).
type TextResponse struct {
	Header
	Continue                   bool
	TTT                        uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

func (p *TextResponse) MarshalBHS(b *BHS) {
	p.Header.marshal(b, OpTextResp)
	b[1] |= flag(p.Continue, 0x40)
	be.PutUint32(b[20:], p.TTT)
	be.PutUint32(b[24:], p.StatSN)
	be.PutUint32(b[28:], p.ExpCmdSN)
	be.PutUint32(b[32:], p.MaxCmdSN)
}

func (p *TextResponse) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Continue = b[1]&0x40 != 0
	p.TTT = be.Uint32(b[20:])
	p.StatSN = be.Uint32(b[24:])
	p.ExpCmdSN = be.Uint32(b[28:])
	p.MaxCmdSN = be.Uint32(b[32:])
	// "C=1 requires F=0" (Section 11.11.2).
	if p.Continue && p.Final {
		return FormatError{OpTextResp, "both F and C set"}
	}
	return nil
}

// Logout reason codes (RFC 7143, Section 11.14.1).
const (
	LogoutCloseSession    = 0
	LogoutCloseConnection = 1
	LogoutRemoveForRecov  = 2
)

// LogoutRequest is a Logout Request PDU (RFC 7143, Section 11.14).
type LogoutRequest struct {
	Header
	Reason    uint8
	CID       uint16
	CmdSN     uint32
	ExpStatSN uint32
}

func (p *LogoutRequest) MarshalBHS(b *BHS) {
	p.Final = true
	p.Header.marshal(b, OpLogoutReq)
	b[1] |= p.Reason & 0x7f
	be.PutUint16(b[20:], p.CID)
	be.PutUint32(b[24:], p.CmdSN)
	be.PutUint32(b[28:], p.ExpStatSN)
}

func (p *LogoutRequest) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Reason = b[1] & 0x7f
	p.CID = be.Uint16(b[20:])
	p.CmdSN = be.Uint32(b[24:])
	p.ExpStatSN = be.Uint32(b[28:])
	return nil
}

// LogoutResponse is a Logout Response PDU (RFC 7143, Section 11.15).
type LogoutResponse struct {
	Header
	Response                   uint8
	StatSN, ExpCmdSN, MaxCmdSN uint32
	Time2Wait, Time2Retain     uint16
}

func (p *LogoutResponse) MarshalBHS(b *BHS) {
	p.Final = true
	p.Header.marshal(b, OpLogoutResp)
	b[2] = p.Response
	be.PutUint32(b[24:], p.StatSN)
	be.PutUint32(b[28:], p.ExpCmdSN)
	be.PutUint32(b[32:], p.MaxCmdSN)
	be.PutUint16(b[40:], p.Time2Wait)
	be.PutUint16(b[42:], p.Time2Retain)
}

func (p *LogoutResponse) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Response = b[2]
	p.StatSN = be.Uint32(b[24:])
	p.ExpCmdSN = be.Uint32(b[28:])
	p.MaxCmdSN = be.Uint32(b[32:])
	p.Time2Wait = be.Uint16(b[40:])
	p.Time2Retain = be.Uint16(b[42:])
	return nil
}

// SNACKRequest is a SNACK Request PDU (RFC 7143, Section 11.16).
type SNACKRequest struct {
	Header
	Type      uint8
	TTT       uint32
	ExpStatSN uint32
	BegRun    uint32
	RunLength uint32
}

func (p *SNACKRequest) MarshalBHS(b *BHS) {
	p.Final = true
	p.Header.marshal(b, OpSNACK)
	b[1] |= p.Type & 0x0f
	be.PutUint32(b[20:], p.TTT)
	be.PutUint32(b[28:], p.ExpStatSN)
	be.PutUint32(b[40:], p.BegRun)
	be.PutUint32(b[44:], p.RunLength)
}

func (p *SNACKRequest) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Type = b[1] & 0x0f
	p.TTT = be.Uint32(b[20:])
	p.ExpStatSN = be.Uint32(b[28:])
	p.BegRun = be.Uint32(b[40:])
	p.RunLength = be.Uint32(b[44:])
	return nil
}

// Reject reason codes (RFC 7143, Section 11.17.1).
const (
	RejectDataDigest       = 0x02
	RejectSNACK            = 0x03
	RejectProtocolError    = 0x04
	RejectNotSupported     = 0x05
	RejectImmediate        = 0x06
	RejectTaskInProgress   = 0x07
	RejectInvalidDataAck   = 0x08
	RejectInvalidField     = 0x09
	RejectLongOp           = 0x0a
	RejectNegotiationReset = 0x0b
	RejectWaitingLogout    = 0x0c
)

// Reject is a Reject PDU (RFC 7143, Section 11.17). Its data segment carries
// the header of the rejected PDU.
type Reject struct {
	Header
	Reason                     uint8
	StatSN, ExpCmdSN, MaxCmdSN uint32
	DataSN                     uint32
}

func (p *Reject) MarshalBHS(b *BHS) {
	p.Final = true
	p.Header.marshal(b, OpReject)
	b[2] = p.Reason
	be.PutUint32(b[24:], p.StatSN)
	be.PutUint32(b[28:], p.ExpCmdSN)
	be.PutUint32(b[32:], p.MaxCmdSN)
	be.PutUint32(b[36:], p.DataSN)
}

func (p *Reject) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.Reason = b[2]
	p.StatSN = be.Uint32(b[24:])
	p.ExpCmdSN = be.Uint32(b[28:])
	p.MaxCmdSN = be.Uint32(b[32:])
	p.DataSN = be.Uint32(b[36:])
	return nil
}

// NopOut is a NOP-Out PDU (RFC 7143, Section 11.18).
type NopOut struct {
	Header
	TTT       uint32
	CmdSN     uint32
	ExpStatSN uint32
}

func (p *NopOut) MarshalBHS(b *BHS) {
	p.Final = true
	p.Header.marshal(b, OpNopOut)
	be.PutUint32(b[20:], p.TTT)
	be.PutUint32(b[24:], p.CmdSN)
	be.PutUint32(b[28:], p.ExpStatSN)
}

func (p *NopOut) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.TTT = be.Uint32(b[20:])
	p.CmdSN = be.Uint32(b[24:])
	p.ExpStatSN = be.Uint32(b[28:])
	return nil
}

// NopIn is a NOP-In PDU (RFC 7143, Section 11.19).
type NopIn struct {
	Header
	TTT                        uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

func (p *NopIn) MarshalBHS(b *BHS) {
	p.Final = true
	p.Header.marshal(b, OpNopIn)
	be.PutUint32(b[20:], p.TTT)
	be.PutUint32(b[24:], p.StatSN)
	be.PutUint32(b[28:], p.ExpCmdSN)
	be.PutUint32(b[32:], p.MaxCmdSN)
}

func (p *NopIn) UnmarshalBHS(b *BHS) error {
	p.Header.unmarshal(b)
	p.TTT = be.Uint32(b[20:])
	p.StatSN = be.Uint32(b[24:])
	p.ExpCmdSN = be.Uint32(b[28:])
	p.MaxCmdSN = be.Uint32(b[32:])
	// "a NOP-In with both a valid ITT and a valid TTT" is a format error (Section 7.7).
	if p.ITT != ReservedTag && p.TTT != ReservedTag {
		return FormatError{OpNopIn, "both ITT and TTT valid"}
	}
	return nil
}
