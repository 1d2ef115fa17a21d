package blockcopy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// refBlkhash is the construction written out plainly: the block digests
// of the whole image, then its length, under one SHA-256.
func refBlkhash(p []byte) string {
	o := sha256.New()
	for i := 0; i < len(p); i += BlkhashBlockSize {
		d := sha256.Sum256(p[i:min(i+BlkhashBlockSize, len(p))])
		o.Write(d[:])
	}
	var le [8]byte
	binary.LittleEndian.PutUint64(le[:], uint64(len(p)))
	o.Write(le[:])
	return hex.EncodeToString(o.Sum(nil))
}

// TestBlkhashVectors checks the published vectors of the blkhash C
// library's tests (test/blkhash-test.c: sha256, 64 KiB blocks; "-" is a
// zero run added without data).
func TestBlkhashVectors(t *testing.T) {
	const B = BlkhashBlockSize
	type ext struct {
		b byte
		n int64
	}
	cases := []struct {
		name string
		ext  []ext
		want string
	}{
		{"block data", []ext{{'A', B}}, "2e3a5f57d5e726ee5de62db1a85ff816f4fa6ea4627807d9a51bdc4c883e165e"},
		{"block data zero", []ext{{0, B}}, "8ab067ab7939a3d4f40cbb118956c07c06aeae2d075d6e0a2ebbb94bd42832af"},
		{"block zero", []ext{{'-', B}}, "8ab067ab7939a3d4f40cbb118956c07c06aeae2d075d6e0a2ebbb94bd42832af"},
		{"partial block data", []ext{{'A', B / 2}}, "9467334d6d7668a2f06898185b5cddc78cdfbd962f50c6bf250101f03a0e54dc"},
		{"partial block data zero", []ext{{0, B / 2}}, "842d185f0ff348b0d689e184bddc47f69a19032a6934c89b879479f1e86f9d56"},
		{"partial block zero", []ext{{'-', B / 2}}, "842d185f0ff348b0d689e184bddc47f69a19032a6934c89b879479f1e86f9d56"},
		{"sparse", []ext{{'-', 8 * B}}, "722ac11a3a81034edf196aa3ee68d1a2e345cd0838b0c78c2ce2fb015d4d817d"},
		{"sparse large", []ext{{'-', 1 << 30}}, "c6d6562c3074a2caa0ceea3e1f460f3af678c792ed05e64157eb51e68ae5260d"},
		{"sparse unaligned", []ext{{'-', 8 * B}, {'-', B / 2}}, "e623a5702b1feb08fbb3d18e35bbb7ec10146b8cd1bcff811200a3948c78c55c"},
		{"zero", []ext{{0, 8 * B}}, "722ac11a3a81034edf196aa3ee68d1a2e345cd0838b0c78c2ce2fb015d4d817d"},
	}
	for _, c := range cases {
		h := newBlkHash()
		for _, e := range c.ext {
			if e.b == '-' {
				h.zeros(e.n)
			} else {
				h.Write(bytes.Repeat([]byte{e.b}, int(e.n)))
			}
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// TestBlkhashStreaming feeds the same image in odd pieces, as zero runs,
// through worker digests and across a marshal/unmarshal, and gets the
// reference each time.
func TestBlkhashStreaming(t *testing.T) {
	img := make([]byte, 5*BlkhashBlockSize+777)
	for i := range img {
		if i/BlkhashBlockSize != 2 { // block 2 stays zero
			img[i] = byte(i*7 + i/3)
		}
	}
	want := refBlkhash(img)
	for _, piece := range []int{1, 511, 4096, BlkhashBlockSize - 1, BlkhashBlockSize, 3*BlkhashBlockSize + 5} {
		h := newBlkHash()
		for off := 0; off < len(img); off += piece {
			p := img[off:min(off+piece, len(img))]
			if isZero(p) {
				h.zeros(int64(len(p)))
			} else {
				h.Write(p)
			}
			if off == piece { // round trip the state mid-way
				st, err := h.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				h = newBlkHash()
				if err := h.UnmarshalBinary(st); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			t.Errorf("pieces of %d: %s, want %s", piece, got, want)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			t.Errorf("Sum changed the state")
		}
	}
	// Worker digests for aligned tasks, data hashed by the committer for
	// the rest, zero tasks as runs.
	h := newBlkHash()
	for off := 0; off < len(img); off += 2 * BlkhashBlockSize {
		n := min(2*BlkhashBlockSize, len(img)-off)
		tk := &task{off: int64(off), n: int64(n), buf: img[off : off+n], hashN: int64(n)}
		if isZero(tk.buf) {
			tk.zero = true
		} else {
			taskDigests(tk, int64(off))
		}
		h.addTask(tk)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Errorf("tasks: %s, want %s", got, want)
	}
	if err := newBlkHash().UnmarshalBinary([]byte("lbblk1 garbage")); err == nil {
		t.Error("garbage state accepted")
	}
}

// TestPullBlkhash: a pull with the blkhash gives the reference checksum of
// the image (holes, allocated zeros and data; several chunk sizes, one
// not a multiple of the block), writes FILE.blksum, and a resumed pull
// gets the same checksum.
func TestPullBlkhash(t *testing.T) {
	m := blockdevtest.NewMem(testSize, 512)
	want := fillMem(t, m, 11)
	ref := refBlkhash(want)
	for _, chunk := range []int{1 << 20, 256 << 10, 24 << 10} {
		path := tempFile(t, "img")
		res, err := PullFile(context.Background(), &slowDev{Device: m, maxDelay: time.Millisecond}, path, PullOptions{
			Options:  Options{Checksum: true, ChecksumAlgo: ChecksumBlkhash, ChunkSize: chunk},
			SourceID: "mem-11", ChecksumFile: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Checksum != ref || res.ChecksumAlgo != ChecksumBlkhash || res.SHA256 != "" {
			t.Fatalf("chunk %d: checksum %s (%s, sha256 %q), want %s", chunk, res.Checksum, res.ChecksumAlgo, res.SHA256, ref)
		}
		body, err := os.ReadFile(path + ".blksum")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(body), "\n"+ref+"  img\n") || !strings.HasPrefix(string(body), "# blkhash sha256 block-size 65536") {
			t.Fatalf("FILE.blksum: %q", body)
		}
		got, err := ChecksumOfFile(context.Background(), path, ChecksumBlkhash)
		if err != nil || got != ref {
			t.Fatalf("ChecksumOfFile: %s %v, want %s", got, err, ref)
		}
	}

	// Interrupted and resumed: the hash state travels in the sidecar.
	path := tempFile(t, "img")
	ctx, cancel := context.WithCancel(context.Background())
	opts := PullOptions{
		Options: Options{Checksum: true, ChecksumAlgo: ChecksumBlkhash, ChunkSize: 128 << 10, ProgressInterval: time.Millisecond,
			Progress: func(p Progress) {
				if p.Done >= p.Total/2 {
					cancel()
				}
			}},
		SourceID: "mem-11", ChecksumFile: true, CheckpointInterval: 20 * time.Millisecond,
	}
	if _, err := PullFile(ctx, &slowDev{Device: m, maxDelay: 3 * time.Millisecond}, path, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want canceled", err)
	}
	opts.Resume, opts.Progress = true, nil
	res, err := PullFile(context.Background(), m, path, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed == 0 || res.Checksum != ref {
		t.Fatalf("resumed %d, checksum %s, want %s", res.Resumed, res.Checksum, ref)
	}
}

// TestToWriterBlkhash: the in-order stream path computes the same.
func TestToWriterBlkhash(t *testing.T) {
	m := blockdevtest.NewMem(8<<20, 4096)
	want := fillMem(t, m, 3)
	res, err := ToWriter(context.Background(), m, io.Discard, Options{Checksum: true, ChecksumAlgo: ChecksumBlkhash})
	if err != nil {
		t.Fatal(err)
	}
	if res.Checksum != refBlkhash(want) {
		t.Fatalf("stream blkhash %s, want %s", res.Checksum, refBlkhash(want))
	}
}
