package nbdbridge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A process that serves a kernel block device sits in the kernel's memory
// reclaim path: to free memory the kernel may write dirty pages (of a file
// system on /dev/nbdN, or swap on it) to that device, and wait for the
// writes. If serving them needs memory the kernel must first reclaim — a
// page fault on an evicted page of this program, an allocation that enters
// direct reclaim and starts I/O on the same device — nothing moves again.
// Two remedies, the ones nbd-client, iscsid and multipathd use:
//
//   - PR_SET_IO_FLUSHER (Linux 5.6) puts the process in the IO_FLUSHER
//     state: its allocations do not start I/O (PF_MEMALLOC_NOIO) and it is
//     not throttled for other devices' write-back (PF_LOCAL_THROTTLE). The
//     state is per thread and inherited by new threads, so it is set on
//     every thread the Go runtime has (syscall.AllThreadsSyscall6; every
//     later thread is cloned from one of them). It needs CAP_SYS_RESOURCE.
//   - mlockall(MCL_CURRENT|MCL_FUTURE) keeps every page of the process, the
//     program text included, resident: no page fault waits for I/O. Heap
//     the Go runtime maps later is locked (and populated) as it is mapped.
//     It costs the memory the process has mapped, some 40 MiB more resident
//     than otherwise at start (VmLck in /proc/PID/status counts reserved
//     address space too, about 1 GiB, most of it never populated).

// prSetIOFlusher and prGetIOFlusher are prctl options (linux/prctl.h).
const (
	prSetIOFlusher = unix.PR_SET_IO_FLUSHER // 57
	prGetIOFlusher = unix.PR_GET_IO_FLUSHER // 58
)

// ReclaimSafe prepares this process to serve a kernel block device without
// deadlocking in memory reclaim: IO_FLUSHER on every thread, and all its
// memory locked. It attempts both and returns what failed (nil when both
// worked); a failure leaves the process usable, only less safe under memory
// pressure.
func ReclaimSafe() error {
	var errs []error
	if err := setIOFlusher(); err != nil {
		errs = append(errs, fmt.Errorf("prctl(PR_SET_IO_FLUSHER): %w", err))
	}
	if err := lockAll(); err != nil {
		errs = append(errs, fmt.Errorf("mlockall: %w", err))
	}
	return errors.Join(errs...)
}

// capIPCLock is CAP_IPC_LOCK (linux/capability.h).
const capIPCLock = 14

// lockAll is mlockall(MCL_CURRENT|MCL_FUTURE), done only when the lock can
// never get in the way: with CAP_IPC_LOCK, or with RLIMIT_MEMLOCK
// unlimited. Under a finite limit MCL_FUTURE would make every later mmap —
// the Go runtime growing its heap, which counts reserved address space too
// (about 1 GiB at start) — fail with EAGAIN once the limit is reached, and
// the runtime dies of it.
func lockAll() error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		return err
	}
	if !hasCap(capIPCLock) && lim.Cur != unix.RLIM_INFINITY {
		if lim.Max == unix.RLIM_INFINITY {
			lim.Cur = lim.Max
			if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
				return err
			}
		} else {
			return fmt.Errorf("not done: no CAP_IPC_LOCK and RLIMIT_MEMLOCK is %d bytes; the Go heap could not grow past it", lim.Cur)
		}
	}
	return unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE)
}

// hasCap reports whether capability c is in this thread's effective set.
func hasCap(c uint) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}

func setIOFlusher() error {
	_, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, prSetIOFlusher, 1, 0, 0, 0, 0)
	if e == syscall.ENOTSUP {
		// A cgo build: AllThreadsSyscall cannot reach threads C created.
		return errors.New("needs a build without cgo (CGO_ENABLED=0) to reach every thread")
	}
	if e != 0 {
		return e
	}
	return nil
}

// IOFlusher reports whether the calling thread is in the IO_FLUSHER state
// (PR_GET_IO_FLUSHER).
func IOFlusher() (bool, error) {
	r, err := unix.PrctlRetInt(prGetIOFlusher, 0, 0, 0, 0)
	if err != nil {
		return false, err
	}
	return r == 1, nil
}

// PFIOFlusher are the task flags PR_SET_IO_FLUSHER sets (PF_MEMALLOC_NOIO |
// PF_LOCAL_THROTTLE): the state shows in the flags field of
// /proc/PID/task/TID/stat, which is how a test sees it from outside.
const PFIOFlusher = 0x00080000 | 0x00100000

// TaskFlags returns the flags field (the 9th) of a /proc/PID/stat or
// /proc/PID/task/TID/stat line.
func TaskFlags(stat string) (uint64, bool) {
	// "pid (comm) state ppid pgrp session tty_nr tpgid flags ...": comm may
	// hold spaces and parentheses, so count from the last ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 7 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[6], 10, 64)
	return v, err == nil
}
