package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func reset(t *testing.T, sock string) {
	t.Helper()
	mu.Lock()
	taken = false
	socket = ""
	mu.Unlock()
	t.Setenv("NOTIFY_SOCKET", sock)
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifyPathAndAbstract(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	abstract := "@lunbridge-sdnotify-test-" + strconv.Itoa(os.Getpid())
	for _, sock := range []string{path, abstract} {
		name := sock
		if sock[0] == '@' {
			name = "\x00" + sock[1:]
		}
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		reset(t, sock)
		if !Enabled() {
			t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
		}
		if _, ok := os.LookupEnv("NOTIFY_SOCKET"); ok {
			t.Error("NOTIFY_SOCKET left in the environment for children")
		}
		if err := Ready("serving\nx"); err != nil {
			t.Fatal(err)
		}
		if got, want := recv(t, c), "READY=1\nSTATUS=serving x"; got != want {
			t.Errorf("%s: got %q, want %q", sock, got, want)
		}
		if err := Stopping(""); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, c); got != "STOPPING=1" {
			t.Errorf("%s: got %q, want STOPPING=1", sock, got)
		}
		c.Close()
	}
}

func TestNotifyWithoutSocket(t *testing.T) {
	reset(t, "")
	if Enabled() {
		t.Fatal("Enabled() = true without NOTIFY_SOCKET")
	}
	if err := Ready("x"); err != nil {
		t.Fatalf("Ready without a manager: %v", err)
	}
	reset(t, "relative/path")
	if err := Ready(""); err == nil {
		t.Fatal("a relative NOTIFY_SOCKET was accepted")
	}
}

func TestListenersNotForUs(t *testing.T) {
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()+1))
	if _, err := Listeners(); err != ErrNoListenFDs {
		t.Fatalf("LISTEN_PID of another process: err = %v, want ErrNoListenFDs", err)
	}
	if _, ok := os.LookupEnv("LISTEN_FDS"); ok {
		t.Error("LISTEN_FDS left in the environment")
	}
	os.Unsetenv("LISTEN_FDS")
	if _, err := Listeners(); err != ErrNoListenFDs {
		t.Fatalf("no LISTEN_FDS: err = %v", err)
	}
}
