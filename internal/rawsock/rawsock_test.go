package rawsock

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestRawSockWritevPartial pushes far more than the socket buffers hold
// through writev in many pieces while the peer reads slowly, so writes
// return short and EAGAIN and must resume mid-buffer; the peer must see
// every byte in order.
func TestRawSockWritevPartial(t *testing.T) {
	a, b := tcpPair(t)
	ra, rb := New(a), New(b)
	if ra == nil || rb == nil {
		t.Fatal("no raw socket for a TCP connection")
	}
	r := rand.New(rand.NewPCG(1, 2))
	var bufs [][]byte
	var want bytes.Buffer
	for want.Len() < 48<<20 {
		n := r.IntN(300 << 10)
		if r.IntN(10) == 0 {
			n = 0 // empty pieces are skipped
		}
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		bufs = append(bufs, p)
		want.Write(p)
	}
	got := make(chan []byte, 1)
	go func() {
		var out bytes.Buffer
		buf := make([]byte, 100_000)
		for {
			time.Sleep(50 * time.Microsecond)
			n, err := rb.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				break
			}
		}
		got <- out.Bytes()
	}()
	var iov []unix.Iovec
	total := 0
	for i := 0; i < len(bufs); i += 2000 {
		var n int
		var err error
		n, iov, err = ra.Writev(bufs[i:min(i+2000, len(bufs))], iov)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != want.Len() {
		t.Fatalf("writev reported %d bytes, want %d", total, want.Len())
	}
	for _, v := range iov[:cap(iov)] {
		if v.Base != nil {
			t.Fatal("iovec still pins a caller's buffer")
		}
	}
	a.Close()
	if g := <-got; !bytes.Equal(g, want.Bytes()) {
		t.Fatalf("peer received %d bytes, not the %d written (or different)", len(g), want.Len())
	}
}

func TestRawSockEOFDeadlineClose(t *testing.T) {
	a, b := tcpPair(t)
	rb := New(b)
	buf := make([]byte, 16)
	b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := rb.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v, want deadline exceeded", err)
	}
	b.SetReadDeadline(time.Time{})
	a.Write([]byte("hi"))
	if n, err := io.ReadFull(rb, buf[:2]); err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	a.Close()
	if _, err := rb.Read(buf); err != io.EOF {
		t.Fatalf("read after peer close: %v, want EOF", err)
	}
	// A read blocked in the poller returns when the connection is closed.
	c, d := tcpPair(t)
	rd := New(d)
	errc := make(chan error, 1)
	go func() { _, err := rd.Read(buf); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	d.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("read on a closed connection succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock a raw read")
	}
	_ = c
	if New(&net.TCPConn{}) != nil {
		t.Fatal("a TCPConn without a socket gave a raw socket")
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if New(p1) != nil {
		t.Fatal("net.Pipe has no descriptor; want nil")
	}
}

func TestBatch(t *testing.T) {
	var b Batch
	if !b.Empty() || len(b.Vec(nil)) != 0 {
		t.Fatal("new batch not empty")
	}
	big := bytes.Repeat([]byte{'B'}, 100)
	b.Append([]byte("hdr1"))
	b.AppendRef(big)
	b.Append([]byte("pad"))
	b.AppendRef(nil) // nothing
	b.AppendRef(big[:3])
	b.Append([]byte("tail"))
	var got []byte
	vec := b.Vec(nil)
	for _, v := range vec {
		got = append(got, v...)
	}
	want := "hdr1" + string(big) + "pad" + "BBB" + "tail"
	if string(got) != want || len(vec) != 5 {
		t.Fatalf("Vec gave %d pieces %q, want 5 pieces %q", len(vec), got, want)
	}
	b.Reset()
	if !b.Empty() || len(b.Vec(nil)) != 0 {
		t.Fatal("Reset left something")
	}
	for _, s := range b.segs[:cap(b.segs)] {
		if s.ext != nil {
			t.Fatal("Reset kept a reference")
		}
	}
	// Through a connection without a descriptor (net.Pipe): nc's Write.
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	done := make(chan []byte)
	go func() { d, _ := io.ReadAll(p2); done <- d }()
	b.Append([]byte("x"))
	b.AppendRef(big)
	if _, err := Write(p1, nil, b.Vec(nil), nil); err != nil {
		t.Fatal(err)
	}
	p1.Close()
	if d := <-done; string(d) != "x"+string(big) {
		t.Fatalf("pipe got %q", d)
	}
}

// TestReadCoalesced: a coalesced wait wakes once lowat bytes are queued
// (not at the first of them), and a wait whose bytes never all come ends
// after maxWait with what did come, then reads on normally.
func TestReadCoalesced(t *testing.T) {
	a, b := tcpPair(t)
	s := New(a)
	buf := make([]byte, 64<<10)
	fixed := func(n int) func() int { return func() int { return n } }

	// Four 1000-byte writes 20 ms apart, lowat 4000: one read takes all.
	go func() {
		for range 4 {
			time.Sleep(20 * time.Millisecond)
			b.Write(make([]byte, 1000))
		}
	}()
	n, how, err := s.ReadCoalesced(buf, fixed(4000), 5*time.Second)
	if err != nil || n != 4000 || how != WaitLowat {
		t.Fatalf("coalesced read: %d bytes, wait %d, %v; want 4000 bytes after a lowat wait", n, how, err)
	}

	// 100 bytes of the 4000 waited for: the wait ends by its timer.
	b.Write(make([]byte, 100))
	time.Sleep(10 * time.Millisecond)
	start := time.Now()
	n, how, err = s.ReadCoalesced(buf, fixed(4000), 50*time.Millisecond)
	if err != nil || n != 100 || how != NoWait {
		// The bytes were already queued: no wait at all.
		t.Fatalf("read of queued bytes: %d, wait %d, %v; want 100 without a wait", n, how, err)
	}
	go func() {
		time.Sleep(5 * time.Millisecond)
		b.Write(make([]byte, 100))
	}()
	n, how, err = s.ReadCoalesced(buf, fixed(4000), 50*time.Millisecond)
	if err != nil || n != 100 || how != WaitTimer {
		t.Fatalf("short coalesced read: %d bytes, wait %d, %v; want 100 after the timer", n, how, err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 5*time.Second {
		t.Fatalf("timer wait took %v, want about 50ms", d)
	}

	// After a timer, lowat is back to 1 and the deadline cleared: a plain
	// wait returns at the first byte, however long it takes.
	go func() {
		time.Sleep(100 * time.Millisecond)
		b.Write([]byte{1})
	}()
	n, how, err = s.ReadCoalesced(buf, fixed(1), 50*time.Millisecond)
	if err != nil || n != 1 || how != WaitAny {
		t.Fatalf("plain read: %d bytes, wait %d, %v; want 1 byte after a wait", n, how, err)
	}
	if v, err := unix.GetsockoptInt(fd(t, a), unix.SOL_SOCKET, unix.SO_RCVLOWAT); err != nil || v != 1 {
		t.Fatalf("SO_RCVLOWAT %d (%v) after the plain read, want 1", v, err)
	}
}

func fd(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var f int
	rc.Control(func(d uintptr) { f = int(d) })
	return f
}
