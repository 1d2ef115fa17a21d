package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCLIMirrorOwner is review #2 at the CLI: while this process owns a
// mirror on two file legs, `mirror check` (an assembler) exits 1 naming
// the owner, also with --force (the owner runs on this host); `pull
// --mirror`, `verify --mirror` and `mirror status` read beside it without
// writing a byte of metadata.
func TestCLIMirrorOwner(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m, paths := fileMirror(t, ctx, dir, 64<<20, 1<<20)
	defer m.Close()
	pat := bytes.Repeat([]byte{0xc3}, 64<<10)
	if err := m.WriteAt(ctx, pat, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	tails := func() [2][]byte {
		var out [2][]byte
		for i, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out[i] = b[m.Size():]
		}
		return out
	}
	before := tails()
	urlA, urlB := "file://"+paths[0], "file://"+paths[1]
	pid := fmt.Sprintf("pid %d", os.Getpid())

	for _, args := range [][]string{{"mirror", "check", urlA, urlB}, {"mirror", "check", "--force", urlA, urlB}} {
		r := lbRun(t, 60*time.Second, nil, args...)
		if r.code != ExitFailure || !strings.Contains(r.stderr, pid) || !strings.Contains(r.stderr, "in use") {
			t.Fatalf("%s beside a live owner: exit %d, stderr:\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	out := filepath.Join(dir, "out.img")
	r := lbRun(t, 60*time.Second, nil, "pull", "--mirror", urlB, urlA, out)
	if r.code != 0 {
		t.Fatalf("pull --mirror beside the owner: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	img, err := os.ReadFile(out)
	if err != nil || int64(len(img)) != m.Size() || !bytes.Equal(img[1<<20:1<<20+len(pat)], pat) {
		t.Fatalf("pulled image: %v, %d bytes", err, len(img))
	}
	if r := lbRun(t, 60*time.Second, nil, "verify", "--mirror", urlB, urlA, out); r.code != 0 {
		t.Fatalf("verify --mirror: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if r := lbRun(t, 60*time.Second, nil, "mirror", "status", urlA, urlB); r.code != 0 || !strings.Contains(r.stdout, "In use by") || !strings.Contains(r.stdout, pid) {
		t.Fatalf("mirror status: exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	after := tails()
	for i := range before {
		if !bytes.Equal(before[i], after[i]) {
			t.Fatalf("leg %c metadata changed by the second process", 'A'+i)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if r := lbRun(t, 60*time.Second, nil, "mirror", "check", urlA, urlB); r.code != 0 {
		t.Fatalf("mirror check after the owner closed: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}
