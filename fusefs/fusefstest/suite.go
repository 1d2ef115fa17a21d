package fusefstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/fusefs"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

const (
	mib = 1 << 20
	// maxRegion bounds the part of the device the byte-level tests touch
	// and compare, so the suite stays quick on a large LUN.
	maxRegion = 64 * mib
	// minSuiteSize is the smallest device the suite accepts.
	minSuiteSize = 16 * mib
)

// RunFileSuite mounts dev (its content is overwritten) and runs the
// file-level tests on the mounted file: attributes and end-of-file
// behaviour, unaligned dd/cmp and pwrite/pread round trips, concurrent
// unaligned writers of the same blocks, fio with verify (O_DIRECT, libaio),
// punch-hole and zero-range, SEEK_DATA/SEEK_HOLE, and mkfs.ext4 + loop mount
// + copy a tree + e2fsck -f. dev needs at least 16 MiB (ext4 wants 32 MiB).
func RunFileSuite(t *testing.T, dev blockdev.Device) {
	if dev.Size() < minSuiteSize {
		t.Fatalf("RunFileSuite: device of %d bytes is too small (want >= %d)", dev.Size(), minSuiteSize)
	}
	rec := NewRecorder(dev)
	mp := Mount(t, rec, fusefs.Options{})
	s := &suite{dev: dev, rec: rec, mp: mp, file: mp.File(), size: dev.Size(), bs: int64(dev.BlockSize()), region: min(dev.Size(), maxRegion)}
	t.Run("Attributes", s.attributes)
	t.Run("EndOfFile", s.endOfFile)
	t.Run("UnalignedPwrite", s.unalignedPwrite)
	t.Run("UnalignedDD", s.unalignedDD)
	t.Run("ConcurrentSameBlock", s.concurrentSameBlock)
	t.Run("FioVerify", s.fioVerify)
	t.Run("PunchHole", s.punchHole)
	t.Run("ZeroRange", s.zeroRange)
	t.Run("SeekDataHole", s.seekDataHole)
	t.Run("Ext4", s.ext4)
}

// RunConcurrentWriters mounts dev and runs only the concurrent-writers
// test; with a device that has latency it is the sharpest check of the
// read-modify-write locking.
func RunConcurrentWriters(t *testing.T, dev blockdev.Device) {
	mp := Mount(t, dev, fusefs.Options{})
	s := &suite{dev: dev, mp: mp, file: mp.File(), size: dev.Size(), bs: int64(dev.BlockSize()), region: min(dev.Size(), maxRegion)}
	s.concurrentSameBlock(t)
}

type suite struct {
	dev    blockdev.Device
	rec    *Recorder
	mp     *fusefs.MountPoint
	file   string
	size   int64
	bs     int64
	region int64
}

func (s *suite) attributes(t *testing.T) {
	st, err := os.Stat(s.file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != s.size {
		t.Errorf("size %d, want %d", st.Size(), s.size)
	}
	if st.Mode() != 0o600 {
		t.Errorf("mode %v, want -rw-------", st.Mode())
	}
	ents, err := os.ReadDir(s.mp.Dir())
	if err != nil || len(ents) != 1 || ents[0].Name() != filepath.Base(s.file) {
		t.Errorf("ReadDir = %v, %v; want just %s", ents, err, filepath.Base(s.file))
	}
	if err := os.Truncate(s.file, s.size/2); !errors.Is(err, syscall.EPERM) {
		t.Errorf("truncate to half: %v, want EPERM", err)
	}
	if err := os.Truncate(s.file, s.size); err != nil {
		t.Errorf("truncate to the same size: %v, want success", err)
	}
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(s.file, now, now); err != nil {
		t.Errorf("touch: %v", err)
	}
	if err := os.Chmod(s.file, 0o640); err != nil {
		t.Errorf("chmod: %v", err)
	}
	os.Chmod(s.file, 0o600)
}

func (s *suite) endOfFile(t *testing.T) {
	f, err := os.OpenFile(s.file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 3000)
	if n, err := f.ReadAt(p, s.size); n != 0 || err != io.EOF {
		t.Errorf("read at the end: %d, %v; want 0, EOF", n, err)
	}
	if n, err := f.ReadAt(p, s.size-1000); n != 1000 || err != io.EOF {
		t.Errorf("read across the end: %d, %v; want 1000, EOF", n, err)
	}
	if n, err := unix.Pwrite(int(f.Fd()), p, s.size); n > 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write at the end: %d, %v; want ENOSPC", n, err)
	}
	if n, err := unix.Pwrite(int(f.Fd()), p, s.size+12345); n > 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write past the end: %d, %v; want ENOSPC", n, err)
	}
	if n, err := unix.Pwrite(int(f.Fd()), p, s.size-1000); n != 1000 || err != nil {
		t.Errorf("write across the end: %d, %v; want a short write of 1000", n, err)
	}
	// dd sees a block-device-like end: it writes what fits, then fails.
	out, err := run(time.Minute, "dd", "if=/dev/zero", "of="+s.file, "bs=4096", "count=4", "seek="+strconv.FormatInt(s.size/4096-2, 10), "conv=notrunc")
	if err == nil || !strings.Contains(out, "No space left on device") {
		t.Errorf("dd across the end: %v\n%s\nwant No space left on device", err, out)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, s.size-4096, 8192); !errors.Is(err, syscall.EFBIG) {
		t.Errorf("fallocate beyond the end: %v, want EFBIG", err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 8192); err != nil {
		t.Errorf("fallocate inside: %v, want success", err)
	}
}

// unalignedPwrite writes random bytes at random unaligned offsets and
// lengths through the file and checks every read against a reference.
func (s *suite) unalignedPwrite(t *testing.T) {
	ref := readFile(t, s.file, 0, s.region)
	f, err := os.OpenFile(s.file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 2*mib)
	for i := range 300 {
		n := randLen(rng, len(buf))
		off := rng.Int64N(s.region - int64(n) + 1)
		p := buf[:n]
		fillRandom(rng, p)
		if _, err := f.WriteAt(p, off); err != nil {
			t.Fatalf("op %d: write [%d,+%d): %v", i, off, n, err)
		}
		copy(ref[off:], p)
		// Read back a window around it, also unaligned.
		ro := max(0, off-rng.Int64N(3000))
		rn := min(int64(n)+rng.Int64N(3000)+1, s.region-ro)
		got := make([]byte, rn)
		if _, err := f.ReadAt(got, ro); err != nil {
			t.Fatalf("op %d: read [%d,+%d): %v", i, ro, rn, err)
		}
		requireEqual(t, fmt.Sprintf("op %d: read [%d,+%d)", i, ro, rn), got, ref[ro:ro+rn])
	}
	requireEqual(t, "whole region", readFile(t, s.file, 0, s.region), ref)
	// And straight from the device, bypassing FUSE.
	direct := make([]byte, s.region)
	if err := s.dev.ReadAt(context.Background(), direct, 0); err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "device content", direct, ref)
}

// randLen picks lengths biased to the interesting: tiny, around a block,
// odd, large.
func randLen(rng *rand.Rand, max int) int {
	switch rng.IntN(5) {
	case 0:
		return 1 + rng.IntN(16)
	case 1:
		return 500 + rng.IntN(30)
	case 2:
		return 4090 + rng.IntN(12)
	case 3:
		return 1 + rng.IntN(200000)
	default:
		return 1 + rng.IntN(max)
	}
}

func fillRandom(rng *rand.Rand, p []byte) {
	for i := 0; i+8 <= len(p); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(p) &^ 7; i < len(p); i++ {
		p[i] = byte(rng.Uint32())
	}
}

// unalignedDD writes with dd at unaligned offsets and odd block sizes (so
// the kernel forwards unaligned requests), then compares with cmp.
func (s *suite) unalignedDD(t *testing.T) {
	testenv.RequireTool(t, "dd")
	testenv.RequireTool(t, "cmp")
	rng := rand.New(rand.NewPCG(3, 4))
	src := make([]byte, 4*mib)
	fillRandom(rng, src)
	srcPath := tempPath(t, "src")
	if err := os.WriteFile(srcPath, src, 0o600); err != nil {
		t.Fatal(err)
	}
	ref := readFile(t, s.file, 0, s.region)
	for i := range 30 {
		bs := []int{1000, 512, 4096, 65536, 1 << 20, 777}[i%6]
		n := int64(1 + rng.IntN(600000))
		skip := rng.Int64N(int64(len(src)) - n)
		seek := rng.Int64N(s.region - n)
		flags := []string{"oflag=seek_bytes", "oflag=seek_bytes,direct"}[i%2]
		Run(t, time.Minute, "dd", "if="+srcPath, "of="+s.file, "bs="+strconv.Itoa(bs),
			"iflag=skip_bytes,count_bytes", flags, "conv=notrunc", "status=none",
			"skip="+strconv.FormatInt(skip, 10), "count="+strconv.FormatInt(n, 10), "seek="+strconv.FormatInt(seek, 10))
		copy(ref[seek:], src[skip:skip+n])
	}
	refPath := tempPath(t, "ref")
	if err := os.WriteFile(refPath, ref, 0o600); err != nil {
		t.Fatal(err)
	}
	Run(t, time.Minute, "cmp", "-n", strconv.FormatInt(s.region, 10), s.file, refPath)
	// Read back with dd at odd sizes too.
	for i := range 10 {
		n := int64(1 + rng.IntN(300000))
		skip := rng.Int64N(s.region - n)
		out := tempPath(t, "out")
		Run(t, time.Minute, "dd", "if="+s.file, "of="+out, "bs="+strconv.Itoa([]int{1000, 333, 1 << 20}[i%3]),
			"iflag=skip_bytes,count_bytes", "status=none", "skip="+strconv.FormatInt(skip, 10), "count="+strconv.FormatInt(n, 10))
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		requireEqual(t, fmt.Sprintf("dd read [%d,+%d)", skip, n), got, ref[skip:skip+n])
	}
}

// concurrentSameBlock has writers hammer disjoint unaligned byte ranges of
// the same two blocks; a read-modify-write without a lock loses updates.
func (s *suite) concurrentSameBlock(t *testing.T) {
	const writers, rounds, span = 8, 60, 61
	base := 3*s.bs - 200 // straddles a block boundary
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.OpenFile(s.file, os.O_WRONLY, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			p := make([]byte, span)
			for r := range rounds {
				for i := range p {
					p[i] = byte(w*rounds + r)
				}
				if _, err := f.WriteAt(p, base+int64(w*span)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := readFile(t, s.file, base, writers*span)
	for w := range writers {
		want := bytes.Repeat([]byte{byte(w*rounds + rounds - 1)}, span)
		requireEqual(t, fmt.Sprintf("writer %d's final bytes", w), got[w*span:(w+1)*span], want)
	}
}

func (s *suite) fioVerify(t *testing.T) {
	fio := testenv.RequireTool(t, "fio")
	size := min(s.region, 32*mib)
	for _, job := range [][]string{
		{"--rw=randwrite", "--bsrange=512-256k", "--blockalign=512", "--iodepth=16"},
		{"--rw=write", "--bs=1m", "--iodepth=8"},
	} {
		args := append([]string{"--name=verify", "--filename=" + s.file, "--direct=1", "--ioengine=libaio",
			"--size=" + strconv.FormatInt(size, 10), "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
			"--verify_state_save=0", "--randrepeat=1", "--output-format=terse"}, job...)
		Run(t, 2*time.Minute, fio, args...)
	}
}

func (s *suite) alignUp(x int64) int64   { return (x + s.bs - 1) / s.bs * s.bs }
func (s *suite) alignDown(x int64) int64 { return x / s.bs * s.bs }

// fillData writes random (never all-zero) data over [off, off+n).
func (s *suite) fillData(t *testing.T, off, n int64) []byte {
	p := bytes.Repeat([]byte{0xa5}, int(n))
	fillRandom(rand.New(rand.NewPCG(uint64(off), uint64(n))), p[:n/2])
	writeFile(t, s.file, p, off)
	return p
}

func (s *suite) punchHole(t *testing.T) {
	testenv.RequireTool(t, "fallocate")
	a := int64(mib)
	data := s.fillData(t, a, 3*mib)
	off, n := a+1000, int64(mib+777)
	s.rec.Calls()
	Run(t, time.Minute, "fallocate", "--punch-hole", "--offset", strconv.FormatInt(off, 10), "--length", strconv.FormatInt(n, 10), s.file)
	want := append([]byte(nil), data...)
	clear(want[off-a : off-a+n])
	requireEqual(t, "after punch-hole", readFile(t, s.file, a, 3*mib), want)

	calls := s.rec.Calls()
	_, trims := s.dev.(blockdev.Trimmer)
	_, zeroes := s.dev.(blockdev.Zeroer)
	if !trims && !zeroes {
		if len(calls) != 0 {
			t.Errorf("device without Trim/WriteZeroes got %v", calls)
		}
		return
	}
	mid := Call{Off: s.alignUp(off), N: s.alignDown(off+n) - s.alignUp(off)}
	if len(calls) != 1 || calls[0].Off != mid.Off || calls[0].N != mid.N || (calls[0].Op == "zeroes" && !calls[0].MayTrim) {
		t.Fatalf("device calls %+v; want one trim (or zeroes with mayTrim) of [%d,+%d)", calls, mid.Off, mid.N)
	}
	t.Logf("punch-hole reached the device as %+v", calls[0])
}

func (s *suite) zeroRange(t *testing.T) {
	testenv.RequireTool(t, "fallocate")
	a := int64(5 * mib)
	data := s.fillData(t, a, 2*mib)
	off, n := a+3*s.bs, int64(mib+1)
	s.rec.Calls()
	Run(t, time.Minute, "fallocate", "--zero-range", "--keep-size", "--offset", strconv.FormatInt(off, 10), "--length", strconv.FormatInt(n, 10), s.file)
	want := append([]byte(nil), data...)
	clear(want[off-a : off-a+n])
	requireEqual(t, "after zero-range", readFile(t, s.file, a, 2*mib), want)
	calls := s.rec.Calls()
	if _, ok := s.dev.(blockdev.Zeroer); ok {
		if len(calls) != 1 || calls[0].Op != "zeroes" || calls[0].MayTrim || calls[0].Off != off || calls[0].N != s.alignDown(off+n)-off {
			t.Errorf("device calls %+v; want one zeroes (no trim) of [%d,+%d)", calls, off, s.alignDown(off+n)-off)
		}
	}
}

// seekDataHole punches an aligned hole and checks lseek against the
// device's own extents.
func (s *suite) seekDataHole(t *testing.T) {
	a := int64(8 * mib)
	s.fillData(t, a-mib, 3*mib)
	Run(t, time.Minute, "fallocate", "--punch-hole", "--offset", strconv.FormatInt(a, 10), "--length", strconv.Itoa(mib), s.file)
	f, err := os.Open(s.file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	ex, hasExtents := s.dev.(blockdev.Extenter)
	isHole := func(off int64) bool {
		if !hasExtents {
			return false
		}
		e, err := ex.Extents(context.Background(), s.alignDown(off), s.bs)
		if err != nil {
			t.Fatalf("Extents(%d): %v", off, err)
		}
		return e[0].Flags&blockdev.ExtentHole != 0
	}
	for _, off := range []int64{0, a - mib, a - 1, a, a + 4096 + 17, a + mib - 1, a + mib, a + 2*mib, s.size - 1} {
		d, derr := unix.Seek(fd, off, unix.SEEK_DATA)
		h, herr := unix.Seek(fd, off, unix.SEEK_HOLE)
		if herr != nil || h < off || h > s.size {
			t.Errorf("SEEK_HOLE from %d = %d, %v", off, h, herr)
		} else if h < s.size && !isHole(h) {
			t.Errorf("SEEK_HOLE from %d = %d, but the device has data there", off, h)
		}
		if derr != nil {
			if !errors.Is(derr, syscall.ENXIO) || !isHole(off) {
				t.Errorf("SEEK_DATA from %d: %v", off, derr)
			}
			continue
		}
		if d < off || isHole(d) {
			t.Errorf("SEEK_DATA from %d = %d: not data", off, d)
		}
		if d > off && !isHole(off) {
			t.Errorf("SEEK_DATA from %d = %d, but %d is data", off, d, off)
		}
		if h > off && isHole(off) {
			t.Errorf("SEEK_HOLE from %d = %d, but %d is a hole", off, h, off)
		}
	}
	if !hasExtents {
		if d, err := unix.Seek(fd, a, unix.SEEK_DATA); d != a || err != nil {
			t.Errorf("without extents SEEK_DATA from %d = %d, %v; want %d", a, d, err, a)
		}
	}
	for _, w := range []int{unix.SEEK_DATA, unix.SEEK_HOLE} {
		if _, err := unix.Seek(fd, s.size, w); !errors.Is(err, syscall.ENXIO) {
			t.Errorf("seek(whence %d) at the end: %v, want ENXIO", w, err)
		}
	}
}

// ext4 formats the file, mounts it through a loop device, copies a tree
// in, unmounts and checks the file system, then compares the tree.
func (s *suite) ext4(t *testing.T) {
	testenv.Short(t)
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mkfs.ext4")
	testenv.RequireTool(t, "e2fsck")
	testenv.RequireTool(t, "cp")
	testenv.RequireTool(t, "diff")
	if s.size < 32*mib {
		t.Skipf("device of %d bytes too small for ext4", s.size)
	}
	Run(t, 2*time.Minute, "mkfs.ext4", "-q", "-F", s.file)
	tree := makeTree(t, 8*mib)

	loop := Losetup(t, s.file, "--direct-io=on")
	mnt := MountFS(t, loop, "-t", "ext4")
	Run(t, 2*time.Minute, "cp", "-a", tree, mnt)
	Run(t, time.Minute, "sync")
	Umount(t, mnt)
	DetachLoop(t, loop)

	out := Run(t, 2*time.Minute, "e2fsck", "-f", "-n", s.file)
	t.Logf("e2fsck: %s", lastLine(out))

	loop = Losetup(t, s.file, "-r")
	mnt = MountFS(t, loop, "-t", "ext4", "-o", "ro")
	Run(t, time.Minute, "diff", "-r", "--no-dereference", tree, filepath.Join(mnt, filepath.Base(tree)))
	Umount(t, mnt)
	DetachLoop(t, loop)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// makeTree builds a directory tree of about total bytes: nested dirs,
// files of odd sizes (some empty, some sparse-ish), symlinks.
func makeTree(t *testing.T, total int) string {
	root := filepath.Join(t.TempDir(), "tree")
	rng := rand.New(rand.NewPCG(7, 8))
	written := 0
	for i := 0; written < total; i++ {
		dir := filepath.Join(root, fmt.Sprintf("d%d", i%7), fmt.Sprintf("e%d", i%3))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		n := []int{0, 1, 511, 4097, 70000, 300001}[i%6]
		p := make([]byte, n)
		fillRandom(rng, p)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), p, 0o644); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			os.Symlink(fmt.Sprintf("f%d", i), filepath.Join(dir, fmt.Sprintf("l%d", i)))
		}
		written += n
	}
	return root
}

// RunReadOnlySuite mounts dev read-only and checks that reads work (and
// match the device) while every kind of write fails with EROFS.
func RunReadOnlySuite(t *testing.T, dev blockdev.Device) {
	mp := Mount(t, dev, fusefs.Options{ReadOnly: true})
	file := mp.File()
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode() != 0o400 || st.Size() != dev.Size() {
		t.Errorf("mode %v size %d; want -r-------- %d", st.Mode(), st.Size(), dev.Size())
	}
	n := min(dev.Size(), 4*mib)
	want := make([]byte, n)
	if err := dev.ReadAt(context.Background(), want, 0); err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "read", readFile(t, file, 0, n), want)
	requireEqual(t, "unaligned read", readFile(t, file, 1001, n-2002), want[1001:n-1001])

	if _, err := os.OpenFile(file, os.O_RDWR, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("open O_RDWR: %v, want EROFS", err)
	}
	if _, err := os.OpenFile(file, os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("open O_WRONLY: %v, want EROFS", err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := unix.Pwrite(int(f.Fd()), []byte("x"), 0); !errors.Is(err, syscall.EBADF) {
		t.Errorf("pwrite on O_RDONLY fd: %v, want EBADF", err)
	}
	if err := os.Truncate(file, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("truncate: %v, want EROFS", err)
	}
	if out, err := run(time.Minute, "dd", "if=/dev/zero", "of="+file, "bs=4096", "count=1", "conv=notrunc"); err == nil || !strings.Contains(out, "Read-only file system") {
		t.Errorf("dd write: %v\n%s\nwant Read-only file system", err, out)
	}
}

// DetachLoop detaches a loop device now (the cleanup Losetup registered
// then has nothing left to do).
func DetachLoop(t testing.TB, loop string) {
	t.Helper()
	if err := detachLoop(loop); err != nil {
		t.Fatal(err)
	}
}
