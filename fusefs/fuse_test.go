package fusefs_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
	"github.com/lunbridge/lunbridge/blockdev/filedev"
	"github.com/lunbridge/lunbridge/fusefs"
	"github.com/lunbridge/lunbridge/fusefs/fusefstest"
)

const mib = 1 << 20

func TestSuiteMem(t *testing.T) {
	fusefstest.RunFileSuite(t, blockdevtest.NewMem(64*mib, 512))
}

func newFileDev(t *testing.T, size int64, bs int, ro bool) *filedev.File {
	p := filepath.Join(t.TempDir(), "dev.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	d, err := filedev.Open(p, bs, ro)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestSuiteFile(t *testing.T) {
	fusefstest.RunFileSuite(t, newFileDev(t, 64*mib, 4096, false))
}

func TestReadOnly(t *testing.T) {
	t.Run("option", func(t *testing.T) {
		m := blockdevtest.NewMem(8*mib, 512)
		m.WriteAt(context.Background(), make([]byte, 4096), 0, false)
		fusefstest.RunReadOnlySuite(t, m)
	})
	t.Run("device", func(t *testing.T) {
		m := blockdevtest.NewMem(8*mib, 4096)
		m.SetReadOnly(true)
		mp := fusefstest.Mount(t, m, fusefs.Options{})
		st, err := os.Stat(mp.File())
		if err != nil || st.Mode() != 0o400 {
			t.Fatalf("stat: %v %v, want -r--------", st.Mode(), err)
		}
		if _, err := os.OpenFile(mp.File(), os.O_RDWR, 0); !errors.Is(err, syscall.EROFS) {
			t.Errorf("open O_RDWR: %v, want EROFS", err)
		}
	})
	t.Run("file", func(t *testing.T) {
		fusefstest.RunReadOnlySuite(t, newFileDev(t, 8*mib, 512, true))
	})
}

// TestTrimWhenZeroesAfterTrim: a device promising zeroes after trim gets a
// plain Trim for a punched hole.
func TestTrimWhenZeroesAfterTrim(t *testing.T) {
	m := blockdevtest.NewMem(16*mib, 512)
	yes := true
	rec := &fusefstest.Recorder{Device: m, ZeroesAfterTrim: &yes}
	mp := fusefstest.Mount(t, rec, fusefs.Options{Name: "lun0"})
	if filepath.Base(mp.File()) != "lun0" {
		t.Fatalf("file %s", mp.File())
	}
	f, err := os.OpenFile(mp.File(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 2*mib)
	for i := range p {
		p[i] = 0xff
	}
	f.WriteAt(p, 0)
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 4096, mib); err != nil {
		t.Fatal(err)
	}
	calls := rec.Calls()
	if len(calls) != 1 || calls[0] != (fusefstest.Call{Op: "trim", Off: 4096, N: mib}) {
		t.Fatalf("calls %+v, want one trim of [4096,+1MiB)", calls)
	}
	// Mem reports the trimmed range as a hole: SEEK_HOLE/SEEK_DATA see it.
	if h, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE); h != 4096 || err != nil {
		t.Errorf("SEEK_HOLE = %d, %v; want 4096", h, err)
	}
	if d, err := unix.Seek(int(f.Fd()), 4096, unix.SEEK_DATA); d != 4096+mib || err != nil {
		t.Errorf("SEEK_DATA = %d, %v; want %d", d, err, 4096+mib)
	}
	if d, err := unix.Seek(int(f.Fd()), 2*mib, unix.SEEK_DATA); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("SEEK_DATA past the data = %d, %v; want ENXIO", d, err)
	}
	if h, err := unix.Seek(int(f.Fd()), 2*mib, unix.SEEK_HOLE); h != 2*mib || err != nil {
		t.Errorf("SEEK_HOLE in the tail hole = %d, %v", h, err)
	}
	// fsync reaches the device.
	before := m.Flushes.Load()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if m.Flushes.Load() == before {
		t.Error("fsync did not flush the device")
	}
}

func TestClearStale(t *testing.T) {
	dir := t.TempDir()
	if err := fusefs.ClearStale(dir); err != nil {
		t.Fatalf("plain directory: %v", err)
	}
	mp := fusefstest.Mount(t, blockdevtest.NewMem(mib, 512), fusefs.Options{})
	if err := fusefs.ClearStale(mp.Dir()); !errors.Is(err, fusefs.ErrMounted) {
		t.Fatalf("live mount: %v, want ErrMounted", err)
	}
}

// mmapHelperEnv makes the test binary a helper that maps a file shared
// and writable, writes through the mapping and msyncs. Faulting on a FUSE
// mapping from the serving process itself deadlocks (the faulting thread
// blocks the Go runtime's stop-the-world), hence a separate process.
const mmapHelperEnv = "FUSEFS_TEST_MMAP_FILE"

func init() {
	path := os.Getenv(mmapHelperEnv)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err == nil {
		var mem []byte
		mem, err = unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err == nil {
			os.Stdout.Write(mem[1001:1013])
			copy(mem[5000:], "via mmap")
			err = unix.Msync(mem, unix.MS_SYNC)
		}
	}
	if err != nil {
		os.Stderr.WriteString(err.Error())
		os.Exit(1)
	}
	os.Exit(0)
}

// TestCacheMode: the page-cache mode reads and writes correctly and
// supports shared writable mmap (direct I/O mode does not).
func TestCacheMode(t *testing.T) {
	m := blockdevtest.NewMem(8*mib, 512)
	mp := fusefstest.Mount(t, m, fusefs.Options{Cache: true})
	f, err := os.OpenFile(mp.File(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("cached write"), 1001); err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), mmapHelperEnv+"="+mp.File())
	cmd.WaitDelay = 5 * time.Second
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.Output(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("mmap helper hung")
	}
	if err != nil || string(out) != "cached write" {
		t.Fatalf("shared mmap in cache mode: %v, read %q", err, out)
	}
	got := make([]byte, 8192)
	m.ReadAt(context.Background(), got, 0)
	if string(got[1001:1013]) != "cached write" || string(got[5000:5008]) != "via mmap" {
		t.Errorf("device has %q / %q", got[1001:1013], got[5000:5008])
	}
}

func TestFallocateModes(t *testing.T) {
	m := blockdevtest.NewMem(4*mib, 512)
	mp := fusefstest.Mount(t, m, fusefs.Options{})
	f, err := os.OpenFile(mp.File(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	const keep, punch, zero = unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_PUNCH_HOLE, unix.FALLOC_FL_ZERO_RANGE
	for _, tc := range []struct {
		mode    uint32
		off, n  int64
		want    error
		comment string
	}{
		{0, 0, 4 * mib, nil, "allocate inside"},
		{0, 4*mib - 1, 2, syscall.EFBIG, "allocate across the end"},
		{keep, 4*mib - 1, 1 << 40, nil, "allocate keep-size past the end"},
		{punch | keep, 8 * mib, mib, nil, "punch past the end"},
		{punch | keep, 4*mib - 100, 1 << 40, nil, "punch across the end"},
		{punch, 0, 4096, syscall.EOPNOTSUPP, "punch without keep-size"},
		{zero, 4*mib - 100, 200, syscall.EFBIG, "zero-range across the end"},
		{zero | keep, 4*mib - 100, 200, nil, "zero-range keep-size across the end"},
		{unix.FALLOC_FL_COLLAPSE_RANGE, 0, 4096, syscall.EOPNOTSUPP, "collapse"},
		{unix.FALLOC_FL_INSERT_RANGE, 0, 4096, syscall.EOPNOTSUPP, "insert"},
	} {
		err := unix.Fallocate(fd, tc.mode, tc.off, tc.n)
		if !errors.Is(err, tc.want) && err != tc.want {
			t.Errorf("%s: %v, want %v", tc.comment, err, tc.want)
		}
	}
}

// TestFileMode: the file is a whole disk, so it is the mounting user's
// only (0600) unless Options.Mode and GID share it (review #11).
func TestFileMode(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, tc := range []struct {
		name string
		opts fusefs.Options
		mode os.FileMode
		gid  uint32
	}{
		{"default", fusefs.Options{}, 0o600, uint32(os.Getgid())},
		{"read-only", fusefs.Options{ReadOnly: true}, 0o400, uint32(os.Getgid())},
		{"mode", fusefs.Options{Mode: 0o640, GID: ptr(uint32(4242))}, 0o640, 4242},
		{"mode read-only", fusefs.Options{Mode: 0o660, ReadOnly: true}, 0o440, uint32(os.Getgid())},
	} {
		mp := fusefstest.Mount(t, blockdevtest.NewMem(1*mib, 512), tc.opts)
		st, err := os.Stat(mp.File())
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != tc.mode || st.Sys().(*syscall.Stat_t).Gid != tc.gid {
			t.Errorf("%s: mode %v gid %d, want %v gid %d", tc.name, st.Mode(), st.Sys().(*syscall.Stat_t).Gid, tc.mode, tc.gid)
		}
	}
	if _, err := fusefs.Mount(t.TempDir(), blockdevtest.NewMem(1*mib, 512), fusefs.Options{Mode: os.ModeSetuid | 0o600}); err == nil {
		t.Error("Mount with a setuid mode: no error")
	}
}

func ptr[T any](v T) *T { return &v }
