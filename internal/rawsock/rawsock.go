// Package rawsock reads and writes a socket with raw system calls on its
// non-blocking descriptor, for the hot paths of the initiator and the NBD
// server.
package rawsock

import (
	"errors"
	"io"
	"net"
	"syscall"
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

	// In-flight call state, used by the bound methods below (bound once,
	// so a call allocates nothing). One reader and one writer at a time:
	// by contract of the callers.
	rbuf   []byte
	rn     int
	rerr   error
	readFn func(uintptr) bool

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
	s := &Sock{rc: rc}
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
