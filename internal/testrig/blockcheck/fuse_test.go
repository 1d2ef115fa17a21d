package blockcheck

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/fusefs/fusefstest"
)

// fileTarget is a file opened with O_DIRECT: pread, pwrite, fdatasync
// (FUA: pwrite then fdatasync before the write counts as acknowledged).
type fileTarget struct {
	f   *os.File
	buf []byte // page-aligned bounce buffer
}

func openFileTarget(path string) (*fileTarget, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, 64*BlockSize+4096)
	off := int((4096 - uintptr(unsafe.Pointer(&raw[0]))%4096) % 4096)
	return &fileTarget{f: f, buf: raw[off : off+64*BlockSize]}, nil
}

func (t *fileTarget) ReadAt(ctx context.Context, p []byte, off int64) error {
	b := t.buf[:len(p)]
	if _, err := t.f.ReadAt(b, off); err != nil {
		return err
	}
	copy(p, b)
	return nil
}

func (t *fileTarget) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	b := t.buf[:len(p)]
	copy(b, p)
	if _, err := t.f.WriteAt(b, off); err != nil {
		return err
	}
	if fua {
		return unix.Fdatasync(int(t.f.Fd()))
	}
	return nil
}

func (t *fileTarget) Flush(ctx context.Context) error { return unix.Fdatasync(int(t.f.Fd())) }
func (t *fileTarget) Close() error                    { return t.f.Close() }

// fuseConnReset: clients pread/pwrite disk.img of `lunbridge mount` (direct
// I/O) while its iSCSI connection is reset through a proxy every ~2 s.
func fuseConnReset(t *testing.T, kind string) {
	r := scenario(t, "conn-reset", "fuse", kind)
	fusefstest.RequireFUSE(t)
	srv := startTarget(t, kind)
	px := newProxy(t, srv.Portal)
	bin := lunbridge(t)
	dir := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "mount.pid")
	cmd := exec.Command(bin, "mount", "--daemon", "--pid-file", pidFile, iscsiURL(srv, px.Addr()), dir)
	cmd.Env = append(os.Environ(), "LUNBRIDGE_INITIATOR_NAME="+initiatorName)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lunbridge mount: %v %s", err, out)
	}
	file := strings.TrimSpace(string(out))
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	t.Cleanup(func() {
		um := exec.Command(bin, "umount", "--lazy", "--pid-file", pidFile, "--wait", "20s", dir)
		if out, err := um.CombinedOutput(); err != nil {
			t.Errorf("lunbridge umount: %v %s", err, out)
			if pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	cfg := Config{Duration: runTime(8 * time.Second), Open: func(ctx context.Context, i int) (Target, error) { return openFileTarget(file) }}
	check(t, r, cfg, func(ctx context.Context, h *History) {
		every(ctx, 2*time.Second, func() {
			px.ResetAll()
			h.Fault()
		})
	})
	if pid > 0 {
		r.PeakRSS = mib(hwmKB(pid)) + " (mount)"
	}
}
