package nbdbridge

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// vmLocked is VmLck of /proc/self/status in KiB.
func vmLocked(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmLck:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no VmLck in /proc/self/status")
	return 0
}

// lockedMapping reports whether the mapping holding addr is locked ("lo"
// in its VmFlags in /proc/self/smaps).
func lockedMapping(t *testing.T, addr uintptr) bool {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			lo, hi, _ := strings.Cut(f[0], "-")
			a, err1 := strconv.ParseUint(lo, 16, 64)
			z, err2 := strconv.ParseUint(hi, 16, 64)
			in = err1 == nil && err2 == nil && uint64(addr) >= a && uint64(addr) < z
			continue
		}
		if in && len(f) > 0 && f[0] == "VmFlags:" {
			return slices.Contains(f[1:], "lo")
		}
	}
	t.Fatalf("no mapping holds %#x", addr)
	return false
}

// onNewThreads runs f on n goroutines, each locked to an OS thread of its
// own (a fresh one: locked goroutines keep their threads busy).
func onNewThreads(n int, f func() (bool, error)) (int, error) {
	type res struct {
		ok  bool
		err error
	}
	start := make(chan struct{})
	out := make(chan res, n)
	stop := make(chan struct{})
	for range n {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-start
			ok, err := f()
			out <- res{ok, err}
			<-stop
		}()
	}
	close(start)
	good := 0
	var first error
	for range n {
		r := <-out
		if r.ok {
			good++
		}
		if r.err != nil && first == nil {
			first = r.err
		}
	}
	close(stop)
	return good, first
}

// ioFlusherThreads counts the threads of this process in the IO_FLUSHER
// state, as the kernel shows it to anyone: PF_MEMALLOC_NOIO and
// PF_LOCAL_THROTTLE in the flags field of /proc/self/task/TID/stat.
func ioFlusherThreads(t *testing.T) (flushers, threads int) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/stat")
		if err != nil {
			continue // exited
		}
		f, ok := TaskFlags(string(b))
		if !ok {
			t.Fatalf("cannot parse %s/stat: %q", e.Name(), b)
		}
		threads++
		if f&PFIOFlusher == PFIOFlusher {
			flushers++
		}
	}
	return flushers, threads
}

// TestReclaimSafe: after ReclaimSafe every thread of the process — those
// that existed before and those created after — is an IO_FLUSHER, and the
// process's memory is locked, that mapped later included (issue 13: attach
// must not deadlock when the kernel reclaims memory by writing to
// /dev/nbdN). Without CAP_SYS_RESOURCE (a container) the IO_FLUSHER half
// must fail with EPERM and mlockall still be done; the VM lab checks the
// attach process's threads as root.
func TestReclaimSafe(t *testing.T) {
	testenv.RequireRoot(t)
	canFlush := true
	if ok, err := IOFlusher(); errors.Is(err, unix.EPERM) {
		canFlush = false
	} else if err != nil {
		testenv.Unavailable(t, "PR_GET_IO_FLUSHER: %v (kernel older than 5.6?)", err)
	} else if ok {
		t.Fatal("IO_FLUSHER set before the test")
	}
	// Threads that exist before the call, parked on locked goroutines.
	const n = 8
	release := make(chan struct{})
	for range n {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-release
		}()
	}
	t.Cleanup(func() {
		close(release)
		syscall.AllThreadsSyscall6(unix.SYS_PRCTL, prSetIOFlusher, 0, 0, 0, 0, 0)
		unix.Munlockall()
	})
	before := vmLocked(t)
	err := ReclaimSafe()
	if canFlush {
		if err != nil {
			t.Fatalf("ReclaimSafe: %v", err)
		}
		if ok, err := IOFlusher(); !ok || err != nil {
			t.Errorf("calling thread: IO_FLUSHER %v, %v", ok, err)
		}
		if got, err := onNewThreads(n, IOFlusher); got != n {
			t.Errorf("IO_FLUSHER on %d of %d threads created after (%v)", got, n, err)
		}
		if f, all := ioFlusherThreads(t); f != all {
			t.Errorf("IO_FLUSHER on %d of the %d threads in /proc/self/task", f, all)
		}
	} else {
		if !errors.Is(err, unix.EPERM) || !strings.Contains(fmt.Sprint(err), "PR_SET_IO_FLUSHER") || strings.Contains(fmt.Sprint(err), "mlockall") {
			t.Errorf("ReclaimSafe without CAP_SYS_RESOURCE: %v; want the PR_SET_IO_FLUSHER EPERM only", err)
		}
		t.Log("no CAP_SYS_RESOURCE here: IO_FLUSHER itself is checked by the VM lab")
	}
	// MCL_CURRENT and MCL_FUTURE: memory mapped after the call is locked too.
	lck := vmLocked(t)
	if lck == 0 || lck <= before {
		t.Fatalf("VmLck %d kB before, %d kB after mlockall", before, lck)
	}
	big := make([]byte, 64<<20)
	for i := 0; i < len(big); i += 4096 {
		big[i] = 1
	}
	if !lockedMapping(t, uintptr(unsafe.Pointer(&big[len(big)/2]))) {
		t.Errorf("a 64 MiB allocation after mlockall is not in a locked mapping: MCL_FUTURE missing")
	}
	runtime.KeepAlive(big)
	t.Logf("VmLck %d kB after mlockall", lck)
}

func TestTaskFlags(t *testing.T) {
	for _, tc := range []struct {
		stat  string
		flags uint64
		ok    bool
	}{
		{"1234 (lunbridge) S 1 1234 1234 0 -1 4194560 97 0 0 0", 4194560, true},
		{"1234 (a) b) c) R 1 1 1 0 -1 1835072 0", 1835072, true},
		{"1234 (x) S 1", 0, false},
		{"garbage", 0, false},
	} {
		f, ok := TaskFlags(tc.stat)
		if f != tc.flags || ok != tc.ok {
			t.Errorf("TaskFlags(%q) = %d, %v; want %d, %v", tc.stat, f, ok, tc.flags, tc.ok)
		}
	}
}
