package blockcopy

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// TestPullFileModes: a pulled image is a copy of a whole disk; it, its
// resume sidecar and its checksum file are created 0600 whatever the umask
// (review #11).
func TestPullFileModes(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	m := blockdevtest.NewMem(8<<20, 512)
	fillMem(t, m, 7)
	path := tempFile(t, "img")
	ctx, cancel := context.WithCancel(context.Background())
	opts := PullOptions{
		Options: Options{Checksum: true, ChunkSize: 64 << 10, ProgressInterval: time.Millisecond,
			Progress: func(p Progress) {
				if p.Done >= p.Total/2 {
					cancel()
				}
			}},
		SourceID: "mem-7", ChecksumFile: true, CheckpointInterval: time.Millisecond,
	}
	src := &slowDev{Device: m, maxDelay: 2 * time.Millisecond}
	if _, err := PullFile(ctx, src, path, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want canceled", err)
	}
	wantMode(t, path, 0o600)
	wantMode(t, path+ResumeSuffix, 0o600)
	opts.Resume, opts.Progress = true, nil
	if _, err := PullFile(context.Background(), src, path, opts); err != nil {
		t.Fatal(err)
	}
	wantMode(t, path, 0o600)
	wantMode(t, path+".sha256", 0o600)
}

func wantMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), want)
	}
}
