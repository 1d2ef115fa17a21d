package blockcopy

import (
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// TestSum256x2 checks the two-stream SHA-256 against crypto/sha256 at
// every length around the padding's block boundaries and at the blkhash
// block size.
func TestSum256x2(t *testing.T) {
	t.Logf("two-stream SHA-NI in use: %v", useSHA256x2)
	r := rand.New(rand.NewPCG(1, 2))
	lengths := []int{BlkhashBlockSize, BlkhashBlockSize - 1, 1 << 20, 4096}
	for n := range 300 {
		lengths = append(lengths, n)
	}
	for _, n := range lengths {
		a, b := make([]byte, n), make([]byte, n)
		for i := range a {
			a[i], b[i] = byte(r.Uint32()), byte(r.Uint32())
		}
		da, db := sum256x2(a, b)
		if da != sha256.Sum256(a) || db != sha256.Sum256(b) {
			t.Fatalf("length %d: sum256x2 differs from crypto/sha256", n)
		}
	}
}

func BenchmarkSHA256Block(b *testing.B) {
	buf := make([]byte, 2*BlkhashBlockSize)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.Run("sha256.Sum256", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			sha256.Sum256(buf[:BlkhashBlockSize])
			sha256.Sum256(buf[BlkhashBlockSize:])
		}
	})
	b.Run("sum256x2", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			sum256x2(buf[:BlkhashBlockSize], buf[BlkhashBlockSize:])
		}
	})
}

// TestAppendBlockDigestsOrder checks that pairing data blocks around zero
// blocks keeps the digests in block order.
func TestAppendBlockDigestsOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, pattern := range []string{"D", "Z", "DD", "DZD", "ZDDZ", "DZZDDDZ", "DDDDD", "ZDZDZDZD"} {
		p := make([]byte, len(pattern)*BlkhashBlockSize)
		var want []byte
		for i, c := range pattern {
			b := p[i*BlkhashBlockSize : (i+1)*BlkhashBlockSize]
			if c == 'D' {
				for j := range b {
					b[j] = byte(r.Uint32())
				}
			}
			s := sha256.Sum256(b)
			want = append(want, s[:]...)
		}
		if got := appendBlockDigests(nil, p); string(got) != string(want) {
			t.Errorf("pattern %s: block digests differ from per-block SHA-256", pattern)
		}
	}
}
