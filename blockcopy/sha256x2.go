package blockcopy

import (
	"crypto/sha256"
	"encoding/binary"
)

// sha256Init is SHA-256's initial state (FIPS 180-4, 5.3.3).
var sha256Init = [8]uint32{
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
	0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
}

// sum256x2 returns SHA-256(a) and SHA-256(b) of two messages of the same
// length. With SHA-NI (amd64) the two are hashed at once, their rounds
// interleaved (sha256x2_gen.go); elsewhere it is crypto/sha256 twice.
func sum256x2(a, b []byte) (da, db [sha256.Size]byte) {
	if !useSHA256x2 || len(a) != len(b) {
		return sha256.Sum256(a), sha256.Sum256(b)
	}
	sa, sb := sha256Init, sha256Init
	sha256x2Blocks(&sa, &sb, a, b)
	// The padding (FIPS 180-4, 5.1.1): the tail, 0x80, zeros to 56 mod
	// 64, the message length in bits; one or two blocks.
	full := len(a) &^ 63
	var pa, pb [128]byte
	tail := copy(pa[:], a[full:])
	copy(pb[:], b[full:])
	pa[tail], pb[tail] = 0x80, 0x80
	n := 64
	if tail >= 56 {
		n = 128
	}
	binary.BigEndian.PutUint64(pa[n-8:], uint64(len(a))<<3)
	binary.BigEndian.PutUint64(pb[n-8:], uint64(len(b))<<3)
	sha256x2Blocks(&sa, &sb, pa[:n], pb[:n])
	for i := range 8 {
		binary.BigEndian.PutUint32(da[i*4:], sa[i])
		binary.BigEndian.PutUint32(db[i*4:], sb[i])
	}
	return da, db
}
