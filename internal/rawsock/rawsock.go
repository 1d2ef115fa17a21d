// Package rawsock reads and writes a socket with raw system calls on its
// non-blocking descriptor, for the hot paths of the initiator and the NBD
// server.
package rawsock

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sock moves the bytes of a TCP connection with raw read/writev system
// calls on its non-blocking descriptor, waiting in the runtime's poller
// only when the socket has nothing to read or no room to write.
//
// Why: net.Conn's Read and Write announce every system call to the
// scheduler (entersyscall/exitsyscall). At tens of thousands of PDUs per
// second on a small machine, each call that outlives a scheduler tick makes
// the runtime's monitor hand our P to another thread, and the
// wakeups and thread switches this causes cost more CPU than the I/O itself
// (perf: ~20% of the initiator's cycles in context switches, most from
// sysmon and handoffs). A read or write on a non-blocking socket never
// sleeps, so it needs no announcement. CPU the initiator does not burn is
// CPU the target on the same host — or the application — gets.
//
// Deadlines and Close work as for the net.Conn: syscall.RawConn waits in the
// same poller.
type Sock struct {
	rc syscall.RawConn
	nc net.Conn

	// lowat is the socket's SO_RCVLOWAT as ReadCoalesced last set it
	// (0 or 1: the kernel's default, wake for any byte).
	lowat int

	// In-flight call state, used by the bound methods below (bound once,
	// so a call allocates nothing). One reader and one writer at a time:
	// by contract of the callers.
	rbuf   []byte
	rn     int
	rerr   error
	readFn func(uintptr) bool
	empty  bool // a read found the socket empty

	iov     []unix.Iovec
	wn      int
	werr    error
	writeFn func(uintptr) bool
}

// New returns nil when nc has no file descriptor (net.Pipe in tests,
// TLS): the caller then uses nc's own Read and Write.
func New(nc net.Conn) *Sock {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	if _, isTCP := nc.(*net.TCPConn); !isTCP {
		if _, isUnix := nc.(*net.UnixConn); !isUnix {
			return nil
		}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &Sock{rc: rc, nc: nc}
	s.readFn = s.doRead
	s.writeFn = s.doWritev
	return s
}

func (s *Sock) doRead(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)))
		switch e {
		case 0:
			s.rn = int(n)
			if n == 0 {
				s.rerr = io.EOF
			}
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			s.empty = true
			return false // wait in the poller
		default:
			s.rerr = e
			return true
		}
	}
}

// Read implements io.Reader.
func (s *Sock) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rbuf, s.rn, s.rerr = p, 0, nil
	err := s.rc.Read(s.readFn)
	s.rbuf = nil
	if err != nil {
		return 0, err
	}
	return s.rn, s.rerr
}

// Wait says how a ReadCoalesced ended.
type Wait int

const (
	NoWait    Wait = iota // the socket had data
	WaitAny               // lowat was 1: waited for any byte
	WaitLowat             // waited until lowat bytes were queued
	WaitTimer             // waited maxWait, then read what had come
)

// ReadCoalesced reads like Read, but when the socket holds nothing it
// waits until at least lowat() bytes are queued — SO_RCVLOWAT, so the
// kernel does not wake the poller for less — or until maxWait has passed,
// whichever comes first. lowat() of 1 or less is Read (a wait for any
// byte). A guess that is too high costs at most maxWait,
// never a hang: past it the read takes what has come (or waits for any
// byte). Only one read at a time, as for Read; the connection's read
// deadline is ours while it runs.
//
// Why: a reader that wakes per arriving response pays a wake-up (poller,
// scheduler, system calls) per response when the peer answers at its own
// pace, a few responses apart. Waiting for several at once divides that
// cost by their number; the caller bounds the added latency.
func (s *Sock) ReadCoalesced(p []byte, lowat func() int, maxWait time.Duration) (int, Wait, error) {
	want := max(lowat(), 1)
	if want == 1 || len(p) == 0 {
		if s.lowat > 1 {
			s.setLowat(1)
		}
		s.rbuf, s.rn, s.rerr, s.empty = p, 0, nil, false
		err := s.rc.Read(s.readFn) // doRead sets s.empty when it has to wait
		s.rbuf = nil
		how := NoWait
		if s.empty {
			how = WaitAny
		}
		if err != nil {
			return 0, how, err
		}
		return s.rn, how, s.rerr
	}
	// With SO_RCVLOWAT set, a non-blocking read still returns whatever is
	// queued; only the poller's wake-up waits for lowat bytes. So one
	// read, as in Read, under a deadline.
	if cur := max(s.lowat, 1); want != cur && (cur == 1 || want < cur*3/4 || want > cur*5/4) {
		s.setLowat(want) // within a quarter of the last value, keep it: a system call saved
	}
	s.nc.SetReadDeadline(time.Now().Add(maxWait))
	s.rbuf, s.rn, s.rerr, s.empty = p, 0, nil, false
	err := s.rc.Read(s.readFn)
	s.nc.SetReadDeadline(time.Time{})
	how := NoWait
	if s.empty {
		how = WaitLowat
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		how = WaitTimer
		s.setLowat(1)
		s.rn, s.rerr = 0, nil
		err = s.rc.Read(s.readFn)
	}
	s.rbuf = nil
	if err != nil {
		return 0, how, err
	}
	return s.rn, how, s.rerr
}

// setLowat sets SO_RCVLOWAT. A failure leaves the kernel waking the
// poller for any byte, which is only slower.
func (s *Sock) setLowat(n int) {
	s.lowat = n
	s.rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, n)
	})
}

// doWritev writes as much of s.iov as the socket takes, advancing s.iov.
func (s *Sock) doWritev(fd uintptr) bool {
	for len(s.iov) > 0 {
		cnt := min(len(s.iov), 1024) // IOV_MAX
		n, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&s.iov[0])), uintptr(cnt))
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // socket buffer full: wait in the poller
		default:
			s.werr = e
			return true
		}
		s.wn += int(n)
		s.advance(int(n))
	}
	return true
}

// advance drops n written bytes from the front of s.iov.
func (s *Sock) advance(n int) {
	for n > 0 && len(s.iov) > 0 {
		l := int(s.iov[0].Len)
		if n < l {
			s.iov[0].Base = (*byte)(unsafe.Add(unsafe.Pointer(s.iov[0].Base), n))
			s.iov[0].SetLen(l - n)
			return
		}
		n -= l
		s.iov = s.iov[1:]
	}
	for len(s.iov) > 0 && s.iov[0].Len == 0 {
		s.iov = s.iov[1:]
	}
}

// Writev writes every buffer completely, or fails. iov is scratch space
// (returned for reuse); only one Writev may run at a time, and only one Read.
func (s *Sock) Writev(bufs [][]byte, iov []unix.Iovec) (int, []unix.Iovec, error) {
	iov = iov[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	s.iov, s.wn, s.werr = iov, 0, nil
	err := s.rc.Write(s.writeFn)
	s.iov = nil
	for i := range iov {
		iov[i].Base = nil // do not pin callers' buffers
	}
	if err == nil {
		err = s.werr
	}
	if err == nil && s.wn == 0 && len(iov) > 0 {
		err = errors.New("writev wrote nothing")
	}
	return s.wn, iov, err
}
