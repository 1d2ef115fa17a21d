package nbdbridge

import (
	"math/bits"
	"sync"
)

// bufPool recycles payload buffers in power-of-two size classes from 4 KiB
// to the maximum request size.
type bufPool struct {
	classes []sync.Pool
}

const minBufShift = 12

func newBufPool(max int) *bufPool {
	n := classOf(max) + 1
	return &bufPool{classes: make([]sync.Pool, n)}
}

func classOf(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

func (p *bufPool) get(n int) *[]byte {
	c := classOf(n)
	if c < len(p.classes) {
		if b, ok := p.classes[c].Get().(*[]byte); ok {
			*b = (*b)[:n]
			return b
		}
	}
	b := make([]byte, n, 1<<(c+minBufShift))
	return &b
}

func (p *bufPool) put(b *[]byte) {
	c := classOf(cap(*b))
	if c < len(p.classes) && cap(*b) == 1<<(c+minBufShift) {
		p.classes[c].Put(b)
	}
}
