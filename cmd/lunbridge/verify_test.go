package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVerifyCLI(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	want := writeImage(t, src, 16<<20, 21)
	cp := filepath.Join(dir, "copy")
	if _, stderr, code := runCLI(t, nil, "pull", "--checksum", "none", "file://"+src, cp); code != 0 {
		t.Fatal(stderr)
	}
	stdout, stderr, code := runCLI(t, nil, "verify", "file://"+src, cp)
	if code != 0 || !strings.Contains(stdout, "identical") {
		t.Fatalf("identical: exit %d %q %q", code, stdout, stderr)
	}
	// Flip one byte.
	var off int64 = 5<<20 + 12345
	for want[off] == 0 {
		off++
	}
	f, _ := os.OpenFile(cp, os.O_RDWR, 0)
	f.WriteAt([]byte{want[off] ^ 0xff}, off)
	f.Close()
	stdout, stderr, code = runCLI(t, nil, "verify", "file://"+src, cp)
	if code != ExitMismatch || !strings.Contains(stdout, fmt.Sprint(off)) || !strings.Contains(stdout, "(1 bytes) in 1 blocks") {
		t.Fatalf("flipped byte at %d: exit %d %q %q", off, code, stdout, stderr)
	}
	stdout, _, code = runCLI(t, nil, "verify", "--json", "file://"+src, cp)
	var v verifySummary
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatal(err)
	}
	if code != ExitMismatch || v.Equal || v.DiffBytes != 1 || len(v.FirstDiffs) != 1 || v.FirstDiffs[0] != off {
		t.Fatalf("json: exit %d %+v", code, v)
	}
	// A shorter file is a mismatch too.
	os.Truncate(cp, 8<<20)
	if stdout, _, code = runCLI(t, nil, "verify", "file://"+src, cp); code != ExitMismatch || !strings.Contains(stdout, "size differs") {
		t.Fatalf("short file: exit %d %q", code, stdout)
	}
}
