package blockcopy

import (
	"bytes"
	"hash"
	"io"
)

// zeroBuf is shared, never written: compared against, hashed, written out.
var zeroBuf = make([]byte, 1<<20)

// isZero reports whether p is all zero bytes (vectorized through bytes.Equal).
func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeroBuf))
		if !bytes.Equal(p[:n], zeroBuf[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// hashZeros feeds n zero bytes to h without allocating.
func hashZeros(h hash.Hash, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeroBuf)))
		h.Write(zeroBuf[:k])
		n -= k
	}
}

// writeZeros writes n zero bytes to w.
func writeZeros(w io.Writer, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeroBuf)))
		if _, err := w.Write(zeroBuf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// zeroRuns calls fn for each maximal run of p, cut at multiples of gran,
// with whether the run is all zero. Runs alternate; together they cover p.
func zeroRuns(p []byte, gran int, fn func(off, n int, zero bool) error) error {
	start, cur := 0, false
	for i := 0; i < len(p); i += gran {
		z := isZero(p[i:min(i+gran, len(p))])
		if i == 0 {
			cur = z
			continue
		}
		if z != cur {
			if err := fn(start, i-start, cur); err != nil {
				return err
			}
			start, cur = i, z
		}
	}
	if len(p) > start {
		return fn(start, len(p)-start, cur)
	}
	return nil
}
