package blockcheck

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// Anomaly kinds.
const (
	// StaleFinal: the final value of a block comes from an acknowledged
	// write that a later acknowledged (and, across a crash, durable)
	// write superseded: that later write was lost or reordered.
	StaleFinal = "stale final value"
	// LostWrite: a block reads back as zero although an acknowledged
	// write to it completed before.
	LostWrite = "lost acked write"
	// Ghost: the value of a write that failed (or whose result is
	// unknown) is visible after an acknowledged write that started after
	// the failed one had returned.
	Ghost = "ghost write"
	// StaleRead: a read returned a value superseded before the read
	// started (or zero after an acknowledged write completed).
	StaleRead = "stale read"
	// Torn: a block whose header checksum does not match, in the final
	// content or in a read that no write to the block overlapped. (A read
	// racing a write to the same block may see part of each: SCSI makes
	// no promise for overlapping commands, and tgtd's pread/pwrite on
	// tmpfs does tear such reads.)
	Torn = "torn block"
	// NeverIssued: a block that no issued write could have produced: not
	// ours at all, an unknown op id, a write that does not cover the
	// block, a header naming another LBA, or a write invoked only after
	// the read returned.
	NeverIssued = "never-issued value"
)

// Anomaly is one violation of the model.
type Anomaly struct {
	Kind   string
	Block  int64
	Read   uint64 // the read that saw it; 0 for the final content
	Detail string
}

func (a Anomaly) String() string {
	where := "final content"
	if a.Read != 0 {
		where = fmt.Sprintf("read op %d", a.Read)
	}
	return fmt.Sprintf("%s: block %d, %s: %s", a.Kind, a.Block, where, a.Detail)
}

// MaxReported bounds the anomalies Check returns (the count is exact).
const MaxReported = 50

const forever = time.Duration(math.MaxInt64)

// regList is the acknowledged writes of one block (one class), by
// completion time, with the prefix maximum of their invoke times.
type regList struct {
	ops    []*Op
	maxInv []time.Duration
}

func (r *regList) build() {
	sort.Slice(r.ops, func(i, j int) bool { return r.ops[i].Complete < r.ops[j].Complete })
	r.maxInv = make([]time.Duration, len(r.ops))
	m := time.Duration(math.MinInt64)
	for i, o := range r.ops {
		m = max(m, o.Invoke)
		r.maxInv[i] = m
	}
}

// latest returns the largest invoke time of the writes that completed
// before t, and whether there is any.
func (r *regList) latest(t time.Duration) (time.Duration, bool) {
	i := sort.Search(len(r.ops), func(i int) bool { return r.ops[i].Complete >= t })
	if i == 0 {
		return 0, false
	}
	return r.maxInv[i-1], true
}

// superseder finds a write of the list that completed before t and was
// invoked after c (for the anomaly's detail).
func (r *regList) superseder(t, c time.Duration) *Op {
	for _, o := range r.ops {
		if o.Complete < t && o.Invoke > c {
			return o
		}
	}
	return nil
}

// block is the model of one block.
type blockModel struct {
	durable regList          // acked writes that survive crashes
	epoch   map[int]*regList // acked writes lost by the next crash, by epoch
}

// checker holds a history's indexes.
type checker struct {
	h        *History
	writes   map[uint64]*Op
	crashes  []time.Duration
	blocks   []blockModel
	writesOf [][]*Op // every write covering a block, any result
	out      []Anomaly
	count    int
}

// epochOf is the number of crashes at or before t.
func (c *checker) epochOf(t time.Duration) int {
	return sort.Search(len(c.crashes), func(i int) bool { return c.crashes[i] > t })
}

// Check runs the model over a history and returns its anomalies (at most
// MaxReported) and their total count.
//
// The model, per block: the content is the value of one write w that was
// issued, covers the block and names it, such that no acknowledged write
// w2 to the block has w.Complete < w2.Invoke and completed before the
// observation started. Acknowledged writes must be observed; failed and
// unknown writes may or may not be. A crash (History.Crash) drops the
// guarantee for acknowledged writes that neither FUA nor a FLUSH invoked
// after their completion and completed before the crash made durable; a
// FLUSH covers every write acknowledged before it was invoked, from any
// client. A read is checked against the writes that completed before it
// was invoked; the final content against all of them.
func Check(h *History) ([]Anomaly, int) {
	h.mu.Lock()
	ops := append(append([]*Op(nil), h.ops...), h.carried...)
	crashes := append([]time.Duration(nil), h.crashes...)
	final, finalAt := h.final, h.finalAt
	h.mu.Unlock()
	sort.Slice(crashes, func(i, j int) bool { return crashes[i] < crashes[j] })

	c := &checker{h: h, writes: map[uint64]*Op{}, crashes: crashes, blocks: make([]blockModel, h.Blocks)}
	// Flushes by invoke time with the suffix minimum of their completion.
	var flushes []*Op
	for _, o := range ops {
		switch {
		case o.Kind == Write:
			c.writes[o.ID] = o
		case o.Kind == Flush && o.Result == OK:
			flushes = append(flushes, o)
		}
	}
	sort.Slice(flushes, func(i, j int) bool { return flushes[i].Invoke < flushes[j].Invoke })
	sufMin := make([]time.Duration, len(flushes)+1)
	sufMin[len(flushes)] = forever
	for i := len(flushes) - 1; i >= 0; i-- {
		sufMin[i] = min(sufMin[i+1], flushes[i].Complete)
	}
	durable := func(w *Op) bool {
		e := c.epochOf(w.Complete)
		if e == len(crashes) || w.FUA {
			return true // no crash after it
		}
		i := sort.Search(len(flushes), func(i int) bool { return flushes[i].Invoke > w.Complete })
		return sufMin[i] < crashes[e]
	}
	for i := range c.blocks {
		c.blocks[i].epoch = map[int]*regList{}
	}
	c.writesOf = make([][]*Op, h.Blocks)
	for _, w := range c.writes {
		for b := max(w.LBA, 0); b < min(w.LBA+w.N, h.Blocks); b++ {
			c.writesOf[b] = append(c.writesOf[b], w)
		}
		if w.Result != OK {
			continue
		}
		for b := max(w.LBA, 0); b < min(w.LBA+w.N, h.Blocks); b++ {
			m := &c.blocks[b]
			if durable(w) {
				m.durable.ops = append(m.durable.ops, w)
				continue
			}
			e := c.epochOf(w.Complete)
			if m.epoch[e] == nil {
				m.epoch[e] = &regList{}
			}
			m.epoch[e].ops = append(m.epoch[e].ops, w)
		}
	}
	for i := range c.blocks {
		c.blocks[i].durable.build()
		for _, r := range c.blocks[i].epoch {
			r.build()
		}
	}

	for _, o := range ops {
		if o.Kind != Read || o.Result != OK {
			continue
		}
		for i, s := range o.Seen {
			c.observe(o.LBA+int64(i), s, o, o.Invoke, o.Complete)
		}
	}
	if final != nil {
		for b, s := range final {
			c.observe(int64(b), s, nil, finalAt, forever)
		}
	}
	return c.out, c.count
}

func (c *checker) report(kind string, b int64, r *Op, format string, args ...any) {
	c.count++
	if len(c.out) >= MaxReported {
		return
	}
	a := Anomaly{Kind: kind, Block: b, Detail: fmt.Sprintf(format, args...)}
	if r != nil {
		a.Read = r.ID
	}
	c.out = append(c.out, a)
}

// racing reports whether a write to block b may have been in progress
// during read r: one whose interval overlaps the read's, or a failed or
// unknown one invoked before the read returned (it may still be landing).
func (c *checker) racing(b int64, r *Op) bool {
	for _, w := range c.writesOf[b] {
		if w.Invoke < r.Complete && (w.Complete > r.Invoke || w.Result != OK) {
			return true
		}
	}
	return false
}

// observe checks one block value seen by read r (nil: the final content)
// over [inv, comp].
func (c *checker) observe(b int64, s Seen, r *Op, inv, comp time.Duration) {
	if b < 0 || b >= c.h.Blocks {
		return
	}
	m := &c.blocks[b]
	e := c.epochOf(comp)
	if comp == forever {
		e = len(c.crashes)
	}
	// latest: the newest invoke among acked writes that must be visible.
	latest, any := m.durable.latest(inv)
	var ep *regList
	if l := m.epoch[e]; l != nil {
		ep = l
		if t, ok := l.latest(inv); ok {
			if !any || t > latest {
				latest = t
			}
			any = true
		}
	}
	switch s.State {
	case StateTorn:
		if r != nil && c.racing(b, r) {
			return
		}
		c.report(Torn, b, r, "header names op %d (client %d seq %d, LBA %d) but the checksum does not match", s.H.Op, s.H.Client, s.H.Seq, s.H.LBA)
		return
	case StateGarbage:
		c.report(NeverIssued, b, r, "content is neither zero nor a block of this workload")
		return
	case StateZero:
		if any {
			w := m.durable.superseder(inv, -1)
			if w == nil && ep != nil {
				w = ep.superseder(inv, -1)
			}
			kind := LostWrite
			if r != nil {
				kind = StaleRead
			}
			c.report(kind, b, r, "reads zero after acknowledged %v", w)
		}
		return
	}
	w := c.writes[s.H.Op]
	switch {
	case w == nil:
		c.report(NeverIssued, b, r, "op %d (client %d seq %d) was never issued as a write", s.H.Op, s.H.Client, s.H.Seq)
		return
	case w.Client != s.H.Client || w.Seq != s.H.Seq:
		c.report(NeverIssued, b, r, "header says client %d seq %d, but op %d is client %d seq %d", s.H.Client, s.H.Seq, w.ID, w.Client, w.Seq)
		return
	case s.H.LBA != uint64(b) || !w.covers(b):
		c.report(NeverIssued, b, r, "block holds LBA %d of %v", s.H.LBA, w)
		return
	case w.Invoke > comp:
		c.report(NeverIssued, b, r, "value of %v, invoked after the read returned (%v)", w, comp)
		return
	}
	if !any || latest <= w.Complete {
		return
	}
	w2 := m.durable.superseder(inv, w.Complete)
	if w2 == nil && ep != nil {
		w2 = ep.superseder(inv, w.Complete)
	}
	switch {
	case w.Result != OK:
		c.report(Ghost, b, r, "value of %v, after acknowledged %v started later", w, w2)
	case r != nil:
		c.report(StaleRead, b, r, "value of %v, superseded by acknowledged %v before the read started at %v", w, w2, inv)
	default:
		c.report(StaleFinal, b, r, "value of %v, but acknowledged %v started after it completed", w, w2)
	}
}
