package pdu

import (
	"fmt"
	"strings"
)

// SQELen and CQELen are the sizes of NVMe queue entries (NVMe Base 2.0,
// Figures 88 and 90).
const (
	SQELen = 64
	CQELen = 16
)

// SGL is an SGL descriptor (NVMe Base 2.0, Section 4.1.8).
type SGL struct {
	Addr   uint64
	Length uint32
	Type   uint8 // byte 15: descriptor type << 4 | subtype
}

// SGL descriptor types NVMe/TCP uses (TCP transport spec, Section 3.3):
// in-capsule data is a Data Block at an offset in the capsule, data moved
// by C2HData/R2T+H2CData a Transport Data Block.
const (
	SGLInCapsule = 0x01 // Data Block, subtype Offset
	SGLTransport = 0x5A // Transport SGL Data Block, subtype Transport specific
)

// PSDTSGL in SQE.Flags selects SGLs for the data pointer (required by
// NVMe-oF).
const PSDTSGL = 1 << 6

// SQE is a submission queue entry. Fabrics commands put FCTYPE in the low
// byte of NSID (byte 4) and their fields in CDW10..CDW15.
type SQE struct {
	Opcode uint8
	Flags  uint8
	CID    uint16
	NSID   uint32
	CDW2   uint32
	CDW3   uint32
	MPTR   uint64
	SGL    SGL
	CDW    [6]uint32 // CDW10..CDW15
}

// Append appends the 64 wire bytes of e.
func (e *SQE) Append(b []byte) []byte {
	b = append(b, e.Opcode, e.Flags)
	b = le.AppendUint16(b, e.CID)
	b = le.AppendUint32(b, e.NSID)
	b = le.AppendUint32(b, e.CDW2)
	b = le.AppendUint32(b, e.CDW3)
	b = le.AppendUint64(b, e.MPTR)
	b = le.AppendUint64(b, e.SGL.Addr)
	b = le.AppendUint32(b, e.SGL.Length)
	b = append(b, 0, 0, 0, e.SGL.Type)
	for _, d := range e.CDW {
		b = le.AppendUint32(b, d)
	}
	return b
}

// ParseSQE decodes 64 bytes.
func ParseSQE(s []byte) SQE {
	_ = s[63]
	e := SQE{Opcode: s[0], Flags: s[1], CID: le.Uint16(s[2:]), NSID: le.Uint32(s[4:]),
		CDW2: le.Uint32(s[8:]), CDW3: le.Uint32(s[12:]), MPTR: le.Uint64(s[16:]),
		SGL: SGL{Addr: le.Uint64(s[24:]), Length: le.Uint32(s[32:]), Type: s[39]}}
	for i := range e.CDW {
		e.CDW[i] = le.Uint32(s[40+4*i:])
	}
	return e
}

// CQE is a completion queue entry.
type CQE struct {
	Result uint64 // DW0 | DW1<<32 (Property Get returns 8 bytes here)
	SQHead uint16
	SQID   uint16
	CID    uint16
	Status uint16 // phase bit 0, status field bits 15:1
}

// Append appends the 16 wire bytes of e.
func (e *CQE) Append(b []byte) []byte {
	b = le.AppendUint64(b, e.Result)
	b = le.AppendUint16(b, e.SQHead)
	b = le.AppendUint16(b, e.SQID)
	b = le.AppendUint16(b, e.CID)
	return le.AppendUint16(b, e.Status)
}

// ParseCQE decodes 16 bytes.
func ParseCQE(s []byte) CQE {
	_ = s[15]
	return CQE{Result: le.Uint64(s), SQHead: le.Uint16(s[8:]), SQID: le.Uint16(s[10:]),
		CID: le.Uint16(s[12:]), Status: le.Uint16(s[14:])}
}

// Status is the 15-bit status field of a CQE (without the phase bit).
type Status uint16

// StatusField returns the status field of e (the phase bit dropped).
func (e *CQE) StatusField() Status { return Status(e.Status >> 1) }

// MakeStatus builds a CQE status word from a type and code (DNR set when dnr).
func MakeStatus(sct, sc uint8, dnr bool) uint16 {
	s := uint16(sc)<<1 | uint16(sct&7)<<9
	if dnr {
		s |= 1 << 15
	}
	return s
}

func (s Status) SC() uint8  { return uint8(s) }
func (s Status) SCT() uint8 { return uint8(s>>8) & 7 }
func (s Status) DNR() bool  { return s&(1<<14) != 0 }
func (s Status) OK() bool   { return s&0x7ff == 0 }

var genericNames = map[uint8]string{
	0x01: "invalid command opcode", 0x02: "invalid field in command", 0x03: "command ID conflict",
	0x04: "data transfer error", 0x06: "internal error", 0x07: "command abort requested",
	0x08: "command aborted due to SQ deletion", 0x0b: "invalid namespace or format",
	0x0d: "invalid SGL segment descriptor", 0x0f: "data SGL length invalid",
	0x80: "LBA out of range", 0x81: "capacity exceeded", 0x82: "namespace not ready",
}

var fabricsNames = map[uint8]string{
	0x80: "incompatible format", 0x81: "controller busy", 0x82: "connect invalid parameters",
	0x83: "connect restart discovery", 0x84: "connect invalid host", 0x85: "invalid queue type",
	0x91: "authentication required",
}

// String names s for an I/O or admin command. Command-specific codes
// (SCT 1) of the NVM command set are named here; those of Fabrics
// commands by FabricsString.
func (s Status) String() string {
	var name string
	switch s.SCT() {
	case 0:
		name = genericNames[s.SC()]
	case 1:
		name = commandNames[s.SC()]
	case 2:
		name = map[uint8]string{0x80: "write fault", 0x81: "unrecovered read error", 0x86: "access denied"}[s.SC()]
	case 3:
		name = map[uint8]string{0x00: "internal path error", 0x01: "ANA persistent loss", 0x02: "ANA inaccessible",
			0x03: "ANA transition", 0x60: "controller pathing error", 0x70: "host pathing error",
			0x71: "command aborted by host"}[s.SC()]
	}
	return statusText(name, s)
}

// FabricsString names s for a Fabrics command (Connect, Property Get/Set).
func (s Status) FabricsString() string {
	if s.SCT() == 1 {
		return statusText(fabricsNames[s.SC()], s)
	}
	return s.String()
}

func statusText(name string, s Status) string {
	if name == "" {
		name = "status"
	}
	return fmt.Sprintf("%s (SCT %#x SC %#02x)", name, s.SCT(), s.SC())
}

// commandNames are command-specific status codes of I/O commands. 0x83
// is "command size limit exceeded" in NVM Command Set 2.0, and what Linux
// nvmet answers for a Write Zeroes or Dataset Management its backend cannot
// do (its NVME_SC_ONCS_NOT_SUPPORTED, 0x183).
var commandNames = map[uint8]string{
	0x80: "conflicting attributes", 0x81: "invalid protection information",
	0x82: "attempted write to read-only range",
	0x83: "operation not supported by the namespace (or command size limit exceeded)",
}

// Admin command opcodes (NVMe Base 2.0, Figure 138).
const (
	AdminGetLogPage  = 0x02
	AdminIdentify    = 0x06
	AdminAbort       = 0x08
	AdminAER         = 0x0c
	AdminSetFeatures = 0x09
	AdminGetFeatures = 0x0a
	AdminKeepAlive   = 0x18
	OpFabrics        = 0x7f
)

// NVM command set opcodes (NVM Command Set 1.0, Figure 18).
const (
	IOFlush       = 0x00
	IOWrite       = 0x01
	IORead        = 0x02
	IOWriteZeroes = 0x08
	IODSM         = 0x09
)

// Fabrics command types (NVMe-oF 1.1, Figure 20).
const (
	FabricsPropertySet = 0x00
	FabricsConnect     = 0x01
	FabricsPropertyGet = 0x04
)

// Controller properties (NVMe Base 2.0, Figure 35).
const (
	PropCAP  = 0x00 // 8 bytes
	PropVS   = 0x08
	PropCC   = 0x14
	PropCSTS = 0x1c
)

// Features.
const (
	FeatureNumQueues  = 0x07
	FeatureAsyncEvent = 0x0b // Asynchronous Event Configuration
)

// Identify CNS values.
const (
	CNSNamespace    = 0x00
	CNSController   = 0x01
	CNSActiveNSList = 0x02
	CNSNSDescList   = 0x03
)

// Log pages.
const (
	LogANA       = 0x0c
	LogDiscovery = 0x70
)

// Path related status codes (SCT 3, NVMe Base 2.0, Figure 104): the
// command was not executed because of the path's ANA state.
const (
	SCANAPersistentLoss = 0x01
	SCANAInaccessible   = 0x02
	SCANATransition     = 0x03
)

// IsANA reports whether s is one of the ANA path statuses.
func (s Status) IsANA() bool {
	return s.SCT() == 3 && s.SC() >= SCANAPersistentLoss && s.SC() <= SCANATransition
}

// DiscoveryNQN is the well-known NQN of a discovery controller.
const DiscoveryNQN = "nqn.2014-08.org.nvmexpress.discovery"

// ConnectDataLen is the size of the Connect command's data (NVMe-oF 1.1,
// Figure 21).
const ConnectDataLen = 1024

// ConnectSQE builds a Connect command: recfmt 0, queue qid with sqsize
// entries (0's based), keep-alive timeout kato in ms (admin queue only).
func ConnectSQE(qid, sqsize uint16, kato uint32) SQE {
	return SQE{Opcode: OpFabrics, Flags: PSDTSGL, NSID: FabricsConnect,
		CDW: [6]uint32{uint32(qid) << 16, uint32(sqsize), kato}}
}

// AppendConnectData appends the 1024-byte Connect data.
func AppendConnectData(b []byte, hostID [16]byte, cntlID uint16, subNQN, hostNQN string) []byte {
	start := len(b)
	b = append(b, make([]byte, ConnectDataLen)...)
	d := b[start:]
	copy(d[0:16], hostID[:])
	le.PutUint16(d[16:], cntlID)
	copy(d[256:511], subNQN) // NUL-terminated: at most 255 bytes
	copy(d[512:767], hostNQN)
	return b
}

// ConnectData is the decoded Connect data (for the fake controller).
type ConnectData struct {
	HostID  [16]byte
	CntlID  uint16
	SubNQN  string
	HostNQN string
}

// ParseConnectData decodes Connect data.
func ParseConnectData(d []byte) (ConnectData, error) {
	if len(d) < ConnectDataLen {
		return ConnectData{}, fmt.Errorf("nvmetcp: connect data of %d bytes", len(d))
	}
	var c ConnectData
	copy(c.HostID[:], d[:16])
	c.CntlID = le.Uint16(d[16:])
	c.SubNQN = cstring(d[256:512])
	c.HostNQN = cstring(d[512:768])
	return c, nil
}

// PropertyGetSQE reads a property of 4 or 8 bytes.
func PropertyGetSQE(off uint32, eight bool) SQE {
	var size uint32
	if eight {
		size = 1
	}
	return SQE{Opcode: OpFabrics, Flags: PSDTSGL, NSID: FabricsPropertyGet, CDW: [6]uint32{size, off}}
}

// PropertySetSQE writes a 4-byte property.
func PropertySetSQE(off, val uint32) SQE {
	return SQE{Opcode: OpFabrics, Flags: PSDTSGL, NSID: FabricsPropertySet, CDW: [6]uint32{0, off, val}}
}

func cstring(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// trimmed returns an ASCII space-padded field without its padding.
func trimmed(b []byte) string { return strings.TrimRight(cstring(b), " ") }
