package blockcopy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// directDir returns a directory on a file system that takes O_DIRECT
// writes: the test temp dir, else /var/tmp. On ext4 and xfs (the root file
// system of the CI machines) direct I/O must work; elsewhere the test is
// skipped with the reason.
func directDir(t *testing.T) (string, int) {
	t.Helper()
	for _, base := range []string{os.TempDir(), "/var/tmp"} {
		dir, err := os.MkdirTemp(base, "lunbridge-direct-")
		if err != nil {
			continue
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		probe := filepath.Join(dir, "probe")
		if err := os.WriteFile(probe, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		f, align := openDirect(probe)
		var sfs unix.Statfs_t
		if err := unix.Statfs(dir, &sfs); err != nil {
			t.Fatal(err)
		}
		if f != nil {
			f.Close()
			return dir, align
		}
		if sfs.Type == unix.EXT4_SUPER_MAGIC || sfs.Type == unix.XFS_SUPER_MAGIC {
			t.Fatalf("%s is ext4/xfs but O_DIRECT with STATX_DIOALIGN is not available", dir)
		}
	}
	t.Skip("no file system here takes O_DIRECT writes (tmpfs only?)")
	return "", 0
}

// A pull to a disk-backed file writes its aligned bulk with O_DIRECT and
// the misaligned tail through the page cache; the file is the device either
// way, holes included. --buffered (PullOptions.Buffered) writes nothing
// direct.
func TestPullFileDirect(t *testing.T) {
	dir, align := directDir(t)
	const size = 24<<20 + 3*512 // with 4096-byte alignment the tail goes through the page cache
	m := blockdevtest.NewMem(size, 512)
	want := fillMem(t, m, 9)
	for _, buffered := range []bool{false, true} {
		path := filepath.Join(dir, "img")
		os.Remove(path)
		res, err := PullFile(context.Background(), m, path, PullOptions{
			Options:  Options{ChunkSize: 256 << 10},
			Buffered: buffered,
		})
		if err != nil {
			t.Fatal(err)
		}
		fileIs(t, path, want, fmt.Sprintf("buffered=%v", buffered))
		t.Logf("buffered=%v align=%d: written %d, direct %d, holes %d", buffered, align, res.BytesWritten, res.DirectBytes, res.HoleBytes)
		if buffered {
			if res.DirectBytes != 0 {
				t.Fatalf("--buffered wrote %d bytes direct", res.DirectBytes)
			}
			continue
		}
		if res.DirectBytes == 0 || res.DirectBytes%int64(align) != 0 || res.DirectBytes > res.BytesWritten {
			t.Fatalf("direct %d bytes of %d written (align %d)", res.DirectBytes, res.BytesWritten, align)
		}
		if res.BytesWritten+res.HoleBytes != size || res.HoleBytes == 0 {
			t.Fatalf("counters: %+v", res)
		}
		if du := allocated(t, path); du >= res.BytesWritten+1<<20 {
			t.Fatalf("file allocates %d bytes, only %d are data", du, res.BytesWritten)
		}
	}
}

// writeAt sends what meets the alignment direct and the rest through the
// page cache: a buffer at an odd address, an odd offset, a ragged tail.
func TestFileSinkWriteAtSplits(t *testing.T) {
	dir, align := directDir(t)
	path := filepath.Join(dir, "img")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := &fileSink{f: f}
	s.direct, s.align = openDirect(path)
	defer s.close()
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i*7 + i>>9)
	}
	buf := make([]byte, 1<<20+align) // page aligned (a large allocation)
	copy(buf, want)
	steps := []struct {
		off, n   int
		src      []byte
		direct   int64
		describe string
	}{
		{0, 64 << 10, buf, 64 << 10, "aligned"},
		{64 << 10, 64<<10 + 100, buf[64<<10:], 64 << 10, "aligned with a ragged tail"},
		{128<<10 + 100, 1000, buf[128<<10+100:], 0, "odd offset"},
	}
	for _, st := range steps {
		before := s.directBytes.Load()
		if err := s.writeAt(st.src[:st.n], int64(st.off)); err != nil {
			t.Fatalf("%s: %v", st.describe, err)
		}
		if d := s.directBytes.Load() - before; d != st.direct {
			t.Fatalf("%s: %d bytes direct, want %d", st.describe, d, st.direct)
		}
	}
	// A buffer at an odd address: nothing direct.
	odd := make([]byte, 8192+1)[1:]
	copy(odd, want[200<<10:])
	before := s.directBytes.Load()
	if err := s.writeAt(odd[:8192], 200<<10); err != nil {
		t.Fatal(err)
	}
	if s.directBytes.Load() != before {
		t.Fatal("a misaligned buffer went direct")
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	end := 200<<10 + 8192
	if len(got) != end {
		t.Fatalf("file is %d bytes, want %d", len(got), end)
	}
	for _, r := range [][2]int{{0, 128<<10 + 100 + 1000}, {200 << 10, end}} {
		if !bytes.Equal(got[r[0]:r[1]], want[r[0]:r[1]]) {
			t.Fatalf("bytes %d..%d differ", r[0], r[1])
		}
	}
}
