package multipath

import (
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// State is a path's state as Status reports it.
type State string

const (
	// StateActive: the selector sends I/O through the path.
	StateActive State = "active"
	// StateStandby: healthy, not used for I/O now (failover policy, or
	// ALUA standby / non-preferred).
	StateStandby State = "standby"
	// StateFailed: no usable session; reinstatement is retried.
	StateFailed State = "failed"
	// StateReinstating: a login with the path's ISID is under way.
	StateReinstating State = "reinstating"
)

// Path is one session to one portal. Its mutable state is guarded by the
// owning Device's mu; counters are atomic.
type Path struct {
	idx int
	ep  endpoint

	// guarded by Device.mu
	nx          *nexus // nil while failed
	reinstating bool
	connecting  bool      // a login attempt is under way
	held        string    // why a connected path is kept out of service
	upSince     time.Time // when nx was installed
	lastErr     error
	lastErrAt   time.Time
	alua        scsi.AccessState
	aluaPref    bool
	hasALUA     bool
	consecFail  int // I/O path errors in a row (reset by a success)
	gen         int
	target      string
	tpgt        int
	tsih        uint16

	inflight      atomic.Int64
	inflightBytes atomic.Int64
	ios, bytes    atomic.Int64
	errs          atomic.Int64
	failovers     atomic.Int64
	// throughput is an EWMA of bytes/second, for service-time.
	tputMu     sync.Mutex
	throughput float64
}

func (p *Path) isidString() string {
	id := p.ep.ISID()
	return hex.EncodeToString(id[:])
}

// nexus is one session of a path (one I_T nexus). When it fails, writes
// that failed on it wait for dead before they are re-issued elsewhere.
type nexus struct {
	conn pathConn
	gen  int

	failOnce  sync.Once
	fenceOnce sync.Once
	deadOnce  sync.Once
	dead      chan struct{}
	deadHow   string // guarded by deadOnce / read after dead is closed
}

func newNexus(c pathConn, gen int) *nexus {
	return &nexus{conn: c, gen: gen, dead: make(chan struct{})}
}

// proveDead records how the nexus was proven gone and releases held writes.
func (n *nexus) proveDead(how string) bool { return n.proveDeadThen(how, nil) }

// proveDeadThen is proveDead running before (when it is the first proof)
// ahead of releasing the writes held for n, so what before records is
// visible to everyone those writes' completion reaches.
func (n *nexus) proveDeadThen(how string, before func()) bool {
	first := false
	n.deadOnce.Do(func() {
		n.deadHow = how
		if before != nil {
			before()
		}
		close(n.dead)
		first = true
	})
	return first
}

func (n *nexus) isDead() bool {
	select {
	case <-n.dead:
		return true
	default:
		return false
	}
}

func (p *Path) started(n int64) {
	p.inflight.Add(1)
	p.inflightBytes.Add(n)
}

func (p *Path) finished(n int64, d time.Duration, ok bool) {
	p.inflight.Add(-1)
	p.inflightBytes.Add(-n)
	if !ok {
		return
	}
	p.ios.Add(1)
	p.bytes.Add(n)
	if n > 0 && d > 0 {
		r := float64(n) / d.Seconds()
		p.tputMu.Lock()
		if p.throughput == 0 {
			p.throughput = r
		} else {
			p.throughput = 0.8*p.throughput + 0.2*r
		}
		p.tputMu.Unlock()
	}
}

func (p *Path) tput() float64 {
	p.tputMu.Lock()
	defer p.tputMu.Unlock()
	return p.throughput
}
