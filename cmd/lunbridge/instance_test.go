package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Names are unique among live holders: the same process, another process
// (flock(1) here) and a dead holder's leftovers (lock file, stale control
// socket) are told apart, and a released name is free again.
func TestClaimInstanceUniqueAndStale(t *testing.T) {
	dir := t.TempDir()
	a, err := claimInstance(dir, "demo-1")
	if err != nil || a.name != "demo-1" {
		t.Fatalf("first claim: %+v %v", a, err)
	}
	b, err := claimInstance(dir, "demo-1")
	if err != nil || b.name != "demo-1-2" || b.dir != filepath.Join(dir, "demo-1-2") {
		t.Fatalf("second claim while the first holds the name: %+v %v", b, err)
	}

	// Another live process holds "db1": it is skipped.
	if err := os.MkdirAll(filepath.Join(dir, "db1"), 0o700); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("flock", filepath.Join(dir, "db1", instanceLockFile), "sleep", "30")
	if err := holder.Start(); err != nil {
		t.Skipf("flock(1): %v", err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if f, err := os.Open(filepath.Join(dir, "db1", instanceLockFile)); err == nil {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				break // flock(1) holds it
			}
		}
		if time.Now().After(end) {
			t.Fatal("flock(1) did not take the lock")
		}
	}
	if c, err := claimInstance(dir, "db1"); err != nil || c.name != "db1-2" {
		t.Fatalf("claim of a name another process holds: %+v %v", c, err)
	} else {
		c.release()
	}

	// A killed holder left its lock file and a control socket nobody
	// answers on: the name is free and the socket is replaced.
	stale := filepath.Join(dir, "old")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(stale, instanceLockFile), []byte("12345\n"), 0o600)
	ln, err := net.Listen("unix", filepath.Join(stale, instanceControlFile))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(filepath.Join(stale, instanceControlFile)); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	c, err := claimInstance(dir, "old")
	if err != nil || c.name != "old" {
		t.Fatalf("claim over a dead holder's leftovers: %+v %v", c, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	sock := filepath.Join(c.dir, instanceControlFile)
	go func() { done <- serveControlOn(ctx, sock, &controlTarget{}) }()
	var raw []byte
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if raw, err = controlRequest(sock, "status", 5*time.Second); err == nil {
			break
		}
	}
	if err != nil || !strings.Contains(string(raw), `"state": "starting"`) {
		t.Fatalf("control socket in the reclaimed directory: %v %s", err, raw)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.release()

	// A released name is free again; its directory is gone.
	a.release()
	if _, err := os.Stat(filepath.Join(dir, "demo-1")); !os.IsNotExist(err) {
		t.Fatalf("released instance directory still there: %v", err)
	}
	a2, err := claimInstance(dir, "demo-1")
	if err != nil || a2.name != "demo-1" {
		t.Fatalf("claim after release: %+v %v", a2, err)
	}
	a2.release()
	b.release()

	// "isid" is the ISID locks' directory, never an instance.
	if c, err := claimInstance(dir, "isid"); err != nil || c.name != "isid-2" {
		t.Fatalf("claim of isid: %+v %v", c, err)
	} else {
		c.release()
	}
}

func TestInstanceNames(t *testing.T) {
	for in, want := range map[string]string{
		"iscsi://127.0.0.1:3260/iqn.2026-11.org.lunbridge:demo/1":  "demo-1",
		"iscsi://10.0.0.1/iqn.2001-04.com.example.storage.disk2/0": "disk2-0",
		"file:///var/tmp/disk.img":                                 "disk",
		"nonsense":                                                 "lunbridge",
	} {
		if got := instanceName(urlName(in)); got != want {
			t.Errorf("name of %s: %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"db1": "db1", "../x": "_x", "a b/c": "a_b_c", "...": "lunbridge", strings.Repeat("x", 100): strings.Repeat("x", 64)} {
		if got := instanceName(in); got != want {
			t.Errorf("instanceName(%q) = %q, want %q", in, got, want)
		}
	}
}
