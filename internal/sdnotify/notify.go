// Package sdnotify speaks the two systemd process protocols lunbridge needs,
// without libsystemd or go-systemd:
//
//   - sd_notify(3): one datagram per state change ("READY=1", "STATUS=...",
//     "STOPPING=1") to the AF_UNIX SOCK_DGRAM socket named by
//     $NOTIFY_SOCKET; a name starting with '@' is in the abstract namespace.
//   - sd_listen_fds(3): sockets passed by a .socket unit as descriptors
//     3..3+$LISTEN_FDS-1, valid only when $LISTEN_PID is this process.
//
// Without the variables (not run by systemd) every function is a no-op.
// The package imports nothing from lunbridge.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

var (
	mu     sync.Mutex
	socket string // $NOTIFY_SOCKET as found at the first call
	taken  bool
)

// notifySocket returns $NOTIFY_SOCKET, read once and then removed from the
// environment, so children (fusermount3, a --fork child) do not report in
// this process's name.
func notifySocket() string {
	if !taken {
		socket = os.Getenv("NOTIFY_SOCKET")
		os.Unsetenv("NOTIFY_SOCKET")
		taken = true
	}
	return socket
}

// Enabled reports whether a service manager listens for notifications.
func Enabled() bool {
	mu.Lock()
	defer mu.Unlock()
	return notifySocket() != ""
}

// Notify sends state lines (e.g. "READY=1", "STATUS=serving db1") as one
// datagram. Without $NOTIFY_SOCKET it does nothing and returns nil.
func Notify(state ...string) error {
	mu.Lock()
	path := notifySocket()
	mu.Unlock()
	if path == "" || len(state) == 0 {
		return nil
	}
	if path[0] != '/' && path[0] != '@' {
		return fmt.Errorf("sdnotify: NOTIFY_SOCKET=%q: not a Unix socket path", path)
	}
	addr := &net.UnixAddr{Name: path, Net: "unixgram"}
	if path[0] == '@' {
		addr.Name = "\x00" + path[1:] // Go spells the abstract namespace with a NUL
	}
	c, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer c.Close()
	msg := strings.Join(state, "\n")
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return nil
}

// Ready tells the service manager the service is up, with a status line.
func Ready(status string) error {
	if status == "" {
		return Notify("READY=1")
	}
	return Notify("READY=1", "STATUS="+oneLine(status))
}

// Status sets the free-form status systemctl status shows.
func Status(status string) error { return Notify("STATUS=" + oneLine(status)) }

// Stopping tells the service manager the service is shutting down.
func Stopping(status string) error {
	if status == "" {
		return Notify("STOPPING=1")
	}
	return Notify("STOPPING=1", "STATUS="+oneLine(status))
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// listenFDsStart is SD_LISTEN_FDS_START.
const listenFDsStart = 3

// ErrNoListenFDs: the process was not socket-activated.
var ErrNoListenFDs = errors.New("sdnotify: not socket-activated")

// Listeners returns the listening sockets passed by systemd socket
// activation ($LISTEN_FDS, $LISTEN_PID), as net.Listeners, and removes the
// variables from the environment. Without activation it returns
// ErrNoListenFDs. Each descriptor is made close-on-exec.
func Listeners() ([]net.Listener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	names := os.Getenv("LISTEN_FDNAMES")
	if fds == "" {
		return nil, ErrNoListenFDs
	}
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, ErrNoListenFDs // meant for another process (a parent)
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 1 || n > 64 {
		return nil, fmt.Errorf("sdnotify: LISTEN_FDS=%q: want a count from 1 to 64", fds)
	}
	nameList := strings.Split(names, ":")
	var ls []net.Listener
	for i := 0; i < n; i++ {
		fd := listenFDsStart + i
		syscall.CloseOnExec(fd)
		name := "LISTEN_FD_" + strconv.Itoa(fd)
		if i < len(nameList) && nameList[i] != "" {
			name = nameList[i]
		}
		f := os.NewFile(uintptr(fd), name)
		l, err := net.FileListener(f) // dups the descriptor
		f.Close()
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, fmt.Errorf("sdnotify: descriptor %d (%s) is not a listening socket: %w", fd, name, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}
