package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// This file sorts before serve_test.go, so its init runs before the one
// that calls main(): a child started with LUNBRIDGE_TEST_LISTEN_PID=1
// claims the LISTEN_FDS for itself, as systemd's exec does after fork.
func init() {
	if os.Getenv("LUNBRIDGE_TEST_LISTEN_PID") == "1" {
		os.Unsetenv("LUNBRIDGE_TEST_LISTEN_PID")
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
}

// startServeFiles is startServe with descriptors handed to the child as
// fd 3, 4, ...
func startServeFiles(t *testing.T, files []*os.File, env []string, args ...string) *serveProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"--log-level", "info"}, args...)...)
	cmd.Env = append(append(os.Environ(), "LUNBRIDGE_SERVETEST_MAIN=1"), env...)
	cmd.ExtraFiles = files
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd, stdout: bufio.NewReader(out), stderr: new(bytes.Buffer), exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	lineCh := make(chan string, 1)
	go func() {
		l, _ := p.stdout.ReadString('\n')
		lineCh <- strings.TrimSpace(l)
		io.Copy(io.Discard, p.stdout)
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		}
		close(p.exited)
	}()
	select {
	case p.line = <-lineCh:
	case <-time.After(20 * time.Second):
		t.Fatalf("serve printed nothing in 20s; stderr: %s", p.stderr)
	}
	if p.line == "" {
		<-p.exited
		t.Fatalf("serve exited (%d) without printing a URI; stderr: %s", p.code, p.stderr)
	}
	return p
}

// notifyListener is a stand-in for systemd's notification socket.
func notifyListener(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return path, c
}

func readNotify(t *testing.T, c *net.UnixConn, limit time.Duration) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(limit))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no sd_notify datagram within %v: %v", limit, err)
	}
	return string(buf[:n])
}

// TestServeNotify: under Type=notify, serve reports READY=1 (with the URI
// as STATUS) once it listens and has printed the URI, and STOPPING=1 at
// SIGTERM, then exits 0.
func TestServeNotify(t *testing.T) {
	img, _ := serveImage(t, 1<<20)
	npath, nc := notifyListener(t)
	sock := filepath.Join(t.TempDir(), "s.sock")
	p := startServe(t, []string{"NOTIFY_SOCKET=" + npath}, "serve", "--listen", "unix:"+sock, "--persistent", "file://"+img)
	msg := readNotify(t, nc, 10*time.Second)
	if want := "READY=1\nSTATUS=serving " + p.line; msg != want {
		t.Fatalf("first notification %q, want %q", msg, want)
	}
	// Ready means ready: a client gets in at once.
	if c, err := net.Dial("unix", sock); err != nil {
		t.Fatalf("READY=1 sent but the socket refuses: %v", err)
	} else {
		c.Close()
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	msg = readNotify(t, nc, 10*time.Second)
	if !strings.HasPrefix(msg, "STOPPING=1\n") {
		t.Fatalf("notification after SIGTERM %q, want STOPPING=1", msg)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; stderr: %s", code, p.stderr)
	}
}

// TestServeSocketActivation: with LISTEN_FDS=1 and LISTEN_PID set to the
// child's pid, serve takes the listening socket on fd 3 (as a
// lunbridge-serve@.socket unit passes it) instead of --listen.
func TestServeSocketActivation(t *testing.T) {
	testenv.RequireTool(t, "nbdinfo")
	img, _ := serveImage(t, 2<<20)
	dir := t.TempDir()
	sock := filepath.Join(dir, "activated.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // the child holds the socket now (f is a dup)
	defer f.Close()
	ignored := filepath.Join(dir, "ignored.sock")
	npath, nc := notifyListener(t)
	p := startServeFiles(t, []*os.File{f},
		[]string{"LISTEN_FDS=1", "LUNBRIDGE_TEST_LISTEN_PID=1", "NOTIFY_SOCKET=" + npath},
		"serve", "--listen", "unix:"+ignored, "--persistent", "file://"+img)
	f.Close()
	if want := "nbd+unix:///?socket=" + sock; p.line != want {
		t.Fatalf("printed %q, want %q; stderr: %s", p.line, want, p.stderr)
	}
	if msg := readNotify(t, nc, 10*time.Second); !strings.HasPrefix(msg, "READY=1\n") {
		t.Fatalf("notification %q, want READY=1", msg)
	}
	info := toolOut(t, "nbdinfo", p.line)
	if !strings.Contains(info, "export-size: 2097152") {
		t.Fatalf("nbdinfo through the passed socket:\n%s", info)
	}
	if _, err := os.Stat(ignored); err == nil {
		t.Error("serve also listened on --listen although socket-activated")
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; stderr: %s", code, p.stderr)
	}
}

// TestServeActivationForAnotherPID: LISTEN_FDS meant for another process
// (a LISTEN_PID that is not ours) is ignored: serve listens on --listen.
func TestServeActivationForAnotherPID(t *testing.T) {
	img, _ := serveImage(t, 1<<20)
	sock := filepath.Join(t.TempDir(), "s.sock")
	p := startServe(t, []string{"LISTEN_FDS=1", "LISTEN_PID=1"}, "serve", "--listen", "unix:"+sock, "file://"+img)
	if want := "nbd+unix:///?socket=" + sock; p.line != want {
		t.Fatalf("printed %q, want %q", p.line, want)
	}
}
