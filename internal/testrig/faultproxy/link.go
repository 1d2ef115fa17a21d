package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Link describes an emulated WAN link. Latency is one-way, per direction
// (half the round trip each way: Latency 10 ms gives a 20 ms RTT); Rate is
// bytes per second per direction, shared by every connection of the proxy
// (0: unlimited).
type Link struct {
	Latency [2]time.Duration // [Upstream], [Downstream]
	Rate    [2]int64
}

func (l Link) shaped() bool {
	return l.Latency != [2]time.Duration{} || l.Rate != [2]int64{}
}

// WAN is the symmetric link with round trip rtt and rate bytes/s each way.
func WAN(rtt time.Duration, rate int64) Link {
	return Link{Latency: [2]time.Duration{rtt / 2, rtt / 2}, Rate: [2]int64{rate, rate}}
}

// SetLink shapes the connections accepted from now on like l (connections
// already open keep forwarding as they did; the rate and latency of shaped
// connections follow later SetLink calls). The zero Link turns shaping off
// for new connections.
func (p *Proxy) SetLink(l Link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.link = l
	for d := range p.buckets {
		if p.buckets[d] == nil {
			p.buckets[d] = &bucket{}
		}
		p.buckets[d].setRate(l.Rate[d])
	}
}

// linkQueue bounds the chunks in flight on one shaped direction (at most
// linkQueue*chunkSize bytes, 2 MiB): past it the reader stops reading and
// TCP pushes back, as a full link does.
const linkQueue = 64

type linkChunk struct {
	b   []byte
	due time.Time
	cut bool
}

// linkPump forwards src to dst through the emulated link: a reader stamps
// each chunk with its arrival time (now + latency), a writer delivers the
// chunks in order no earlier than that and no faster than the rate allows.
// Chunks in flight pipeline, so the throughput is not latency-bound.
func (p *Proxy) linkPump(c *pair, d Dir, src, dst net.Conn) {
	defer p.wg.Done()
	q := make(chan linkChunk, linkQueue)
	done := make(chan struct{})
	var halfClose bool
	go func() {
		defer close(done)
		for ch := range q {
			if w := time.Until(ch.due); w > 0 {
				time.Sleep(w)
			}
			for b := ch.b; len(b) > 0; {
				n := len(b)
				p.mu.Lock()
				bk, closed := p.buckets[d], p.closed
				p.mu.Unlock()
				if closed {
					c.close(false)
					return
				}
				if bk != nil {
					n = bk.take(n)
				}
				if _, err := dst.Write(b[:n]); err != nil {
					c.close(false)
					return
				}
				b = b[n:]
			}
			if ch.cut {
				c.close(false)
				return
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok && halfClose {
			tc.CloseWrite()
		}
	}()
	defer func() {
		close(q)
		<-done
		p.mu.Lock()
		c.live--
		last := c.live == 0
		if last {
			delete(p.conns, c)
		}
		p.mu.Unlock()
		if last || !halfClose {
			c.close(false)
		}
	}()
	for {
		buf := make([]byte, chunkSize)
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.blackHole && !p.closed {
				p.cond.Wait()
			}
			lat, closed := p.link.Latency[d], p.closed
			cut := false
			if b := c.budget[d]; b >= 0 {
				if int64(n) >= b {
					n, cut = int(b), true
				}
				c.budget[d] -= int64(n)
			}
			p.mu.Unlock()
			if closed {
				return
			}
			select {
			case q <- linkChunk{b: buf[:n], due: time.Now().Add(lat), cut: cut}:
			case <-done:
				return
			}
			if cut {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && errors.Is(err, io.EOF) {
				halfClose = true
			}
			return
		}
	}
}

// bucket is a token bucket of rate bytes/s with a burst of a fiftieth of a
// second (at least one chunk).
type bucket struct {
	mu     sync.Mutex
	rate   int64
	tokens float64
	last   time.Time
}

func (b *bucket) setRate(r int64) {
	b.mu.Lock()
	b.rate = r
	b.mu.Unlock()
}

// take waits until it may send up to n bytes and returns how many (at
// most one burst).
func (b *bucket) take(n int) int {
	b.mu.Lock()
	if b.rate <= 0 {
		b.mu.Unlock()
		return n
	}
	burst := max(float64(b.rate)/50, chunkSize)
	n = min(n, int(burst))
	now := time.Now()
	if b.last.IsZero() {
		b.last, b.tokens = now, burst
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*float64(b.rate))
	b.last = now
	b.tokens -= float64(n)
	var wait time.Duration
	if b.tokens < 0 {
		wait = time.Duration(-b.tokens / float64(b.rate) * float64(time.Second))
	}
	b.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
	return n
}
