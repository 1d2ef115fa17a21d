package faultproxy_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
)

// echoServer echoes every connection until closed.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func setup(t *testing.T) (*faultproxy.Proxy, net.Conn) {
	t.Helper()
	p, err := faultproxy.New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return p, c
}

// echo writes msg and reads it back within d.
func echo(c net.Conn, msg []byte, d time.Duration) ([]byte, error) {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	got := make([]byte, len(msg))
	n, err := io.ReadFull(c, got)
	return got[:n], err
}

func TestForward(t *testing.T) {
	t.Cleanup(faketarget.LeakCheck(t))
	p, c := setup(t)
	msg := bytes.Repeat([]byte("lunbridge"), 20000)
	got, err := echo(c, msg, 5*time.Second)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	if p.Conns() != 1 || p.TotalAccepted() != 1 {
		t.Errorf("Conns %d TotalAccepted %d", p.Conns(), p.TotalAccepted())
	}
	c.Close()
	deadline := time.Now().Add(2 * time.Second)
	for p.Conns() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if p.Conns() != 0 {
		t.Errorf("Conns %d after the client closed", p.Conns())
	}
	p.Close()
}

func TestResetAll(t *testing.T) {
	t.Cleanup(faketarget.LeakCheck(t))
	p, c := setup(t)
	if _, err := echo(c, []byte("ping"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.ResetAll()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read after ResetAll: %v, want ECONNRESET", err)
	}
	p.Close()
}

func TestBlackHoleAndStall(t *testing.T) {
	t.Cleanup(faketarget.LeakCheck(t))
	p, c := setup(t)
	p.BlackHole(true)
	if got, err := echo(c, []byte("held"), 200*time.Millisecond); err == nil || len(got) != 0 {
		t.Fatalf("black hole forwarded %q (%v)", got, err)
	}
	p.BlackHole(false)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("after the black hole: %q %v (held data must not be lost)", got, err)
	}
	p.Stall(300 * time.Millisecond)
	start := time.Now()
	if got, err := echo(c, []byte("late"), 3*time.Second); err != nil || string(got) != "late" {
		t.Fatalf("stall: %q %v", got, err)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Errorf("stall of 300ms passed data after %v", el)
	}
	if p.Conns() != 1 {
		t.Errorf("stall closed the connection")
	}
	p.Close()
}

func TestDelay(t *testing.T) {
	t.Cleanup(faketarget.LeakCheck(t))
	p, c := setup(t)
	p.Delay(100 * time.Millisecond)
	start := time.Now()
	if _, err := echo(c, []byte("slow"), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 200*time.Millisecond { // one chunk each way
		t.Errorf("round trip took %v with 100ms per chunk", el)
	}
	p.Delay(0)
	start = time.Now()
	echo(c, []byte("fast"), 3*time.Second)
	if el := time.Since(start); el > 150*time.Millisecond {
		t.Errorf("round trip took %v without delay", el)
	}
	p.Close()
}

func TestCutAfterDownstream(t *testing.T) {
	t.Cleanup(faketarget.LeakCheck(t))
	p, c := setup(t)
	if _, err := echo(c, []byte("warm"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.CutAfter(10, faultproxy.Downstream)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	c.Write(bytes.Repeat([]byte("x"), 100))
	got, err := io.ReadAll(c)
	if len(got) != 10 {
		t.Errorf("received %d bytes (%v), want exactly the 10 before the cut", len(got), err)
	}
	p.Close()
}

func TestCutAfterUpstream(t *testing.T) {
	t.Cleanup(faketarget.LeakCheck(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		b, _ := io.ReadAll(c)
		c.Close()
		got <- len(b)
	}()
	p, err := faultproxy.New(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for p.Conns() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	p.CutAfter(10, faultproxy.Upstream)
	c.Write(bytes.Repeat([]byte("x"), 100))
	if n := <-got; n != 10 {
		t.Errorf("server received %d bytes, want the 10 before the cut", n)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("client connection still open after the cut")
	}
}

func TestCutAfterArmsNextConnection(t *testing.T) {
	t.Cleanup(faketarget.LeakCheck(t))
	p, err := faultproxy.New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.CutAfter(3, faultproxy.Downstream)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	c.Write([]byte("abcdef"))
	got, _ := io.ReadAll(c)
	if string(got) != "abc" {
		t.Errorf("got %q, want abc", got)
	}
}

func TestRefuseNew(t *testing.T) {
	t.Cleanup(faketarget.LeakCheck(t))
	p, c := setup(t)
	if _, err := echo(c, []byte("up"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.RefuseNew(true)
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("refused connection read %d, %v; want EOF or reset", n, err)
	}
	// The existing connection still works.
	if _, err := echo(c, []byte("alive"), 2*time.Second); err != nil {
		t.Errorf("existing connection: %v", err)
	}
	if p.TotalAccepted() != 2 || p.Conns() != 1 {
		t.Errorf("TotalAccepted %d Conns %d", p.TotalAccepted(), p.Conns())
	}
	p.RefuseNew(false)
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if _, err := echo(c3, []byte("back"), 2*time.Second); err != nil {
		t.Errorf("after RefuseNew(false): %v", err)
	}
	p.Close()
}

func TestCloseEndsEverything(t *testing.T) {
	t.Cleanup(faketarget.LeakCheck(t))
	p, c := setup(t)
	p.BlackHole(true)
	c.Write([]byte("stuck"))
	time.Sleep(50 * time.Millisecond)
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close hung with a black-holed connection")
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("connection still open after Close")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("proxy still listening after Close")
	}
}
