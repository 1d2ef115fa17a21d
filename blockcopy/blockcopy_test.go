package blockcopy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
	"github.com/lunbridge/lunbridge/blockdev/filedev"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

const testSize = 48 << 20

func TestPullFileRoundTrip(t *testing.T) {
	m := blockdevtest.NewMem(testSize, 512)
	want := fillMem(t, m, 1)
	src := &slowDev{Device: m, maxDelay: time.Millisecond}
	path := tempFile(t, "img")
	var reports atomic.Int64
	res, err := PullFile(context.Background(), src, path, PullOptions{
		Options:      Options{Checksum: true, ChunkSize: 256 << 10, Progress: func(Progress) { reports.Add(1) }, ProgressInterval: time.Millisecond},
		SourceID:     "mem-1",
		ChecksumFile: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	fileIs(t, path, want, "round trip")
	if res.SHA256 != sum(want) {
		t.Fatalf("sha256 %s, want %s", res.SHA256, sum(want))
	}
	if _, err := os.Stat(path + ResumeSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("sidecar left behind: %v", err)
	}
	line, err := os.ReadFile(path + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	if want := res.SHA256 + "  img\n"; string(line) != want {
		t.Fatalf("sha256 file %q, want %q", line, want)
	}
	tool := testenv.RequireTool(t, "sha256sum")
	out, err := exec.Command(tool, path).Output()
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(out)); f[0] != res.SHA256 {
		t.Fatalf("sha256sum says %s, engine %s", f[0], res.SHA256)
	}
	if res.HoleBytes == 0 || res.BytesRead >= testSize || res.BytesWritten+res.HoleBytes != testSize {
		t.Fatalf("counters: %+v", res)
	}
	if du := allocated(t, path); du >= res.BytesWritten+1<<20 {
		t.Fatalf("file allocates %d bytes, only %d are data", du, res.BytesWritten)
	}
	if reports.Load() < 2 {
		t.Fatalf("progress called %d times", reports.Load())
	}
	t.Logf("read %d written %d holes %d du %d", res.BytesRead, res.BytesWritten, res.HoleBytes, allocated(t, path))

	// A second pull refuses to overwrite; Force does.
	if _, err := PullFile(context.Background(), m, path, PullOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("overwrite: %v, want ErrExists", err)
	}
	if _, err := PullFile(context.Background(), m, path, PullOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
}

func TestSparseHolesPreserved(t *testing.T) {
	const size = 256 << 20
	m := blockdevtest.NewMem(size, 4096)
	ctx := context.Background()
	data := bytes.Repeat([]byte{0xab}, 8192)
	for _, off := range []int64{0, 100 << 20, 200<<20 + 4096} {
		if err := m.WriteAt(ctx, data, off, false); err != nil {
			t.Fatal(err)
		}
	}
	path := tempFile(t, "sparse")
	res, err := PullFile(ctx, m, path, PullOptions{Options: Options{Checksum: true}})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Size() != size {
		t.Fatalf("size %d, want %d (trailing hole)", st.Size(), size)
	}
	if du := allocated(t, path); du > 1<<20 {
		t.Fatalf("du %d for 24 KiB of data", du)
	}
	if res.BytesRead > 3<<20 {
		t.Fatalf("read %d bytes: holes were not skipped", res.BytesRead)
	}
	if res.SHA256 != sum(readAll(t, m)) {
		t.Fatal("sha256 of a sparse image wrong")
	}
}

func TestToWriterInOrder(t *testing.T) {
	m := blockdevtest.NewMem(testSize, 512)
	want := fillMem(t, m, 2)
	for _, ext := range []bool{true, false} {
		var src blockdev.Device = &slowDev{Device: m, maxDelay: 2 * time.Millisecond}
		if !ext {
			src = &noExt{m}
		}
		var buf bytes.Buffer
		res, err := ToWriter(context.Background(), src, &buf, Options{Checksum: true, ChunkSize: 64 << 10, Workers: 16})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("extents=%v: stream differs", ext)
		}
		if res.SHA256 != sum(want) {
			t.Fatal("sha256 differs")
		}
	}
	// Range.
	var buf bytes.Buffer
	if _, err := ToWriter(context.Background(), m, &buf, Options{Offset: 1 << 20, Length: 3 << 20}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want[1<<20:4<<20]) {
		t.Fatal("range stream differs")
	}
}

// noExt hides every optional interface.
type noExt struct{ blockdev.Device }

func TestPushFileAndReader(t *testing.T) {
	ctx := context.Background()
	m := blockdevtest.NewMem(testSize, 512)
	want := fillMem(t, m, 3)
	path := tempFile(t, "img")
	if _, err := PullFile(ctx, m, path, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	dst := blockdevtest.NewMem(testSize+1<<20, 512)
	// Old content everywhere, to prove zero ranges are written.
	junk := bytes.Repeat([]byte{0x5a}, int(dst.Size()))
	if err := dst.WriteAt(ctx, junk, 0, false); err != nil {
		t.Fatal(err)
	}
	w := &slowDev{Device: dst}
	f, _ := os.Open(path)
	defer f.Close()
	res, err := PushFile(ctx, f, w, Options{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, dst)
	if !bytes.Equal(got[:testSize], want) || !bytes.Equal(got[testSize:], junk[testSize:]) {
		t.Fatal("pushed device differs")
	}
	if res.SHA256 != sum(want) || dst.Flushes.Load() == 0 {
		t.Fatalf("sha %s flushes %d", res.SHA256, dst.Flushes.Load())
	}
	if w.zeroes.Load() == 0 || w.writes.Load() >= testSize {
		t.Fatalf("zero ranges sent as data: writes %d zeroes %d", w.writes.Load(), w.zeroes.Load())
	}
	if w.trims.Load() != 0 {
		t.Fatal("mayTrim without Discard")
	}
	f.Seek(0, io.SeekStart)
	w2 := &slowDev{Device: blockdevtest.NewMem(testSize, 512)}
	if _, err := PushFile(ctx, f, w2, Options{Discard: true}); err != nil || w2.trims.Load() == 0 {
		t.Fatalf("Discard: %v, %d trimming zero writes", err, w2.trims.Load())
	}

	// From a stream, with an odd length: padded to the block size.
	odd := want[:testSize-100]
	dst2 := blockdevtest.NewMem(testSize, 512)
	res, err = PushReader(ctx, io.MultiReader(bytes.NewReader(odd)), dst2, Options{Checksum: true, ChunkSize: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	got = readAll(t, dst2)
	if !bytes.Equal(got[:len(odd)], odd) || !isZero(got[len(odd):]) {
		t.Fatal("stream push differs")
	}
	if res.SHA256 != sum(odd) || res.Total != testSize {
		t.Fatalf("stream push: %+v", res)
	}
	// A stream larger than the device.
	if _, err := PushReader(ctx, bytes.NewReader(make([]byte, testSize+512)), dst2, Options{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized stream: %v", err)
	}
}

func TestPushRefuses(t *testing.T) {
	ctx := context.Background()
	path := tempFile(t, "big")
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	small := &slowDev{Device: blockdevtest.NewMem(1<<20, 512)}
	if _, err := PushFile(ctx, f, small, Options{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	ro := blockdevtest.NewMem(4<<20, 512)
	ro.SetReadOnly(true)
	rw := &slowDev{Device: ro}
	if _, err := PushFile(ctx, f, rw, Options{}); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Fatalf("read-only: %v", err)
	}
	if small.writes.Load()+small.zeroes.Load()+rw.writes.Load()+rw.zeroes.Load() != 0 {
		t.Fatal("data moved before refusing")
	}
}

func TestCopyDeviceToFiledev(t *testing.T) {
	ctx := context.Background()
	m := blockdevtest.NewMem(testSize, 512)
	want := fillMem(t, m, 4)
	path := tempFile(t, "dev")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xee}, testSize), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := filedev.Open(path, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	res, err := Copy(ctx, m, fd, Options{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, fd); !bytes.Equal(got, want) {
		t.Fatal("device copy differs")
	}
	if res.SHA256 != sum(want) {
		t.Fatal("sha")
	}
	// And back: filedev (SEEK_DATA extents) → stream.
	var buf bytes.Buffer
	if _, err := ToWriter(ctx, fd, &buf, Options{}); err != nil || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("filedev stream: %v", err)
	}
}

func TestResumeAfterCancel(t *testing.T) {
	m := blockdevtest.NewMem(testSize, 512)
	want := fillMem(t, m, 5)
	src := &slowDev{Device: m, maxDelay: 3 * time.Millisecond}
	path := tempFile(t, "img")
	ctx, cancel := context.WithCancel(context.Background())
	opts := PullOptions{
		Options: Options{Checksum: true, ChunkSize: 128 << 10, ProgressInterval: time.Millisecond,
			Progress: func(p Progress) {
				if p.Done >= p.Total/2 {
					cancel()
				}
			}},
		SourceID: "mem-5", ChecksumFile: true, CheckpointInterval: 50 * time.Millisecond,
	}
	res, err := PullFile(ctx, src, path, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want canceled", err)
	}
	done, total, err := ReadResume(path)
	if err != nil {
		t.Fatal(err)
	}
	if done != res.Done || total != testSize || done < testSize/2 || done >= testSize {
		t.Fatalf("sidecar done %d total %d, result done %d", done, total, res.Done)
	}
	t.Logf("interrupted at %d of %d", done, total)

	// Without Resume: refuses (non-empty). Another source: refuses.
	if _, err := PullFile(context.Background(), m, path, PullOptions{SourceID: "mem-5"}); !errors.Is(err, ErrExists) {
		t.Fatalf("no --resume: %v", err)
	}
	other := opts
	other.SourceID = "another-lun"
	other.Resume = true
	other.Progress = nil
	if _, err := PullFile(context.Background(), m, path, other); !errors.Is(err, ErrResumeMismatch) {
		t.Fatalf("other source: %v", err)
	}

	opts.Resume = true
	opts.Progress = nil
	res, err = PullFile(context.Background(), src, path, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != done || res.Done != testSize {
		t.Fatalf("resumed %d done %d", res.Resumed, res.Done)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, want) {
		t.Fatal("resumed file differs")
	}
	if res.SHA256 != sum(want) {
		t.Fatal("resumed sha256 differs from the whole image's")
	}
}

func TestResumeRefusesChangedSource(t *testing.T) {
	ctx := context.Background()
	m := blockdevtest.NewMem(8<<20, 512)
	p := make([]byte, 8<<20)
	for i := range p {
		p[i] = byte(i * 7)
	}
	m.WriteAt(ctx, p, 0, false)
	path := tempFile(t, "img")
	cctx, cancel := context.WithCancel(ctx)
	_, err := PullFile(cctx, &slowDev{Device: m, maxDelay: time.Millisecond}, path, PullOptions{
		Options: Options{ChunkSize: 64 << 10, Workers: 1, ProgressInterval: time.Nanosecond, Progress: func(p Progress) {
			if p.Done >= 2<<20 {
				cancel()
			}
		}},
		SourceID: "x",
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	done, _, _ := ReadResume(path)
	// The block just before the watermark changes on the source.
	m.WriteAt(ctx, make([]byte, 512), done-512, false)
	if _, err := PullFile(ctx, m, path, PullOptions{SourceID: "x", Resume: true}); !errors.Is(err, ErrResumeMismatch) {
		t.Fatalf("changed source: %v", err)
	}
	// A source of another size.
	if _, err := PullFile(ctx, blockdevtest.NewMem(16<<20, 512), path, PullOptions{SourceID: "x", Resume: true}); !errors.Is(err, ErrResumeMismatch) {
		t.Fatalf("other size: %v", err)
	}
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	m := blockdevtest.NewMem(testSize, 512)
	want := fillMem(t, m, 6)
	path := tempFile(t, "img")
	if _, err := PullFile(ctx, m, path, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	defer f.Close()
	vr, err := Verify(ctx, m, f, VerifyOptions{})
	if err != nil || !vr.Equal || vr.DiffBytes != 0 {
		t.Fatalf("identical: %+v %v", vr, err)
	}
	if vr.BytesRead >= testSize {
		t.Fatalf("verify read %d bytes: holes not skipped", vr.BytesRead)
	}
	// Flip one byte inside data, one inside a device hole (file gets data).
	r := rand.New(rand.NewPCG(1, 2))
	var dataOff int64 = -1
	for dataOff < 0 {
		o := r.Int64N(testSize)
		if want[o] != 0 {
			dataOff = o
		}
	}
	f.WriteAt([]byte{want[dataOff] ^ 0x10}, dataOff)
	vr, err = Verify(ctx, m, f, VerifyOptions{})
	if err != nil || vr.Equal || vr.DiffBytes != 1 || vr.DiffBlocks != 1 || len(vr.FirstDiffs) != 1 || vr.FirstDiffs[0] != dataOff {
		t.Fatalf("one flipped byte at %d: %+v %v", dataOff, vr, err)
	}
	exts, _ := m.Extents(ctx, 0, testSize)
	var holeOff int64 = -1
	for _, e := range exts {
		if e.Flags&blockdev.ExtentHole != 0 && e.Length > 4096 {
			holeOff = e.Offset + 1000
			break
		}
	}
	f.WriteAt([]byte{1, 2}, holeOff)
	vr, _ = Verify(ctx, m, f, VerifyOptions{})
	if vr.DiffBytes != 3 || vr.DiffBlocks != 2 {
		t.Fatalf("hole vs data: %+v", vr)
	}
	if first := min(dataOff, holeOff); vr.FirstDiffs[0] != first {
		t.Fatalf("first diff %d, want %d", vr.FirstDiffs[0], first)
	}
	// A different size is a mismatch.
	f.Truncate(testSize - 4096)
	vr, _ = Verify(ctx, m, f, VerifyOptions{})
	if vr.Equal {
		t.Fatal("short file compared equal")
	}
}

func TestRateLimit(t *testing.T) {
	m := blockdevtest.NewMem(8<<20, 512)
	m.WriteAt(context.Background(), bytes.Repeat([]byte{1}, 8<<20), 0, false)
	start := time.Now()
	res, err := ToWriter(context.Background(), m, io.Discard, Options{RateLimit: 16 << 20, ChunkSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	rate := float64(res.BytesRead) / el.Seconds()
	t.Logf("8 MiB at 16 MiB/s took %v (%.1f MiB/s)", el, rate/(1<<20))
	if el < 400*time.Millisecond || el > 3*time.Second {
		t.Fatalf("took %v, want about 0.5s", el)
	}
}

func TestCancelStopsQuickly(t *testing.T) {
	m := blockdevtest.NewMem(64<<20, 512)
	m.WriteAt(context.Background(), bytes.Repeat([]byte{1}, 64<<20), 0, false)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := ToWriter(ctx, m, io.Discard, Options{RateLimit: 1 << 20})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("cancel took %v", el)
	}
}

func TestToFileOverwritesAndPunches(t *testing.T) {
	ctx := context.Background()
	m := blockdevtest.NewMem(16<<20, 512)
	m.WriteAt(ctx, bytes.Repeat([]byte{9}, 1<<20), 4<<20, false)
	path := tempFile(t, "old")
	os.WriteFile(path, bytes.Repeat([]byte{0xff}, 20<<20), 0o644)
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	defer f.Close()
	if _, err := ToFile(ctx, m, f, Options{}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, readAll(t, m)) {
		t.Fatal("overwritten file differs")
	}
	if du := allocated(t, path); du > 2<<20 {
		t.Fatalf("old data not punched: du %d", du)
	}
}

// xferDev advertises a maximum transfer and records the largest read.
type xferDev struct {
	*slowDev
	max     int
	largest atomic.Int64
}

func (d *xferDev) MaxTransfer() int { return d.max }
func (d *xferDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	for {
		l := d.largest.Load()
		if int64(len(p)) <= l || d.largest.CompareAndSwap(l, int64(len(p))) {
			break
		}
	}
	return d.slowDev.ReadAt(ctx, p, off)
}

func TestMaxTransfer(t *testing.T) {
	m := blockdevtest.NewMem(8<<20, 512)
	want := fillMem(t, m, 8)
	for _, chunk := range []int{0, 1 << 20} {
		d := &xferDev{slowDev: &slowDev{Device: m}, max: 96 << 10}
		var buf bytes.Buffer
		if _, err := ToWriter(context.Background(), d, &buf, Options{ChunkSize: chunk}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), want) {
			t.Fatal("differs")
		}
		if d.largest.Load() != 96<<10 {
			t.Fatalf("chunk %d: largest read %d, device max %d", chunk, d.largest.Load(), 96<<10)
		}
	}
}
