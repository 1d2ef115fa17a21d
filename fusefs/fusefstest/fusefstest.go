// Package fusefstest runs the FUSE bridge's file-level test suite against
// any blockdev.Device: the in-memory and file devices in fusefs's own tests,
// a real iSCSI LUN in the end-to-end tests. The suite uses real tools (dd,
// cmp, fio, fallocate, mkfs.ext4, losetup, mount, e2fsck); a missing tool or
// FUSE fails the test under CI=true and skips it elsewhere (testenv).
//
// Every mount, loop device and ext4 mount the suite makes is undone in
// t.Cleanup, also when the test fails (lazy unmount as the fallback).
package fusefstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/fusefs"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// RequireFUSE fails (CI) or skips the test when FUSE mounts cannot work.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Unavailable(t, "/dev/fuse: %v", err)
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			testenv.Unavailable(t, "not root and no fusermount3")
		}
	}
}

// Mount mounts dev on a fresh temporary directory and unmounts it in
// t.Cleanup (lazily if the regular unmount fails). The device is not closed.
func Mount(t testing.TB, dev blockdev.Device, opts fusefs.Options) *fusefs.MountPoint {
	t.Helper()
	RequireFUSE(t)
	dir := t.TempDir()
	mp, err := fusefs.Mount(dir, dev, opts)
	if err != nil {
		if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.ENODEV) {
			testenv.Unavailable(t, "FUSE mount: %v", err)
		}
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() { unmount(t, mp) })
	return mp
}

func unmount(t testing.TB, mp *fusefs.MountPoint) {
	if err := mp.Unmount(); err != nil {
		t.Errorf("Unmount: %v; detaching lazily", err)
		if err := unix.Unmount(mp.Dir(), unix.MNT_DETACH); err != nil {
			t.Errorf("lazy unmount %s: %v", mp.Dir(), err)
			return
		}
	}
	done := make(chan struct{})
	go func() { mp.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("FUSE server for %s still running 10s after unmount", mp.Dir())
	}
}

// Run runs a command with a timeout and returns its combined output,
// failing the test when it fails.
func Run(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := run(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (timeout %v)", err, timeout)
	}
	return string(out), err
}

// Losetup attaches file to a free loop device, detached in t.Cleanup.
func Losetup(t testing.TB, file string, extra ...string) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "losetup")
	args := append([]string{"-f", "--show"}, extra...)
	loop := strings.TrimSpace(Run(t, 30*time.Second, "losetup", append(args, file)...))
	t.Cleanup(func() {
		if err := detachLoop(loop); err != nil {
			t.Error(err)
		}
	})
	return loop
}

// detachLoop detaches loop if it is still attached, retrying while the
// kernel still holds it busy.
func detachLoop(loop string) error {
	for i := 0; ; i++ {
		if _, err := os.Stat("/sys/block/" + filepath.Base(loop) + "/loop/backing_file"); err != nil {
			return nil // not attached (any more)
		}
		out, err := run(30*time.Second, "losetup", "-d", loop)
		if err == nil {
			return nil
		}
		if i == 20 {
			return fmt.Errorf("losetup -d %s: %v\n%s", loop, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// MountFS mounts a block device with mount(8) on a temporary directory,
// unmounted in t.Cleanup (lazily if busy).
func MountFS(t testing.TB, dev string, opts ...string) string {
	t.Helper()
	testenv.RequireRoot(t)
	dir := t.TempDir()
	args := append(opts, dev, dir)
	Run(t, time.Minute, "mount", args...)
	t.Cleanup(func() { Umount(t, dir) })
	return dir
}

// Umount unmounts dir if mounted, lazily when the plain unmount fails.
// It is safe to call more than once.
func Umount(t testing.TB, dir string) {
	t.Helper()
	if err := unix.Unmount(dir, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		t.Errorf("umount %s: %v; detaching lazily", dir, err)
		unix.Unmount(dir, unix.MNT_DETACH)
	}
}

// readFull reads n bytes at off from path through the FUSE file.
func readFile(t testing.TB, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, n)
	if _, err := f.ReadAt(p, off); err != nil {
		t.Fatalf("read %s [%d,+%d): %v", path, off, n, err)
	}
	return p
}

func writeFile(t testing.TB, path string, p []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatalf("write %s [%d,+%d): %v", path, off, len(p), err)
	}
}

// firstDiff describes where a and b differ.
func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d: %#x != %#x", i, a[i], b[i])
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("lengths %d != %d", len(a), len(b))
	}
	return "equal"
}

func requireEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %s", what, firstDiff(got, want))
	}
}

// tempPath is a path in a per-test temporary directory.
func tempPath(t testing.TB, name string) string {
	return filepath.Join(t.TempDir(), name)
}
