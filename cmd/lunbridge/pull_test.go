package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockcopy"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// The test binary doubles as the lunbridge binary: a subprocess started by
// cliCommand runs main() instead of the tests.
func init() {
	if os.Getenv("LUNBRIDGE_COPYTEST_MAIN") == "1" {
		main()
	}
}

func cliCommand(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "LUNBRIDGE_COPYTEST_MAIN=1")
	return cmd
}

// runCLI runs lunbridge with args and returns stdout, stderr and the exit code.
func runCLI(t testing.TB, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	cmd := cliCommand(t, args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// writeImage writes a random image of size bytes with holes and zero runs.
func writeImage(t testing.TB, path string, size int64, seed uint64) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 3))
	want := make([]byte, size)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; {
		n := min(size-off, (r.Int64N(2<<20)/4096+1)*4096)
		if r.IntN(3) > 0 {
			p := want[off : off+n]
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			if _, err := f.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
		}
		off += n
	}
	return want
}

// hexblk is the blkhash of p (sha256, 64 KiB blocks), written out plainly.
func hexblk(p []byte) string {
	o := sha256.New()
	for i := 0; i < len(p); i += 64 << 10 {
		d := sha256.Sum256(p[i:min(i+64<<10, len(p))])
		o.Write(d[:])
	}
	o.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(p))))
	return hex.EncodeToString(o.Sum(nil))
}

func hexsum(p []byte) string {
	s := sha256.Sum256(p)
	return hex.EncodeToString(s[:])
}

func diskUsage(t testing.TB, path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Blocks * 512
}

func TestPullCLIRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	want := writeImage(t, src, 32<<20, 1)
	out := filepath.Join(dir, "out.img")
	stdout, stderr, code := runCLI(t, nil, "pull", "--json", "--checksum", "sha256", "--chunk", "256k", "file://"+src, out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if stderr != "" {
		t.Fatalf("stderr not empty on a non-TTY without --progress: %q", stderr)
	}
	var sum struct {
		BytesRead    int64   `json:"bytes_read"`
		BytesWritten int64   `json:"bytes_written"`
		HolesBytes   int64   `json:"holes_bytes"`
		Seconds      float64 `json:"seconds"`
		MBPerS       float64 `json:"mb_per_s"`
		SHA256       string  `json:"sha256"`
		File         string  `json:"file"`
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("json: %v: %q", err, stdout)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("pulled image differs")
	}
	if sum.SHA256 != hexsum(want) || sum.File != out || sum.HolesBytes == 0 || sum.BytesWritten+sum.HolesBytes != 32<<20 {
		t.Fatalf("summary %+v", sum)
	}
	if du := diskUsage(t, out); du > sum.BytesWritten+(1<<20) {
		t.Fatalf("du %d > data %d: holes not preserved", du, sum.BytesWritten)
	}
	tool := testenv.RequireTool(t, "sha256sum")
	check := exec.Command(tool, "-c", "out.img.sha256")
	check.Dir = dir
	if b, err := check.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c: %v: %s", err, b)
	}

	// Refuses to overwrite; --force does.
	if _, stderr, code := runCLI(t, nil, "pull", "file://"+src, out); code != ExitUsage || !strings.Contains(stderr, "--force") {
		t.Fatalf("overwrite: exit %d %q", code, stderr)
	}
	if _, stderr, code := runCLI(t, nil, "pull", "--force", "--checksum", "none", "file://"+src, out); code != 0 {
		t.Fatalf("--force: exit %d %q", code, stderr)
	}

	// Range + progress on a non-TTY.
	part := filepath.Join(dir, "part.img")
	_, stderr, code = runCLI(t, nil, "pull", "--progress", "--offset", "1M", "--length", "4MiB", "file://"+src, part)
	if code != 0 || !strings.Contains(stderr, "pull ") {
		t.Fatalf("range: exit %d %q", code, stderr)
	}
	got, _ = os.ReadFile(part)
	if !bytes.Equal(got, want[1<<20:5<<20]) {
		t.Fatal("range pull differs")
	}
}

func TestPullCLIStdout(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	want := writeImage(t, src, 24<<20, 2)
	stdout, stderr, code := runCLI(t, nil, "pull", "--parallel", "16", "--chunk", "64k", "file://"+src, "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !bytes.Equal([]byte(stdout), want) {
		t.Fatal("stdout stream differs")
	}
}

// waitResume polls the sidecar until it records at least min bytes.
func waitResume(t *testing.T, path string, min int64, limit time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if done, _, err := blockcopy.ReadResume(path); err == nil && done >= min {
			return done
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the pull did not checkpoint %d bytes within %v", min, limit)
	return 0
}

func TestPullCLIKill9Resume(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	want := writeImage(t, src, 48<<20, 3)
	out := filepath.Join(dir, "out.img")
	cmd := cliCommand(t, "pull", "--rate-limit", "6M", "--chunk", "256k", "file://"+src, out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitResume(t, out, 8<<20, 20*time.Second)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	done, total, err := blockcopy.ReadResume(out)
	if err != nil || done >= total {
		t.Fatalf("after kill -9: done %d of %d, %v", done, total, err)
	}
	t.Logf("killed with %d of %d bytes checkpointed", done, total)

	// Resuming from another source of the same size is refused.
	other := filepath.Join(dir, "other.img")
	writeImage(t, other, 48<<20, 4)
	if _, stderr, code := runCLI(t, nil, "pull", "--resume", "file://"+other, out); code == 0 || !strings.Contains(stderr, "does not match") {
		t.Fatalf("resume from another source: exit %d %q", code, stderr)
	}

	stdout, stderr, code := runCLI(t, nil, "pull", "--resume", "--json", "file://"+src, out)
	if code != 0 {
		t.Fatalf("resume: exit %d %s", code, stderr)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("resumed image differs")
	}
	// The default checksum is the blkhash; its state travelled in the
	// sidecar across the kill.
	var sum struct {
		Blkhash string `json:"blkhash"`
		Algo    string `json:"checksum_algo"`
		Resumed int64  `json:"resumed_bytes"`
	}
	json.Unmarshal([]byte(stdout), &sum)
	if sum.Blkhash != hexblk(want) || sum.Algo != "blkhash" || sum.Resumed != done {
		t.Fatalf("resume summary %+v, want blkhash %s resumed %d", sum, hexblk(want), done)
	}
	if _, err := os.Stat(out + blockcopy.ResumeSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("sidecar not removed")
	}
	line, _ := os.ReadFile(out + ".blksum")
	if !strings.Contains(string(line), "\n"+hexblk(want)+"  out.img\n") {
		t.Fatalf("blksum file %q", line)
	}
	// verify checks the LUN against the checksum file: equal, then one
	// flipped byte found (exit 6).
	if _, stderr, code := runCLI(t, nil, "verify", "file://"+src, out+".blksum"); code != 0 {
		t.Fatalf("verify against out.img.blksum: exit %d %s", code, stderr)
	}
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{want[12345] ^ 1}, 12345)
	f.Close()
	if stdout, stderr, code := runCLI(t, nil, "verify", "--json", "file://"+src, out+".blksum"); code != ExitMismatch || !strings.Contains(stdout, `"equal": false`) {
		t.Fatalf("verify of a changed LUN against out.img.blksum: exit %d %s %s", code, stdout, stderr)
	}
}

func TestPullCLISigint(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	want := writeImage(t, src, 16<<20, 5)
	out := filepath.Join(dir, "out.img")
	cmd := cliCommand(t, "pull", "--rate-limit", "8M", "--chunk", "128k", "file://"+src, out)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	start := time.Now()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitInterrupted {
		t.Fatalf("after SIGINT: %v, stderr %q", err, errb.String())
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %v to stop", el)
	}
	if !strings.Contains(errb.String(), "interrupted at") || !strings.Contains(errb.String(), "--resume") {
		t.Fatalf("note: %q", errb.String())
	}
	done, _, err := blockcopy.ReadResume(out)
	if err != nil || done == 0 {
		t.Fatalf("sidecar after SIGINT: %d %v", done, err)
	}
	if _, stderr, code := runCLI(t, nil, "pull", "--resume", "file://"+src, out); code != 0 {
		t.Fatalf("resume: %d %s", code, stderr)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("image differs after SIGINT + resume")
	}
}

func TestPullCLIRateLimit(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	f, _ := os.Create(src)
	f.Write(bytes.Repeat([]byte{7}, 16<<20))
	f.Close()
	start := time.Now()
	if _, stderr, code := runCLI(t, nil, "pull", "--rate-limit", "16M", "file://"+src, filepath.Join(dir, "o")); code != 0 {
		t.Fatal(stderr)
	}
	el := time.Since(start)
	t.Logf("16 MiB at --rate-limit 16M: %v", el)
	if el < 800*time.Millisecond || el > 5*time.Second {
		t.Fatalf("took %v, want about 1s", el)
	}
}

func TestPullSizeFlags(t *testing.T) {
	for in, want := range map[string]int64{"512": 512, "4k": 4096, "4K": 4096, "1M": 1 << 20, "1MiB": 1 << 20, "1MB": 1 << 20, "2G": 2 << 30, "1.5G": 3 << 29, "50M": 50 << 20} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "k", "-1", "1X", "abc"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
	if _, _, code := runCLI(t, nil, "pull", "--chunk", "lots", "file:///dev/null", "-"); code != ExitUsage {
		t.Fatalf("bad --chunk: exit %d", code)
	}
}
