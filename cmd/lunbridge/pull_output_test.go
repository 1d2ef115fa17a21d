package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPullCLIRefusesDeviceOutput (review #10): pull onto a block device
// (a loop device) or a character device is refused without --force and
// leaves it untouched; --force writes the image; /dev/null needs nothing.
func TestPullCLIRefusesDeviceOutput(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	want := writeImage(t, src, 8<<20, 5)

	if _, stderr, code := runCLI(t, nil, "pull", "--checksum", "none", "file://"+src, "/dev/zero"); code != ExitUsage || !strings.Contains(stderr, "character device") || !strings.Contains(stderr, "--force") {
		t.Fatalf("pull onto /dev/zero: exit %d %q", code, stderr)
	}
	if _, stderr, code := runCLI(t, nil, "pull", "--checksum", "none", "file://"+src, os.DevNull); code != 0 {
		t.Fatalf("pull onto /dev/null: exit %d %q", code, stderr)
	}

	backing := filepath.Join(dir, "loop.img")
	junk := bytes.Repeat([]byte{0xa5}, 8<<20)
	if err := os.WriteFile(backing, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", backing).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })

	for _, args := range [][]string{{}, {"--resume"}} {
		argv := append(append([]string{"pull"}, args...), "file://"+src, loop)
		_, stderr, code := runCLI(t, nil, argv...)
		if code != ExitUsage || !strings.Contains(stderr, "block device (8.0 MiB)") || !strings.Contains(stderr, "--force") {
			t.Fatalf("pull %v onto %s: exit %d %q", args, loop, code, stderr)
		}
		if got := readDev(t, loop, 8<<20); !bytes.Equal(got, junk) {
			t.Fatalf("pull %v changed the block device it refused", args)
		}
	}
	if _, stderr, code := runCLI(t, nil, "pull", "--force", "file://"+src, loop); code != 0 {
		t.Fatalf("pull --force onto %s: exit %d %q", loop, code, stderr)
	}
	if got := readDev(t, loop, 8<<20); !bytes.Equal(got, want) {
		t.Fatal("pull --force: the block device does not hold the image")
	}
	if _, err := os.Stat(loop + ".sha256"); err == nil {
		os.Remove(loop + ".sha256")
		t.Fatal("pull wrote a .sha256 file beside the block device")
	}
}

func readDev(t *testing.T, path string, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPullCLIFIFO: a FIFO holds nothing to destroy, so pull writes the
// image into it in order, like stdout, without --force.
func TestPullCLIFIFO(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	want := writeImage(t, src, 8<<20, 9)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		f, err := os.Open(fifo)
		if err != nil {
			got <- nil
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		got <- b
	}()
	if _, stderr, code := runCLI(t, nil, "pull", "file://"+src, fifo); code != 0 {
		// Unblock the reader.
		if f, err := os.OpenFile(fifo, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		<-got
		t.Fatalf("pull into a FIFO: exit %d %q", code, stderr)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the FIFO carried %d bytes, not the %d-byte image", len(b), len(want))
	}
	if _, stderr, code := runCLI(t, nil, "pull", "--resume", "file://"+src, fifo); code != ExitUsage {
		t.Fatalf("pull --resume into a FIFO: exit %d %q", code, stderr)
	}
}
