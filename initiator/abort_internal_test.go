package initiator

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// sockopts reads SO_LINGER and TCP_USER_TIMEOUT (ms) of nc's socket.
func sockopts(t *testing.T, nc net.Conn) (unix.Linger, int) {
	t.Helper()
	rc := sysConn(nc)
	if rc == nil {
		t.Fatalf("%T: no socket", nc)
	}
	var l *unix.Linger
	var ut int
	var err1, err2 error
	rc.Control(func(fd uintptr) {
		l, err1 = unix.GetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER)
		ut, err2 = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	})
	if err1 != nil || err2 != nil {
		t.Fatalf("getsockopt: %v, %v", err1, err2)
	}
	return *l, ut
}

// wrappedConn hides the *net.TCPConn the way a tracing or TLS wrapper does.
type wrappedConn struct{ net.Conn }

func (w wrappedConn) NetConn() net.Conn { return w.Conn }

// TestSocketOptions: every iSCSI socket is dialed with SO_LINGER 0 and
// TCP_USER_TIMEOUT (review #6), also behind a wrapping net.Conn.
func TestSocketOptions(t *testing.T) {
	tg := faketarget.New(faketarget.Config{})
	defer tg.Close()
	addr, err := tg.Listen()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		ut   time.Duration
	}{
		{"default", func(*Config) {}, 30 * time.Second},
		{"replacement 5s", func(c *Config) { c.ReplacementTimeout = 5 * time.Second }, 5 * time.Second},
		{"explicit, wrappedConn conn", func(c *Config) {
			c.TCPUserTimeout = 7 * time.Second
			c.Dial = func(ctx context.Context, n, a string) (net.Conn, error) {
				var d net.Dialer
				nc, err := d.DialContext(ctx, n, a)
				return wrappedConn{nc}, err
			}
		}, 7 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cfg := Config{InitiatorName: "iqn.2026-11.org.lunbridge:abort", TargetName: tg.Name(), Portal: addr, NopInterval: -1}
			tc.mod(&cfg)
			s, err := Dial(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			l, ut := sockopts(t, s.allConns()[0].nc)
			if l.Onoff != 1 || l.Linger != 0 {
				t.Errorf("SO_LINGER %+v, want on with 0 s", l)
			}
			if want := int(tc.ut / time.Millisecond); ut != want {
				t.Errorf("TCP_USER_TIMEOUT %d ms, want %d", ut, want)
			}
		})
	}
}

// TestAbortDropsSendQueue: Abort sends no Logout, fails the outstanding
// command, and closes with RST: data still queued in our kernel is
// discarded, not delivered (review #6). The "target" here accepts but does
// not read, like a black-holed path.
func TestAbortDropsSendQueue(t *testing.T) {
	defer faketarget.LeakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stall chan struct{}
	tg := faketarget.New(faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
		if cmd.CDB[0] == 0x2a || cmd.CDB[0] == 0x8a { // WRITE: never answered
			<-stall
			return true
		}
		return false
	}})
	defer tg.Close()
	stall = make(chan struct{})
	defer close(stall)
	addr, err := tg.Listen()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Dial(ctx, Config{InitiatorName: "iqn.2026-11.org.lunbridge:abort", TargetName: tg.Name(), Portal: addr,
		NopInterval: -1, NoRecovery: true, MaxRecvDataSegmentLength: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tg.WaitConn(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Do(ctx, &Command{CDB: scsi.AppendWriteCDB(nil, 0, 1, false), Write: make([]byte, 512)})
		done <- err
	}()
	if _, err := c.WaitFor(ctx, func(r faketarget.Received) bool { return r.Opcode() == pdu.OpSCSICommand }); err != nil {
		t.Fatal(err)
	}
	s.Abort()
	if err := <-done; !errors.Is(err, ErrSessionClosed) {
		t.Errorf("outstanding write: %v, want ErrSessionClosed", err)
	}
	for _, r := range c.Received() {
		if r.Opcode() == pdu.OpLogoutReq {
			t.Errorf("Abort sent a Logout")
		}
	}

	// The RST itself: a peer that has not read yet finds ECONNRESET, not
	// our queued bytes followed by EOF.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	tuneSocket(nc, time.Second)
	nc.Write(make([]byte, 4096))
	nc.Close()
	time.Sleep(50 * time.Millisecond)
	_, err = io.ReadAll(peer)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("peer after our close: %v, want ECONNRESET", err)
	}
}
