package blockcopy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// TestClassifyOutput is the decision behind "never overwritten without
// --force": each kind of existing path a pull can be pointed at.
func TestClassifyOutput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "img")
	os.WriteFile(file, []byte("x"), 0o600)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "null-link")
	os.Symlink(os.DevNull, link)
	cases := []struct {
		path string
		want OutputKind
	}{
		{filepath.Join(dir, "missing"), OutputNew},
		{file, OutputRegular},
		{fifo, OutputStream},
		{os.DevNull, OutputDiscard},
		{link, OutputDiscard},
		{"/dev/zero", OutputDevice}, // a character device that is not null
	}
	for _, p := range []string{"/dev/loop0", "/dev/loop-control"} {
		if st, err := os.Stat(p); err == nil && st.Mode()&os.ModeDevice != 0 {
			cases = append(cases, struct {
				path string
				want OutputKind
			}{p, OutputDevice})
		}
	}
	// A copy of the null device's node elsewhere is the null device too.
	if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err == nil {
		cases = append(cases, struct {
			path string
			want OutputKind
		}{filepath.Join(dir, "null"), OutputDiscard})
	}
	for _, c := range cases {
		got, _, err := ClassifyOutput(c.path)
		if err != nil || got != c.want {
			t.Errorf("%s: %v %v, want %v", c.path, got, err, c.want)
		}
	}
}

// TestPullFileRefusesDevice (review #10): PullFile onto an existing device
// needs Force, like a non-empty file; the null device needs nothing and
// gets no .sha256 beside it; a FIFO is refused (it cannot seek).
func TestPullFileRefusesDevice(t *testing.T) {
	ctx := context.Background()
	m := blockdevtest.NewMem(1<<20, 512)
	fillMem(t, m, 7)
	if _, err := PullFile(ctx, m, "/dev/zero", PullOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("pull onto /dev/zero without Force: %v, want ErrExists", err)
	}
	if _, err := PullFile(ctx, m, "/dev/zero", PullOptions{Force: true}); err != nil {
		t.Fatalf("pull onto /dev/zero with Force: %v", err)
	}
	dir := t.TempDir()
	null := filepath.Join(dir, "null")
	if err := unix.Mknod(null, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("mknod: %v", err)
	}
	if f, err := os.OpenFile(null, os.O_WRONLY, 0); err != nil {
		t.Skipf("device nodes do not open here (nodev): %v", err)
	} else {
		f.Close()
	}
	res, err := PullFile(ctx, m, null, PullOptions{Options: Options{Checksum: true}, ChecksumFile: true})
	if err != nil || res.SHA256 == "" {
		t.Fatalf("pull onto a null device: %+v %v", res, err)
	}
	if _, err := os.Stat(null + ".sha256"); err == nil {
		t.Fatal("a .sha256 file was written beside a device")
	}
	fifo := filepath.Join(dir, "fifo")
	unix.Mkfifo(fifo, 0o600)
	if _, err := PullFile(ctx, m, fifo, PullOptions{Force: true}); !errors.Is(err, ErrInvalidOutput) {
		t.Fatalf("pull onto a FIFO: %v, want ErrInvalidOutput", err)
	}
}
