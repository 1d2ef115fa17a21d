package nbdbridge

import "sync"

// budget bounds what one connection has in flight: requests and payload
// bytes. Only the read loop acquires (so a large request cannot starve
// behind small ones); workers release.
type budget struct {
	mu       sync.Mutex
	cond     sync.Cond
	bytes    int64
	maxBytes int64
	reqs     int
	maxReqs  int
	closed   bool
}

func newBudget(maxBytes int64, maxReqs int) *budget {
	b := &budget{maxBytes: maxBytes, maxReqs: maxReqs}
	b.cond.L = &b.mu
	return b
}

// acquire takes one request slot and n bytes, waiting while the budget is
// spent. It returns false once the budget is closed.
func (b *budget) acquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed && (b.reqs >= b.maxReqs || (b.bytes > 0 && b.bytes+n > b.maxBytes)) {
		b.cond.Wait()
	}
	if b.closed {
		return false
	}
	b.reqs++
	b.bytes += n
	return true
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.reqs--
	b.bytes -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}

func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Broadcast()
}
