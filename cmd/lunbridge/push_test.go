package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

func TestPushCLIRoundTrip(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	want := writeImage(t, img, 24<<20, 11)
	dev := filepath.Join(dir, "dev")
	junk := bytes.Repeat([]byte{0x5a}, 32<<20)
	os.WriteFile(dev, junk, 0o644)

	// Non-TTY without --yes: refused, nothing written.
	if _, stderr, code := runCLI(t, nil, "push", img, "file://"+dev); code != ExitUsage || !strings.Contains(stderr, "--yes") {
		t.Fatalf("without --yes: exit %d %q", code, stderr)
	}
	if got, _ := os.ReadFile(dev); !bytes.Equal(got, junk) {
		t.Fatal("device changed by a refused push")
	}

	stdout, stderr, code := runCLI(t, nil, "push", "--yes", "--json", img, "file://"+dev)
	if code != 0 {
		t.Fatalf("push: exit %d %s", code, stderr)
	}
	var sum copySummary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dev)
	if !bytes.Equal(got[:len(want)], want) || !bytes.Equal(got[len(want):], junk[len(want):]) {
		t.Fatal("pushed device differs")
	}
	if sum.Blkhash != hexblk(want) || sum.ChecksumAlgo != "blkhash" || sum.HolesBytes == 0 { // the default checksum
		t.Fatalf("summary %+v, want blkhash %s", sum, hexblk(want))
	}

	// push → pull round trip through stdin, at an offset.
	os.WriteFile(dev, junk, 0o644)
	f, _ := os.Open(img)
	defer f.Close()
	if _, stderr, code := runCLI(t, f, "push", "--yes", "--offset", "4M", "-", "file://"+dev); code != 0 {
		t.Fatalf("push -: exit %d %s", code, stderr)
	}
	back := filepath.Join(dir, "back")
	if _, stderr, code := runCLI(t, nil, "pull", "--offset", "4M", "--length", "24M", "file://"+dev, back); code != 0 {
		t.Fatalf("pull back: %s", stderr)
	}
	if got, _ := os.ReadFile(back); !bytes.Equal(got, want) {
		t.Fatal("push - then pull differs")
	}
	if _, _, code := runCLI(t, nil, "push", "-", "file://"+dev); code != ExitUsage {
		t.Fatalf("push - without --yes: exit %d", code)
	}
}

func TestPushCLIRefusesTooLarge(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	writeImage(t, img, 8<<20, 12)
	dev := filepath.Join(dir, "dev")
	junk := bytes.Repeat([]byte{0x5a}, 4<<20)
	os.WriteFile(dev, junk, 0o644)
	_, stderr, code := runCLI(t, nil, "push", "--yes", img, "file://"+dev)
	if code == 0 || !strings.Contains(stderr, "larger than") {
		t.Fatalf("too large: exit %d %q", code, stderr)
	}
	if got, _ := os.ReadFile(dev); !bytes.Equal(got, junk) {
		t.Fatal("device changed by a refused push")
	}
}

// TestPushCLIRefusesReadOnly runs the command in-process against a read-only
// Mem device served through the iscsi:// opener hook.
func TestPushCLIRefusesReadOnly(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	writeImage(t, img, 1<<20, 13)
	mem := blockdevtest.NewMem(4<<20, 512)
	mem.SetReadOnly(true)
	saved := openISCSI
	openISCSI = func(c *cli.Context, url string, readOnly bool) (blockdev.Device, error) { return keepOpen{mem}, nil }
	defer func() { openISCSI = saved }()
	err := newApp().RunContext(context.Background(), []string{"lunbridge", "push", "--yes", img, "iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:ro/0"})
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("read-only device: %v", err)
	}
	exts, _ := mem.Extents(context.Background(), 0, mem.Size())
	if len(exts) != 1 || exts[0].Flags&blockdev.ExtentHole == 0 {
		t.Fatal("read-only device was written")
	}
}

// keepOpen lets the test inspect a device after the command closed it.
type keepOpen struct{ *blockdevtest.Mem }

func (keepOpen) Close() error { return nil }
