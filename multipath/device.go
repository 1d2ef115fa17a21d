package multipath

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// Policies (path selectors).
const (
	PolicyFailover    = "failover"
	PolicyRoundRobin  = "round-robin"
	PolicyQueueLength = "queue-length"
	PolicyServiceTime = "service-time"
)

// DefaultFenceTimeout is Options.FenceTimeout's default.
const DefaultFenceTimeout = 5 * time.Second

// FailAtOnce as Options.NoPathTimeout fails I/O at once when no path is
// usable (0 means the default, 30 s).
const FailAtOnce = time.Nanosecond

// Options tune a multipath Device. Zero values take the defaults noted.
type Options struct {
	// Policy: PolicyFailover (default), PolicyRoundRobin,
	// PolicyQueueLength or PolicyServiceTime.
	Policy string
	// Failback: "immediate" (default), "manual", "followover" or a number
	// of seconds the preferred path must be healthy before I/O moves back.
	Failback string
	// NoPathTimeout bounds how long I/O waits while no path is usable
	// (default 30 s; FailAtOnce fails at once; negative waits forever).
	NoPathTimeout time.Duration
	// CheckInterval is the path checker's period (default 5 s).
	CheckInterval time.Duration
	// FenceTimeout is how long a failed write waits for session
	// reinstatement before a LOGICAL UNIT RESET fences the old nexus
	// (default 5 s: long enough for a link flap or a portal restart to
	// end in a reinstatement, which disturbs no other initiator's tasks;
	// well inside the 30 s SCSI command timeout of the layers above).
	FenceTimeout time.Duration
	// IOTimeout bounds one I/O on one path (0: none; the keepalive
	// detects dead links). Expiry counts as a transport error.
	IOTimeout time.Duration
	// MaxPathErrors: a path whose I/O failed this many times in a row
	// must pass a READ, not just TEST UNIT READY, to return (default 3).
	MaxPathErrors int
	// Logger; nil is silent.
	Logger *logrus.Entry
}

// Validate reports an option Open would refuse (an unknown policy, a bad
// failback), without connecting anywhere.
func (o Options) Validate() error {
	_, err := o.withDefaults()
	return err
}

func (o Options) withDefaults() (Options, error) {
	if o.Policy == "" {
		o.Policy = PolicyFailover
	}
	switch o.Policy {
	case PolicyFailover, PolicyRoundRobin, PolicyQueueLength, PolicyServiceTime:
	default:
		return o, fmt.Errorf("multipath: unknown policy %q (want failover, round-robin, queue-length or service-time)", o.Policy)
	}
	if o.Failback == "" {
		o.Failback = "immediate"
	}
	if _, _, err := parseFailback(o.Failback); err != nil {
		return o, err
	}
	if o.NoPathTimeout == 0 {
		o.NoPathTimeout = 30 * time.Second
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = 5 * time.Second
	}
	if o.FenceTimeout <= 0 {
		o.FenceTimeout = DefaultFenceTimeout
	}
	if o.MaxPathErrors <= 0 {
		o.MaxPathErrors = 3
	}
	if o.Logger == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		o.Logger = logrus.NewEntry(l)
	}
	return o, nil
}

// parseFailback returns the mode and, for a number, the delay.
func parseFailback(s string) (string, time.Duration, error) {
	switch s {
	case "immediate", "manual", "followover":
		return s, 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return "", 0, fmt.Errorf("multipath: failback %q: want immediate, manual, followover or a number of seconds", s)
	}
	return "delay", time.Duration(n) * time.Second, nil
}

// Device is one LU reached through several paths. It implements
// blockdev.Device and the optional interfaces by delegating to a path.
type Device struct {
	opts            Options
	log             *logrus.Entry
	failback        string
	fbDelay         time.Duration
	paths           []*Path
	ident           blockdev.Identity
	readOnly        bool
	ctx             context.Context // cancelled by Close
	cancel          context.CancelFunc
	wg              sync.WaitGroup
	mu              sync.Mutex
	changed         chan struct{} // closed and replaced when a path changes
	cur             *Path         // failover: the active path
	curSince        time.Time
	rr              int
	closed          bool
	failovers       int64
	lastFO          time.Duration // last failover: path failure to first I/O done elsewhere
	foStart         time.Time     // set at a path failure, cleared by the next success elsewhere
	foFrom          *Path
	queued          int // I/Os waiting for a usable path
	fencesReinstate int64
	fencesReset     int64
	fencesKATO      int64
	prKey           uint64 // persistent reservation key registered on every path, 0 none
}

var (
	_ blockdev.Device     = (*Device)(nil)
	_ blockdev.Trimmer    = (*Device)(nil)
	_ blockdev.Zeroer     = (*Device)(nil)
	_ blockdev.Extenter   = (*Device)(nil)
	_ blockdev.ReadOnlyer = (*Device)(nil)
	_ blockdev.Identifier = (*Device)(nil)
)

// Open logs in on every path (one session per config, each with its own
// ISID), opens LU lun on each, and groups the paths that reach the same LU.
// A path whose LU has a different identity fails Open with an error naming
// both; an unreachable path starts failed and is reinstated by the
// checker. At least one path must come up.
//
// Each config gets NoRecovery (this package handles failures), a fresh ISID
// unless one is set, and NopInterval/NopTimeout of 2 s unless set.
func Open(ctx context.Context, cfgs []initiator.Config, lun uint64, opts Options) (*Device, error) {
	if len(cfgs) == 0 {
		return nil, errors.New("multipath: no paths")
	}
	eps := make([]endpoint, len(cfgs))
	for i, c := range cfgs {
		c.NoRecovery = true
		if c.ISID == ([6]byte{}) {
			c.ISID = initiator.NewISID()
		}
		if c.NopInterval == 0 {
			c.NopInterval = 2 * time.Second
		}
		if c.NopTimeout == 0 {
			c.NopTimeout = 2 * time.Second
		}
		if c.NotReadyWait == 0 {
			// ALUA "transitioning" and "becoming ready" come back at
			// once: the selector tries another path instead.
			c.NotReadyWait = -1
		}
		eps[i] = &iscsiEndpoint{cfg: c, lun: lun}
	}
	return openEndpoints(ctx, eps, opts)
}

func openEndpoints(ctx context.Context, eps []endpoint, opts Options) (*Device, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	d := &Device{opts: opts, log: opts.Logger.WithField("multipath", len(eps)), changed: make(chan struct{})}
	d.failback, d.fbDelay, _ = parseFailback(opts.Failback)
	type result struct {
		c   pathConn
		err error
	}
	res := make([]result, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		d.paths = append(d.paths, &Path{idx: i, ep: ep})
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := ep.connect(ctx)
			res[i] = result{c, err}
		}()
	}
	wg.Wait()
	closeAll := func() {
		for _, r := range res {
			if r.c != nil {
				r.c.Close()
			}
		}
	}
	first := -1
	var errs []string
	for i, r := range res {
		if r.err != nil {
			errs = append(errs, fmt.Sprintf("path %d (%s): %v", i, eps[i].Portal(), r.err))
			continue
		}
		if first < 0 {
			first = i
			d.ident = r.c.Identity()
			d.readOnly = r.c.ReadOnly()
			continue
		}
		if id := r.c.Identity(); id != d.ident {
			closeAll()
			return nil, fmt.Errorf("multipath: path %d (%s) reaches a different LU than path %d (%s): %s vs %s; refusing to group them",
				i, eps[i].Portal(), first, eps[first].Portal(), fmtIdentity(id), fmtIdentity(d.ident))
		}
	}
	if first < 0 {
		return nil, fmt.Errorf("%w: multipath: no path came up: %s", blockdev.ErrUnavailable, strings.Join(errs, "; "))
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	now := time.Now()
	for i, r := range res {
		p := d.paths[i]
		if r.c == nil {
			p.lastErr, p.lastErrAt = r.err, now
			d.log.WithError(r.err).Warnf("path %d (%s) did not come up; will retry", i, p.ep.Portal())
			d.startReinstate(p, nil, false)
			continue
		}
		d.install(p, r.c)
	}
	d.refreshALUA()
	d.mu.Lock()
	d.selectFailoverLocked()
	d.mu.Unlock()
	d.wg.Add(1)
	go d.checker()
	return d, nil
}

func fmtIdentity(id blockdev.Identity) string {
	return fmt.Sprintf("{WWID %q, serial %q, %d bytes, %d-byte blocks}", id.WWID, id.Serial, id.Size, id.Block)
}

// install makes c the path's live nexus (and ends its reinstatement).
func (d *Device) install(p *Path, c pathConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p.reinstating = false
	if d.closed {
		go c.Close()
		return
	}
	p.gen++
	n := newNexus(c, p.gen)
	p.nx = n
	p.upSince = time.Now()
	p.target, p.tpgt, p.tsih = c.Nexus()
	d.notifyLocked()
	d.wg.Add(1)
	go d.watch(p, n)
}

// watch fails the nexus as soon as its connection dies (keepalive, reset),
// not only when an I/O notices.
//
// An NVMe/TCP path also delivers the controller's ANA change events here:
// every path's ANA state is read again at once, not at the next check.
func (d *Device) watch(p *Path, n *nexus) {
	defer d.wg.Done()
	var ana <-chan struct{}
	if a, ok := n.conn.(anaNotifier); ok {
		ana = a.anaChanged()
	}
	for {
		select {
		case <-n.conn.Done():
			d.failNexus(p, n, fmt.Errorf("connection lost"), false)
			return
		case <-n.dead:
			return
		case <-d.ctx.Done():
			return
		case <-ana:
			d.log.Infof("path %d (%s): the controller reports an ANA change; reading every path's ANA state", p.idx, p.ep.Portal())
			d.refreshALUA()
		}
	}
}

func (d *Device) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// Identity implements blockdev.Identifier.
func (d *Device) Identity() blockdev.Identity { return d.ident }
func (d *Device) Size() int64                 { return d.ident.Size }
func (d *Device) BlockSize() int              { return d.ident.Block }
func (d *Device) ReadOnly() bool              { return d.readOnly }

// Paths returns the paths in configuration order.
func (d *Device) Paths() []*Path { return d.paths }

// Close logs out of every path. Waiting I/O fails with blockdev.ErrClosed.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.notifyLocked()
	var conns []pathConn
	for _, p := range d.paths {
		if p.nx != nil {
			conns = append(conns, p.nx.conn)
			p.nx.proveDead("device closed")
			p.nx = nil
		}
	}
	d.mu.Unlock()
	d.cancel()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); c.Close() }()
	}
	wg.Wait()
	d.wg.Wait()
	return nil
}

type opKind int

const (
	opRead opKind = iota
	opWrite
	opOther // FLUSH, GET LBA STATUS: re-issued at once
)

func (d *Device) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := blockdev.CheckRange(d, off, int64(len(p))); err != nil {
		return err
	}
	return d.do(ctx, opRead, int64(len(p)), func(ctx context.Context, c pathConn) error { return c.ReadAt(ctx, p, off) })
}

func (d *Device) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := blockdev.CheckRange(d, off, int64(len(p))); err != nil {
		return err
	}
	if d.readOnly {
		return blockdev.ErrReadOnly
	}
	return d.do(ctx, opWrite, int64(len(p)), func(ctx context.Context, c pathConn) error { return c.WriteAt(ctx, p, off, fua) })
}

func (d *Device) Flush(ctx context.Context) error {
	return d.do(ctx, opOther, 0, func(ctx context.Context, c pathConn) error { return c.Flush(ctx) })
}

func (d *Device) Trim(ctx context.Context, off, n int64) error {
	return d.do(ctx, opWrite, 0, func(ctx context.Context, c pathConn) error { return c.Trim(ctx, off, n) })
}

func (d *Device) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	return d.do(ctx, opWrite, 0, func(ctx context.Context, c pathConn) error { return c.WriteZeroes(ctx, off, n, mayTrim) })
}

func (d *Device) Extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error) {
	var out []blockdev.Extent
	err := d.do(ctx, opOther, 0, func(ctx context.Context, c pathConn) error {
		var err error
		out, err = c.Extents(ctx, off, n)
		return err
	})
	return out, err
}

// do runs op on a path chosen by the selector, failing over on transport
// errors (writes only once the failed nexus is proven dead).
func (d *Device) do(ctx context.Context, kind opKind, n int64, op func(context.Context, pathConn) error) error {
	var noPathSince time.Time
	retries := 0
	for {
		p, nx, err := d.pick(ctx, &noPathSince)
		if err != nil {
			return err
		}
		opCtx, cancel := ctx, context.CancelFunc(func() {})
		if d.opts.IOTimeout > 0 {
			opCtx, cancel = context.WithTimeout(ctx, d.opts.IOTimeout)
		}
		p.started(n)
		t0 := time.Now()
		err = op(opCtx, nx.conn)
		cancel()
		p.finished(n, time.Since(t0), err == nil)
		if err == nil {
			d.succeeded(p)
			return nil
		}
		switch d.classify(ctx, err) {
		case classCaller:
			if ctx.Err() == nil {
				p.errs.Add(1)
			}
			return err
		case classRetry:
			if retries++; retries > maxRetries || (errors.Is(err, blockdev.ErrBusy) && retries > maxBusyRetries) {
				if isTryAgain(err) && !errors.Is(err, blockdev.ErrBusy) {
					// Past our budget: say "busy", which a mirror does
					// not count against the leg.
					err = fmt.Errorf("%w: %w", blockdev.ErrBusy, err)
				}
				return err
			}
			d.log.WithError(err).Debugf("path %d: retrying", p.idx)
			if isANAPathState(err) {
				// An ANA change moves groups on every controller of the
				// subsystem (one optimized, another not): read them all,
				// as Linux's ANA work does for each controller.
				d.refreshALUA()
			} else {
				d.recheckALUA(p, nx)
			}
			if retries > 1 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Duration(retries) * 20 * time.Millisecond):
				}
			}
			continue
		}
		if opCtx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("I/O timeout (%v) on %s: %w", d.opts.IOTimeout, p.ep.Portal(), err)
		}
		p.errs.Add(1)
		d.failNexus(p, nx, err, true)
		if kind == opWrite {
			if err := d.fence(ctx, p, nx, &noPathSince); err != nil {
				return err
			}
		}
	}
}

// maxRetries bounds re-issues that do not fail a path (ALUA state changes,
// tasks ended by our own LOGICAL UNIT RESET, TASK ABORTED). With the
// backoff in do they span about 10 s.
const maxRetries = 30

// maxBusyRetries bounds re-issues of blockdev.ErrBusy: the LUN handle has
// already retried that command for its whole budget, so a few more tries
// (on whatever path the selector picks) are enough.
const maxBusyRetries = 3

type errClass int

const (
	classPath   errClass = iota // fail the path, re-issue elsewhere
	classCaller                 // return to the caller unchanged
	classRetry                  // re-issue, path stays (ALUA state, a LU reset, TASK ABORTED, busy)
)

// classify sorts an I/O error the way dm-multipath does.
func (d *Device) classify(ctx context.Context, err error) errClass {
	if ctx.Err() != nil {
		return classCaller
	}
	return classifyErr(err)
}

func classifyErr(err error) errClass {
	var ce *initiator.ConnError
	switch {
	case isALUAPathState(err), isANAPathState(err), errors.Is(err, initiator.ErrAborted), isTryAgain(err):
		// TASK ABORTED: with TAS=1 a LUN reset or PREEMPT AND ABORT from
		// another I_T nexus ends our commands this way; Linux requeues
		// them (ADD_TO_MLQUEUE), and so do we: neither the path nor the
		// command is at fault.
		return classRetry
	case errors.As(err, &ce), errors.Is(err, blockdev.ErrUnavailable), errors.Is(err, initiator.ErrSessionClosed),
		errors.Is(err, initiator.ErrProtocol), errors.Is(err, context.DeadlineExceeded):
		return classPath
	case isSense(err),
		errors.Is(err, blockdev.ErrReadOnly), errors.Is(err, blockdev.ErrOutOfRange), errors.Is(err, blockdev.ErrMedium),
		errors.Is(err, blockdev.ErrNoSpace), errors.Is(err, blockdev.ErrNotSupported), errors.Is(err, blockdev.ErrInvalid),
		errors.Is(err, blockdev.ErrClosed):
		return classCaller
	}
	return classPath // unknown: like dm-multipath, assume the path
}

// isTryAgain: the command was not done but may be sent again — status
// TASK ABORTED, BUSY or TASK SET FULL, or blockdev.ErrBusy (a LUN handle
// that kept getting those past its own retry budget).
func isTryAgain(err error) bool {
	if errors.Is(err, blockdev.ErrBusy) {
		return true
	}
	var se *scsi.SenseError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Status {
	case scsi.StatusTaskAborted, scsi.StatusBusy, scsi.StatusTaskSetFull:
		return true
	}
	return false
}

// succeeded records an I/O success on p (and the end of a failover).
func (d *Device) succeeded(p *Path) {
	d.mu.Lock()
	p.consecFail = 0
	if !d.foStart.IsZero() && d.foFrom != p {
		d.lastFO = time.Since(d.foStart)
		d.log.Infof("failover complete: I/O resumed on path %d (%s) %v after path %d failed",
			p.idx, p.ep.Portal(), d.lastFO.Round(time.Millisecond), d.foFrom.idx)
		d.foStart, d.foFrom = time.Time{}, nil
	}
	d.mu.Unlock()
}

// failNexus takes n out of service (once) and starts reinstatement.
func (d *Device) failNexus(p *Path, n *nexus, cause error, byIO bool) {
	n.failOnce.Do(func() {
		d.mu.Lock()
		if byIO {
			p.consecFail++
		}
		if p.nx != n {
			d.mu.Unlock()
			return
		}
		p.nx = nil
		p.lastErr, p.lastErrAt = cause, time.Now()
		wasActive := d.activeLocked(p)
		if wasActive {
			p.failovers.Add(1)
			d.failovers++
			if d.foStart.IsZero() {
				d.foStart, d.foFrom = time.Now(), p
			}
		}
		if d.cur == p {
			d.cur = nil
		}
		closed := d.closed
		d.selectFailoverLocked()
		d.notifyLocked()
		d.mu.Unlock()
		if closed {
			return
		}
		d.log.WithError(cause).Warnf("path %d (%s, ISID %s) failed", p.idx, p.ep.Portal(), p.isidString())
		// Abortively, and before anything can prove n dead and release
		// the writes held for it (review #6): a Logout would queue
		// behind the PDUs that must never arrive, and an ordinary close
		// leaves them to the orphaned socket to deliver when the
		// partition heals. Concurrent failNexus calls wait in failOnce.
		n.conn.Abort()
		d.startReinstate(p, n, true)
	})
}
