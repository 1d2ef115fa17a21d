package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// The test binary doubles as lunbridge for the mount tests.
func init() {
	if os.Getenv("LUNBRIDGE_MOUNTTEST_MAIN") == "1" {
		main()
	}
}

func requireFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Unavailable(t, "/dev/fuse: %v", err)
	}
	testenv.RequireRoot(t)
}

// mountImage creates a sparse image of size bytes and an empty mountpoint.
func mountImage(t *testing.T, size int64) (img, dir string) {
	tmp := t.TempDir()
	img = filepath.Join(tmp, "lun.img")
	dir = filepath.Join(tmp, "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, leave no mount behind (registered after TempDir,
	// so it runs before the directory is removed).
	t.Cleanup(func() { detachAll(t, dir) })
	return img, dir
}

// detachAll lazily unmounts everything stacked on dir.
func detachAll(t *testing.T, dir string) {
	for range 8 {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return // EINVAL: not a mountpoint (any more)
		}
	}
}

func lunbridgeCmd(args ...string) *exec.Cmd {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, append([]string{"--log-level", "info"}, args...)...)
	cmd.Env = append(os.Environ(), "LUNBRIDGE_MOUNTTEST_MAIN=1")
	return cmd
}

// mountProc is a foreground `lunbridge mount`.
type mountProc struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	file   string
	exited chan struct{}
	code   int
}

func startMount(t *testing.T, args ...string) *mountProc {
	t.Helper()
	p := &mountProc{cmd: lunbridgeCmd(append([]string{"mount"}, args...)...), exited: make(chan struct{})}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	line := make(chan string, 1)
	go func() {
		br := bufio.NewReader(out)
		l, _ := br.ReadString('\n')
		line <- strings.TrimSpace(l)
		io.Copy(io.Discard, br)
		err := p.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		}
		close(p.exited)
	}()
	select {
	case p.file = <-line:
	case <-time.After(30 * time.Second):
		t.Fatalf("mount printed nothing in 30s; stderr: %s", &p.stderr)
	}
	if p.file == "" {
		<-p.exited
		t.Fatalf("mount exited (%d) without printing the file; stderr: %s", p.code, &p.stderr)
	}
	return p
}

func (p *mountProc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(d):
		t.Fatalf("mount still running after %v; stderr: %s", d, &p.stderr)
		return -1
	}
}

func writeAt(t *testing.T, path string, p []byte, off int64) {
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

func readAt(t *testing.T, path string, n int, off int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, n)
	if _, err := f.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMountCLISignal: foreground mount, unaligned write, SIGTERM → the
// mount is gone, the data is in the image, exit 0.
func TestMountCLISignal(t *testing.T) {
	requireFUSE(t)
	img, dir := mountImage(t, 16<<20)
	p := startMount(t, "--name", "lun.raw", "file://"+img, dir)
	if p.file != filepath.Join(dir, "lun.raw") {
		t.Fatalf("printed %q", p.file)
	}
	if st, err := os.Stat(p.file); err != nil || st.Size() != 16<<20 {
		t.Fatalf("stat: %v %v", st, err)
	}
	data := []byte("hello from the FUSE bridge")
	writeAt(t, p.file, data, 12345)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr: %s", code, &p.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "lun.raw")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after exit the file is still there: %v", err)
	}
	if got := readAt(t, img, len(data), 12345); !bytes.Equal(got, data) {
		t.Errorf("image has %q", got)
	}
}

// TestMountCLIUmount: `lunbridge umount --pid-file` ends a foreground mount.
func TestMountCLIUmount(t *testing.T) {
	requireFUSE(t)
	img, dir := mountImage(t, 16<<20)
	pidf := filepath.Join(t.TempDir(), "pid")
	p := startMount(t, "--read-only", "--pid-file", pidf, "file://"+img, dir)
	if _, err := os.OpenFile(p.file, os.O_RDWR, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("read-only mount: open O_RDWR: %v", err)
	}
	if b, _ := os.ReadFile(pidf); strings.TrimSpace(string(b)) != strconv.Itoa(p.cmd.Process.Pid) {
		t.Errorf("pid file %q, want %d", b, p.cmd.Process.Pid)
	}
	// A second mount on a live one is refused with a hint.
	out, err := lunbridgeCmd("mount", "file://"+img, dir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "lunbridge umount") {
		t.Errorf("second mount: %v\n%s", err, out)
	}
	if out, err := lunbridgeCmd("umount", "--pid-file", pidf, dir).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	// The process has exited (a zombie counts); our Wait reaps it soon.
	if err := unix.Kill(p.cmd.Process.Pid, 0); err == nil {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/stat")
		if i := bytes.LastIndexByte(b, ')'); i < 0 || i+2 >= len(b) || b[i+2] != 'Z' {
			t.Fatalf("umount --pid-file returned before the mount process exited: %s", b)
		}
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("mount process not reaped")
	}
	if p.code != 0 {
		t.Fatalf("mount exit %d; stderr: %s", p.code, &p.stderr)
	}
	if _, err := os.Stat(pidf); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left behind: %v", err)
	}
	if out, err := lunbridgeCmd("umount", dir).CombinedOutput(); err == nil {
		t.Errorf("umount of an unmounted dir succeeded: %s", out)
	}
}

// TestMountCLIStale: SIGKILL leaves "transport endpoint is not connected";
// the next mount on the same directory clears it and works.
func TestMountCLIStale(t *testing.T) {
	requireFUSE(t)
	img, dir := mountImage(t, 16<<20)
	p := startMount(t, "file://"+img, dir)
	writeAt(t, p.file, []byte("before the kill"), 0)
	p.cmd.Process.Kill()
	p.wait(t, 10*time.Second)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); !errors.Is(err, unix.ENOTCONN) {
		t.Fatalf("after SIGKILL statfs(mountpoint) = %v, want ENOTCONN", err)
	}
	p2 := startMount(t, "file://"+img, dir)
	if got := readAt(t, p2.file, 15, 0); string(got) != "before the kill" {
		t.Errorf("read %q after recovery", got)
	}
	p2.cmd.Process.Signal(syscall.SIGINT)
	if code := p2.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr: %s", code, &p2.stderr)
	}
}

// TestMountCLIDaemon: --daemon returns once mounted; umount ends the child.
func TestMountCLIDaemon(t *testing.T) {
	requireFUSE(t)
	img, dir := mountImage(t, 16<<20)
	pidf := filepath.Join(t.TempDir(), "pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidf); err == nil {
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
	})
	out, err := lunbridgeCmd("mount", "--daemon", "--pid-file", pidf, "file://"+img, dir).Output()
	if err != nil {
		t.Fatalf("mount --daemon: %v", err)
	}
	file := strings.TrimSpace(string(out))
	if file != filepath.Join(dir, "disk.img") {
		t.Fatalf("printed %q", out)
	}
	b, err := os.ReadFile(pidf)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("daemon %d is not a session leader (sid %d)", pid, sid)
	}
	writeAt(t, file, []byte("daemon"), 4097)
	if out, err := lunbridgeCmd("umount", "--pid-file", pidf, dir).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	if got := readAt(t, img, 6, 4097); string(got) != "daemon" {
		t.Errorf("image has %q", got)
	}
	// A failing daemon start reports the reason and a non-zero exit.
	out, err = lunbridgeCmd("mount", "--daemon", "file://"+filepath.Join(t.TempDir(), "missing.img"), dir).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(string(out), "missing.img") {
		t.Errorf("daemon with a missing image: %v\n%s", err, out)
	}
}

func TestMountCLIUsage(t *testing.T) {
	for _, args := range [][]string{
		{"mount"},
		{"mount", "file:///x"},
		{"mount", "nbd://x", "/tmp"},
		{"mount", "--daemon", "--foreground", "file:///x", "/tmp"},
		{"mount", "--name", "a/b", "file:///x", "/tmp"},
		{"mount", "--mode", "0999", "file:///x", "/tmp"},
		{"mount", "--mode", "04755", "file:///x", "/tmp"},
		{"mount", "--group", "no-such-group-here", "file:///x", "/tmp"},
		{"umount"},
	} {
		out, err := lunbridgeCmd(args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != ExitUsage {
			t.Errorf("%v: %v, want exit %d\n%s", args, err, ExitUsage, out)
		}
	}
}

// TestMountCLIMode: the file is 0600 unless --mode/--group say otherwise
// (review #11).
func TestMountCLIMode(t *testing.T) {
	requireFUSE(t)
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, tc := range []struct {
		args []string
		mode os.FileMode
		gid  int
	}{
		{nil, 0o600, os.Getgid()},
		{[]string{"--group", "4242"}, 0o660, 4242},
		{[]string{"--mode", "0640", "--group", "4242"}, 0o640, 4242},
		{[]string{"--mode", "644", "--read-only"}, 0o444, os.Getgid()},
	} {
		img, dir := mountImage(t, 1<<20)
		p := startMount(t, append(tc.args, "file://"+img, dir)...)
		st, err := os.Stat(p.file)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != tc.mode || int(st.Sys().(*syscall.Stat_t).Gid) != tc.gid {
			t.Errorf("mount %v: mode %v gid %d, want %v gid %d", tc.args, st.Mode(), st.Sys().(*syscall.Stat_t).Gid, tc.mode, tc.gid)
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t, 20*time.Second); code != 0 {
			t.Fatalf("exit %d; stderr: %s", code, &p.stderr)
		}
	}
}
