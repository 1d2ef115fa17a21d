package blockcopy

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
)

// The blkhash construction (github.com/nirs/blkhash, the checksum `blksum`
// prints and `nbdcopy --blkhash` computes), with SHA-256 and its default
// 64 KiB block:
//
//	H( H(block 0) || H(block 1) || ... || H(block N-1) || le64(length) )
//
// where the blocks are consecutive BlkhashBlockSize pieces of the image
// (the last one may be shorter and is hashed at its own length). An
// all-zero full block hashes to a constant, so a hole costs one 32-byte
// append instead of hashing 64 KiB, and the block digests can be computed
// out of order, on every worker, with only their concatenation in order.
// The test vectors of the C library's own tests are in blkhash_test.go.

// BlkhashBlockSize is the block size of the blkhash checksum (blksum's default).
const BlkhashBlockSize = 64 << 10

// Checksum algorithm names (Options.ChecksumAlgo, Result.ChecksumAlgo).
const (
	ChecksumSHA256  = "sha256"
	ChecksumBlkhash = "blkhash"
)

// zeroBlockDigest is H(64 KiB of zeros).
var zeroBlockDigest = sha256.Sum256(zeroBuf[:BlkhashBlockSize])

// zeroDigestRun is zeroBlockDigest repeated, to add a run of zero blocks
// with few writes.
var zeroDigestRun = func() []byte {
	b := make([]byte, 0, 1024*sha256.Size)
	for range 1024 {
		b = append(b, zeroBlockDigest[:]...)
	}
	return b
}()

// blkHash is the streaming blkhash (hash.Hash). Write hashes the image in
// order; zeros adds a known-zero run without data; addDigests adds the
// block digests a worker computed, when the stream is at a block boundary.
type blkHash struct {
	outer   hash.Hash // sha256 over the block digests
	length  uint64    // image bytes so far
	pending []byte    // the image bytes of a partial block (< BlkhashBlockSize)
}

var (
	_ hash.Hash                  = (*blkHash)(nil)
	_ encoding.BinaryMarshaler   = (*blkHash)(nil)
	_ encoding.BinaryUnmarshaler = (*blkHash)(nil)
)

func newBlkHash() *blkHash {
	return &blkHash{outer: sha256.New(), pending: make([]byte, 0, BlkhashBlockSize)}
}

func (h *blkHash) Size() int      { return sha256.Size }
func (h *blkHash) BlockSize() int { return BlkhashBlockSize }

func (h *blkHash) Reset() {
	h.outer.Reset()
	h.length = 0
	h.pending = h.pending[:0]
}

// blockDigest is H(b) of one block (the constant for a full zero block).
func blockDigest(b []byte) [sha256.Size]byte {
	if len(b) == BlkhashBlockSize && isZero(b) {
		return zeroBlockDigest
	}
	return sha256.Sum256(b)
}

// Write adds p to the image.
func (h *blkHash) Write(p []byte) (int, error) {
	n := len(p)
	h.length += uint64(n)
	if len(h.pending) > 0 {
		k := min(len(p), BlkhashBlockSize-len(h.pending))
		h.pending = append(h.pending, p[:k]...)
		p = p[k:]
		if len(h.pending) < BlkhashBlockSize {
			return n, nil
		}
		d := blockDigest(h.pending)
		h.outer.Write(d[:])
		h.pending = h.pending[:0]
	}
	if whole := len(p) / BlkhashBlockSize * BlkhashBlockSize; whole > 0 {
		var d [16 * sha256.Size]byte
		for whole > 0 {
			k := min(whole, 16*BlkhashBlockSize)
			h.outer.Write(appendBlockDigests(d[:0], p[:k]))
			p, whole = p[k:], whole-k
		}
	}
	h.pending = append(h.pending, p...)
	return n, nil
}

// zeros adds n zero bytes to the image; whole zero blocks cost a digest
// append each.
func (h *blkHash) zeros(n int64) {
	if len(h.pending) > 0 {
		k := min(n, int64(BlkhashBlockSize-len(h.pending)))
		h.Write(zeroBuf[:k])
		n -= k
		if len(h.pending) > 0 { // n was smaller than the rest of the block
			return
		}
	}
	blocks := n / BlkhashBlockSize
	h.length += uint64(blocks * BlkhashBlockSize)
	for blocks > 0 {
		k := min(blocks, int64(len(zeroDigestRun)/sha256.Size))
		h.outer.Write(zeroDigestRun[:k*sha256.Size])
		blocks -= k
	}
	if tail := n % BlkhashBlockSize; tail > 0 {
		h.Write(zeroBuf[:tail])
	}
}

// aligned reports whether the image so far ends on a block boundary, so
// that block digests computed apart can be added with addDigests.
func (h *blkHash) aligned() bool { return len(h.pending) == 0 }

// addDigests adds the digests of n image bytes' whole blocks (digests
// holds n/BlkhashBlockSize of them). The image must be aligned().
func (h *blkHash) addDigests(digests []byte, n int64) {
	h.outer.Write(digests)
	h.length += uint64(n)
}

// Sum appends the checksum to b without changing the state.
func (h *blkHash) Sum(b []byte) []byte {
	st, err := h.outer.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(err) // crypto/sha256 always marshals
	}
	outer := sha256.New()
	if err := outer.(encoding.BinaryUnmarshaler).UnmarshalBinary(st); err != nil {
		panic(err)
	}
	if len(h.pending) > 0 {
		d := sha256.Sum256(h.pending)
		outer.Write(d[:])
	}
	var le [8]byte
	binary.LittleEndian.PutUint64(le[:], h.length)
	outer.Write(le[:])
	return outer.Sum(b)
}

// blkhashStateMagic starts a marshalled state (resume sidecar).
const blkhashStateMagic = "lbblk1"

// MarshalBinary saves the state: magic, le64 length, le32 outer state
// length, outer state, pending bytes.
func (h *blkHash) MarshalBinary() ([]byte, error) {
	st, err := h.outer.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(blkhashStateMagic)+12+len(st)+len(h.pending))
	b = append(b, blkhashStateMagic...)
	b = binary.LittleEndian.AppendUint64(b, h.length)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(st)))
	b = append(b, st...)
	return append(b, h.pending...), nil
}

var errBlkhashState = errors.New("not a blkhash state")

// UnmarshalBinary restores a state saved by MarshalBinary.
func (h *blkHash) UnmarshalBinary(b []byte) error {
	if len(b) < len(blkhashStateMagic)+12 || string(b[:len(blkhashStateMagic)]) != blkhashStateMagic {
		return errBlkhashState
	}
	b = b[len(blkhashStateMagic):]
	length := binary.LittleEndian.Uint64(b)
	n := binary.LittleEndian.Uint32(b[8:])
	b = b[12:]
	if uint64(n) > uint64(len(b)) {
		return errBlkhashState
	}
	outer := sha256.New()
	if err := outer.(encoding.BinaryUnmarshaler).UnmarshalBinary(b[:n]); err != nil {
		return err
	}
	pending := b[n:]
	if len(pending) >= BlkhashBlockSize || uint64(len(pending)) != length%BlkhashBlockSize {
		return errBlkhashState
	}
	h.outer = outer
	h.length = length
	h.pending = append(h.pending[:0], pending...)
	return nil
}

// taskDigests computes, in a worker, the digests of the whole blocks of a
// data task that starts on a block boundary of the image (rel: its offset
// from the image start). The committer adds them in order when the image
// is aligned there; otherwise it hashes the data itself.
func taskDigests(t *task, rel int64) {
	if rel%BlkhashBlockSize != 0 || t.hashN < BlkhashBlockSize {
		return
	}
	blocks := int(t.hashN / BlkhashBlockSize)
	t.digests = appendBlockDigests(make([]byte, 0, blocks*sha256.Size), t.buf[:blocks*BlkhashBlockSize])
}

// appendBlockDigests appends the digests of p's whole blocks (len(p) a
// multiple of BlkhashBlockSize), two data blocks at a time where it can
// (sum256x2: about 1.6 times one stream's rate with SHA-NI).
func appendBlockDigests(d, p []byte) []byte {
	var pend []byte // a data block waiting for a partner
	for ; len(p) >= BlkhashBlockSize; p = p[BlkhashBlockSize:] {
		b := p[:BlkhashBlockSize]
		if isZero(b) {
			if pend != nil { // keep the order: the waiting block first
				s := sha256.Sum256(pend)
				d, pend = append(d, s[:]...), nil
			}
			d = append(d, zeroBlockDigest[:]...)
			continue
		}
		if pend == nil {
			pend = b
			continue
		}
		s0, s1 := sum256x2(pend, b)
		d, pend = append(append(d, s0[:]...), s1[:]...), nil
	}
	if pend != nil {
		s := sha256.Sum256(pend)
		d = append(d, s[:]...)
	}
	return d
}

// addTask adds a committed task's image bytes to h, in order.
func (h *blkHash) addTask(t *task) {
	n := t.hashN
	switch {
	case n <= 0:
	case t.zero:
		h.zeros(n)
	case t.digests != nil && h.aligned():
		whole := int64(len(t.digests)/sha256.Size) * BlkhashBlockSize
		h.addDigests(t.digests, whole)
		h.Write(t.buf[whole:n])
	default:
		h.Write(t.buf[:n])
	}
}

// newImageHash returns the hash for Options.ChecksumAlgo.
func newImageHash(algo string) (hash.Hash, error) {
	switch algo {
	case "", ChecksumSHA256:
		return sha256.New(), nil
	case ChecksumBlkhash:
		return newBlkHash(), nil
	}
	return nil, errors.New("blockcopy: unknown checksum algorithm " + algo)
}

// ChecksumOfFile computes the checksum of the file at path (algo
// ChecksumSHA256 or ChecksumBlkhash), reading it in order.
func ChecksumOfFile(ctx context.Context, path, algo string) (string, error) {
	h, err := newImageHash(algo)
	if err != nil {
		return "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	blk, _ := h.(*blkHash)
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			if blk != nil && isZero(buf[:n]) {
				blk.zeros(int64(n))
			} else {
				h.Write(buf[:n])
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return "", rerr
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ParseChecksumFile reads a checksum file as pull writes it (FILE.sha256
// in sha256sum format, FILE.blksum in blksum's) and returns the algorithm
// (from the name), the hex checksum and the file name it names.
func ParseChecksumFile(path string) (algo, sum, name string, err error) {
	switch {
	case strings.HasSuffix(path, ".blksum"):
		algo = ChecksumBlkhash
	case strings.HasSuffix(path, ".sha256"):
		algo = ChecksumSHA256
	default:
		return "", "", "", fmt.Errorf("%s: a checksum file ends in .sha256 or .blksum", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", "", "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", "", "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 1 || len(fields[0]) != 2*sha256.Size {
			break
		}
		if _, err := hex.DecodeString(fields[0]); err != nil {
			break
		}
		sum = strings.ToLower(fields[0])
		if len(fields) > 1 {
			name = strings.TrimPrefix(strings.Join(fields[1:], " "), "*")
		}
		return algo, sum, name, nil
	}
	return "", "", "", fmt.Errorf("%s: no checksum line (want \"HEX  FILE\")", path)
}
