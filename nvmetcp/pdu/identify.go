package pdu

import "fmt"

// IdentifyLen is the size of every Identify data structure.
const IdentifyLen = 4096

// Controller is the part of Identify Controller (CNS 01h, NVMe Base 2.0,
// Figure 275) a host uses.
type Controller struct {
	VID      uint16
	Serial   string // SN, bytes 4-23
	Model    string // MN, bytes 24-63
	Firmware string // FR, bytes 64-71
	MDTS     uint8  // max data transfer: 2^MDTS pages of CAP.MPSMIN, 0: no limit
	CntlID   uint16
	Version  uint32
	MaxCmd   uint16 // MAXCMD (fabrics), bytes 514-515
	NN       uint32 // number of namespaces
	ONCS     uint16 // optional NVM commands: bit 2 DSM, bit 3 Write Zeroes
	VWC      uint8  // volatile write cache present: bit 0
	SGLS     uint32
	SubNQN   string // bytes 768-1023
	IOCCSZ   uint32 // I/O queue command capsule size, 16-byte units (bytes 1792-1795)
	IORCSZ   uint32
	ICDOFF   uint16 // in-capsule data offset, 16-byte units
	// Multipath: CMIC bit 3 says the controller reports ANA; OAES bit 11
	// that it sends the ANA change event; ANATT is the ANA transition
	// time in seconds; ANAGRPMAX and NANAGRPID bound the ANA groups.
	CMIC      uint8  // byte 76
	OAES      uint32 // bytes 92-95
	ANATT     uint8  // byte 342
	ANACAP    uint8  // byte 343
	ANAGRPMAX uint32 // bytes 344-347
	NANAGRPID uint32 // bytes 348-351
}

// CMICANA is CMIC bit 3: the controller reports ANA (NVMe Base 2.0,
// Figure 275); OAESANAChange OAES bit 11: it sends ANA change events.
const (
	CMICANA       = 1 << 3
	OAESANAChange = 1 << 11
)

const (
	ONCSDSM         = 1 << 2
	ONCSWriteZeroes = 1 << 3
)

// ParseController decodes Identify Controller data.
func ParseController(d []byte) (Controller, error) {
	if len(d) < IdentifyLen {
		return Controller{}, fmt.Errorf("nvmetcp: identify controller: %d bytes", len(d))
	}
	return Controller{
		VID: le.Uint16(d[0:]), Serial: trimmed(d[4:24]), Model: trimmed(d[24:64]),
		Firmware: trimmed(d[64:72]), MDTS: d[77], CntlID: le.Uint16(d[78:]),
		Version: le.Uint32(d[80:]), MaxCmd: le.Uint16(d[514:]), NN: le.Uint32(d[516:]),
		ONCS: le.Uint16(d[520:]), VWC: d[525], SGLS: le.Uint32(d[536:]),
		SubNQN: cstring(d[768:1024]), IOCCSZ: le.Uint32(d[1792:]), IORCSZ: le.Uint32(d[1796:]),
		ICDOFF: le.Uint16(d[1800:]), CMIC: d[76], OAES: le.Uint32(d[92:]), ANATT: d[342], ANACAP: d[343],
		ANAGRPMAX: le.Uint32(d[344:]), NANAGRPID: le.Uint32(d[348:]),
	}, nil
}

// AppendController appends Identify Controller data (for the fake
// controller and tests).
func AppendController(b []byte, c *Controller) []byte {
	start := len(b)
	b = append(b, make([]byte, IdentifyLen)...)
	d := b[start:]
	le.PutUint16(d[0:], c.VID)
	pad(d[4:24], c.Serial)
	pad(d[24:64], c.Model)
	pad(d[64:72], c.Firmware)
	d[77] = c.MDTS
	le.PutUint16(d[78:], c.CntlID)
	le.PutUint32(d[80:], c.Version)
	le.PutUint16(d[514:], c.MaxCmd)
	le.PutUint32(d[516:], c.NN)
	le.PutUint16(d[520:], c.ONCS)
	d[525] = c.VWC
	le.PutUint32(d[536:], c.SGLS)
	copy(d[768:1023], c.SubNQN)
	le.PutUint32(d[1792:], c.IOCCSZ)
	le.PutUint32(d[1796:], c.IORCSZ)
	le.PutUint16(d[1800:], c.ICDOFF)
	d[76] = c.CMIC
	le.PutUint32(d[92:], c.OAES)
	d[342], d[343] = c.ANATT, c.ANACAP
	le.PutUint32(d[344:], c.ANAGRPMAX)
	le.PutUint32(d[348:], c.NANAGRPID)
	return b
}

func pad(d []byte, s string) {
	n := copy(d, s)
	for i := n; i < len(d); i++ {
		d[i] = ' '
	}
}

// LBAFormat is one LBA format of a namespace.
type LBAFormat struct {
	MetaSize  uint16
	DataShift uint8 // LBADS: block size is 1<<DataShift
	RelPerf   uint8
}

// Namespace is the part of Identify Namespace (CNS 00h, NVM Command Set
// 1.0, Figure 97) a host uses.
type Namespace struct {
	NSZE     uint64 // size in blocks
	NCAP     uint64
	NUSE     uint64
	NSFeat   uint8
	NLBAF    uint8  // 0's based number of formats
	FLBAS    uint8  // bits 3:0 (and 6:5) index of the format in use
	DLFEAT   uint8  // bit 3: deallocate... bits 2:0 = 001b: deallocated reads zero
	NMIC     uint8  // byte 30, bit 0: may be attached to several controllers
	ANAGRPID uint32 // bytes 92-95: the namespace's ANA group (0: none)
	NGUID    [16]byte
	EUI64    [8]byte
	Formats  []LBAFormat
}

// ParseNamespace decodes Identify Namespace data.
func ParseNamespace(d []byte) (Namespace, error) {
	if len(d) < IdentifyLen {
		return Namespace{}, fmt.Errorf("nvmetcp: identify namespace: %d bytes", len(d))
	}
	n := Namespace{NSZE: le.Uint64(d[0:]), NCAP: le.Uint64(d[8:]), NUSE: le.Uint64(d[16:]),
		NSFeat: d[24], NLBAF: d[25], FLBAS: d[26], DLFEAT: d[33],
		NMIC: d[30], ANAGRPID: le.Uint32(d[92:])}
	copy(n.NGUID[:], d[104:120])
	copy(n.EUI64[:], d[120:128])
	for i := 0; i <= int(n.NLBAF) && i < 64; i++ {
		o := 128 + 4*i
		n.Formats = append(n.Formats, LBAFormat{MetaSize: le.Uint16(d[o:]), DataShift: d[o+2], RelPerf: d[o+3] & 3})
	}
	return n, nil
}

// FormatIndex is the index of the LBA format in use.
func (n *Namespace) FormatIndex() int { return int(n.FLBAS&0xf) | int(n.FLBAS>>5&3)<<4 }

// BlockSize returns the logical block size in use, or an error when the
// format is missing or unusable (metadata interleaved, absurd shift).
func (n *Namespace) BlockSize() (int, error) {
	i := n.FormatIndex()
	if i >= len(n.Formats) {
		return 0, fmt.Errorf("nvmetcp: namespace uses LBA format %d of %d", i, len(n.Formats))
	}
	f := n.Formats[i]
	if f.DataShift < 9 || f.DataShift > 16 {
		return 0, fmt.Errorf("nvmetcp: namespace LBA data size 2^%d unsupported", f.DataShift)
	}
	if f.MetaSize != 0 {
		return 0, fmt.Errorf("nvmetcp: namespace with %d bytes of metadata per block unsupported", f.MetaSize)
	}
	return 1 << f.DataShift, nil
}

// AppendNamespace appends Identify Namespace data.
func AppendNamespace(b []byte, n *Namespace) []byte {
	start := len(b)
	b = append(b, make([]byte, IdentifyLen)...)
	d := b[start:]
	le.PutUint64(d[0:], n.NSZE)
	le.PutUint64(d[8:], n.NCAP)
	le.PutUint64(d[16:], n.NUSE)
	d[24], d[25], d[26], d[33] = n.NSFeat, n.NLBAF, n.FLBAS, n.DLFEAT
	d[30] = n.NMIC
	le.PutUint32(d[92:], n.ANAGRPID)
	copy(d[104:120], n.NGUID[:])
	copy(d[120:128], n.EUI64[:])
	for i, f := range n.Formats {
		if i >= 64 {
			break
		}
		o := 128 + 4*i
		le.PutUint16(d[o:], f.MetaSize)
		d[o+2], d[o+3] = f.DataShift, f.RelPerf
	}
	return b
}

// DiscoveryEntry is one Discovery Log Page entry (NVMe-oF 1.1, Figure 33).
type DiscoveryEntry struct {
	TrType  uint8 // 3: TCP
	AdrFam  uint8 // 1: IPv4, 2: IPv6
	SubType uint8 // 1: discovery, 2: NVM subsystem
	TReq    uint8
	PortID  uint16
	CntlID  uint16
	ASQSZ   uint16
	TrSvcID string
	SubNQN  string
	TrAddr  string
}

// DiscoveryHeaderLen and DiscoveryEntryLen size the discovery log.
const (
	DiscoveryHeaderLen = 1024
	DiscoveryEntryLen  = 1024
)

// ParseDiscoveryHeader returns GENCTR and NUMREC.
func ParseDiscoveryHeader(d []byte) (genctr, numrec uint64, err error) {
	if len(d) < 16 {
		return 0, 0, fmt.Errorf("nvmetcp: discovery log header: %d bytes", len(d))
	}
	return le.Uint64(d), le.Uint64(d[8:]), nil
}

// ParseDiscoveryEntries decodes the whole entries in d.
func ParseDiscoveryEntries(d []byte) []DiscoveryEntry {
	var out []DiscoveryEntry
	for ; len(d) >= DiscoveryEntryLen; d = d[DiscoveryEntryLen:] {
		out = append(out, DiscoveryEntry{TrType: d[0], AdrFam: d[1], SubType: d[2], TReq: d[3],
			PortID: le.Uint16(d[4:]), CntlID: le.Uint16(d[6:]), ASQSZ: le.Uint16(d[8:]),
			TrSvcID: trimmed(d[32:64]), SubNQN: cstring(d[256:512]), TrAddr: trimmed(d[512:768])})
	}
	return out
}

// AppendDiscoveryEntry appends one entry.
func AppendDiscoveryEntry(b []byte, e *DiscoveryEntry) []byte {
	start := len(b)
	b = append(b, make([]byte, DiscoveryEntryLen)...)
	d := b[start:]
	d[0], d[1], d[2], d[3] = e.TrType, e.AdrFam, e.SubType, e.TReq
	le.PutUint16(d[4:], e.PortID)
	le.PutUint16(d[6:], e.CntlID)
	le.PutUint16(d[8:], e.ASQSZ)
	pad(d[32:64], e.TrSvcID)
	copy(d[256:511], e.SubNQN)
	pad(d[512:768], e.TrAddr)
	return b
}

// DSMRange is one Dataset Management range (NVM Command Set 1.0, Figure 39).
type DSMRange struct {
	Attr uint32
	NLB  uint32 // blocks (not 0's based)
	SLBA uint64
}

// DSMRangeLen is the wire size of a DSMRange.
const DSMRangeLen = 16

// AppendDSMRange appends r.
func AppendDSMRange(b []byte, r DSMRange) []byte {
	b = le.AppendUint32(b, r.Attr)
	b = le.AppendUint32(b, r.NLB)
	return le.AppendUint64(b, r.SLBA)
}

// ParseDSMRanges decodes whole ranges in d.
func ParseDSMRanges(d []byte) []DSMRange {
	var out []DSMRange
	for ; len(d) >= DSMRangeLen; d = d[DSMRangeLen:] {
		out = append(out, DSMRange{Attr: le.Uint32(d), NLB: le.Uint32(d[4:]), SLBA: le.Uint64(d[8:])})
	}
	return out
}
