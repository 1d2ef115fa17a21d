package multipath

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// fakeLU is a logical unit behind fake paths: it keeps sessions by ISID
// and models writes that stay queued in the target after their
// connection failed (ghosts) until the session is reinstated or the LU is
// reset.
type fakeLU struct {
	mu       sync.Mutex
	data     []byte
	id       blockdev.Identity
	events   []string
	resets   int
	sessions map[[6]byte]*fakeConn
	ghosts   []ghost
}

type ghost struct {
	c    *fakeConn
	off  int64
	data []byte
}

func newFakeLU(size int64, wwid string) *fakeLU {
	return &fakeLU{data: make([]byte, size), id: blockdev.Identity{WWID: wwid, Serial: "s-" + wwid, Size: size, Block: 512},
		sessions: map[[6]byte]*fakeConn{}}
}

func (l *fakeLU) event(f string, a ...any) {
	l.events = append(l.events, fmt.Sprintf(f, a...))
}

func (l *fakeLU) Events() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

// killLocked ends the session with isid: its queued tasks are terminated.
func (l *fakeLU) killLocked(isid [6]byte, how string) {
	if old := l.sessions[isid]; old != nil {
		l.dropGhostsLocked(func(g ghost) bool { return g.c == old })
		old.kill()
		delete(l.sessions, isid)
		l.event("reinstate %x (%s)", isid, how)
	}
}

func (l *fakeLU) dropGhostsLocked(match func(ghost) bool) {
	kept := l.ghosts[:0]
	for _, g := range l.ghosts {
		if !match(g) {
			kept = append(kept, g)
		}
	}
	l.ghosts = kept
}

// releaseGhosts lets the target execute writes still queued (what would
// happen without fencing).
func (l *fakeLU) releaseGhosts() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.ghosts)
	for _, g := range l.ghosts {
		copy(l.data[g.off:], g.data)
		l.event("ghost write %d", g.off)
	}
	l.ghosts = nil
	return n
}

// fake path modes
const (
	modeOK    = iota
	modeFail  // I/O fails with a ConnError (nothing queued)
	modeGhost // writes fail with a ConnError but stay queued in the target
	modeHang  // I/O blocks until the context ends or the conn is killed
	modeSense // I/O returns a medium error
)

type fakeEP struct {
	portal string
	isid   [6]byte
	tpgt   int
	mu     sync.Mutex
	lu     *fakeLU
	down   bool // connect fails
	noFenc bool // fenceLogin through this portal fails
	mode   int  // mode of new conns
	alua   *scsi.AccessState
	conns  []*fakeConn
	logins atomic.Int32
}

func (e *fakeEP) Portal() string { return e.portal }
func (e *fakeEP) ISID() [6]byte  { return e.isid }

func (e *fakeEP) set(f func(e *fakeEP)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(e)
}

func (e *fakeEP) conn() *fakeConn {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.conns) == 0 {
		return nil
	}
	return e.conns[len(e.conns)-1]
}

func (e *fakeEP) connect(ctx context.Context) (pathConn, sessionID, error) {
	e.mu.Lock()
	down, lu, mode, tpgt := e.down, e.lu, e.mode, e.tpgt
	e.mu.Unlock()
	if down {
		return nil, sessionID{}, &initiator.ConnError{Portal: e.portal, Err: fmt.Errorf("connection refused")}
	}
	e.logins.Add(1)
	c := &fakeConn{ep: e, lu: lu, tpgt: tpgt, done: make(chan struct{})}
	c.mode.Store(int32(mode))
	lu.mu.Lock()
	lu.killLocked(e.isid, "own portal")
	lu.sessions[e.isid] = c
	lu.mu.Unlock()
	e.mu.Lock()
	e.conns = append(e.conns, c)
	e.mu.Unlock()
	return c, sessionID{"iqn.fake", tpgt}, nil
}

func (e *fakeEP) fenceLogin(ctx context.Context, isid [6]byte) (string, int, error) {
	e.mu.Lock()
	no, lu := e.noFenc || e.down, e.lu
	e.mu.Unlock()
	if no {
		return "", 0, fmt.Errorf("login refused")
	}
	lu.mu.Lock()
	lu.killLocked(isid, "via "+e.portal)
	lu.mu.Unlock()
	return "iqn.fake", e.tpgt, nil
}

type fakeConn struct {
	ep       *fakeEP
	lu       *fakeLU
	tpgt     int
	mode     atomic.Int32
	done     chan struct{}
	killOnce sync.Once
	turFail  atomic.Bool
	aborted  atomic.Bool
	errN     atomic.Int32 // this many I/Os fail with ioErr first
	ioErr    error
}

func (c *fakeConn) kill() { c.killOnce.Do(func() { close(c.done) }) }

func (c *fakeConn) connErr() error {
	return &initiator.ConnError{Portal: c.ep.portal, Err: fmt.Errorf("connection reset")}
}

// io runs the common failure modes; ok means: do the operation.
func (c *fakeConn) io(ctx context.Context) error {
	select {
	case <-c.done:
		return initiator.ErrSessionClosed
	default:
	}
	if c.errN.Add(-1) >= 0 {
		return c.ioErr
	}
	c.errN.Store(0)
	switch c.mode.Load() {
	case modeFail:
		return c.connErr()
	case modeHang:
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return c.connErr()
		}
	case modeSense:
		return fmt.Errorf("%w: %w", blockdev.ErrMedium, &scsi.SenseError{Status: scsi.StatusCheckCondition, Key: scsi.KeyMediumError, ASC: 0x11, HasSense: true})
	}
	return nil
}

func (c *fakeConn) Size() int64    { return c.lu.id.Size }
func (c *fakeConn) BlockSize() int { return c.lu.id.Block }
func (c *fakeConn) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := c.io(ctx); err != nil {
		return err
	}
	c.lu.mu.Lock()
	copy(p, c.lu.data[off:])
	c.lu.mu.Unlock()
	return nil
}

func (c *fakeConn) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if c.mode.Load() == modeGhost {
		c.lu.mu.Lock()
		c.lu.ghosts = append(c.lu.ghosts, ghost{c, off, append([]byte(nil), p...)})
		c.lu.event("write queued on %s at %d", c.ep.portal, off)
		c.lu.mu.Unlock()
		c.kill()
		return c.connErr()
	}
	if err := c.io(ctx); err != nil {
		return err
	}
	c.lu.mu.Lock()
	copy(c.lu.data[off:], p)
	c.lu.event("write on %s at %d", c.ep.portal, off)
	c.lu.mu.Unlock()
	return nil
}

func (c *fakeConn) Flush(ctx context.Context) error                             { return c.io(ctx) }
func (c *fakeConn) Trim(ctx context.Context, off, n int64) error                { return c.io(ctx) }
func (c *fakeConn) WriteZeroes(ctx context.Context, off, n int64, m bool) error { return c.io(ctx) }
func (c *fakeConn) Extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error) {
	return []blockdev.Extent{{Offset: off, Length: n}}, c.io(ctx)
}
func (c *fakeConn) Close() error                { c.kill(); return nil }
func (c *fakeConn) Abort()                      { c.aborted.Store(true); c.kill() }
func (c *fakeConn) Identity() blockdev.Identity { return c.lu.id }
func (c *fakeConn) ReadOnly() bool              { return false }
func (c *fakeConn) TestUnitReady(ctx context.Context) error {
	select {
	case <-c.done:
		return initiator.ErrSessionClosed
	default:
	}
	if c.turFail.Load() {
		return c.connErr()
	}
	return nil
}
func (c *fakeConn) Ping(ctx context.Context) error { return c.TestUnitReady(ctx) }
func (c *fakeConn) ALUA(ctx context.Context) (scsi.AccessState, bool, bool, error) {
	c.ep.mu.Lock()
	defer c.ep.mu.Unlock()
	if c.ep.alua == nil {
		return 0, false, false, nil
	}
	return *c.ep.alua, false, true, nil
}
func (c *fakeConn) ResetLU(ctx context.Context) error {
	if err := c.TestUnitReady(ctx); err != nil {
		return err
	}
	c.lu.mu.Lock()
	defer c.lu.mu.Unlock()
	c.lu.resets++
	c.lu.ghosts = nil
	c.lu.event("lu reset via %s", c.ep.portal)
	return nil
}
func (c *fakeConn) Done() <-chan struct{}        { return c.done }
func (c *fakeConn) Nexus() (string, int, uint16) { return "iqn.fake", c.tpgt, 1 }

func fakePaths(lu *fakeLU, n int) ([]*fakeEP, []endpoint) {
	var eps []*fakeEP
	var out []endpoint
	for i := range n {
		e := &fakeEP{portal: fmt.Sprintf("127.0.0.%d:3260", i+1), isid: [6]byte{0x80, byte(i + 1)}, tpgt: 1, lu: lu}
		eps = append(eps, e)
		out = append(out, e)
	}
	return eps, out
}

func waitFor(timeout time.Duration, cond func() bool) bool {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}
