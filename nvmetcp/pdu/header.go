package pdu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Type is the PDU-Type field (Section 3.6.1, Figure 19).
type Type uint8

const (
	TypeICReq       Type = 0x00
	TypeICResp      Type = 0x01
	TypeH2CTermReq  Type = 0x02
	TypeC2HTermReq  Type = 0x03
	TypeCapsuleCmd  Type = 0x04
	TypeCapsuleResp Type = 0x05
	TypeH2CData     Type = 0x06
	TypeC2HData     Type = 0x07
	TypeR2T         Type = 0x09
)

var typeNames = map[Type]string{
	TypeICReq: "ICReq", TypeICResp: "ICResp", TypeH2CTermReq: "H2CTermReq",
	TypeC2HTermReq: "C2HTermReq", TypeCapsuleCmd: "CapsuleCmd",
	TypeCapsuleResp: "CapsuleResp", TypeH2CData: "H2CData", TypeC2HData: "C2HData",
	TypeR2T: "R2T",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("PDU-Type(%#02x)", uint8(t))
}

// Common header flags (Section 3.6.1).
const (
	FlagHDGST   = 0x01 // a header digest follows the header
	FlagDDGST   = 0x02 // a data digest follows the data
	FlagLast    = 0x04 // H2CData/C2HData: last PDU of the transfer
	FlagSuccess = 0x08 // C2HData: command done with success, no CapsuleResp follows
)

// Fixed lengths.
const (
	CommonLen    = 8
	DigestLen    = 4
	ICLen        = 128 // ICReq and ICResp: HLEN and PLEN
	TermHLen     = 24
	MaxTermData  = 128 // a TermReq carries at most 128 bytes of the offending PDU
	CmdHLen      = CommonLen + SQELen
	RespHLen     = CommonLen + CQELen
	DataHLen     = 24 // H2CData, C2HData and R2T
	maxHeaderLen = ICLen
)

// hlenOf is the only header length each type may have.
var hlenOf = map[Type]int{
	TypeICReq: ICLen, TypeICResp: ICLen, TypeH2CTermReq: TermHLen, TypeC2HTermReq: TermHLen,
	TypeCapsuleCmd: CmdHLen, TypeCapsuleResp: RespHLen, TypeH2CData: DataHLen,
	TypeC2HData: DataHLen, TypeR2T: DataHLen,
}

// castagnoli is CRC32C, the digest of NVMe/TCP (Section 3.6.2.1).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Digest returns the CRC32C of p as NVMe/TCP computes HDGST and DDGST.
func Digest(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// UpdateDigest continues a digest over more data.
func UpdateDigest(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }

// Errors. A FormatError is connection-fatal: the receiver sends a TermReq
// with its FES and closes the connection (Section 3.6.2.3).
var (
	ErrHeaderDigest = errors.New("nvmetcp: header digest mismatch")
	ErrDataDigest   = errors.New("nvmetcp: data digest mismatch")
	ErrTooLarge     = errors.New("nvmetcp: PDU data over the negotiated limit")
)

// Fatal Error Status values of a TermReq (Section 3.6.2.3, Figure 23).
const (
	FESInvalidHeader     = 0x01
	FESSequence          = 0x02
	FESHeaderDigest      = 0x03
	FESDataOutOfRange    = 0x04
	FESDataLimitExceeded = 0x05
	FESUnsupportedParam  = 0x06
)

// FormatError is a malformed PDU: a field out of range, a length that does
// not add up.
type FormatError struct {
	Type  Type
	Field string
	Value uint64
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("nvmetcp: %v PDU: bad %s %d", e.Type, e.Field, e.Value)
}

// Header is a decoded common header plus the raw type-specific header.
type Header struct {
	Type  Type
	Flags uint8
	HLen  uint8
	PDO   uint8
	PLen  uint32
	// DataLen is the length of PDU-Data (0 when none), Pad the bytes
	// between the header (and its digest) and PDO, DataDigest whether a
	// DDGST follows the data.
	DataLen    int
	Pad        int
	DataDigest bool
	// Raw holds the HLEN header bytes; it aliases the Reader's buffer and
	// is valid until the next ReadHeader.
	Raw []byte
}

// layout checks the common header of a PDU of HLEN bytes against the
// digests in use and fills DataLen, Pad and DataDigest.
func (h *Header) layout(hdgst, ddgst bool) error {
	want, ok := hlenOf[h.Type]
	if !ok {
		return &FormatError{h.Type, "PDU-Type", uint64(h.Type)}
	}
	if int(h.HLen) != want {
		return &FormatError{h.Type, "HLEN", uint64(h.HLen)}
	}
	hl := int(h.HLen)
	switch h.Type {
	case TypeICReq, TypeICResp:
		// Sent before digests are negotiated: no digest, no data.
		if h.PLen != ICLen || h.Flags != 0 {
			return &FormatError{h.Type, "PLEN", uint64(h.PLen)}
		}
		return nil
	case TypeH2CTermReq, TypeC2HTermReq:
		// "The HDGSTF and DDGSTF flags are not used" in a TermReq; its
		// data is the offending PDU header, at most 128 bytes.
		if h.PLen < TermHLen || h.PLen > TermHLen+MaxTermData {
			return &FormatError{h.Type, "PLEN", uint64(h.PLen)}
		}
		h.DataLen = int(h.PLen) - TermHLen
		return nil
	}
	if (h.Flags&FlagHDGST != 0) != hdgst {
		return &FormatError{h.Type, "HDGSTF", uint64(h.Flags)}
	}
	if hdgst {
		hl += DigestLen
	}
	if h.PDO == 0 {
		if h.Flags&FlagDDGST != 0 || int64(h.PLen) != int64(hl) {
			return &FormatError{h.Type, "PLEN", uint64(h.PLen)}
		}
		return nil
	}
	switch h.Type {
	case TypeCapsuleResp, TypeR2T:
		return &FormatError{h.Type, "PDO", uint64(h.PDO)}
	}
	if int(h.PDO) < hl {
		return &FormatError{h.Type, "PDO", uint64(h.PDO)}
	}
	h.Pad = int(h.PDO) - hl
	h.DataDigest = h.Flags&FlagDDGST != 0
	if h.DataDigest != ddgst {
		return &FormatError{h.Type, "DDGSTF", uint64(h.Flags)}
	}
	n := int64(h.PLen) - int64(h.PDO)
	if h.DataDigest {
		n -= DigestLen
	}
	if n <= 0 {
		return &FormatError{h.Type, "PLEN", uint64(h.PLen)}
	}
	h.DataLen = int(n)
	return nil
}

// Options say how PDUs are framed on one connection after ICReq/ICResp.
type Options struct {
	HeaderDigest bool
	DataDigest   bool
	// DataAlign is the alignment in bytes the peer asked for the start
	// of PDU-Data ((HPDA or CPDA + 1) * 4); 0 or 4 means none.
	DataAlign int
}

// AppendPDU appends the framing of p for dataLen bytes of data: the header
// with its digest and the padding up to PDO. The caller then sends the
// data, followed by AppendDataDigest when o.DataDigest and dataLen > 0.
func (o Options) AppendPDU(b []byte, p PDU, dataLen int) []byte {
	start := len(b)
	t := p.PDUType()
	b = append(b, byte(t), p.flags(), 0, 0, 0, 0, 0, 0)
	b = p.appendSpecific(b)
	hl := len(b) - start
	b[start+2] = byte(hl)
	hdgst, ddgst := o.HeaderDigest, o.DataDigest && dataLen > 0
	switch t {
	case TypeICReq, TypeICResp, TypeH2CTermReq, TypeC2HTermReq:
		hdgst, ddgst = false, false
	}
	total := hl
	if hdgst {
		b[start+1] |= FlagHDGST
		total += DigestLen
	}
	pad := 0
	if dataLen > 0 && t != TypeH2CTermReq && t != TypeC2HTermReq {
		if a := o.DataAlign; a > 4 && total%a != 0 {
			pad = a - total%a
		}
		b[start+3] = byte(total + pad)
		if ddgst {
			b[start+1] |= FlagDDGST
		}
	}
	plen := total + pad + dataLen
	if ddgst {
		plen += DigestLen
	}
	binary.LittleEndian.PutUint32(b[start+4:], uint32(plen))
	if hdgst {
		b = binary.LittleEndian.AppendUint32(b, Digest(b[start:start+hl]))
	}
	for range pad {
		b = append(b, 0)
	}
	return b
}

// AppendDataDigest appends the DDGST of data.
func AppendDataDigest(b []byte, data []byte) []byte {
	return binary.LittleEndian.AppendUint32(b, Digest(data))
}
