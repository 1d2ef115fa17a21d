package blockcheck

import (
	"fmt"
	"math"
	"time"
)

// NotPrefix: the final content mixes newer and older writes: no single
// instant exists whose state (every write acknowledged before it, any
// write in flight at it or not) it is. An asynchronous replica must never
// show that.
const NotPrefix = "not a prefix of the history"

// PrefixCut describes where CheckPrefix placed an image in its history:
// the image is the state at an instant in (After, Before].
type PrefixCut struct {
	After, Before time.Duration
	// Acked writes in the history; of them, OnImage completed before the
	// cut (they are on the image), Missing completed after it (the
	// replica had not received them: its lag, in writes).
	Acked, OnImage, Missing int
}

// CheckPrefix checks the history's final content (History.SetFinal, e.g.
// read from an asynchronous replica after the run) against the prefix
// model: there must be an instant t such that every block holds the value
// it could hold at t — the value of a write issued before t that no
// acknowledged write completed before t superseded (a write w2 to the
// block invoked after w completed), or zero when no acknowledged write to
// it completed before t. Writes in flight at t may be on the image or not;
// acknowledged writes completed after t are simply not there yet, which
// Check would call lost and CheckPrefix allows. Reads and crashes are not
// used. It returns the anomalies (at most MaxReported), their count and
// the cut.
func CheckPrefix(h *History) ([]Anomaly, int, PrefixCut) {
	h.mu.Lock()
	ops := append(append([]*Op(nil), h.ops...), h.carried...)
	final := h.final
	h.mu.Unlock()
	writes := map[uint64]*Op{}
	ackedOf := make([][]*Op, h.Blocks)
	var cut PrefixCut
	for _, o := range ops {
		if o.Kind != Write {
			continue
		}
		writes[o.ID] = o
		if o.Result != OK {
			continue
		}
		cut.Acked++
		for b := max(o.LBA, 0); b < min(o.LBA+o.N, h.Blocks); b++ {
			ackedOf[b] = append(ackedOf[b], o)
		}
	}
	var out []Anomaly
	count := 0
	report := func(kind string, b int64, format string, args ...any) {
		count++
		if len(out) < MaxReported {
			out = append(out, Anomaly{Kind: kind, Block: b, Detail: fmt.Sprintf(format, args...)})
		}
	}
	lo, hi := time.Duration(math.MinInt64), forever
	var loBlock, hiBlock int64 = -1, -1
	var loWhy, hiWhy string
	for b, s := range final {
		b := int64(b)
		var w *Op
		switch s.State {
		case StateZero:
		case StateValid:
			w = writes[s.H.Op]
			if w == nil || !w.covers(b) || s.H.LBA != uint64(b) {
				report(NeverIssued, b, "holds op %d (LBA %d), which no write of the history to this block made", s.H.Op, s.H.LBA)
				continue
			}
		default:
			report(Torn, b, "final block is %s", s.State)
			continue
		}
		// The cut must come after w was invoked...
		if w != nil && w.Invoke > lo {
			lo, loBlock, loWhy = w.Invoke, b, w.String()
		}
		// ...and no later than the completion of an acknowledged write
		// that supersedes it (or, for zero, of any acknowledged write).
		for _, w2 := range ackedOf[b] {
			if (w == nil || w2.Invoke > w.Complete) && w2.Complete < hi {
				hi, hiBlock = w2.Complete, b
				if w == nil {
					hiWhy = fmt.Sprintf("zero, though %s", w2)
				} else {
					hiWhy = fmt.Sprintf("%s, superseded by %s", w, w2)
				}
			}
		}
	}
	cut.After, cut.Before = lo, hi
	if lo >= hi {
		report(NotPrefix, loBlock, "holds %s, invoked after block %d's content was superseded: block %d holds %s", loWhy, hiBlock, hiBlock, hiWhy)
		return out, count, cut
	}
	for _, o := range ops {
		if o.Kind != Write || o.Result != OK {
			continue
		}
		switch {
		case o.Complete <= lo:
			cut.OnImage++
		case o.Complete >= hi:
			cut.Missing++
		}
	}
	return out, count, cut
}
