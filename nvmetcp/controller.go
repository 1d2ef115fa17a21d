package nvmetcp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// adminDepth is the admin queue's depth (Linux's NVME_AQ_DEPTH).
const adminDepth = 32

// Controller is one association with an NVMe/TCP controller: the admin
// queue and the I/O queues. After a connection fails, the next command
// re-establishes the whole association with the same host NQN and host ID
// (a controller reset from the host's side).
type Controller struct {
	cfg Config

	mu      sync.Mutex // serialises (re)connection; guards the fields below
	admin   *queue
	io      []*queue
	broken  error // why the association is down, nil when up
	closed  bool
	info    pdu.Controller
	cap     uint64
	cntlID  uint16
	stopKA  chan struct{}
	kaDone  chan struct{}
	rr      atomic.Uint32
	maxXfer int
	gen     atomic.Uint64 // association number: +1 on every (re)connect
	down    chan struct{} // closed when the association breaks (NoReconnect)
	downOne sync.Once
	anaCh   chan struct{} // an ANA change event arrived (buffer 1)
	aerDone chan struct{} // closed when the event loop ends

	// closedAt is when reconnect last reset an association's
	// connections (zero: never); write-class commands wait for its
	// fence (fence.go). fencedGen is the association whose fence was
	// counted.
	closedAt   time.Time
	fencedGen  uint64
	reconnects atomic.Int64
	fences     atomic.Int64
	fencedCmds atomic.Int64
}

// Dial connects to the controller cfg names: admin queue, enable,
// Identify, then the I/O queues (none for a discovery controller).
func Dial(ctx context.Context, cfg Config) (*Controller, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	c := &Controller{cfg: cfg, down: make(chan struct{}), anaCh: make(chan struct{}, 1)}
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Info returns Identify Controller data.
func (c *Controller) Info() pdu.Controller {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// Config returns the configuration in use (defaults filled in).
func (c *Controller) Config() Config { return c.cfg }

// IOQueues is the number of I/O queues connected.
func (c *Controller) IOQueues() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.io)
}

func (c *Controller) discovery() bool { return c.cfg.SubNQN == pdu.DiscoveryNQN }

// connect builds the association; c.mu is held or c is not shared yet.
func (c *Controller) connect(ctx context.Context) error {
	cfg := &c.cfg
	log := cfg.Logger
	admin, err := dialQueue(ctx, cfg, 0, adminDepth)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Addr, err)
	}
	admin.inline = 8192 // NVMe/TCP admin queues take 8 KiB in capsule
	ok := false
	defer func() {
		if !ok {
			admin.close()
		}
	}()
	kato := uint32(0)
	if cfg.KeepAlive > 0 && !c.discovery() {
		kato = uint32(cfg.KeepAlive / time.Millisecond)
	}
	cntlID, err := connectQueue(ctx, admin, cfg, adminDepth-1, kato, 0xffff)
	if err != nil {
		return err
	}
	c.cntlID = cntlID
	if c.cap, err = propertyGet(ctx, admin, pdu.PropCAP, true); err != nil {
		return err
	}
	if err := enable(ctx, admin, c.cap); err != nil {
		return err
	}
	buf := make([]byte, pdu.IdentifyLen)
	if err := adminCmd(ctx, admin, "identify controller", pdu.SQE{Opcode: pdu.AdminIdentify,
		CDW: [6]uint32{pdu.CNSController}}, nil, buf); err != nil {
		return err
	}
	info, err := pdu.ParseController(buf)
	if err != nil {
		return err
	}
	c.info = info
	c.maxXfer = cfg.MaxTransfer
	if info.MDTS > 0 && info.MDTS < 20 {
		page := 1 << (12 + (c.cap>>48)&0xf) // CAP.MPSMIN
		c.maxXfer = min(c.maxXfer, (1<<info.MDTS)*page)
	}
	var ios []*queue
	if !c.discovery() {
		if ios, err = c.connectIO(ctx, admin); err != nil {
			return err
		}
	}
	ok = true
	admin.onFail = c.queueFailed
	for _, q := range ios {
		q.onFail = c.queueFailed
	}
	c.admin, c.io, c.broken = admin, ios, nil
	c.gen.Add(1)
	// A queue may have died before onFail was set.
	for _, q := range append([]*queue{admin}, ios...) {
		if err := q.failed(); err != nil {
			c.broken = err
		}
	}
	if kato > 0 {
		c.stopKA, c.kaDone = make(chan struct{}), make(chan struct{})
		go c.keepAlive(admin, c.stopKA, c.kaDone)
	}
	if !c.discovery() && info.CMIC&pdu.CMICANA != 0 && info.OAES&pdu.OAESANAChange != 0 {
		// Ask for ANA change notices (Asynchronous Event Configuration,
		// NVMe Base 2.0, Section 5.27.1.7) and keep one Asynchronous
		// Event Request outstanding.
		if _, err := adminResult(ctx, admin, "set features asynchronous event configuration", pdu.SQE{Opcode: pdu.AdminSetFeatures,
			CDW: [6]uint32{pdu.FeatureAsyncEvent, pdu.OAESANAChange}}); err != nil {
			log.WithError(err).Debug("nvmetcp: no ANA change events")
		} else {
			c.aerDone = make(chan struct{})
			go c.events(admin, c.aerDone)
		}
	}
	log.WithField("cntlid", cntlID).Infof("nvmetcp: connected to %s %s (%s, %d I/O queues)", cfg.Addr, cfg.SubNQN, info.Model, len(ios))
	return nil
}

// connectIO asks for the I/O queues and connects them.
func (c *Controller) connectIO(ctx context.Context, admin *queue) ([]*queue, error) {
	cfg := &c.cfg
	n := cfg.IOQueues
	var res uint64
	res, err := adminResult(ctx, admin, "set features number of queues", pdu.SQE{Opcode: pdu.AdminSetFeatures,
		CDW: [6]uint32{pdu.FeatureNumQueues, uint32(n-1)<<16 | uint32(n-1)}})
	if err != nil {
		return nil, err
	}
	got := min(int(res&0xffff), int(res>>16&0xffff)) + 1
	n = max(1, min(n, got))
	depth := min(cfg.QueueDepth, int(c.cap&0xffff)+1)
	if c.info.MaxCmd > 0 {
		depth = min(depth, int(c.info.MaxCmd))
	}
	depth = max(depth, 2)
	inline := 0
	if c.info.IOCCSZ > 4 {
		inline = min(int(c.info.IOCCSZ)*16-pdu.SQELen, 64<<10) - int(c.info.ICDOFF)*16
	}
	var qs []*queue
	for i := 1; i <= n; i++ {
		q, err := dialQueue(ctx, cfg, uint16(i), depth)
		if err == nil {
			q.inline, q.icdoff = max(inline, 0), uint32(c.info.ICDOFF)*16
			qid := uint16(i)
			q.abort = func(ctx context.Context, cid uint16) {
				_, err := adminResult(ctx, admin, "abort", pdu.SQE{Opcode: pdu.AdminAbort, CDW: [6]uint32{uint32(qid) | uint32(cid)<<16}})
				if err != nil {
					cfg.Logger.WithError(err).Debugf("nvmetcp: abort of CID %d on queue %d", cid, qid)
				}
			}
			q.r.MaxData = c.maxXfer + 4096
			_, err = connectQueue(ctx, q, cfg, uint16(depth-1), 0, c.cntlID)
			if err != nil {
				q.close()
			}
		}
		if err != nil {
			for _, q := range qs {
				q.close()
			}
			return nil, fmt.Errorf("I/O queue %d: %w", i, err)
		}
		qs = append(qs, q)
	}
	return qs, nil
}

// connectQueue runs Fabrics Connect (NVMe-oF 1.1, Section 3.3) on q and
// returns the controller ID.
func connectQueue(ctx context.Context, q *queue, cfg *Config, sqsize uint16, kato uint32, cntlID uint16) (uint16, error) {
	data := pdu.AppendConnectData(nil, cfg.HostID, cntlID, cfg.SubNQN, cfg.HostNQN)
	save := q.inline
	q.inline = max(q.inline, pdu.ConnectDataLen) // Connect data always goes in capsule
	cqe, err := q.do(ctx, pdu.ConnectSQE(q.qid, sqsize, kato), data, nil)
	q.inline = save
	if err != nil {
		return 0, fmt.Errorf("connect queue %d: %w", q.qid, err)
	}
	if st := cqe.StatusField(); !st.OK() {
		return 0, &StatusError{Op: fmt.Sprintf("connect queue %d to %s as %s", q.qid, cfg.SubNQN, cfg.HostNQN), Status: st, Fabrics: true}
	}
	if cqe.Result>>16&0xffff != 0 {
		return 0, fmt.Errorf("nvmetcp: connect: controller requires authentication (AUTHREQ %#x), not supported", cqe.Result>>16&0xffff)
	}
	return uint16(cqe.Result), nil
}

func adminCmd(ctx context.Context, q *queue, op string, sqe pdu.SQE, out, in []byte) error {
	cqe, err := q.do(ctx, sqe, out, in)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if st := cqe.StatusField(); !st.OK() {
		return &StatusError{Op: op, Status: st}
	}
	return nil
}

func adminResult(ctx context.Context, q *queue, op string, sqe pdu.SQE) (uint64, error) {
	cqe, err := q.do(ctx, sqe, nil, nil)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	if st := cqe.StatusField(); !st.OK() {
		return 0, &StatusError{Op: op, Status: st, Fabrics: sqe.Opcode == pdu.OpFabrics}
	}
	return cqe.Result, nil
}

func propertyGet(ctx context.Context, q *queue, off uint32, eight bool) (uint64, error) {
	return adminResult(ctx, q, fmt.Sprintf("property get %#x", off), pdu.PropertyGetSQE(off, eight))
}

func propertySet(ctx context.Context, q *queue, off, val uint32) error {
	_, err := adminResult(ctx, q, fmt.Sprintf("property set %#x", off), pdu.PropertySetSQE(off, val))
	return err
}

// CC and CSTS bits (NVMe Base 2.0, Figures 41 and 42).
const (
	ccEnable   = 1
	ccIOSQES   = 6 << 16 // 64-byte SQEs
	ccIOCQES   = 4 << 20 // 16-byte CQEs
	ccShnNorm  = 1 << 14
	cstsRdy    = 1
	cstsCFS    = 2
	cstsShMask = 3 << 2
	cstsShDone = 2 << 2
)

// enable sets CC.EN and waits for CSTS.RDY, at most CAP.TO (500 ms units).
func enable(ctx context.Context, q *queue, capReg uint64) error {
	if err := propertySet(ctx, q, pdu.PropCC, ccIOSQES|ccIOCQES|ccEnable); err != nil {
		return err
	}
	to := time.Duration(capReg>>24&0xff) * 500 * time.Millisecond
	to = min(max(to, time.Second), 60*time.Second)
	deadline := time.Now().Add(to)
	for {
		csts, err := propertyGet(ctx, q, pdu.PropCSTS, false)
		if err != nil {
			return err
		}
		if csts&cstsCFS != 0 {
			return errors.New("nvmetcp: controller fatal status (CSTS.CFS) while enabling")
		}
		if csts&cstsRdy != 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nvmetcp: controller not ready %v after CC.EN=1", to)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// keepAlive sends Keep Alive every KATO/2 (NVMe Base 2.0, Section 3.9).
func (c *Controller) keepAlive(admin *queue, stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(c.cfg.KeepAlive / 2)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-admin.dead:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.KeepAlive)
			_, err := adminResult(ctx, admin, "keep alive", pdu.SQE{Opcode: pdu.AdminKeepAlive})
			cancel()
			if err != nil {
				c.cfg.Logger.WithError(err).Warn("nvmetcp: keep alive failed")
				admin.fail(fmt.Errorf("%w: keep alive: %v", ErrConnection, err))
				return
			}
		}
	}
}

// queueFailed marks the association broken when one of its queues dies.
func (c *Controller) queueFailed(q *queue, err error) {
	go func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.broken == nil && !c.closed && (q == c.admin || contains(c.io, q)) {
			c.cfg.Logger.WithError(err).Warnf("nvmetcp: queue %d failed; the association will be re-established", q.qid)
			c.broken = err
			c.setDownLocked()
		}
	}()
}

func contains(qs []*queue, q *queue) bool {
	for _, x := range qs {
		if x == q {
			return true
		}
	}
	return false
}

// teardown closes every queue; c.mu held.
func (c *Controller) teardown() {
	if c.stopKA != nil {
		close(c.stopKA)
	}
	for _, q := range c.io {
		q.close()
	}
	if c.admin != nil {
		c.admin.close()
	}
	if c.stopKA != nil {
		<-c.kaDone // never takes c.mu; its command failed with the admin queue
		c.stopKA = nil
	}
	if c.aerDone != nil {
		<-c.aerDone // never takes c.mu either
		c.aerDone = nil
	}
	c.io, c.admin = nil, nil
}

// queue returns a live I/O queue (the admin queue when admin), rebuilding
// the association first when it is broken.
func (c *Controller) queue(ctx context.Context, admin bool) (*queue, uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, 0, blockdev.ErrClosed
	}
	if c.broken == nil && c.admin != nil {
		// queueFailed runs asynchronously: look at the queues themselves.
		for _, q := range append([]*queue{c.admin}, c.io...) {
			if err := q.failed(); err != nil {
				c.broken = err
				c.setDownLocked()
				break
			}
		}
	}
	if (c.broken != nil || c.admin == nil) && c.cfg.NoReconnect {
		cause := c.broken
		if cause == nil {
			cause = errors.New("no association")
		}
		return nil, 0, fmt.Errorf("%w: association lost (no reconnect): %w", ErrConnection, cause)
	}
	if c.broken != nil || c.admin == nil {
		if err := c.reconnect(ctx); err != nil {
			return nil, 0, err
		}
	}
	if admin || len(c.io) == 0 {
		return c.admin, c.gen.Load(), nil
	}
	return c.io[int(c.rr.Add(1))%len(c.io)], c.gen.Load(), nil
}

// reconnect re-establishes the association; c.mu held.
func (c *Controller) reconnect(ctx context.Context) error {
	cause := c.broken
	had := c.admin != nil
	c.teardown() // every queue closes with a TCP reset (queue.fail)
	if had {
		c.closedAt = time.Now() // the write fence counts from here
	}
	if c.closed {
		return blockdev.ErrClosed
	}
	c.cfg.Logger.WithError(cause).Infof("nvmetcp: reconnecting to %s", c.cfg.Addr)
	err := c.connect(ctx)
	if err != nil {
		c.broken = err
		return fmt.Errorf("%w: reconnect after %v: %v", ErrConnection, cause, err)
	}
	c.reconnects.Add(1)
	return nil
}

// Close shuts the controller down (CC.SHN normal, briefly) and closes
// every connection. Outstanding commands fail.
func (c *Controller) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.downOne.Do(func() { close(c.down) })
	if c.admin != nil && c.broken == nil && !c.discovery() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if propertySet(ctx, c.admin, pdu.PropCC, ccIOSQES|ccIOCQES|ccEnable|ccShnNorm) == nil {
			for ctx.Err() == nil {
				csts, err := propertyGet(ctx, c.admin, pdu.PropCSTS, false)
				if err != nil || csts&cstsShMask == cstsShDone {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		cancel()
	}
	c.teardown()
	return nil
}

// exec runs one command on a live queue, re-establishing the association
// and retrying while connections fail, up to ReconnectTimeout. After a
// reconnect, write-class commands wait for the old association's fence
// (fence.go); reads go at once.
//
// before, when set, runs ahead of every attempt with the association's
// number (the namespace checks it is still the same medium).
func (c *Controller) exec(ctx context.Context, admin bool, op string, sqe pdu.SQE, out, in []byte,
	before func(context.Context, uint64) error) (pdu.CQE, error) {
	var deadline time.Time
	for attempt := 0; ; attempt++ {
		q, gen, err := c.queue(ctx, admin)
		var cqe pdu.CQE
		if err == nil && writeClass(admin, sqe.Opcode) {
			waited, ferr := c.fence(ctx, deadline)
			if ferr != nil {
				return cqe, fmt.Errorf("%s: %w", op, ferr)
			}
			if waited {
				continue // take a queue again: the association may have changed
			}
		}
		if err == nil && before != nil {
			if err = before(ctx, gen); err != nil && !isConnErr(err) {
				return cqe, err
			}
		}
		if err == nil {
			cqe, err = q.do(ctx, sqe, out, in)
			if err == nil {
				return cqe, nil
			}
		}
		if errors.Is(err, blockdev.ErrClosed) || ctx.Err() != nil || !isConnErr(err) || c.cfg.ReconnectTimeout < 0 || c.cfg.NoReconnect {
			return cqe, fmt.Errorf("%s: %w", op, err)
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(c.cfg.ReconnectTimeout)
		}
		if time.Now().After(deadline) {
			return cqe, fmt.Errorf("%s: %w: %w", op, blockdev.ErrUnavailable, err)
		}
		c.cfg.Logger.WithError(err).Debugf("nvmetcp: %s: retrying after connection failure", op)
		c.markBroken(q, err)
		select {
		case <-ctx.Done():
			return cqe, ctx.Err()
		case <-time.After(min(time.Duration(attempt)*200*time.Millisecond, 2*time.Second)):
		}
	}
}

func (c *Controller) markBroken(q *queue, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil && (q == nil || q == c.admin || contains(c.io, q)) {
		c.broken = err
		c.setDownLocked()
	}
}

// setDownLocked closes Done when the controller does not reconnect.
func (c *Controller) setDownLocked() {
	if c.cfg.NoReconnect {
		c.downOne.Do(func() { close(c.down) })
	}
}

// ANAChanged receives a value after the controller reported an ANA change
// (Asynchronous Event, notice 03h): the ANA states should be read again.
func (c *Controller) ANAChanged() <-chan struct{} { return c.anaCh }

// events keeps an Asynchronous Event Request outstanding on admin until
// the queue ends. An ANA change notice reads the ANA log page (which
// re-arms the event, RAE 0) and signals ANAChanged. It never takes c.mu.
func (c *Controller) events(admin *queue, done chan struct{}) {
	defer close(done)
	log := c.cfg.Logger
	for {
		cqe, err := admin.doTimeout(context.Background(), pdu.SQE{Opcode: pdu.AdminAER}, nil, nil, 0)
		if err != nil {
			return
		}
		if st := cqe.StatusField(); !st.OK() {
			log.Debugf("nvmetcp: asynchronous event request: %v", st)
			return
		}
		typ, info, lid := cqe.Result&7, cqe.Result>>8&0xff, cqe.Result>>16&0xff
		log.Debugf("nvmetcp: asynchronous event type %d info %#x log %#x", typ, info, lid)
		if typ != 2 || info != 3 { // only notices of ANA change are asked for
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CommandTimeout)
		buf := make([]byte, 4096)
		numd := uint32(len(buf)/4 - 1)
		adminCmd(ctx, admin, "get log page (ANA, after the event)", pdu.SQE{Opcode: pdu.AdminGetLogPage,
			CDW: [6]uint32{uint32(pdu.LogANA) | numd<<16}}, nil, buf)
		cancel()
		log.Info("nvmetcp: ANA change reported by the controller")
		select {
		case c.anaCh <- struct{}{}:
		default:
		}
	}
}

// Done is closed when a controller with Config.NoReconnect lost its
// association (or was closed); never for one that reconnects.
func (c *Controller) Done() <-chan struct{} { return c.down }

// Abort ends the association at once: no shutdown notification, every
// connection closed with a reset (SO_LINGER 0) so nothing still queued
// in our kernel reaches the controller later, and every outstanding
// command failed. It returns once the read loops have ended.
func (c *Controller) Abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.downOne.Do(func() { close(c.down) })
	c.teardown() // queue.fail closes with a TCP reset
}

// Admin runs an admin command; in receives the controller's data.
func (c *Controller) Admin(ctx context.Context, sqe pdu.SQE, out, in []byte) (pdu.CQE, error) {
	return c.exec(ctx, true, fmt.Sprintf("admin opcode %#x", sqe.Opcode), sqe, out, in, nil)
}

// IdentifyNamespace returns Identify Namespace data of nsid.
func (c *Controller) IdentifyNamespace(ctx context.Context, nsid uint32) (pdu.Namespace, error) {
	buf := make([]byte, pdu.IdentifyLen)
	cqe, err := c.exec(ctx, true, "identify namespace", pdu.SQE{Opcode: pdu.AdminIdentify, NSID: nsid,
		CDW: [6]uint32{pdu.CNSNamespace}}, nil, buf, nil)
	if err != nil {
		return pdu.Namespace{}, err
	}
	if st := cqe.StatusField(); !st.OK() {
		return pdu.Namespace{}, &StatusError{Op: fmt.Sprintf("identify namespace %d", nsid), Status: st}
	}
	return pdu.ParseNamespace(buf)
}

// GetLogPage reads len(buf) bytes (a multiple of 4) of log page lid from
// offset off.
func (c *Controller) GetLogPage(ctx context.Context, lid uint8, off uint64, buf []byte) error {
	if len(buf) == 0 || len(buf)%4 != 0 {
		return fmt.Errorf("nvmetcp: get log page: length %d", len(buf))
	}
	numd := uint32(len(buf)/4 - 1)
	sqe := pdu.SQE{Opcode: pdu.AdminGetLogPage, CDW: [6]uint32{uint32(lid) | (numd&0xffff)<<16, numd >> 16,
		uint32(off), uint32(off >> 32)}}
	cqe, err := c.exec(ctx, true, "get log page", sqe, nil, buf, nil)
	if err != nil {
		return err
	}
	if st := cqe.StatusField(); !st.OK() {
		return &StatusError{Op: fmt.Sprintf("get log page %#x", lid), Status: st}
	}
	return nil
}
