package blockcheck

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is an operation's kind.
type Kind int

const (
	Write Kind = iota
	Read
	Flush
)

func (k Kind) String() string { return [...]string{"write", "read", "flush"}[k] }

// Result is an operation's outcome as its client saw it.
type Result int

const (
	// OK: acknowledged.
	OK Result = iota
	// Failed: the device answered with an error. A failed write may or
	// may not have landed ("maybe" write).
	Failed
	// Unknown: no answer (connection lost, client gave up). Also a
	// "maybe" write.
	Unknown
)

func (r Result) String() string { return [...]string{"ok", "failed", "unknown"}[r] }

// Seen is one block as a read returned it.
type Seen struct {
	State BlockState
	H     Header
}

// Op is one operation of a history. Times are offsets on the history's
// monotonic clock: Invoke is taken just before the call, Complete just
// after it returned.
type Op struct {
	ID       uint64
	Client   uint32
	Seq      uint32
	Kind     Kind
	LBA, N   int64 // blocks (0, 0 for Flush)
	FUA      bool
	Invoke   time.Duration
	Complete time.Duration
	Result   Result
	Err      string
	Seen     []Seen // Read: one per block, when Result is OK
}

func (o *Op) String() string {
	s := fmt.Sprintf("op %d (client %d seq %d) %s", o.ID, o.Client, o.Seq, o.Kind)
	if o.Kind != Flush {
		s += fmt.Sprintf(" [%d,+%d)", o.LBA, o.N)
	}
	if o.FUA {
		s += " FUA"
	}
	s += fmt.Sprintf(" %v..%v %s", o.Invoke, o.Complete, o.Result)
	if o.Err != "" {
		s += " (" + o.Err + ")"
	}
	return s
}

// covers reports whether the op's range holds block b.
func (o *Op) covers(b int64) bool { return b >= o.LBA && b < o.LBA+o.N }

// History records operations from many clients at once.
type History struct {
	Blocks int64 // blocks in the checked space [0, Blocks)

	start  time.Time
	nextID atomic.Uint64

	mu      sync.Mutex
	ops     []*Op
	carried []*Op // writes of the previous round whose values are the initial content
	crashes []time.Duration
	final   []Seen
	finalAt time.Duration
	faults  int
}

// NewHistory starts a history (and its clock) over blocks [0, blocks).
func NewHistory(blocks int64) *History {
	return &History{Blocks: blocks, start: time.Now()}
}

// Next starts the history of the next round on the same device: its
// initial content is h's final content (the writes that made it are
// carried over as acknowledged before the round began) and op ids go on
// from h's.
func (h *History) Next() *History {
	n := NewHistory(h.Blocks)
	n.nextID.Store(h.nextID.Load())
	h.mu.Lock()
	defer h.mu.Unlock()
	byID := map[uint64]*Op{}
	for _, o := range h.ops {
		if o.Kind == Write {
			byID[o.ID] = o
		}
	}
	for _, o := range h.carried {
		byID[o.ID] = o
	}
	seen := map[uint64]bool{}
	for _, s := range h.final {
		if w := byID[s.H.Op]; s.State == StateValid && w != nil && !seen[w.ID] {
			seen[w.ID] = true
			c := *w
			c.Invoke, c.Complete, c.Result, c.FUA = -1, -1, OK, true
			n.carried = append(n.carried, &c)
		}
	}
	return n
}

// Now is the history's clock.
func (h *History) Now() time.Duration { return time.Since(h.start) }

// NewID hands out a fresh op id (never 0).
func (h *History) NewID() uint64 { return h.nextID.Add(1) }

// Add records a completed operation.
func (h *History) Add(o *Op) {
	h.mu.Lock()
	h.ops = append(h.ops, o)
	h.mu.Unlock()
}

// Crash records that the process serving the device was killed now
// (kill -9): acknowledged writes no FLUSH or FUA made durable before now
// may be lost.
func (h *History) Crash() {
	t := h.Now()
	h.mu.Lock()
	h.crashes = append(h.crashes, t)
	h.mu.Unlock()
}

// Fault counts one injected fault (for the figures).
func (h *History) Fault() {
	h.mu.Lock()
	h.faults++
	h.mu.Unlock()
}

// SetFinal records the content read after every client stopped, one Seen
// per block; at is when that read started.
func (h *History) SetFinal(seen []Seen, at time.Duration) {
	h.mu.Lock()
	h.final, h.finalAt = seen, at
	h.mu.Unlock()
}

// Ops returns a copy of the recorded operations, by id.
func (h *History) Ops() []*Op {
	h.mu.Lock()
	out := append([]*Op(nil), h.ops...)
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Stats are a history's counts.
type Stats struct {
	Ops, Writes, Reads, Flushes, Failed, Faults, Crashes int
}

// Stats counts the history.
func (h *History) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Stats{Ops: len(h.ops), Faults: h.faults, Crashes: len(h.crashes)}
	for _, o := range h.ops {
		switch o.Kind {
		case Write:
			s.Writes++
		case Read:
			s.Reads++
		case Flush:
			s.Flushes++
		}
		if o.Result != OK {
			s.Failed++
		}
	}
	return s
}
