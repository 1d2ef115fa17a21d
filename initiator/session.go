package initiator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// Session is a logged-in iSCSI session. All methods are safe for concurrent
// use.
type Session struct {
	cfg       Config
	log       *logrus.Entry
	isid      [6]byte
	discovery bool
	params    Params
	tsih      uint16

	winMu    sync.Mutex
	cmdSN    uint32 // next CmdSN to assign to a non-immediate command
	expCmdSN uint32
	maxCmdSN uint32
	waiters  int
	winCh    chan struct{} // closed when the window may have opened
	// Task-set holds (tmfhold.go): while a task-set TMF is outstanding,
	// new SCSI commands to its LUN (to every LUN for a target reset)
	// are not sent.
	holds   map[uint64]int
	holdAll int
	holdCh  chan struct{} // closed and replaced when a hold ends

	taskMu  sync.Mutex
	tasks   map[uint32]*task
	nextITT uint32

	slots chan struct{} // queue depth semaphore

	connMu sync.Mutex
	conn   *conn   // leading connection
	conns  []*conn // every connection of the session (MC/S), leading first
	rr     atomic.Uint32
	portal string // where the session logged in (after redirects)
	// origPortal is the portal as configured, before any redirect;
	// recovery tries it too (a group address redirects to a live port).
	origPortal string
	closed     atomic.Bool
	closeCh    chan struct{}
	// clock is a coarse UnixNano the sweeper advances each tick: a
	// command's start time costs no clock read (sweep allows for it).
	clock atomic.Int64
	// lioTarget: a LUN of this session answered INQUIRY with vendor
	// "LIO-ORG"; LIO's TASK REASSIGN responses are read swapped
	// (connrecovery.go, reassignResponse).
	lioTarget atomic.Bool

	recMu sync.Mutex
	rec   recoveryState
	// connRec holds the connections under ERL 2 connection recovery
	// (connrecovery.go); connRecoveries counts the successful ones,
	// tasksReassigned the tasks the target took over with TASK REASSIGN
	// and commandsResent the commands sent again because the target did
	// not have them.
	connRec         map[*conn]bool
	connRecoveries  int64
	tasksReassigned int64
	commandsResent  int64
	recOld          []*conn // connections of the failed session generation
	hooks           []func(context.Context) error
	reconnects      int64
	lastRecovery    time.Duration
	drop            dropState // Async Message 2/3 timing (asyncdrop.go)

	// OnAsyncEvent, when set before commands run, receives SCSI async
	// events (event 0) with their sense data.
	OnAsyncEvent func(lun uint64, sense []byte)
}

// Dial connects to cfg.Portal and logs in. It follows login redirects
// (status 0x0101/0x0102) up to three times, unless cfg.NoRedirect.
func Dial(ctx context.Context, cfg Config) (*Session, error) {
	if cfg.InitiatorName == "" {
		return nil, errors.New("iscsi: InitiatorName is required")
	}
	if cfg.CHAP != nil {
		if err := cfg.CHAP.validate(); err != nil {
			return nil, err
		}
	}
	c := cfg.withDefaults()
	if m := c.MaxRecvDataSegmentLength; m < 512 || m > 1<<24-1 {
		return nil, fmt.Errorf("iscsi: MaxRecvDataSegmentLength %d out of range (RFC 7143: 512 to 16777215)", m)
	}
	s := &Session{
		cfg:       c,
		isid:      c.ISID,
		discovery: c.TargetName == "",
		tasks:     make(map[uint32]*task),
		slots:     make(chan struct{}, c.QueueDepth),
		winCh:     make(chan struct{}),
		holdCh:    make(chan struct{}),
		nextITT:   1,
		cmdSN:     1,
		closeCh:   make(chan struct{}),
	}
	s.clock.Store(time.Now().UnixNano())
	s.log = c.Logger.WithField("portal", c.Portal)
	if c.TargetName != "" {
		s.log = s.log.WithField("target", c.TargetName)
	}
	s.origPortal = portalAddr(c.Portal)
	if err := s.connectRedirected(ctx, s.origPortal); err != nil {
		return nil, err
	}
	if s.cfg.CommandTimeout > 0 {
		go s.sweep()
	}
	return s, nil
}

// maxRedirects bounds the login redirects followed by one login.
const maxRedirects = 3

// connectRedirected is connect at portal, following login redirects
// (status 0x0101/0x0102) up to maxRedirects times, unless cfg.NoRedirect.
func (s *Session) connectRedirected(ctx context.Context, portal string) error {
	for redirects := 0; ; redirects++ {
		err := s.connect(ctx, portal)
		var le *LoginError
		if errors.As(err, &le) && le.Class == 1 && le.TargetAddress != "" && redirects < maxRedirects && !s.cfg.NoRedirect {
			s.log.Infof("login redirected to %s", le.TargetAddress)
			portal = portalAddr(stripTPGT(le.TargetAddress))
			continue
		}
		return err
	}
}

func stripTPGT(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		switch addr[i] {
		case ',':
			return addr[:i]
		case ']', ':':
			return addr
		}
	}
	return addr
}

// connect dials and logs in the leading connection (a new session, or a
// reinstatement of this one: same ISID, TSIH 0), then adds connections up
// to the negotiated MaxConnections (MC/S), and starts their read loops.
func (s *Session) connect(ctx context.Context, portal string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LoginTimeout)
	defer cancel()
	s.winMu.Lock()
	cmdSN := s.cmdSN
	s.winMu.Unlock()
	c, l, err := s.dialLogin(ctx, portal, 0, 0, cmdSN)
	if err != nil {
		return err
	}
	s.connMu.Lock()
	s.params = l.params
	s.tsih = l.tsih
	s.connMu.Unlock()
	s.winMu.Lock()
	// The first non-immediate command carries the login's CmdSN (Section 11.12.8).
	s.expCmdSN, s.maxCmdSN = l.expCmdSN, l.maxCmdSN
	s.winMu.Unlock()
	c.p = l.params
	s.connMu.Lock()
	s.conn = c
	s.conns = []*conn{c}
	s.portal = portal
	s.connMu.Unlock()
	s.start(c)
	if s.closed.Load() {
		c.fail(ErrSessionClosed) // closed while we were logging in
		return ErrSessionClosed
	}
	s.log.Debugf("logged in: TSIH %d, %v", l.tsih, l.params)
	want := min(s.cfg.MaxConnections, l.params.MaxConnections)
	for cid := 1; cid < want; cid++ {
		s.winMu.Lock()
		cmdSN := s.cmdSN
		s.winMu.Unlock()
		// "A login on an added connection carries the session's current
		// CmdSN" (Section 11.12.8) and the session's TSIH.
		ac, al, err := s.dialLogin(ctx, portal, uint16(cid), l.tsih, cmdSN)
		if err != nil {
			s.log.WithError(err).Warnf("could not add connection %d of %d; going on with %d", cid+1, want, cid)
			break
		}
		ac.p = al.params
		s.connMu.Lock()
		s.conns = append(s.conns, ac)
		s.connMu.Unlock()
		s.start(ac)
		s.log.Debugf("added connection %d (CID %d)", cid+1, cid)
	}
	return nil
}

// dialLogin opens one TCP connection and logs it in.
func (s *Session) dialLogin(ctx context.Context, portal string, cid, tsih uint16, cmdSN uint32) (*conn, *loginConn, error) {
	nc, err := s.cfg.Dial(ctx, "tcp", portal)
	if err != nil {
		return nil, nil, &ConnError{Portal: portal, Err: err}
	}
	tuneSocket(nc, tcpUserTimeout(&s.cfg)) // SO_LINGER 0, TCP_USER_TIMEOUT (abort.go)
	s.log.Debugf("connected to %s, logging in (ISID %x, TSIH %d, CID %d)", portal, s.isid, tsih, cid)
	l, err := s.login(ctx, nc, cid, tsih, cmdSN)
	if err != nil {
		nc.Close()
		var le *LoginError
		if errors.As(err, &le) || errors.Is(err, ErrAuth) || errors.Is(err, ErrProtocol) {
			return nil, nil, err
		}
		var ne net.Error
		if errors.Is(err, ErrNotTarget) {
			// a ConnError below, like any wrong address
		} else if ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
			err = &loginTimeoutError{d: s.cfg.LoginTimeout, err: err}
		} else if errors.Is(err, io.EOF) && s.cfg.CHAP == nil {
			// LIO closes the connection instead of answering 0x0201.
			err = fmt.Errorf("%w (the target closed the connection during login; does it require CHAP credentials?)", err)
		}
		return nil, nil, &ConnError{Portal: portal, Err: err}
	}
	c := newConn(s, nc, cid, portal, l.r, l.statSN+1, l.params)
	return c, l, nil
}

// start runs a logged-in connection's read loop, writer and keepalive.
func (s *Session) start(c *conn) {
	go c.writer()
	go c.readLoop()
	if s.cfg.NopInterval > 0 {
		go c.keepalive(s.cfg.NopInterval, s.cfg.NopTimeout)
	}
}

// Connections returns the number of live connections of the session.
func (s *Session) Connections() int {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	n := 0
	for _, c := range s.conns {
		select {
		case <-c.done:
		default:
			n++
		}
	}
	return n
}

// allConns returns the connections of the current session generation.
func (s *Session) allConns() []*conn {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return append([]*conn(nil), s.conns...)
}

// Params returns the negotiated operational parameters.
func (s *Session) Params() Params {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.params
}

// ISID returns the session's initiator session ID.
func (s *Session) ISID() [6]byte { return s.isid }

// TSIH returns the target-assigned session handle.
func (s *Session) TSIH() uint16 {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.tsih
}

// portalAddr is the portal the session logs in to (after redirects).
func (s *Session) portalAddr() string {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.portal
}

func (s *Session) currentConn(ctx context.Context) (*conn, error) {
	if s.closed.Load() {
		return nil, ErrSessionClosed
	}
	s.recMu.Lock()
	fatal, recovering, cause := s.rec.fatal, s.rec.recovering, s.rec.cause
	s.recMu.Unlock()
	if fatal != nil {
		return nil, fatal
	}
	if recovering && ctx.Value(verifyKey) == nil {
		// Hold callers back until recovery (and identity checks) end.
		return nil, &ConnError{Portal: s.portalAddr(), Err: fmt.Errorf("session recovering: %w", cause)}
	}
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.conn == nil {
		return nil, ErrSessionClosed
	}
	if c := s.liveConnLocked(); c != nil {
		return c, nil
	}
	<-s.conn.done
	return nil, s.conn.err
}

// liveConnLocked spreads tasks over the connections (MC/S): round robin
// over the live ones; a task stays on the connection it started on
// (allegiance). nil when none is live. connMu must be held.
func (s *Session) liveConnLocked() *conn {
	n := len(s.conns)
	start := int(s.rr.Add(1))
	for i := 0; i < n; i++ {
		c := s.conns[(start+i)%n]
		select {
		case <-c.done:
			continue
		default:
			if c.leaving.Load() {
				continue
			}
			return c
		}
	}
	return nil
}

func (s *Session) allocLoginITT() uint32 {
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	itt := s.nextITT
	s.nextITT++
	return itt
}

// register assigns an ITT and enters t into the task table. It fails when
// t's connection is already down: the read loop's exit has failed every
// task it knew of, and a task added later would never be finished.
func (s *Session) register(t *task) error {
	s.taskMu.Lock()
	if t.conn != nil && t.conn.down {
		s.taskMu.Unlock()
		return t.conn.err
	}
	if t.itt != 0 {
		if _, busy := s.tasks[t.itt]; !busy {
			s.tasks[t.itt] = t
			s.taskMu.Unlock()
			return nil
		}
	}
	for {
		itt := s.nextITT
		s.nextITT++
		if itt == pdu.ReservedTag || itt == 0 {
			continue
		}
		if _, busy := s.tasks[itt]; busy {
			continue
		}
		t.itt = itt
		s.tasks[itt] = t
		break
	}
	s.taskMu.Unlock()
	return nil
}

func (s *Session) lookup(itt uint32) *task {
	s.taskMu.Lock()
	t := s.tasks[itt]
	s.taskMu.Unlock()
	return t
}

// complete removes t from the table and wakes its caller.
func (s *Session) complete(t *task, err error) {
	s.taskMu.Lock()
	if s.tasks[t.itt] == t {
		delete(s.tasks, t.itt)
	}
	s.taskMu.Unlock()
	t.finish(err)
}

// takeTasksLocked removes the tasks allegiant to c from the task table and
// returns them. s.taskMu is held.
func (s *Session) takeTasksLocked(c *conn) []*task {
	var out []*task
	for itt, t := range s.tasks {
		if t.conn == c {
			out = append(out, t)
			delete(s.tasks, itt)
		}
	}
	return out
}

// connDown fails every task of a failed connection.
func (s *Session) connDown(c *conn, err error) {
	if tasks, ok := s.beginConnRecovery(c, err); ok {
		// ERL 2: the session stays; c's SCSI tasks wait for reassignment.
		go s.recoverConn(c, tasks, err)
		return
	}
	s.startRecovery(c, err)
	s.taskMu.Lock()
	c.down = true
	dead := s.takeTasksLocked(c)
	s.taskMu.Unlock()
	for _, t := range dead {
		t.finish(err)
	}
	s.winMu.Lock()
	c.dead = true
	close(s.winCh)
	s.winCh = make(chan struct{})
	s.winMu.Unlock()
}

// updateWindow applies ExpCmdSN/MaxCmdSN from any target PDU
// (RFC 7143, Section 4.2.2.1).
func (s *Session) updateWindow(exp, max uint32) {
	s.winMu.Lock()
	// "If the PDU's MaxCmdSN < its ExpCmdSN - 1, ignore both."
	if serialLT(max, exp-1) {
		s.winMu.Unlock()
		return
	}
	if serialGT(exp, s.expCmdSN) {
		s.expCmdSN = exp
	}
	if serialGT(max, s.maxCmdSN) {
		s.maxCmdSN = max
		if s.waiters > 0 {
			close(s.winCh)
			s.winCh = make(chan struct{})
			s.waiters = 0
		}
	}
	s.winMu.Unlock()
}

// issue assigns a CmdSN inside the window (blocking while it is closed),
// registers t and calls send with the CmdSN, all under the connection's
// write mutex so commands leave in CmdSN order; a nil send is sendSCSI
// (t is a SCSI command from newSCSITask). Immediate commands take the
// current CmdSN without advancing it and ignore the window.
func (s *Session) issue(ctx context.Context, c *conn, t *task, immediate bool, send func(cmdSN uint32) error) error {
	for {
		ok, ch, err := s.issueNow(c, t, immediate, true, send)
		if ok || err != nil {
			return err
		}
		// Zero window, or the LUN held by a task-set TMF: wait for a
		// NOP-In or response to open the window, or the TMF to end.
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return c.err
		}
	}
}

// issueNow is one attempt of issue. When the window is closed it sends
// nothing and returns ok false and, if the caller will wait, a channel
// closed when the window may have opened.
func (s *Session) issueNow(c *conn, t *task, immediate, willWait bool, send func(cmdSN uint32) error) (ok bool, opened <-chan struct{}, err error) {
	c.wmu.Lock()
	s.winMu.Lock()
	if c.dead {
		// Never consume a CmdSN for a connection that is gone: the
		// reinstating login starts the new session at s.cmdSN, and a
		// gap would stall the new session's first command.
		s.winMu.Unlock()
		c.wmu.Unlock()
		return false, nil, c.err
	}
	if c.leaving.Load() && t.kind != kindLogout {
		// Being logged out: nothing new goes on it (Section 11.14).
		s.winMu.Unlock()
		c.wmu.Unlock()
		return false, nil, &ConnError{Portal: c.portal, Err: errConnLeaving}
	}
	if t.kind == kindSCSI && s.heldLocked(t.lun) {
		// A task-set TMF is outstanding for this LUN: a command sent now
		// would get a CmdSN after the TMF's, so the TMF would not cover
		// it, yet it would run under the reset. Send it after the TMF.
		var ch chan struct{}
		if willWait {
			ch = s.holdCh
		}
		s.winMu.Unlock()
		c.wmu.Unlock()
		return false, ch, nil
	}
	if immediate || serialLE(s.cmdSN, s.maxCmdSN) {
		sn := s.cmdSN
		if !immediate {
			s.cmdSN++
		}
		if t.kind == kindTMF {
			s.holdLocked(t)
		}
		s.winMu.Unlock()
		t.cmdSN, t.conn = sn, c
		if err := s.register(t); err != nil {
			c.wmu.Unlock()
			t.itt = 0
			return false, nil, err
		}
		var err error
		if send == nil {
			err = s.sendSCSI(c, t, sn)
		} else {
			err = send(sn)
		}
		c.wmu.Unlock()
		c.flush()
		return true, nil, err
	}
	var ch chan struct{}
	if willWait {
		s.waiters++
		ch = s.winCh
	}
	s.winMu.Unlock()
	c.wmu.Unlock()
	return false, ch, nil
}

func (s *Session) acquireSlot(ctx context.Context) error {
	select {
	case s.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Session) releaseSlot() { <-s.slots }

// Do executes one SCSI command and returns its status. A CHECK CONDITION is
// not an error here: the caller decodes Response.Sense. Errors are transport
// errors (*ConnError), ErrAborted, or the context's error — in every case
// the command is finished on the target side or its connection is gone
// before Do returns, so cmd.Read is never written afterwards.
func (s *Session) Do(ctx context.Context, cmd *Command) (Response, error) {
	timeouts, _ := ctx.Value(timeoutsKey).(int)
	for aborted, reissued := 0, 0; ; reissued++ {
		resp, err := s.doOnce(ctx, cmd)
		if errors.Is(err, ErrAborted) && ctx.Err() == nil && aborted < 3 {
			// Ended by a task management function issued for another
			// command (a LUN reset that covered it): issue it again.
			aborted++
			continue
		}
		var te *timeoutError
		if errors.As(err, &te) && te.reissue && ctx.Err() == nil && timeouts < maxTimeoutReissue {
			// Timed out, and the target confirmed it ended the task: it
			// will not run later, so issuing it again is safe (even a
			// write), and a target that forgot the command answers the
			// new one.
			timeouts++
			s.log.Warnf("command %#x timed out and was aborted; issuing it again (%d of %d)", cmd.CDB[0], timeouts, maxTimeoutReissue)
			continue
		}
		if err == nil || ctx.Err() != nil || !s.recoverable(err) || ctx.Value(verifyKey) != nil {
			// (The identity checks run inside recovery: they must not
			// wait for the recovery they are part of.)
			return resp, err
		}
		// The connection failed before the command's status arrived:
		// wait for session reinstatement, then issue it again — but not
		// for ever: a command the target answers by dropping the
		// connection every time would loop through reconnects.
		if reissued == maxReissue {
			return resp, fmt.Errorf("iscsi: gave up after the connection failed %d times during this command: %w", maxReissue+1, err)
		}
		if werr := s.awaitRecovery(ctx, err); werr != nil {
			return resp, werr
		}
	}
}

func (s *Session) doOnce(ctx context.Context, cmd *Command) (Response, error) {
	if len(cmd.CDB) > 16 {
		return Response{}, fmt.Errorf("iscsi: CDB of %d bytes (extended CDBs are not supported)", len(cmd.CDB))
	}
	if cmd.Read != nil && cmd.Write != nil {
		return Response{}, errors.New("iscsi: bidirectional commands are not supported")
	}
	c, err := s.currentConn(ctx)
	if err != nil {
		return Response{}, err
	}
	if err := s.acquireSlot(ctx); err != nil {
		return Response{}, err
	}
	defer s.releaseSlot()

	t := s.newSCSITask(c, cmd)
	err = s.issue(ctx, c, t, false, nil)
	if err != nil && t.itt == 0 {
		return Response{}, err // never sent
	}
	if err != nil {
		<-t.doneCh() // the write failed: the connection is failing all its tasks
		return t.resp, t.err
	}
	return s.wait(ctx, c, t)
}

// newSCSITask builds the task for cmd on c: its command PDU and how its
// data goes out; sendSCSI queues them once issue has given it a CmdSN.
// t.r2t is set when the target will solicit part of the data.
func (s *Session) newSCSITask(c *conn, cmd *Command) *task {
	return s.initSCSITask(newTask(kindSCSI), c, cmd)
}

// initSCSITask is newSCSITask on a zero task the caller allocated (the
// non-blocking path keeps it in its asyncCmd: one allocation per command
// instead of two).
func (s *Session) initSCSITask(t *task, c *conn, cmd *Command) *task {
	t.kind = kindSCSI
	t.lun, t.rbuf, t.wbuf = cmd.LUN, cmd.Read, cmd.Write
	if s.cfg.CommandTimeout > 0 {
		t.start = s.clock.Load()
	}
	p := c.p
	req := &t.req
	*req = pdu.SCSICommand{Header: pdu.Header{LUN: cmd.LUN}, Attr: cmd.Attr}
	if req.Attr == 0 {
		req.Attr = pdu.AttrSimple
	}
	copy(req.CDB[:], cmd.CDB)
	switch {
	case cmd.Read != nil:
		req.Read = true
		req.EDTL = uint32(len(cmd.Read))
	case cmd.Write != nil:
		req.Write = true
		req.EDTL = uint32(len(cmd.Write))
		first := min(len(cmd.Write), p.FirstBurstLength)
		if p.ImmediateData {
			t.imm = min(first, p.MaxXmitDSL)
		}
		if !p.InitialR2T {
			t.unsol = first - t.imm
		}
		if len(cmd.Write) > t.imm+t.unsol || p.ErrorRecoveryLvl >= 1 {
			// Solicited data follows (R2Ts) beyond the first burst;
			// at ERL 1 a recovery R2T may ask again for any part
			// (a Data-Out the target found damaged).
			t.r2t = make(chan r2tReq, p.MaxOutstandingR2T+1)
		}
	}
	req.Final = t.unsol == 0
	return t
}

// sendSCSI queues t's command PDU with CmdSN sn, its immediate data and
// its unsolicited Data-Out; c.wmu is held (issueNow).
func (s *Session) sendSCSI(c *conn, t *task, sn uint32) error {
	req := &t.req
	req.ITT, req.CmdSN, req.ExpStatSN = t.itt, sn, c.expStatSN.Load()
	if err := c.queueLocked(req, t.wbuf[:t.imm]); err != nil {
		return err
	}
	if t.unsol > 0 {
		// Unsolicited Data-Out follows the command at once so it
		// precedes later commands' data (Section 4.2.5.2).
		return s.sendData(c, t, pdu.ReservedTag, uint32(t.imm), uint32(t.unsol), true)
	}
	return nil
}

// wait serves R2Ts for t until it completes; on cancellation it aborts the
// task on the target (ABORT TASK) before returning.
func (s *Session) wait(ctx context.Context, c *conn, t *task) (Response, error) {
	done := t.doneCh()
	for {
		select {
		case r := <-t.r2t:
			// Data goes out on the connection the R2T came on. If that
			// one failed, the send fails: the task then either fails
			// with it or (ERL 2) is reassigned and the target asks
			// again with a recovery R2T on its new connection.
			_ = s.sendData(r.conn, t, r.ttt, r.offset, r.length, false)
		case <-done:
			return s.result(t)
		case <-ctx.Done():
			if t.timedOut.CompareAndSwap(false, true) {
				t.cancelled = true
				s.escalate(s.taskConn(t), t, "cancelled")
			}
			<-done
			if t.err == nil {
				return t.resp, nil // completed before the abort took effect
			}
			return t.resp, ctx.Err()
		}
	}
}

// result maps a finished task to Do's result; a task the sweeper timed out
// and aborted gives a *timeoutError (ErrCommandTimeout).
func (s *Session) result(t *task) (Response, error) {
	if t.err != nil && t.timedOut.Load() && !t.cancelled && errors.Is(t.err, ErrAborted) {
		return t.resp, &timeoutError{after: s.cfg.CommandTimeout, reissue: reissueAfterAbort(t)}
	}
	return t.resp, t.err
}

// sendData sends length bytes of t's write buffer from offset as Data-Out
// PDUs no larger than the target's MaxRecvDataSegmentLength; DataSN
// restarts at 0 for each sequence (Section 4.2.2.4). The whole sequence is
// queued at once and leaves in one flush (one writev). With locked the
// caller holds wmu and flushes itself.
func (s *Session) sendData(c *conn, t *task, ttt, offset, length uint32, locked bool) error {
	if !locked {
		c.wmu.Lock()
	}
	maxSeg := uint32(c.p.MaxXmitDSL)
	var dsn uint32
	var err error
	for done := uint32(0); done < length && err == nil; dsn++ {
		n := min(maxSeg, length-done)
		out := pdu.DataOut{Header: pdu.Header{LUN: t.lun, ITT: t.itt, Final: done+n == length},
			TTT: ttt, DataSN: dsn, BufferOffset: offset + done, ExpStatSN: c.expStatSN.Load()}
		err = c.queueLocked(&out, t.wbuf[offset+done:offset+done+n])
		done += n
	}
	if !locked {
		c.wmu.Unlock()
		c.flush()
	}
	return err
}

// control runs a Text, NOP-Out or Logout exchange and returns the response.
func (s *Session) control(ctx context.Context, c *conn, t *task, immediate bool, p pdu.PDU, data []byte) error {
	err := s.issue(ctx, c, t, immediate, func(sn uint32) error {
		p.Hdr().ITT = t.itt
		setSN(p, sn, c.expStatSN.Load())
		return c.queueLocked(p, data)
	})
	if err != nil {
		if t.itt != 0 {
			s.complete(t, err)
		}
		return err
	}
	select {
	case <-t.doneCh():
		return t.err
	case <-ctx.Done():
		// Control exchanges carry no caller buffers: dropping the wait
		// is safe; a late response finds no task and is discarded.
		s.complete(t, ctx.Err())
		return ctx.Err()
	}
}

// maxTextResponse bounds a reassembled Text Response (SendTargets lists).
const maxTextResponse = 4 << 20

// Text sends a Text Request with kvs (for example SendTargets=All) and
// returns the reassembled response keys, following continuations
// (C bit, Target Transfer Tag; RFC 7143 Section 11.10).
func (s *Session) Text(ctx context.Context, kvs []pdu.KV) ([]pdu.KV, error) {
	c, err := s.currentConn(ctx)
	if err != nil {
		return nil, err
	}
	req := pdu.TextRequest{Header: pdu.Header{Final: true}, TTT: pdu.ReservedTag}
	data := pdu.AppendText(nil, kvs...)
	var all []byte
	t := newTask(kindText)
	for i := 0; ; i++ {
		// Non-immediate: istgt advances ExpCmdSN even after an immediate
		// Text Request (real-targets.md), which would make our next
		// command look stale to it. Every request of one exchange keeps
		// the first ITT (Section 11.10.3).
		if i > 0 {
			itt := t.itt
			t = newTask(kindText)
			t.itt = itt
		}
		if err := s.control(ctx, c, t, false, &req, data); err != nil {
			return nil, err
		}
		resp := t.ctl.(*pdu.TextResponse)
		all = append(all, t.ctlData...)
		if len(all) > maxTextResponse {
			return nil, protoErr("text response longer than %d bytes", maxTextResponse)
		}
		if !resp.Continue {
			out, err := pdu.ParseText(all)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			return out, nil
		}
		if resp.TTT == pdu.ReservedTag {
			return nil, protoErr("Text Response with C=1 and no Target Transfer Tag")
		}
		// Ask for the rest: an empty request echoing the TTT.
		req = pdu.TextRequest{Header: pdu.Header{Final: true}, TTT: resp.TTT}
		data = nil
	}
}

// Ping sends a NOP-Out and waits for the NOP-In.
func (s *Session) Ping(ctx context.Context) error {
	c, err := s.currentConn(ctx)
	if err != nil {
		return err
	}
	t := newTask(kindNop)
	return s.control(ctx, c, t, true, &pdu.NopOut{Header: pdu.Header{Immediate: true, Final: true}, TTT: pdu.ReservedTag}, nil)
}

// asyncEvent handles an Async Message (RFC 7143, Section 11.9.1).
func (s *Session) asyncEvent(c *conn, a *pdu.AsyncMessage, data []byte) {
	log := s.log.WithField("event", a.Event)
	switch a.Event {
	case 0:
		sense := data
		if len(sense) >= 2 {
			sense = sense[2:]
		}
		log.Infof("SCSI async event on LUN %#x", a.LUN)
		if s.OnAsyncEvent != nil {
			s.OnAsyncEvent(a.LUN, sense)
		}
	case 1:
		log.Warnf("target requests logout within %d s", a.Param3)
		go func() {
			if s.logoutOneConn(c, time.Duration(max(a.Param3, 1))*time.Second) {
				return // MC/S: this connection alone (connlogout.go)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(max(a.Param3, 1))*time.Second)
			defer cancel()
			s.logoutConn(ctx, c)
			c.fail(errors.New("target requested logout"))
		}()
	case 2, 3:
		s.announceDrop(c, a)
	case 4:
		log.Infof("target requests renegotiation; sending an empty Text Request")
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(max(a.Param3, 1))*time.Second)
			defer cancel()
			if _, err := s.Text(ctx, nil); err != nil {
				c.fail(fmt.Errorf("renegotiation requested by the target failed: %w", err))
			}
		}()
	default:
		log.Infof("async message %d ignored", a.Event)
	}
}

// logoutConn logs out the session on c (reason 0, close the session).
func (s *Session) logoutConn(ctx context.Context, c *conn) error {
	t := newTask(kindLogout)
	req := &pdu.LogoutRequest{Header: pdu.Header{Immediate: true, Final: true}, Reason: pdu.LogoutCloseSession, CID: c.cid}
	if err := s.control(ctx, c, t, true, req, nil); err != nil {
		return err
	}
	if r := t.ctl.(*pdu.LogoutResponse); r.Response != 0 {
		return fmt.Errorf("iscsi: logout refused (response %d)", r.Response)
	}
	return nil
}

// Close logs out (bounded by ctx and 5 s) and closes the connection.
// Outstanding commands fail with ErrSessionClosed.
func (s *Session) Close() error {
	return s.CloseContext(context.Background())
}

// Abandon closes the session without a Logout exchange (for a path known
// to be dead, where a Logout would only wait for its timeout).
func (s *Session) Abandon() {
	if s.closed.Swap(true) {
		return
	}
	close(s.closeCh)
	for _, c := range s.allConns() {
		c.fail(ErrSessionClosed)
		<-c.exit
	}
}

// CloseContext is Close with a context for the logout exchange.
func (s *Session) CloseContext(ctx context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.closeCh)
	s.connMu.Lock()
	c := s.conn
	if c != nil {
		select {
		case <-c.done:
			// (MC/S: the leading connection is lost and being
			// recovered; log out on one that is alive.)
			if lc := s.liveConnLocked(); lc != nil {
				c = lc
			}
		default:
		}
	}
	s.connMu.Unlock()
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := s.logoutConn(ctx, c)
	if err != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)) {
		// Some targets (istgt, now and then) close the connection after
		// processing the Logout instead of answering it; the session
		// is gone either way.
		s.log.Debug("target closed the connection instead of answering the Logout")
		err = nil
	}
	if err == nil {
		s.gracefulClose()
	}
	for _, x := range s.allConns() {
		x.fail(ErrSessionClosed)
		<-x.exit
	}
	if err != nil {
		return fmt.Errorf("iscsi: logout: %w", err)
	}
	return nil
}

// Config returns the session's configuration (with defaults applied).
func (s *Session) Config() Config { return s.cfg }

// Done is closed when the session's current connection has failed or the
// session was closed (recovery, when enabled, replaces the connection).
func (s *Session) Done() <-chan struct{} {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.conn.done
}

// Err returns the current connection's error once Done is closed.
func (s *Session) Err() error {
	s.connMu.Lock()
	c := s.conn
	s.connMu.Unlock()
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}
