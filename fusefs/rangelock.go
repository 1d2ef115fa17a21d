package fusefs

import (
	"context"
	"sync"
)

// rangeLock serialises writers whose block-rounded byte ranges overlap;
// writers of disjoint ranges proceed in parallel. The number of held ranges
// is bounded by the number of requests in flight (tens), so a slice scan is
// cheaper than any tree.
type rangeLock struct {
	mu   sync.Mutex
	held []*heldRange
}

type heldRange struct {
	start, end int64         // [start, end)
	done       chan struct{} // closed on unlock
}

// lock waits until no held range overlaps [start, end), then holds it.
// It gives up with ctx's error when ctx is done first.
func (l *rangeLock) lock(ctx context.Context, start, end int64) (*heldRange, error) {
	for {
		l.mu.Lock()
		var conflict *heldRange
		for _, h := range l.held {
			if h.start < end && start < h.end {
				conflict = h
				break
			}
		}
		if conflict == nil {
			h := &heldRange{start: start, end: end, done: make(chan struct{})}
			l.held = append(l.held, h)
			l.mu.Unlock()
			return h, nil
		}
		l.mu.Unlock()
		select {
		case <-conflict.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (l *rangeLock) unlock(h *heldRange) {
	l.mu.Lock()
	for i, x := range l.held {
		if x == h {
			last := len(l.held) - 1
			l.held[i] = l.held[last]
			l.held[last] = nil
			l.held = l.held[:last]
			break
		}
	}
	l.mu.Unlock()
	close(h.done)
}
