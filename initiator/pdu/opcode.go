package pdu

import "fmt"

// Opcode is the 6-bit PDU opcode (RFC 7143, Section 11.2.1.2).
type Opcode uint8

// Initiator opcodes.
const (
	OpNopOut      Opcode = 0x00
	OpSCSICommand Opcode = 0x01
	OpTaskMgmtReq Opcode = 0x02
	OpLoginReq    Opcode = 0x03
	OpTextReq     Opcode = 0x04
	OpDataOut     Opcode = 0x05
	OpLogoutReq   Opcode = 0x06
	OpSNACK       Opcode = 0x10
)

// Target opcodes.
const (
	OpNopIn        Opcode = 0x20
	OpSCSIResponse Opcode = 0x21
	OpTaskMgmtResp Opcode = 0x22
	OpLoginResp    Opcode = 0x23
	OpTextResp     Opcode = 0x24
	OpDataIn       Opcode = 0x25
	OpLogoutResp   Opcode = 0x26
	OpR2T          Opcode = 0x31
	OpAsyncMessage Opcode = 0x32
	OpReject       Opcode = 0x3f
)

var opNames = map[Opcode]string{
	OpNopOut: "NOP-Out", OpSCSICommand: "SCSI Command", OpTaskMgmtReq: "Task Management Request",
	OpLoginReq: "Login Request", OpTextReq: "Text Request", OpDataOut: "Data-Out",
	OpLogoutReq: "Logout Request", OpSNACK: "SNACK Request",
	OpNopIn: "NOP-In", OpSCSIResponse: "SCSI Response", OpTaskMgmtResp: "Task Management Response",
	OpLoginResp: "Login Response", OpTextResp: "Text Response", OpDataIn: "Data-In",
	OpLogoutResp: "Logout Response", OpR2T: "R2T", OpAsyncMessage: "Async Message", OpReject: "Reject",
}

func (o Opcode) String() string {
	if n, ok := opNames[o]; ok {
		return n
	}
	return fmt.Sprintf("opcode 0x%02x", uint8(o))
}

// IsTarget reports whether o is sent by targets.
func (o Opcode) IsTarget() bool { return o&0x20 != 0 }

// ReservedTag is the Initiator/Target Task Tag value 0xffffffff that is never
// assigned to a task (RFC 7143, Section 11.2.1.8).
const ReservedTag uint32 = 0xffffffff
