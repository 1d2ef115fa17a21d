package fusefs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

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
		if err != nil || st.Mode() != 0o444 {
			t.Fatalf("stat: %v %v, want -r--r--r--", st.Mode(), err)
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
