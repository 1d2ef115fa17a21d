package pdu

import (
	"fmt"
	"io"
	"net"
)

// MaxAHSLen is the largest AHS a PDU can carry (TotalAHSLength is one byte of
// 4-byte words).
const MaxAHSLen = 255 * 4

// Reader reads PDUs from a byte stream in two steps: ReadHeader, then one of
// ReadData, ReadDataAlloc or DiscardData for the data segment. It is not
// safe for concurrent use (one read loop owns it).
type Reader struct {
	r io.Reader
	// HeaderDigest and DataDigest enable CRC32C checking; set them after
	// login completes (login PDUs carry no digests).
	HeaderDigest, DataDigest bool
	// MaxData is the largest data segment accepted (our declared
	// MaxRecvDataSegmentLength). A header announcing more fails with
	// ErrDataTooLong before anything is allocated.
	MaxData int

	ahs     [MaxAHSLen]byte
	scratch [8]byte
	// AHS holds the AHS of the last header read (aliases an internal buffer).
	AHS []byte
	// RejectAHS fails a header announcing an AHS at once, before reading
	// it (target PDUs never carry one, RFC 7143 Section 11.2), so garbage
	// cannot make the reader wait for bytes that will never come.
	RejectAHS bool
}

// NewReader returns a Reader with MaxData 8192 (the login-phase default).
func NewReader(r io.Reader) *Reader { return &Reader{r: r, MaxData: 8192} }

// ReadHeader reads the BHS, the AHS and the header digest.
func (r *Reader) ReadHeader(b *BHS) error {
	if _, err := io.ReadFull(r.r, b[:]); err != nil {
		return err
	}
	ahsLen := b.TotalAHSLength()
	if ahsLen > 0 && r.RejectAHS {
		return FormatError{b.Opcode(), "AHS in a target PDU"}
	}
	r.AHS = r.ahs[:ahsLen]
	if ahsLen > 0 {
		if _, err := io.ReadFull(r.r, r.AHS); err != nil {
			return unexpected(err)
		}
	}
	if r.HeaderDigest {
		if _, err := io.ReadFull(r.r, r.scratch[:4]); err != nil {
			return unexpected(err)
		}
		if got, want := wireDigest(r.scratch[:4]), Digest(b[:], r.AHS); got != want {
			return fmt.Errorf("%w (%v: got 0x%08x, computed 0x%08x)", ErrHeaderDigest, b.Opcode(), got, want)
		}
	}
	if n := b.DataSegmentLength(); n > r.MaxData {
		return fmt.Errorf("%w: %v announces %d bytes, limit %d", ErrDataTooLong, b.Opcode(), n, r.MaxData)
	}
	return nil
}

// ReadData reads the data segment of the header just read into dst, which
// must be exactly DataSegmentLength bytes long, then its padding and digest.
func (r *Reader) ReadData(b *BHS, dst []byte) error {
	n := b.DataSegmentLength()
	if len(dst) != n {
		return fmt.Errorf("iscsi pdu: ReadData buffer of %d bytes for a %d-byte segment", len(dst), n)
	}
	if n == 0 {
		return nil
	}
	if _, err := io.ReadFull(r.r, dst); err != nil {
		return unexpected(err)
	}
	pad := Pad(n)
	tail := pad
	if r.DataDigest {
		tail += DigestLen
	}
	if tail > 0 {
		if _, err := io.ReadFull(r.r, r.scratch[:tail]); err != nil {
			return unexpected(err)
		}
	}
	if r.DataDigest {
		crc := UpdateDigest(Digest(dst), r.scratch[:pad])
		if got := wireDigest(r.scratch[pad:tail]); got != crc {
			return fmt.Errorf("%w (%v: got 0x%08x, computed 0x%08x)", ErrDataDigest, b.Opcode(), got, crc)
		}
	}
	return nil
}

// ReadDataAlloc reads the data segment into a new buffer. The length was
// already bounded by MaxData in ReadHeader.
func (r *Reader) ReadDataAlloc(b *BHS) ([]byte, error) {
	buf := make([]byte, b.DataSegmentLength())
	if err := r.ReadData(b, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// DiscardData skips the data segment (still checking its digest).
func (r *Reader) DiscardData(b *BHS) error {
	n := b.DataSegmentLength()
	if n == 0 {
		return nil
	}
	var buf [4096]byte
	var crc uint32
	for left := n + Pad(n); left > 0; {
		k := min(left, len(buf))
		if _, err := io.ReadFull(r.r, buf[:k]); err != nil {
			return unexpected(err)
		}
		crc = UpdateDigest(crc, buf[:k])
		left -= k
	}
	if r.DataDigest {
		if _, err := io.ReadFull(r.r, r.scratch[:4]); err != nil {
			return unexpected(err)
		}
		if got := wireDigest(r.scratch[:4]); got != crc {
			return fmt.Errorf("%w (%v)", ErrDataDigest, b.Opcode())
		}
	}
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Writer writes PDUs, each as one write (or one writev for large data
// segments). It is not safe for concurrent use: the connection serializes
// writers with its write mutex.
type Writer struct {
	w                        io.Writer
	HeaderDigest, DataDigest bool

	buf []byte
	vec [3][]byte
	tl  [8]byte
}

// smallData is the size below which the data segment is copied next to the
// header and sent in a single write instead of a writev.
const smallData = 8192

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, buf: make([]byte, 0, BHSLen+DigestLen+smallData+8)}
}

// WritePDU sets p's DataLen to len(data), marshals it and writes header,
// digest, data, padding and data digest.
func (w *Writer) WritePDU(p PDU, data []byte) error {
	h := p.Hdr()
	h.DataLen = len(data)
	h.AHSLength = 0
	var bhs BHS
	p.MarshalBHS(&bhs)
	return w.WriteRaw(&bhs, data)
}

// WriteRaw writes an already marshaled BHS (without AHS) and its data.
func (w *Writer) WriteRaw(bhs *BHS, data []byte) error {
	b := append(w.buf[:0], bhs[:]...)
	if w.HeaderDigest {
		b = AppendDigest(b, Digest(bhs[:]))
	}
	n := len(data)
	pad := Pad(n)
	var zero [4]byte
	tail := w.tl[:0]
	if n > 0 {
		tail = append(tail, zero[:pad]...)
		if w.DataDigest {
			tail = AppendDigest(tail, UpdateDigest(Digest(data), zero[:pad]))
		}
	}
	if n <= smallData {
		b = append(b, data...)
		b = append(b, tail...)
		w.buf = b
		_, err := w.w.Write(b)
		return err
	}
	w.buf = b
	w.vec[0], w.vec[1], w.vec[2] = b, data, tail
	bufs := net.Buffers(w.vec[:])
	_, err := bufs.WriteTo(w.w)
	return err
}

// Reset makes the Reader read from r, keeping its settings.
func (r *Reader) Reset(src io.Reader) { r.r = src }
