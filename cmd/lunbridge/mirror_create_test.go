package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

// legFile creates a sparse leg image of size bytes with data written at
// the given offsets.
func legFile(t *testing.T, path string, size int64, data map[int64][]byte) []byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, b := range data {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func unchanged(t *testing.T, path string, want []byte, what string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %s was changed", what, path)
	}
}

// TestMirrorCreateAsksFirst (review #10, issue 20 item 7): without a
// terminal, mirror create writes nothing unless --yes, and its refusal
// says what would be destroyed: both legs' tails, all of leg B, and what
// is recognised on them.
func TestMirrorCreateAsksFirst(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	ext := make([]byte, 2048)
	ext[1080], ext[1081] = 0x53, 0xEF
	imgA := legFile(t, a, 16<<20, map[int64][]byte{0: ext, 5 << 20: []byte("leg A data")})
	imgB := legFile(t, b, 16<<20, map[int64][]byte{0: []byte("XFSB"), 9 << 20: []byte("leg B data")})

	_, stderr, code := runCLI(t, nil, "mirror", "create", "file://"+a, "file://"+b)
	if code != ExitUsage {
		t.Fatalf("mirror create without --yes and without a terminal: exit %d, want %d (stderr %q)", code, ExitUsage, stderr)
	}
	for _, want := range []string{"add --yes", "all of leg B", "ext2/3/4 file system", "XFS file system", "leg A", "file://" + b} {
		if !strings.Contains(stderr, want) {
			t.Errorf("refusal does not say %q:\n%s", want, stderr)
		}
	}
	unchanged(t, a, imgA, "refused create")
	unchanged(t, b, imgB, "refused create")

	stdout, stderr, code := runCLI(t, nil, "mirror", "create", "--yes", "file://"+a, "file://"+b)
	if code != 0 || !strings.Contains(stdout, "created") {
		t.Fatalf("mirror create --yes: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// A second create over the new mirror is refused the same way and
	// names the existing mirror.
	_, stderr, code = runCLI(t, nil, "mirror", "create", "file://"+a, "file://"+b)
	if code != ExitUsage || !strings.Contains(stderr, "lunbridge mirror metadata") {
		t.Fatalf("create over a mirror without --yes: exit %d %q", code, stderr)
	}
}

// TestMirrorCreateRefusesSameLUN: the same LUN as both legs is refused,
// even with --yes, by URL and through another path to the same file.
func TestMirrorCreateRefusesSameLUN(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.img")
	img := legFile(t, a, 16<<20, map[int64][]byte{4096: []byte("data")})
	link := filepath.Join(dir, "link.img")
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"file://" + a, "file://" + link, "file://" + dir + "/./a.img"} {
		_, stderr, code := runCLI(t, nil, "mirror", "create", "--yes", "file://"+a, b)
		if code != ExitUsage || !strings.Contains(stderr, "two different LUNs") {
			t.Fatalf("create with %s twice: exit %d %q", b, code, stderr)
		}
		unchanged(t, a, img, "same-LUN create")
	}
	if _, stderr, code := runCLI(t, nil, "mirror", "create", "--yes", "iscsi://127.0.0.1:1/iqn.2001-04.com.example:a/1", "iscsi://127.0.0.1:1/iqn.2001-04.com.Example:A/1"); code != ExitUsage || !strings.Contains(stderr, "two different LUNs") {
		t.Fatalf("same iSCSI URL twice: exit %d %q", code, stderr)
	}
}

// TestMirrorCreateAssumeCleanProven (review #10): --assume-clean is taken
// only for legs proven equal; legs that differ are refused with exit 6
// naming the first differing offset, and nothing is written; --force
// skips the proof with a warning.
func TestMirrorCreateAssumeCleanProven(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")

	// Fresh sparse legs: proven from allocation alone.
	legFile(t, a, 16<<20, nil)
	legFile(t, b, 16<<20, nil)
	if stdout, stderr, code := runCLI(t, nil, "mirror", "create", "--yes", "--assume-clean", "file://"+a, "file://"+b); code != 0 {
		t.Fatalf("fresh legs: exit %d\n%s%s", code, stdout, stderr)
	}

	// Equal data: proven by the compare.
	same := map[int64][]byte{1 << 20: bytes.Repeat([]byte("same"), 4096)}
	legFile(t, a, 16<<20, same)
	legFile(t, b, 16<<20, same)
	if stdout, stderr, code := runCLI(t, nil, "mirror", "create", "--yes", "--assume-clean", "file://"+a, "file://"+b); code != 0 {
		t.Fatalf("equal legs: exit %d\n%s%s", code, stdout, stderr)
	}

	// Different data: refused, nothing written.
	imgA := legFile(t, a, 16<<20, same)
	imgB := legFile(t, b, 16<<20, map[int64][]byte{1 << 20: bytes.Repeat([]byte("same"), 4096), 7<<20 + 1536: []byte("x"), 11 << 20: []byte("y")})
	_, stderr, code := runCLI(t, nil, "mirror", "create", "--yes", "--assume-clean", "file://"+a, "file://"+b)
	if code != ExitMismatch {
		t.Fatalf("different legs with --assume-clean: exit %d, want %d (stderr %q)", code, ExitMismatch, stderr)
	}
	if want := fmt.Sprintf("offset %d", 7<<20+1536); !strings.Contains(stderr, want) || !strings.Contains(stderr, "without --assume-clean") {
		t.Fatalf("refusal does not name %q or the way out: %q", want, stderr)
	}
	unchanged(t, a, imgA, "refused --assume-clean")
	unchanged(t, b, imgB, "refused --assume-clean")

	// --force: created anyway, with a warning.
	_, stderr, code = runCLI(t, nil, "mirror", "create", "--yes", "--assume-clean", "--force", "file://"+a, "file://"+b)
	if code != 0 || !strings.Contains(stderr, "NOT checked") {
		t.Fatalf("--force: exit %d %q", code, stderr)
	}
	if _, stderr, code := runCLI(t, nil, "mirror", "create", "--yes", "--force", "file://"+a, "file://"+b); code != ExitUsage {
		t.Fatalf("--force without --assume-clean: exit %d %q", code, stderr)
	}
}

// openPTY returns a pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// runOnTerminal runs lunbridge with stdin and stderr on a terminal,
// answers the first [y/N] question with answer, and returns what the
// terminal showed, stdout and the exit code.
func runOnTerminal(t *testing.T, answer string, args ...string) (string, string, int) {
	t.Helper()
	master, slave := openPTY(t)
	cmd := cliCommand(t, args...)
	var out bytes.Buffer
	cmd.Stdin, cmd.Stderr, cmd.Stdout = slave, slave, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var (
		mu     sync.Mutex
		screen bytes.Buffer
	)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		asked := false
		for {
			n, err := master.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			ask := !asked && strings.Contains(screen.String(), "[y/N]")
			mu.Unlock()
			if ask {
				asked = true
				io.WriteString(master, answer+"\n")
			}
			if err != nil {
				return
			}
		}
	}()
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	var err error
	select {
	case err = <-waitErr:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-waitErr
		t.Fatalf("lunbridge %v did not finish on the terminal", args)
	}
	master.SetReadDeadline(time.Now().Add(time.Second))
	<-readDone
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return screen.String(), out.String(), code
}

// TestMirrorCreatePromptOnTerminal: on a terminal mirror create shows both
// legs and what will be overwritten, and writes nothing unless answered y.
func TestMirrorCreatePromptOnTerminal(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	gpt := make([]byte, 1024)
	gpt[510], gpt[511] = 0x55, 0xAA
	copy(gpt[512:], "EFI PART")
	imgA := legFile(t, a, 16<<20, map[int64][]byte{0: gpt})
	lvm := make([]byte, 1024)
	copy(lvm[512:], "LABELONE")
	imgB := legFile(t, b, 16<<20, map[int64][]byte{0: lvm})

	screen, _, code := runOnTerminal(t, "n", "mirror", "create", "file://"+a, "file://"+b)
	if code != ExitFailure || !strings.Contains(screen, "not confirmed") {
		t.Fatalf("answered n: exit %d\n%s", code, screen)
	}
	for _, want := range []string{"leg A  file://" + a, "leg B  file://" + b, "GPT partition table", "LVM2 physical volume",
		"ALL of leg B", "mirror metadata", "16.0 MiB", "Create the mirror? [y/N]"} {
		if !strings.Contains(screen, want) {
			t.Errorf("the prompt does not show %q:\n%s", want, screen)
		}
	}
	if strings.Contains(screen, "MBR") {
		t.Errorf("a GPT's protective MBR is reported as an MBR:\n%s", screen)
	}
	unchanged(t, a, imgA, "create answered n")
	unchanged(t, b, imgB, "create answered n")

	screen, stdout, code := runOnTerminal(t, "y", "mirror", "create", "file://"+a, "file://"+b)
	if code != 0 || !strings.Contains(stdout, "created") {
		t.Fatalf("answered y: exit %d\n%s\n%s", code, screen, stdout)
	}
	gotB, _ := os.ReadFile(b)
	if !bytes.Equal(gotB[:8<<20], imgA[:8<<20]) {
		t.Fatal("leg B was not synced from leg A")
	}
}

// TestMirrorCreateRealTargets: on tgtd, two fresh thin LUNs pass the
// --assume-clean proof; one written block makes them differ (exit 6, at
// that offset); the same LUN reached through a second portal (another
// URL, same WWID) is refused even with --yes.
func TestMirrorCreateRealTargets(t *testing.T) {
	const size = 32 << 20
	s := targets.StartWith(t, targets.KindTgtd, targets.Options{ExtraPortals: []string{"127.0.0.2"}},
		targets.Target{LUNs: []targets.LUN{{Size: size, Thin: true}, {Size: size, Thin: true}}})
	a, b := s.URL(0, 0), s.URL(0, 1)

	// Without --yes and a terminal: refused, and the legs are identified.
	r := lbRun(t, time.Minute, nil, "mirror", "create", a, b)
	if r.code != ExitUsage {
		t.Fatalf("create without --yes: exit %d %q", r.code, r.stderr)
	}
	for _, want := range []string{"IET VIRTUAL-DISK", "serial ", "WWID ", "32.0 MiB (512-byte blocks)", "leg B  " + b} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the legs' identity lacks %q:\n%s", want, r.stderr)
		}
	}

	r = lbRun(t, 2*time.Minute, nil, "mirror", "create", "--yes", "--assume-clean", a, b)
	r.mustOK(t, "create --assume-clean on fresh thin LUNs")
	if !strings.Contains(r.stdout, "proven equal") {
		t.Fatalf("no proof reported: %s", r.stdout)
	}
	t.Logf("%s", r.stdout)

	// Dirty leg B's data area behind the mirror's back.
	f, err := os.OpenFile(s.BackingFile(0, 1), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("stale"), 3<<20+512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r = lbRun(t, 2*time.Minute, nil, "mirror", "create", "--yes", "--assume-clean", a, b)
	if r.code != ExitMismatch || !strings.Contains(r.stderr, fmt.Sprintf("offset %d", 3<<20+512)) {
		t.Fatalf("differing legs: exit %d %q", r.code, r.stderr)
	}

	other := strings.Replace(a, s.Portal, s.ExtraPortals[0], 1)
	r = lbRun(t, time.Minute, nil, "mirror", "create", "--yes", a, other)
	if r.code != ExitUsage || !strings.Contains(r.stderr, "same LUN (WWID") {
		t.Fatalf("one LUN through two portals: exit %d %q", r.code, r.stderr)
	}
}
