package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev/filedev"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// fileMirror creates a mirror owned by this process on two fresh sparse
// files of legSize bytes in dir (a.img and b.img), with chunk-byte chunks
// and no idle bitmap flush during a test; it returns the mirror and the
// legs' paths. The caller closes the mirror.
func fileMirror(t *testing.T, ctx context.Context, dir string, legSize, chunk int64) (*mirror.Mirror, [2]string) {
	t.Helper()
	paths := [2]string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")}
	for _, p := range paths {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, legSize); err != nil {
			t.Fatal(err)
		}
	}
	da, err := filedev.Open(paths[0], 512, false)
	if err != nil {
		t.Fatal(err)
	}
	db, err := filedev.Open(paths[1], 512, false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mirror.Create(ctx, da, db, mirror.CreateOptions{Options: mirror.Options{BitmapIdle: time.Hour}, ChunkSize: chunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	return m, paths
}
