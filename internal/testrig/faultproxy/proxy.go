// Package faultproxy is a fault-injecting TCP proxy for tests: it listens on
// 127.0.0.1, forwards every accepted connection to a target address, and on
// command resets connections, stops forwarding (stall or black hole), delays
// each chunk, cuts a connection after a number of bytes, or refuses new
// connections the way a dead portal does. SetLink emulates a WAN link (no
// netem needed): a one-way latency per direction, pipelined like a real
// link's, and a bandwidth per direction shared by every connection (a
// token bucket).
//
// It imports only the standard library.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Dir is a forwarding direction.
type Dir int

const (
	// Upstream is client to target.
	Upstream Dir = iota
	// Downstream is target to client.
	Downstream
)

func (d Dir) String() string {
	if d == Upstream {
		return "upstream"
	}
	return "downstream"
}

// chunkSize is the most one read forwards at a time.
const chunkSize = 32 << 10

// Proxy forwards connections from Addr to the target.
type Proxy struct {
	target string
	ln     net.Listener

	mu        sync.Mutex
	cond      *sync.Cond // signalled when blackHole turns off or the proxy closes
	conns     map[*pair]struct{}
	total     int
	blackHole bool
	delay     time.Duration
	refuse    bool
	closed    bool
	stallT    *time.Timer
	armNext   [2]int64 // CutAfter budget for the next connection, -1 none
	flipArm   flipArm  // FlipDataIn (flip.go)
	link      Link
	buckets   [2]*bucket // per direction, shared by the connections
	wg        sync.WaitGroup
}

// pair is one proxied connection.
type pair struct {
	client, server net.Conn
	budget         [2]int64 // bytes left before the cut per direction; -1 none
	live           int      // pumps still running (guarded by Proxy.mu)
	flip           *pduTap  // downstream PDU parser for FlipDataIn (flip.go); pump only
	once           sync.Once
}

func (c *pair) close(reset bool) {
	c.once.Do(func() {
		for _, nc := range []net.Conn{c.client, c.server} {
			if tc, ok := nc.(*net.TCPConn); ok && reset {
				tc.SetLinger(0)
			}
			nc.Close()
		}
	})
}

// New listens on 127.0.0.1:0 and forwards to target.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, conns: map[*pair]struct{}{}, armNext: [2]int64{-1, -1}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.total++
		refuse := p.refuse || p.closed
		p.mu.Unlock()
		if refuse {
			client.Close()
			continue
		}
		server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			client.Close()
			continue
		}
		c := &pair{client: client, server: server, budget: [2]int64{-1, -1}}
		p.mu.Lock()
		// Checked again: RefuseNew and ResetAll may have run while we
		// dialled, and ResetAll did not see this pair yet.
		if p.closed || p.refuse {
			p.mu.Unlock()
			c.close(false)
			continue
		}
		c.budget, p.armNext = p.armNext, [2]int64{-1, -1}
		c.live = 2
		p.conns[c] = struct{}{}
		shaped := p.link.shaped()
		p.wg.Add(2)
		p.mu.Unlock()
		if shaped {
			go p.linkPump(c, Upstream, client, server)
			go p.linkPump(c, Downstream, server, client)
			continue
		}
		go p.pump(c, Upstream, client, server)
		go p.pump(c, Downstream, server, client)
	}
}

// pump forwards src to dst until either side fails.
func (p *Proxy) pump(c *pair, d Dir, src, dst net.Conn) {
	defer p.wg.Done()
	halfClosed := false
	defer func() {
		p.mu.Lock()
		c.live--
		last := c.live == 0
		if last {
			delete(p.conns, c)
		}
		p.mu.Unlock()
		if last || !halfClosed {
			c.close(false)
		}
	}()
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.blackHole && !p.closed {
				p.cond.Wait()
			}
			delay, closed := p.delay, p.closed
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
			if delay > 0 {
				time.Sleep(delay)
			}
			if n > 0 && d == Downstream {
				p.tap(c, buf[:n]) // flip.go
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if cut {
				return
			}
		}
		if err != nil {
			// Pass a clean EOF on as a half close so protocols that
			// shut down one direction still work.
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if tc, ok := dst.(*net.TCPConn); ok && errors.Is(err, io.EOF) {
				tc.CloseWrite()
				halfClosed = true
			}
			return
		}
	}
}

// ResetAll resets every open connection (TCP RST on both sides:
// SetLinger(0) and Close).
func (p *Proxy) ResetAll() {
	for _, c := range p.snapshot() {
		c.close(true)
	}
}

// ResetOne resets one open connection (RST) and reports whether there was
// one, e.g. to cut a single connection of a multi-connection session.
func (p *Proxy) ResetOne() bool {
	cs := p.snapshot()
	if len(cs) == 0 {
		return false
	}
	cs[len(cs)-1].close(true)
	return true
}

// BlackHole stops (on) or resumes forwarding in both directions without
// closing anything; data read meanwhile is held, not lost.
func (p *Proxy) BlackHole(on bool) {
	p.mu.Lock()
	p.blackHole = on
	if p.stallT != nil {
		p.stallT.Stop()
		p.stallT = nil
	}
	p.mu.Unlock()
	p.cond.Broadcast()
}

// Stall stops forwarding for d, then resumes.
func (p *Proxy) Stall(d time.Duration) {
	p.BlackHole(true)
	p.mu.Lock()
	p.stallT = time.AfterFunc(d, func() {
		p.mu.Lock()
		p.blackHole = false
		p.mu.Unlock()
		p.cond.Broadcast()
	})
	p.mu.Unlock()
}

// Delay delays every forwarded chunk by d (0 turns it off).
func (p *Proxy) Delay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// CutAfter closes each open connection after n more bytes in direction d
// (bytes up to the limit are still delivered). With no connection open it
// arms the next accepted one instead.
func (p *Proxy) CutAfter(n int64, d Dir) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.conns) == 0 {
		p.armNext[d] = n
		return
	}
	for c := range p.conns {
		c.budget[d] = n
	}
	if n == 0 {
		for c := range p.conns {
			go c.close(false)
		}
	}
}

// RefuseNew makes the proxy accept and at once close new connections (on)
// or forward them again (off).
func (p *Proxy) RefuseNew(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Conns is the number of open proxied connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// TotalAccepted counts every connection accepted, refused ones included.
func (p *Proxy) TotalAccepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

func (p *Proxy) snapshot() []*pair {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	if p.stallT != nil {
		p.stallT.Stop()
	}
	p.mu.Unlock()
	p.cond.Broadcast()
	err := p.ln.Close()
	for _, c := range p.snapshot() {
		c.close(false)
	}
	p.wg.Wait()
	return err
}
