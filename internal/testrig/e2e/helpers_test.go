package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
	tib = 1 << 40

	initiatorName = "iqn.2026-11.org.lunbridge:e2e"
)

// lbPath is the lunbridge binary built by TestMain.
var lbPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lunbridge-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	lbPath = filepath.Join(dir, "lunbridge")
	build := exec.Command(goBin, "build", "-o", lbPath, "github.com/lunbridge/lunbridge/cmd/lunbridge")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building lunbridge: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lbEnv is the environment of every lunbridge run: the caller's, without
// any LUNBRIDGE_* setting, plus a fixed initiator name.
func lbEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LUNBRIDGE_") {
			env = append(env, kv)
		}
	}
	return append(env, "LUNBRIDGE_INITIATOR_NAME="+initiatorName)
}

// result is the outcome of one finished command.
type result struct {
	stdout, stderr string
	code           int
	dur            time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d after %v\nstdout:\n%s\nstderr:\n%s", r.code, r.dur.Round(time.Millisecond), r.stdout, r.stderr)
}

// run runs a command with a timeout; a timeout fails the test.
func run(t testing.TB, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if name == lbPath {
		cmd.Env = lbEnv()
	}
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), dur: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out after %v\n%s", filepath.Base(name), strings.Join(args, " "), timeout, r)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return r
}

// runOK is run, failing the test on a non-zero exit.
func runOK(t testing.TB, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	r := run(t, timeout, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: %s", filepath.Base(name), strings.Join(args, " "), r)
	}
	return r
}

// lb runs the lunbridge binary.
func lb(t testing.TB, timeout time.Duration, args ...string) result {
	t.Helper()
	return run(t, timeout, lbPath, args...)
}

func lbOK(t testing.TB, timeout time.Duration, args ...string) result {
	t.Helper()
	return runOK(t, timeout, lbPath, args...)
}

// tool returns the path of a peer tool (fails under CI, skips elsewhere).
func tool(t testing.TB, name string) string {
	t.Helper()
	return testenv.RequireTool(t, name)
}

// syncBuf is a goroutine-safe buffer.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a command running in the background.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout syncBuf
	stderr syncBuf
	lines  chan string // stdout lines
	done   chan struct{}
	err    error
}

// start starts a background command; t.Cleanup stops it (SIGTERM, then
// SIGKILL after 15 s) if it is still running.
func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: filepath.Base(name) + " " + strings.Join(args, " "), lines: make(chan string, 1024), done: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	if name == lbPath {
		p.cmd.Env = lbEnv()
	}
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.stdout.Write([]byte(sc.Text() + "\n"))
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.exited() {
			return
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			t.Errorf("%s: still running 15 s after SIGTERM; killing it", p.name)
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// line waits for the next stdout line.
func (p *proc) line(t testing.TB, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.done
			t.Fatalf("%s exited (%v) before printing a line\nstderr:\n%s", p.name, p.err, p.stderr.String())
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("%s printed nothing in %v\nstderr:\n%s", p.name, timeout, p.stderr.String())
	}
	return ""
}

// stop sends SIGTERM and waits for the exit; it returns the exit code.
func (p *proc) stop(t testing.TB, timeout time.Duration) int {
	t.Helper()
	if !p.exited() {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	return p.wait(t, timeout)
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s: did not exit within %v\nstderr:\n%s", p.name, timeout, p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// --- targets ---

var kinds = []string{targets.KindTgtd, targets.KindIstgt}

// eachKind runs f as a subtest on tgtd and on istgt, both at once (an
// istgt login takes about a second of idle time; the overlap keeps the
// package quick).
func eachKind(t *testing.T, f func(t *testing.T, kind string)) {
	for _, k := range kinds {
		t.Run(k, func(t *testing.T) { t.Parallel(); f(t, k) })
	}
}

// eachKindSerial is eachKind one after the other, for tests that report
// throughput figures.
func eachKindSerial(t *testing.T, f func(t *testing.T, kind string)) {
	for _, k := range kinds {
		t.Run(k, func(t *testing.T) { f(t, k) })
	}
}

// startTarget starts one target of the given kind with the LUNs.
func startTarget(t testing.TB, kind string, luns ...targets.LUN) *targets.Server {
	t.Helper()
	if kind == targets.KindIstgt {
		return targets.StartIstgt(t, targets.Target{LUNs: luns})
	}
	return targets.StartTgtd(t, targets.Target{LUNs: luns})
}

// proxyURL is srv.URL(ti, li) with the portal replaced by addr.
func proxyURL(srv *targets.Server, ti, li int, addr string) string {
	return strings.Replace(srv.URL(ti, li), srv.Portal, addr, 1)
}

// openLUN logs in with the library and opens a LUN; closed (logged out) in
// t.Cleanup.
func openLUN(t testing.TB, srv *targets.Server, ti, li int) *initiator.LUN {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := initiator.Dial(ctx, initiator.Config{
		InitiatorName: initiatorName + ":lib", TargetName: srv.Targets[ti].Name, Portal: srv.Portal,
		ReplacementTimeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatalf("login to %s: %v\n%s", srv.Targets[ti].Name, err, srv.LogTail(20))
	}
	l, err := initiator.OpenLUN(ctx, s, uint64(srv.LUNNumber(li)))
	if err != nil {
		s.Close()
		t.Fatalf("open LUN %d: %v", srv.LUNNumber(li), err)
	}
	l.SetOwnsSession(true)
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Logf("close LUN: %v", err)
		}
	})
	return l
}

// --- files ---

// scratch is a fresh directory in /dev/shm (RAM: fast, sparse-capable),
// removed at the end of the test.
func scratch(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "lunbridge-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// randBytes returns n pseudo-random bytes from seed.
func randBytes(seed uint64, n int) []byte {
	var s [32]byte
	binaryPutSeed(s[:], seed)
	p := make([]byte, n)
	rand.NewChaCha8(s).Read(p)
	return p
}

func binaryPutSeed(b []byte, seed uint64) {
	for i := range 8 {
		b[i] = byte(seed >> (8 * i))
	}
}

// fillRandom writes n pseudo-random bytes at off into path (no truncation).
func fillRandom(t testing.TB, path string, off, n int64, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var s [32]byte
	binaryPutSeed(s[:], seed)
	rng := rand.NewChaCha8(s)
	buf := make([]byte, 4*mib)
	for done := int64(0); done < n; {
		k := min(int64(len(buf)), n-done)
		rng.Read(buf[:k])
		if _, err := f.WriteAt(buf[:k], off+done); err != nil {
			t.Fatal(err)
		}
		done += k
	}
}

// makeFile creates a sparse file of the given size.
func makeFile(t testing.TB, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// readAt reads n bytes at off from path.
func readAt(t testing.TB, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, n)
	if _, err := f.ReadAt(p, off); err != nil {
		t.Fatalf("read %s [%d,+%d): %v", path, off, n, err)
	}
	return p
}

// writeAt writes p at off into path (no truncation).
func writeAt(t testing.TB, path string, p []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

// sameFiles fails the test unless a and b have the same size and bytes.
func sameFiles(t testing.TB, a, b string) {
	t.Helper()
	if err := compareFiles(a, b); err != nil {
		t.Fatal(err)
	}
}

func compareFiles(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	sa, _ := fa.Stat()
	sb, _ := fb.Stat()
	if sa.Size() != sb.Size() {
		return fmt.Errorf("%s is %d bytes, %s is %d bytes", a, sa.Size(), b, sb.Size())
	}
	ba, bb := make([]byte, 4*mib), make([]byte, 4*mib)
	for off := int64(0); off < sa.Size(); {
		na, err := io.ReadFull(fa, ba)
		if err != nil && err != io.ErrUnexpectedEOF {
			return err
		}
		if _, err := io.ReadFull(fb, bb[:na]); err != nil {
			return err
		}
		if !bytes.Equal(ba[:na], bb[:na]) {
			for i := range na {
				if ba[i] != bb[i] {
					return fmt.Errorf("%s and %s differ at byte %d: %#x != %#x", a, b, off+int64(i), ba[i], bb[i])
				}
			}
		}
		off += int64(na)
	}
	return nil
}

// blkhashFile is the blkhash (sha256, 64 KiB blocks) of a file: the block
// digests, then the length, under one SHA-256.
func blkhashFile(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o := sha256.New()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := io.ReadFull(f, buf)
		if k > 0 {
			d := sha256.Sum256(buf[:k])
			o.Write(d[:])
			n += int64(k)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	o.Write(binary.LittleEndian.AppendUint64(nil, uint64(n)))
	return hex.EncodeToString(o.Sum(nil))
}

// sha256File is the hex SHA-256 of a file.
func sha256File(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// allocated is the space a file takes on disk (st_blocks * 512).
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// copySummary mirrors the --json output of pull and push.
type copySummary struct {
	BytesRead    int64   `json:"bytes_read"`
	BytesWritten int64   `json:"bytes_written"`
	HolesBytes   int64   `json:"holes_bytes"`
	TotalBytes   int64   `json:"total_bytes"`
	ResumedBytes int64   `json:"resumed_bytes"`
	Seconds      float64 `json:"seconds"`
	MBPerS       float64 `json:"mb_per_s"`
	SHA256       string  `json:"sha256"`
	Blkhash      string  `json:"blkhash"`
	ChecksumAlgo string  `json:"checksum_algo"`
	File         string  `json:"file"`
	Device       string  `json:"device"`
}

func parseJSON(t testing.TB, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("parse JSON: %v\n%s", err, s)
	}
}

// mbps formats a rate.
func mbps(bytes int64, d time.Duration) string {
	return strconv.FormatFloat(float64(bytes)/1e6/d.Seconds(), 'f', 0, 64) + " MB/s"
}

// needTools requires every named tool.
func needTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		testenv.RequireTool(t, n)
	}
}

// fsck runs e2fsck -f -n on an image and fails unless it is clean.
func fsck(t testing.TB, image string) {
	t.Helper()
	r := run(t, 2*time.Minute, testenv.RequireTool(t, "e2fsck"), "-f", "-n", image)
	if r.code != 0 {
		t.Fatalf("e2fsck -f -n %s: %s", image, r)
	}
}

// makeTree builds a directory tree of about total bytes of pseudo-random
// files of odd sizes (some empty), nested directories and symlinks.
func makeTree(t testing.TB, total int, seed uint64) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "tree")
	written := 0
	for i := 0; written < total; i++ {
		dir := filepath.Join(root, fmt.Sprintf("d%d", i%5), fmt.Sprintf("e%d", i%3))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		n := []int{0, 1, 511, 4097, 70001, 300007}[i%6]
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), randBytes(seed+uint64(i), n), 0o644); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			os.Symlink(fmt.Sprintf("f%d", i), filepath.Join(dir, fmt.Sprintf("l%d", i)))
		}
		written += n
	}
	return root
}
