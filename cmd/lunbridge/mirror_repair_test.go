package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mirrorOnFiles creates an in-sync mirror on two fresh 16 MiB files and
// returns their paths.
func mirrorOnFiles(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	legFile(t, a, 16<<20, nil)
	legFile(t, b, 16<<20, nil)
	if _, stderr, code := runCLI(t, nil, "mirror", "create", "--yes", "--assume-clean", "file://"+a, "file://"+b); code != 0 {
		t.Fatalf("create: exit %d %s", code, stderr)
	}
	return a, b
}

// scribble writes data into a leg's file behind the mirror's back.
func scribble(t *testing.T, path string, off int64, data string) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(data), off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	img, _ := os.ReadFile(path)
	return img
}

// TestMirrorCheckRepairAsks (review #10): check --repair rewrites leg B
// from leg A only after a y on a terminal or with --yes; without either it
// exits 2 naming the source leg, and leg B keeps its data.
func TestMirrorCheckRepairAsks(t *testing.T) {
	a, b := mirrorOnFiles(t)
	imgB := scribble(t, b, 2<<20, "only on B")

	_, stderr, code := runCLI(t, nil, "mirror", "check", "--repair", "file://"+a, "file://"+b)
	if code != ExitUsage || !strings.Contains(stderr, "add --yes") || !strings.Contains(stderr, "leg A as the source") {
		t.Fatalf("check --repair without a terminal: exit %d %q", code, stderr)
	}
	unchanged(t, b, imgB, "refused check --repair")

	screen, stdout, code := runOnTerminal(t, "n", "mirror", "check", "--repair", "file://"+a, "file://"+b)
	if code != ExitMismatch || !strings.Contains(screen, "nothing repaired") || !strings.Contains(stdout, "1 differing chunks") {
		t.Fatalf("check --repair answered n: exit %d\n%s\n%s", code, screen, stdout)
	}
	for _, want := range []string{"leg A  file://" + a, "leg B  file://" + b, "makes leg A the source", "Rewrite these chunks of leg B from leg A? [y/N]"} {
		if !strings.Contains(screen, want) {
			t.Errorf("the prompt does not show %q:\n%s", want, screen)
		}
	}
	if got, _ := os.ReadFile(b); !bytes.Equal(got[:8<<20], imgB[:8<<20]) {
		t.Fatal("leg B's data changed though the repair was declined")
	}

	screen, stdout, code = runOnTerminal(t, "y", "mirror", "check", "--repair", "file://"+a, "file://"+b)
	if code != 0 || !strings.Contains(stdout, "1 chunks repaired from leg A") {
		t.Fatalf("check --repair answered y: exit %d\n%s\n%s", code, screen, stdout)
	}
	scribble(t, b, 2<<20, "again on B")
	if stdout, stderr, code := runCLI(t, nil, "mirror", "check", "--repair", "--yes", "file://"+a, "file://"+b); code != 0 || !strings.Contains(stdout, "repaired") {
		t.Fatalf("check --repair --yes: exit %d %s %s", code, stdout, stderr)
	}
	// A check without --repair never asks.
	if _, stderr, code := runCLI(t, nil, "mirror", "check", "file://"+a, "file://"+b); code != 0 {
		t.Fatalf("check: exit %d %s", code, stderr)
	}
}

// TestMirrorResyncPreferAsks (review #10, issue 20 item 7): resync --prefer
// asks on a terminal and needs --yes elsewhere; a refusal writes nothing
// (not even the assembly's metadata update).
func TestMirrorResyncPreferAsks(t *testing.T) {
	a, b := mirrorOnFiles(t)
	imgA, _ := os.ReadFile(a)
	imgB := scribble(t, b, 3<<20, "only on B")

	_, stderr, code := runCLI(t, nil, "mirror", "resync", "--prefer", "A", "file://"+a, "file://"+b)
	if code != ExitUsage || !strings.Contains(stderr, "add --yes") || !strings.Contains(stderr, "copies it over leg B") {
		t.Fatalf("resync --prefer without a terminal: exit %d %q", code, stderr)
	}
	unchanged(t, a, imgA, "refused resync --prefer")
	unchanged(t, b, imgB, "refused resync --prefer")

	screen, _, code := runOnTerminal(t, "n", "mirror", "resync", "--prefer", "a", "file://"+a, "file://"+b)
	if code != ExitFailure || !strings.Contains(screen, "not confirmed") {
		t.Fatalf("resync --prefer answered n: exit %d\n%s", code, screen)
	}
	for _, want := range []string{"leg B  file://" + b, "Leg A is the source", "Mirror state:", "Resync leg B from leg A? [y/N]"} {
		if !strings.Contains(screen, want) {
			t.Errorf("the prompt does not show %q:\n%s", want, screen)
		}
	}
	unchanged(t, a, imgA, "resync --prefer answered n")
	unchanged(t, b, imgB, "resync --prefer answered n")

	if _, stderr, code := runCLI(t, nil, "mirror", "resync", "--prefer", "C", "file://"+a, "file://"+b); code != ExitUsage {
		t.Fatalf("--prefer C: exit %d %q", code, stderr)
	}
	// --yes is not refused for want of confirmation (what --prefer then
	// does to an in-sync pair is the assembly's decision).
	if _, stderr, _ := runCLI(t, nil, "mirror", "resync", "--prefer", "A", "--yes", "file://"+a, "file://"+b); strings.Contains(stderr, "--yes") {
		t.Fatalf("resync --prefer --yes still asks for --yes: %q", stderr)
	}
	// A plain resync never asks.
	if _, stderr, code := runCLI(t, nil, "mirror", "resync", "file://"+a, "file://"+b); code != 0 {
		t.Fatalf("resync: exit %d %s", code, stderr)
	}
}
