package rawsock

import (
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// Batch gathers the pieces of one write: small pieces are copied into an
// arena, large ones are referenced (their owners keep them unchanged until
// the write is done). The initiator's command queue and the NBD server's
// reply queue each fill one batch while the previous one is being written,
// and send each batch with one writev.
type Batch struct {
	buf   []byte
	segs  []seg
	start int // arena offset where the open (not yet closed) range starts
}

// seg is a closed range of the arena, or a referenced slice.
type seg struct {
	ext    []byte
	lo, hi int
}

// Append copies p into the batch.
func (b *Batch) Append(p []byte) { b.buf = append(b.buf, p...) }

// AppendRef adds p to the batch without copying it.
func (b *Batch) AppendRef(p []byte) {
	if len(p) == 0 {
		return
	}
	b.segs = append(b.segs, seg{lo: b.start, hi: len(b.buf)}, seg{ext: p})
	b.start = len(b.buf)
}

// Empty reports whether the batch holds nothing.
func (b *Batch) Empty() bool { return len(b.buf) == 0 && len(b.segs) == 0 }

// Vec appends the batch's pieces, in order, to vec.
func (b *Batch) Vec(vec [][]byte) [][]byte {
	for _, s := range b.segs {
		if s.ext != nil {
			vec = append(vec, s.ext)
		} else if s.hi > s.lo {
			vec = append(vec, b.buf[s.lo:s.hi])
		}
	}
	if b.start < len(b.buf) {
		vec = append(vec, b.buf[b.start:])
	}
	return vec
}

// Reset empties the batch, keeping its memory and dropping its references.
func (b *Batch) Reset() {
	clear(b.segs)
	b.buf, b.segs, b.start = b.buf[:0], b.segs[:0], 0
}

// Write writes every piece of vec to nc: through s (raw writev) when s is
// not nil, else through nc's own Write. iov is s's scratch, returned for
// reuse.
func Write(nc net.Conn, s *Sock, vec [][]byte, iov []unix.Iovec) ([]unix.Iovec, error) {
	if s != nil {
		_, iov, err := s.Writev(vec, iov)
		return iov, err
	}
	nb := net.Buffers(vec)
	_, err := nb.WriteTo(nc)
	return iov, err
}

// Reader is s when it is not nil, else nc: where to read nc's bytes from.
func Reader(nc net.Conn, s *Sock) io.Reader {
	if s != nil {
		return s
	}
	return nc
}
