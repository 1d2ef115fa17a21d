package pdu

import (
	"errors"
	"fmt"
)

// Errors returned by the codec. They are connection-fatal: after any of them
// the byte stream can no longer be trusted.
var (
	ErrShortBuffer   = errors.New("iscsi pdu: buffer too short")
	ErrHeaderDigest  = errors.New("iscsi pdu: header digest mismatch")
	ErrDataDigest    = errors.New("iscsi pdu: data digest mismatch")
	ErrDataTooLong   = errors.New("iscsi pdu: data segment longer than negotiated MaxRecvDataSegmentLength")
	ErrMalformedText = errors.New("iscsi pdu: malformed key=value text")
)

// UnknownOpcodeError is returned for an opcode this implementation does not
// know; the receiver answers it with a Reject (reason 0x05) or drops the
// connection.
type UnknownOpcodeError struct{ Opcode Opcode }

func (e UnknownOpcodeError) Error() string {
	return fmt.Sprintf("iscsi pdu: unknown opcode 0x%02x", uint8(e.Opcode))
}

// FormatError reports a field that violates RFC 7143.
type FormatError struct {
	Opcode Opcode
	Msg    string
}

func (e FormatError) Error() string {
	return fmt.Sprintf("iscsi pdu: malformed %v: %s", e.Opcode, e.Msg)
}
