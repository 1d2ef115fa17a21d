package pdu

import (
	"encoding/binary"
	"hash/crc32"
)

// castagnoli is the CRC32C table (RFC 7143, Section 13.1; generator 0x11EDC6F41).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// DigestLen is the length of a header or data digest.
const DigestLen = 4

// Digest returns the CRC32C of the concatenation of segs.
func Digest(segs ...[]byte) uint32 {
	var c uint32
	for _, s := range segs {
		c = crc32.Update(c, castagnoli, s)
	}
	return c
}

// UpdateDigest continues a CRC32C.
func UpdateDigest(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }

// AppendDigest appends a digest as it goes on the wire: least-significant
// byte first (RFC 7143, Appendix A.4: 32 zero bytes give "aa 36 91 8a").
func AppendDigest(b []byte, d uint32) []byte { return binary.LittleEndian.AppendUint32(b, d) }

// wireDigest decodes a digest read from the wire.
func wireDigest(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
