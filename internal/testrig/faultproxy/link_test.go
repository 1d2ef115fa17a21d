package faultproxy_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
)

func shapedConn(t *testing.T, l faultproxy.Link) net.Conn {
	t.Helper()
	p, err := faultproxy.New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	p.SetLink(l)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestLinkLatency: a round trip through a 40 ms RTT link takes 40 ms, and
// a stream of chunks pipelines (ten back-to-back chunks take one RTT plus,
// not ten).
func TestLinkLatency(t *testing.T) {
	c := shapedConn(t, faultproxy.WAN(40*time.Millisecond, 0))
	start := time.Now()
	if _, err := echo(c, []byte("ping"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if rt := time.Since(start); rt < 40*time.Millisecond || rt > 400*time.Millisecond {
		t.Fatalf("round trip %v, want about 40ms", rt)
	}
	start = time.Now()
	msg := make([]byte, 1000)
	go func() {
		for i := 0; i < 10; i++ {
			c.Write(msg)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 10*len(msg))); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 300*time.Millisecond {
		t.Fatalf("10 pipelined chunks took %v: the latency is not pipelined", el)
	}
}

// TestLinkRate: 3 MB each way through a 6 MB/s link take about 0.5 s.
func TestLinkRate(t *testing.T) {
	const rate, total = 6 << 20, 3 << 20
	c := shapedConn(t, faultproxy.Link{Rate: [2]int64{rate, rate}})
	start := time.Now()
	go func() {
		buf := make([]byte, 64<<10)
		for sent := 0; sent < total; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, total)); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	got := float64(total) / el.Seconds()
	// The first burst is free; allow 25% either way.
	if got > rate*1.25 || got < rate*0.75 {
		t.Fatalf("measured %.2f MB/s over %v, want %.2f MB/s ±25%%", got/1e6, el, float64(rate)/1e6)
	}
	t.Logf("measured %.2f MB/s (link %.2f MB/s)", got/1e6, float64(rate)/1e6)
}
