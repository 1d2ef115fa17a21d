package pdu

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Reader reads PDUs from a stream in two steps: ReadHeader, then ReadData
// (or DiscardData) for the data the header announced.
type Reader struct {
	r io.Reader
	// HeaderDigest and DataDigest are the digests negotiated by
	// ICReq/ICResp; every later PDU must carry them.
	HeaderDigest, DataDigest bool
	// MaxData bounds PDU-Data: a header announcing more is a FormatError
	// before anything is allocated or read (0: 1 MiB).
	MaxData int
	buf     [maxHeaderLen + DigestLen]byte
	scratch [256]byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

func (r *Reader) maxData() int {
	if r.MaxData > 0 {
		return r.MaxData
	}
	return 1 << 20
}

// ReadHeader reads one PDU header and its digest into h.
func (r *Reader) ReadHeader(h *Header) error {
	if _, err := io.ReadFull(r.r, r.buf[:CommonLen]); err != nil {
		return err
	}
	*h = Header{Type: Type(r.buf[0]), Flags: r.buf[1], HLen: r.buf[2], PDO: r.buf[3],
		PLen: binary.LittleEndian.Uint32(r.buf[4:8])}
	if err := h.layout(r.HeaderDigest, r.DataDigest); err != nil {
		return err
	}
	if h.DataLen > r.maxData() {
		return fmt.Errorf("%w: %v announces %d bytes", ErrTooLarge, h.Type, h.DataLen)
	}
	n := int(h.HLen)
	if h.Flags&FlagHDGST != 0 && h.Type != TypeICReq && h.Type != TypeICResp &&
		h.Type != TypeH2CTermReq && h.Type != TypeC2HTermReq {
		n += DigestLen
	}
	if _, err := io.ReadFull(r.r, r.buf[CommonLen:n]); err != nil {
		return noEOF(err)
	}
	h.Raw = r.buf[:h.HLen]
	if n > int(h.HLen) {
		want := binary.LittleEndian.Uint32(r.buf[h.HLen:n])
		if Digest(h.Raw) != want {
			return ErrHeaderDigest
		}
	}
	return nil
}

// ReadData reads the PDU-Data of h into dst, which must be exactly
// h.DataLen bytes, skipping the padding and checking the data digest.
func (r *Reader) ReadData(h *Header, dst []byte) error {
	if len(dst) != h.DataLen {
		return fmt.Errorf("nvmetcp: ReadData: buffer of %d bytes for %d", len(dst), h.DataLen)
	}
	if h.DataLen == 0 {
		return nil
	}
	if err := r.skip(h.Pad); err != nil {
		return err
	}
	if _, err := io.ReadFull(r.r, dst); err != nil {
		return noEOF(err)
	}
	if h.DataDigest {
		if _, err := io.ReadFull(r.r, r.buf[:DigestLen]); err != nil {
			return noEOF(err)
		}
		if Digest(dst) != binary.LittleEndian.Uint32(r.buf[:DigestLen]) {
			return ErrDataDigest
		}
	}
	return nil
}

// ReadDataAlloc reads the data of a small PDU (a TermReq) into a new
// slice; h.DataLen was already bounded by MaxData.
func (r *Reader) ReadDataAlloc(h *Header) ([]byte, error) {
	d := make([]byte, h.DataLen)
	return d, r.ReadData(h, d)
}

// DiscardData skips the data of h (digest unchecked).
func (r *Reader) DiscardData(h *Header) error {
	if h.DataLen == 0 {
		return nil
	}
	n := h.Pad + h.DataLen
	if h.DataDigest {
		n += DigestLen
	}
	return r.skip(n)
}

func (r *Reader) skip(n int) error {
	for n > 0 {
		k := min(n, len(r.scratch))
		if _, err := io.ReadFull(r.r, r.scratch[:k]); err != nil {
			return noEOF(err)
		}
		n -= k
	}
	return nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
