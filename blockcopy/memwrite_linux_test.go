package blockcopy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// tmpfsDir mounts a tmpfs of size bytes on a fresh directory (root only).
func tmpfsDir(t *testing.T, size string) string {
	t.Helper()
	testenv.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// A pull into tmpfs (written with raw pwrite calls when there are two or
// more Ps) produces the device's bytes; a tmpfs too small for the image
// gives ENOSPC, cleanly, and the progress made so far.
func TestPullFileTmpfs(t *testing.T) {
	m := blockdevtest.NewMem(16<<20, 512)
	want := fillMem(t, m, 5)

	big := tmpfsDir(t, "64m")
	path := filepath.Join(big, "img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if !inMemory(f) {
		t.Fatal("inMemory is false on a tmpfs mount")
	}
	f.Close()
	os.Remove(path)
	res, err := PullFile(context.Background(), m, path, PullOptions{Options: Options{ChunkSize: 256 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	fileIs(t, path, want, "tmpfs")
	if res.DirectBytes != 0 {
		t.Fatalf("%d bytes written with O_DIRECT on tmpfs", res.DirectBytes)
	}

	// Full: 16 MiB of random data into 4 MiB.
	full := blockdevtest.NewMem(16<<20, 512)
	noise := make([]byte, 16<<20)
	for i := range noise {
		noise[i] = byte(i*131 + i>>11 + 1)
	}
	if err := full.WriteAt(context.Background(), noise, 0, false); err != nil {
		t.Fatal(err)
	}
	small := tmpfsDir(t, "4m")
	res, err = PullFile(context.Background(), full, filepath.Join(small, "img"), PullOptions{Options: Options{ChunkSize: 256 << 10}})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("pull into a full tmpfs: %v, want ENOSPC", err)
	}
	if res == nil || res.Done >= res.Total {
		t.Fatalf("result after ENOSPC: %+v", res)
	}
	t.Logf("full tmpfs: %v (done %d of %d)", err, res.Done, res.Total)
}
