package blockcheck

import (
	"encoding/binary"
	"hash/crc32"
)

// BlockSize is the unit of the workload: every write covers whole blocks
// and every block carries a header.
const BlockSize = 4096

// Magic starts every block a workload writes.
const Magic uint64 = 0x6c62636865636b31 // "lbcheck1"

const (
	offMagic  = 0
	offClient = 8
	offSeq    = 12
	offOp     = 16
	offLBA    = 24
	offCRC    = 32
	hdrLen    = 36
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header names the write a block came from.
type Header struct {
	Client uint32
	Seq    uint32
	Op     uint64 // op id, unique in a history, never 0
	LBA    uint64
}

// Encode fills b (BlockSize bytes) with h and a pattern derived from it.
func Encode(b []byte, h Header) {
	be := binary.BigEndian
	be.PutUint64(b[offMagic:], Magic)
	be.PutUint32(b[offClient:], h.Client)
	be.PutUint32(b[offSeq:], h.Seq)
	be.PutUint64(b[offOp:], h.Op)
	be.PutUint64(b[offLBA:], h.LBA)
	be.PutUint32(b[offCRC:], 0)
	x := h.Op*0x9e3779b97f4a7c15 ^ h.LBA ^ 0x5bd1e995
	for i := hdrLen; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		be.PutUint64(b[i:], x)
	}
	be.PutUint32(b[offCRC:], crc32.Checksum(b, castagnoli))
}

// BlockState is what a block read back holds.
type BlockState int

const (
	// StateZero: all zero bytes, never written.
	StateZero BlockState = iota
	// StateValid: a header with a matching checksum.
	StateValid
	// StateTorn: the magic is there but the checksum does not match (sectors
	// of different writes, or a partial write).
	StateTorn
	// StateGarbage: neither zero nor a block of ours.
	StateGarbage
)

func (s BlockState) String() string {
	return [...]string{"zero", "valid", "torn", "garbage"}[s]
}

// Decode reads the header of a block read back.
func Decode(b []byte) (Header, BlockState) {
	be := binary.BigEndian
	if be.Uint64(b[offMagic:]) != Magic {
		for _, c := range b {
			if c != 0 {
				return Header{}, StateGarbage
			}
		}
		return Header{}, StateZero
	}
	h := Header{
		Client: be.Uint32(b[offClient:]),
		Seq:    be.Uint32(b[offSeq:]),
		Op:     be.Uint64(b[offOp:]),
		LBA:    be.Uint64(b[offLBA:]),
	}
	want := be.Uint32(b[offCRC:])
	var z [4]byte
	c := crc32.Update(0, castagnoli, b[:offCRC])
	c = crc32.Update(c, castagnoli, z[:])
	c = crc32.Update(c, castagnoli, b[offCRC+4:])
	if c != want {
		return h, StateTorn
	}
	return h, StateValid
}
