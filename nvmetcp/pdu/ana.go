package pdu

import "fmt"

// ANAState is an Asymmetric Namespace Access state (NVMe Base 2.0,
// Section 8.20.3).
type ANAState uint8

const (
	ANAOptimized      ANAState = 0x01
	ANANonOptimized   ANAState = 0x02
	ANAInaccessible   ANAState = 0x03
	ANAPersistentLoss ANAState = 0x04
	ANAChange         ANAState = 0x0f
)

var anaNames = map[ANAState]string{ANAOptimized: "optimized", ANANonOptimized: "non-optimized",
	ANAInaccessible: "inaccessible", ANAPersistentLoss: "persistent-loss", ANAChange: "change"}

func (s ANAState) String() string {
	if n, ok := anaNames[s]; ok {
		return n
	}
	return fmt.Sprintf("ANA state %#x", uint8(s))
}

// Usable reports whether commands may be sent to a namespace in state s
// ("ANA Optimized" and "ANA Non-Optimized" process commands; the others
// abort them with a path status).
func (s ANAState) Usable() bool { return s == ANAOptimized || s == ANANonOptimized }

// ANAGroup is one ANA Group Descriptor (NVMe Base 2.0, Figure 212).
type ANAGroup struct {
	ID          uint32
	ChangeCount uint64
	State       ANAState
	NSIDs       []uint32
}

// ANALog is the ANA log page (Log Identifier 0Ch, NVMe Base 2.0,
// Figure 211):
//
//	 0       8      10        16
//	+-------+------+---------+---- descriptors ----+
//	| CHGCNT| NGRPS| reserved| 32 bytes + 4/NSID   |
//	+-------+------+---------+---------------------+
//
// A descriptor: ANAGRPID (4), NNSID (4), CHGCNT (8), state (1, bits 3:0),
// 15 reserved, then NNSID namespace IDs (none when read with RGO).
type ANALog struct {
	ChangeCount uint64
	Groups      []ANAGroup
}

// ANAHeaderLen and ANADescLen are the fixed sizes.
const (
	ANAHeaderLen = 16
	ANADescLen   = 32
)

// Group returns the descriptor of group id.
func (l *ANALog) Group(id uint32) (ANAGroup, bool) {
	for _, g := range l.Groups {
		if g.ID == id {
			return g, true
		}
	}
	return ANAGroup{}, false
}

// ParseANALog decodes an ANA log page. A page cut short (the host read
// fewer bytes than it holds) is an error naming the length needed, at
// most maxLog, so the caller can read again with a larger buffer.
func ParseANALog(d []byte) (ANALog, error) {
	if len(d) < ANAHeaderLen {
		return ANALog{}, fmt.Errorf("nvmetcp: ANA log: %d bytes", len(d))
	}
	l := ANALog{ChangeCount: le.Uint64(d[0:])}
	n := int(le.Uint16(d[8:]))
	off := ANAHeaderLen
	for i := 0; i < n; i++ {
		if len(d) < off+ANADescLen {
			return l, &ShortANALogError{Need: min(off+ANADescLen+(n-i-1)*ANADescLen, maxANALog)}
		}
		g := ANAGroup{ID: le.Uint32(d[off:]), ChangeCount: le.Uint64(d[off+8:]), State: ANAState(d[off+16] & 0x0f)}
		nns := int(le.Uint32(d[off+4:]))
		off += ANADescLen
		if nns > (maxANALog-off)/4 {
			return l, fmt.Errorf("nvmetcp: ANA log: group %d lists %d namespaces", g.ID, nns)
		}
		if len(d) < off+4*nns {
			return l, &ShortANALogError{Need: min(off+4*nns+(n-i-1)*ANADescLen, maxANALog)}
		}
		for j := 0; j < nns; j++ {
			g.NSIDs = append(g.NSIDs, le.Uint32(d[off+4*j:]))
		}
		off += 4 * nns
		l.Groups = append(l.Groups, g)
	}
	return l, nil
}

// maxANALog bounds the ANA log a host reads (1 MiB).
const maxANALog = 1 << 20

// ShortANALogError: the buffer held only part of the ANA log page.
type ShortANALogError struct{ Need int }

func (e *ShortANALogError) Error() string {
	return fmt.Sprintf("nvmetcp: ANA log needs at least %d bytes", e.Need)
}

// AppendANALog appends an ANA log page (for the fake controller and
// tests).
func AppendANALog(b []byte, l *ANALog) []byte {
	var h [ANAHeaderLen]byte
	le.PutUint64(h[0:], l.ChangeCount)
	le.PutUint16(h[8:], uint16(len(l.Groups)))
	b = append(b, h[:]...)
	for _, g := range l.Groups {
		var d [ANADescLen]byte
		le.PutUint32(d[0:], g.ID)
		le.PutUint32(d[4:], uint32(len(g.NSIDs)))
		le.PutUint64(d[8:], g.ChangeCount)
		d[16] = uint8(g.State) & 0x0f
		b = append(b, d[:]...)
		for _, id := range g.NSIDs {
			b = le.AppendUint32(b, id)
		}
	}
	return b
}
