package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

func captureLog() (*logrus.Entry, *bytes.Buffer) {
	var b bytes.Buffer
	l := logrus.New()
	l.Out = &b
	return logrus.NewEntry(l), &b
}

// TestServeListenUnixPrivate: the NBD socket is 0600, and a directory
// serve creates for it 0700, whatever the umask (review #11).
func TestServeListenUnixPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "run", "lunbridge")
	path := filepath.Join(dir, "x.sock")
	log, _ := captureLog()
	l, ep, cleanup, err := serveListen("unix:"+path, "x", log)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	defer l.Close()
	if ep.Socket != path {
		t.Fatalf("socket %q, want %q", ep.Socket, path)
	}
	for _, c := range []struct {
		p    string
		mode os.FileMode
	}{{path, os.ModeSocket | 0o600}, {dir, os.ModeDir | 0o700}, {filepath.Dir(dir), os.ModeDir | 0o700}} {
		st, err := os.Stat(c.p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.p, st.Mode(), c.mode)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("%s holds %v, want the socket only", dir, ents)
	}
	// It is the listening socket.
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestServeListenTCPWarns: every TCP listener is warned about, loopback
// included: NBD has no authentication (review #11).
func TestServeListenTCPWarns(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0"} {
		log, out := captureLog()
		l, _, cleanup, err := serveListen("tcp:"+addr, "x", log)
		if err != nil {
			if strings.Contains(addr, "::1") {
				continue // no IPv6 here
			}
			t.Fatal(err)
		}
		l.Close()
		cleanup()
		if !strings.Contains(out.String(), "level=warning") || !strings.Contains(out.String(), "no authentication") {
			t.Errorf("tcp:%s: no warning; log: %q", addr, out)
		}
	}
}

// TestSourceIDHasNoSecret: a device without WWID or serial (a mirror, a
// file) is named in the resume sidecar by its URL, never with the CHAP
// secrets the URL carries (review #11).
func TestSourceIDHasNoSecret(t *testing.T) {
	dev := blockdevtest.NewMem(1<<20, 512)
	for _, u := range []string{
		"iscsi://alice%s3cr3t-chap-pw@127.0.0.1:3260/iqn.2026-11.org.lunbridge:demo/1",
		"iscsi://alice%s3cr3t-chap-pw@127.0.0.1/iqn.2026-11.org.lunbridge:demo/1?target_user=t&target_password=s3cr3t-target-pw",
	} {
		id := sourceID(dev, u)
		if strings.Contains(id, "s3cr3t") {
			t.Errorf("sourceID(%q) = %q: carries a secret", u, id)
		}
		if !strings.Contains(id, "iqn.2026-11.org.lunbridge:demo/1") || !strings.Contains(id, "alice") {
			t.Errorf("sourceID(%q) = %q: does not name the LUN", u, id)
		}
	}
}
