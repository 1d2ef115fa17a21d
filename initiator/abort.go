package initiator

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Abortive close (review #6).
//
// A connection given up on must not deliver anything later: a WRITE and
// its Data-Out still in our kernel's send queue would be retransmitted by
// the orphaned socket for minutes and, once a partition heals, executed by
// the target after newer writes to the same blocks went through another
// path (a ghost write). So every iSCSI socket carries SO_LINGER 0 from the
// moment it is dialed: closing it — by us, or by the kernel when the
// process dies — discards the send queue and sends RST instead of FIN.
// Only a session that logged out cleanly (nothing of it is outstanding)
// gets its ordinary close back (gracefulClose).
//
// TCP_USER_TIMEOUT bounds how long the kernel retransmits unacknowledged
// data on a connection we still hold before it fails the connection
// itself (RFC 5482); see Config.TCPUserTimeout.

// defaultTCPUserTimeout: unacknowledged data older than the Linux SCSI
// disk's command timeout belongs to a dead path; the NOP-Out keepalive
// (NopInterval+NopTimeout, 10 s by default) normally notices first.
const defaultTCPUserTimeout = 30 * time.Second

// tcpUserTimeout returns the TCP_USER_TIMEOUT for cfg's sockets: 0 when
// disabled, else Config.TCPUserTimeout, by default min(30 s, the
// replacement timeout) — I/O waiting for the session fails after the
// replacement timeout, and no PDU of it should reach the target later.
func tcpUserTimeout(cfg *Config) time.Duration {
	if cfg.TCPUserTimeout != 0 {
		return max(cfg.TCPUserTimeout, 0)
	}
	t := defaultTCPUserTimeout
	if !cfg.NoRecovery && cfg.ReplacementTimeout > 0 {
		t = min(t, cfg.ReplacementTimeout)
	}
	return max(t, time.Second)
}

// sysConn finds the socket under nc: nc itself, or what a wrapper's
// NetConn method (crypto/tls style) returns. nil for a conn without a
// descriptor (net.Pipe in tests).
func sysConn(nc net.Conn) syscall.RawConn {
	for range 4 {
		if sc, ok := nc.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				return rc
			}
			return nil
		}
		w, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		nc = w.NetConn()
	}
	return nil
}

// tuneSocket sets SO_LINGER 0 and TCP_USER_TIMEOUT (when ut > 0) on a
// freshly dialed TCP socket. Options a socket does not support (a Unix
// socket, a pipe) are skipped: they have no send queue in a network.
func tuneSocket(nc net.Conn, ut time.Duration) {
	rc := sysConn(nc)
	if rc == nil {
		return
	}
	rc.Control(func(fd uintptr) {
		if dom, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || (dom != unix.AF_INET && dom != unix.AF_INET6) {
			return
		}
		unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		if ut > 0 {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(ut/time.Millisecond))
		}
	})
}

// setLinger turns the abortive close on (abort) or back off.
func setLinger(nc net.Conn, abort bool) {
	rc := sysConn(nc)
	if rc == nil {
		return
	}
	l := &unix.Linger{}
	if abort {
		l.Onoff = 1
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, l)
	})
}

// gracefulClose gives a session that logged out cleanly its ordinary FIN
// close back: everything it sent has been answered.
func (s *Session) gracefulClose() {
	for _, c := range s.allConns() {
		setLinger(c.nc, false)
	}
}

// Abort ends the session abortively, for a path being fenced: no Logout
// (it would queue behind the very PDUs that must not arrive), every
// connection closed with RST so the kernel drops its send queue, and
// every outstanding task failed with ErrSessionClosed. It returns once the
// sockets are closed and the read loops have exited. The target side of
// the session may live on until it notices the reset or the session is
// reinstated or reset; Abort only guarantees that nothing more of it
// leaves this host.
func (s *Session) Abort() {
	conns := s.allConns()
	for _, c := range conns {
		setLinger(c.nc, true) // already set at dial; again in case a Close began
	}
	if !s.closed.Swap(true) {
		close(s.closeCh)
	}
	for _, c := range conns {
		c.fail(ErrSessionClosed)
		<-c.exit
	}
}
