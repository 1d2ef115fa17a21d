package pdu

import (
	"encoding/binary"
)

// PDU is one decoded NVMe/TCP PDU header.
type PDU interface {
	PDUType() Type
	flags() uint8
	appendSpecific(b []byte) []byte
}

var le = binary.LittleEndian

// ICReq opens a connection (Section 3.6.2.2, Figure 20).
type ICReq struct {
	PFV    uint16 // 0: version 1.0
	HPDA   uint8  // host PDU data alignment: (HPDA+1)*4 bytes
	HDGST  bool
	DDGST  bool
	MaxR2T uint32 // 0's based: outstanding R2Ts per command
}

// ICResp answers ICReq (Section 3.6.2.3, Figure 21).
type ICResp struct {
	PFV        uint16
	CPDA       uint8 // controller PDU data alignment
	HDGST      bool
	DDGST      bool
	MaxH2CData uint32 // most PDU-Data bytes per H2CData PDU
}

// TermReq ends a connection on a fatal error (Figure 22/23): H2CTermReq
// from the host, C2HTermReq from the controller.
type TermReq struct {
	C2H  bool
	FES  uint16 // Fatal Error Status
	FEI  uint32 // Fatal Error Information (offset of the bad field, ...)
	Data []byte // the offending PDU header, at most 128 bytes
}

// CapsuleCmd carries a submission queue entry and optionally in-capsule
// data (Figure 24).
type CapsuleCmd struct{ SQE SQE }

// CapsuleResp carries a completion queue entry (Figure 25).
type CapsuleResp struct{ CQE CQE }

// H2CData carries write data the controller asked for with an R2T
// (Figure 26).
type H2CData struct {
	CCCID  uint16 // command capsule CID
	TTag   uint16 // transfer tag of the R2T
	Offset uint32 // DATAO: offset in the command's data
	Length uint32 // DATAL
	Last   bool
}

// C2HData carries read data (Figure 27).
type C2HData struct {
	CCCID   uint16
	Offset  uint32
	Length  uint32
	Last    bool
	Success bool // the command completed; no CapsuleResp follows
}

// R2T asks the host for write data (Figure 28).
type R2T struct {
	CCCID  uint16
	TTag   uint16
	Offset uint32 // R2TO
	Length uint32 // R2TL
}

func (*ICReq) PDUType() Type       { return TypeICReq }
func (*ICResp) PDUType() Type      { return TypeICResp }
func (*CapsuleCmd) PDUType() Type  { return TypeCapsuleCmd }
func (*CapsuleResp) PDUType() Type { return TypeCapsuleResp }
func (*H2CData) PDUType() Type     { return TypeH2CData }
func (*C2HData) PDUType() Type     { return TypeC2HData }
func (*R2T) PDUType() Type         { return TypeR2T }
func (p *TermReq) PDUType() Type {
	if p.C2H {
		return TypeC2HTermReq
	}
	return TypeH2CTermReq
}

func (*ICReq) flags() uint8       { return 0 }
func (*ICResp) flags() uint8      { return 0 }
func (*TermReq) flags() uint8     { return 0 }
func (*CapsuleCmd) flags() uint8  { return 0 }
func (*CapsuleResp) flags() uint8 { return 0 }
func (*R2T) flags() uint8         { return 0 }
func (p *H2CData) flags() uint8 {
	if p.Last {
		return FlagLast
	}
	return 0
}
func (p *C2HData) flags() uint8 {
	var f uint8
	if p.Last {
		f |= FlagLast
	}
	if p.Success {
		f |= FlagSuccess
	}
	return f
}

func digestBits(h, d bool) byte {
	var b byte
	if h {
		b |= 1
	}
	if d {
		b |= 2
	}
	return b
}

func (p *ICReq) appendSpecific(b []byte) []byte {
	b = le.AppendUint16(b, p.PFV)
	b = append(b, p.HPDA, digestBits(p.HDGST, p.DDGST))
	b = le.AppendUint32(b, p.MaxR2T)
	return append(b, make([]byte, 112)...)
}

func (p *ICResp) appendSpecific(b []byte) []byte {
	b = le.AppendUint16(b, p.PFV)
	b = append(b, p.CPDA, digestBits(p.HDGST, p.DDGST))
	b = le.AppendUint32(b, p.MaxH2CData)
	return append(b, make([]byte, 112)...)
}

// appendSpecific of a TermReq also appends its data (no digest, no PDO):
// call AppendPDU with dataLen 0 for it... see AppendTermReq.
func (p *TermReq) appendSpecific(b []byte) []byte {
	b = le.AppendUint16(b, p.FES)
	b = le.AppendUint32(b, p.FEI)
	return append(b, make([]byte, 10)...)
}

func (p *CapsuleCmd) appendSpecific(b []byte) []byte { return p.SQE.Append(b) }
func (p *CapsuleResp) appendSpecific(b []byte) []byte {
	return p.CQE.Append(b)
}

func (p *H2CData) appendSpecific(b []byte) []byte {
	b = le.AppendUint16(b, p.CCCID)
	b = le.AppendUint16(b, p.TTag)
	b = le.AppendUint32(b, p.Offset)
	b = le.AppendUint32(b, p.Length)
	return append(b, 0, 0, 0, 0)
}

func (p *C2HData) appendSpecific(b []byte) []byte {
	b = le.AppendUint16(b, p.CCCID)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, p.Offset)
	b = le.AppendUint32(b, p.Length)
	return append(b, 0, 0, 0, 0)
}

func (p *R2T) appendSpecific(b []byte) []byte {
	b = le.AppendUint16(b, p.CCCID)
	b = le.AppendUint16(b, p.TTag)
	b = le.AppendUint32(b, p.Offset)
	b = le.AppendUint32(b, p.Length)
	return append(b, 0, 0, 0, 0)
}

// AppendTermReq appends a whole TermReq PDU: header and data (truncated
// to 128 bytes), never digests.
func AppendTermReq(b []byte, p *TermReq) []byte {
	data := p.Data
	if len(data) > MaxTermData {
		data = data[:MaxTermData]
	}
	start := len(b)
	b = Options{}.AppendPDU(b, p, 0)
	le.PutUint32(b[start+4:], uint32(TermHLen+len(data)))
	return append(b, data...)
}

// Parse decodes the type-specific header of h (read by ReadHeader). For
// a TermReq the data is not read: Data stays nil. For H2CData and C2HData
// the announced DATAL must equal the PDU's data length.
func Parse(h *Header) (PDU, error) {
	s := h.Raw
	if len(s) < int(h.HLen) || int(h.HLen) < CommonLen {
		return nil, &FormatError{h.Type, "HLEN", uint64(h.HLen)}
	}
	switch h.Type {
	case TypeICReq:
		return &ICReq{PFV: le.Uint16(s[8:]), HPDA: s[10], HDGST: s[11]&1 != 0, DDGST: s[11]&2 != 0,
			MaxR2T: le.Uint32(s[12:])}, nil
	case TypeICResp:
		return &ICResp{PFV: le.Uint16(s[8:]), CPDA: s[10], HDGST: s[11]&1 != 0, DDGST: s[11]&2 != 0,
			MaxH2CData: le.Uint32(s[12:])}, nil
	case TypeH2CTermReq, TypeC2HTermReq:
		return &TermReq{C2H: h.Type == TypeC2HTermReq, FES: le.Uint16(s[8:]), FEI: le.Uint32(s[10:])}, nil
	case TypeCapsuleCmd:
		var c CapsuleCmd
		c.SQE = ParseSQE(s[8:72])
		return &c, nil
	case TypeCapsuleResp:
		var c CapsuleResp
		c.CQE = ParseCQE(s[8:24])
		return &c, nil
	case TypeH2CData:
		p := &H2CData{CCCID: le.Uint16(s[8:]), TTag: le.Uint16(s[10:]), Offset: le.Uint32(s[12:]),
			Length: le.Uint32(s[16:]), Last: h.Flags&FlagLast != 0}
		if int64(p.Length) != int64(h.DataLen) || h.DataLen == 0 {
			return nil, &FormatError{h.Type, "DATAL", uint64(p.Length)}
		}
		return p, nil
	case TypeC2HData:
		p := &C2HData{CCCID: le.Uint16(s[8:]), Offset: le.Uint32(s[12:]), Length: le.Uint32(s[16:]),
			Last: h.Flags&FlagLast != 0, Success: h.Flags&FlagSuccess != 0}
		if int64(p.Length) != int64(h.DataLen) || h.DataLen == 0 {
			return nil, &FormatError{h.Type, "DATAL", uint64(p.Length)}
		}
		// "If the SUCCESS flag is set, the LAST_PDU flag shall be set."
		if p.Success && !p.Last {
			return nil, &FormatError{h.Type, "FLAGS", uint64(h.Flags)}
		}
		return p, nil
	case TypeR2T:
		return &R2T{CCCID: le.Uint16(s[8:]), TTag: le.Uint16(s[10:]), Offset: le.Uint32(s[12:]),
			Length: le.Uint32(s[16:])}, nil
	}
	return nil, &FormatError{h.Type, "PDU-Type", uint64(h.Type)}
}
