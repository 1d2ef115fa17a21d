package multipath

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/nvmetcp"
	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// OpenNVMe opens namespace nsid through several NVMe/TCP controllers of
// one subsystem (one association per portal in cfgs, same host NQN) as
// one multipath Device. Paths are ranked by the namespace's ANA group
// state on each controller (the ANA log page, read at connect, by the
// path checker, on the controller's ANA change event and whenever a
// command ends with an ANA status):
// optimized before non-optimized; inaccessible, persistent loss and
// change are not used.
//
// Each config gets NoReconnect (this package reconnects), a short
// keep-alive (2 s unless set) and fails at once on a lost connection.
//
// No ghost writes: an NVMe association cannot be reinstated from
// another, so a write that failed with its connection waits until the
// controller must have given the association up: the keep-alive timeout
// (KATO) after the abortive close, which ended every command we sent
// (NVMe Base 2.0, Section 3.9: on a Keep Alive Timeout the controller
// stops processing commands of the association; Linux nvmet on a reset
// connection tears the queues down at once): nvmetcp.FenceAfter, the
// rule a single-path controller follows after a reconnect. Reads and
// Flush are re-issued at once. Without a keep-alive timeout
// (KeepAlive < 0) nothing proves the association dead and such a write
// fails.
func OpenNVMe(ctx context.Context, cfgs []nvmetcp.Config, nsid uint32, opts Options) (*Device, error) {
	if len(cfgs) == 0 {
		return nil, errors.New("multipath: no paths")
	}
	eps := make([]endpoint, len(cfgs))
	for i, c := range cfgs {
		c.NoReconnect = true
		c.ReconnectTimeout = -1
		if c.KeepAlive == 0 {
			c.KeepAlive = 2 * time.Second
		}
		if c.CommandTimeout == 0 {
			c.CommandTimeout = 10 * time.Second
		}
		eps[i] = &nvmeEndpoint{cfg: c, nsid: nsid, idx: i}
	}
	return openEndpoints(ctx, eps, opts)
}

type nvmeEndpoint struct {
	cfg  nvmetcp.Config
	nsid uint32
	idx  int
}

func (e *nvmeEndpoint) Portal() string { return e.cfg.Addr }

// ISID: NVMe has none; the path index stands in for the status.
func (e *nvmeEndpoint) ISID() [6]byte { return [6]byte{5: byte(e.idx)} }

func (e *nvmeEndpoint) connect(ctx context.Context) (pathConn, sessionID, error) {
	c, err := nvmetcp.Dial(ctx, e.cfg)
	if err != nil {
		return nil, sessionID{}, err
	}
	n, err := nvmetcp.OpenNamespace(ctx, c, e.nsid)
	if err != nil {
		c.Abort()
		return nil, sessionID{}, err
	}
	n.SetOwnsController(true)
	// The association is new each time: it proves nothing about an older
	// one, so no sessionID is returned.
	return &nvmeConn{Namespace: n, c: c, kato: c.Config().KeepAlive}, sessionID{}, nil
}

func (e *nvmeEndpoint) fenceLogin(context.Context, [6]byte) (string, int, error) {
	return "", 0, errors.New("NVMe/TCP: no association reinstatement")
}

// nvmeConn is a pathConn over one NVMe/TCP association.
type nvmeConn struct {
	*nvmetcp.Namespace
	c    *nvmetcp.Controller
	kato time.Duration

	mu        sync.Mutex
	abortedAt time.Time
}

func (c *nvmeConn) ReadOnly() bool { return false }

func (c *nvmeConn) Extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error) {
	return []blockdev.Extent{{Offset: off, Length: n}}, nil // all data: always a safe answer
}

// TestUnitReady identifies the namespace again: it must still be there,
// with the same medium.
func (c *nvmeConn) TestUnitReady(ctx context.Context) error {
	id, err := c.c.IdentifyNamespace(ctx, c.NSID())
	if err != nil {
		return err
	}
	was := c.Identify()
	if id.NSZE != was.NSZE || id.NGUID != was.NGUID || id.EUI64 != was.EUI64 {
		return fmt.Errorf("%w: namespace %d changed (%d blocks, NGUID %x)", blockdev.ErrUnavailable, c.NSID(), id.NSZE, id.NGUID)
	}
	return nil
}

func (c *nvmeConn) Ping(ctx context.Context) error {
	_, err := c.c.Admin(ctx, pdu.SQE{Opcode: pdu.AdminKeepAlive}, nil, nil)
	return err
}

// ALUA maps the namespace's ANA state on this controller to the ALUA
// state the selector ranks by.
func (c *nvmeConn) ALUA(ctx context.Context) (scsi.AccessState, bool, bool, error) {
	st, _, ok, err := c.ANAState(ctx)
	if err != nil || !ok {
		return 0, false, ok, err
	}
	return anaToALUA(st), false, true, nil
}

func anaToALUA(st pdu.ANAState) scsi.AccessState {
	switch st {
	case pdu.ANAOptimized:
		return scsi.StateActiveOptimized
	case pdu.ANANonOptimized:
		return scsi.StateActiveNonOptimized
	case pdu.ANAInaccessible:
		return scsi.StateUnavailable
	case pdu.ANAPersistentLoss:
		return scsi.StateOffline
	default:
		return scsi.StateTransitioning
	}
}

// ResetLU: NVMe has no task-set reset across associations; the fence
// waits out the keep-alive timeout instead (fenceAfter).
func (c *nvmeConn) ResetLU(context.Context) error {
	return fmt.Errorf("NVMe/TCP: %w", blockdev.ErrNotSupported)
}

func (c *nvmeConn) Done() <-chan struct{} { return c.c.Done() }

func (c *nvmeConn) Abort() {
	c.mu.Lock()
	if c.abortedAt.IsZero() {
		c.abortedAt = time.Now()
	}
	c.mu.Unlock()
	c.c.Abort()
}

// Close ends the association abortively too: a path's Close comes after
// it failed or when the device closes.
func (c *nvmeConn) Close() error {
	c.Namespace.Close()
	return nil
}

func (c *nvmeConn) Nexus() (string, int, uint16) {
	info := c.c.Info()
	return info.SubNQN, 0, info.CntlID
}

// fenceAfter is when every command of the association is surely ended:
// nvmetcp.FenceAfter, the rule the single-path controller follows too
// (2×KATO + 1 s after the abortive close); the zero Time without a
// keep-alive timeout (never).
func (c *nvmeConn) fenceAfter() (time.Time, string) {
	c.mu.Lock()
	at := c.abortedAt
	c.mu.Unlock()
	if at.IsZero() {
		at = time.Now()
	}
	until := nvmetcp.FenceAfter(at, c.kato)
	return until, fmt.Sprintf("keep-alive timeout: %v since the association was reset", until.Sub(at))
}

func (c *nvmeConn) anaChanged() <-chan struct{} { return c.c.ANAChanged() }

// anaNotifier is a pathConn whose controller reports ANA changes.
type anaNotifier interface {
	anaChanged() <-chan struct{}
}

// timeFencer is a pathConn whose failed nexus is proven dead by time.
type timeFencer interface {
	fenceAfter() (time.Time, string)
}

// isANAPathState: an NVMe command ended with an ANA status; the path's
// ANA state is read again and the command goes elsewhere.
func isANAPathState(err error) bool { return nvmetcp.IsANAStatus(err) }
