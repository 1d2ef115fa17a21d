package mirror

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

type bitset []uint64

func newBitset(n int64) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) get(i int64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) set(i int64)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) clear(i int64)    { b[i/64] &^= 1 << (i % 64) }
func (b bitset) clone() bitset    { return append(bitset(nil), b...) }
func (b bitset) or(o []uint64) {
	for i := range b {
		if i < len(o) {
			b[i] |= o[i]
		}
	}
}
func (b bitset) count() int64 {
	var n int64
	for _, w := range b {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}
func (b bitset) setAll(n int64) {
	for i := int64(0); i < n; i++ {
		b.set(i)
	}
}

// rangeLock orders overlapping writes (and resync/repair of a chunk
// against writes). Waiters are woken on every release; acquisition is not
// FIFO across non-overlapping ranges, which keeps it simple and fair enough.
type rangeLock struct {
	mu   sync.Mutex
	held map[*lockedRange]struct{}
	wake chan struct{}
}

type lockedRange struct{ off, end int64 }

func (l *rangeLock) lock(ctx context.Context, off, n int64) (*lockedRange, error) {
	r := &lockedRange{off, off + n}
	for {
		l.mu.Lock()
		if l.held == nil {
			l.held = make(map[*lockedRange]struct{})
		}
		busy := false
		for h := range l.held {
			if h.off < r.end && r.off < h.end {
				busy = true
				break
			}
		}
		if !busy {
			l.held[r] = struct{}{}
			l.mu.Unlock()
			return r, nil
		}
		if l.wake == nil {
			l.wake = make(chan struct{})
		}
		w := l.wake
		l.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// tryLock takes [off, off+n) when no held range overlaps it; nil when one
// does (it never waits).
func (l *rangeLock) tryLock(off, n int64) *lockedRange {
	r := &lockedRange{off, off + n}
	l.mu.Lock()
	defer l.mu.Unlock()
	for h := range l.held {
		if h.off < r.end && r.off < h.end {
			return nil
		}
	}
	if l.held == nil {
		l.held = make(map[*lockedRange]struct{})
	}
	l.held[r] = struct{}{}
	return r
}

func (l *rangeLock) unlock(r *lockedRange) {
	l.mu.Lock()
	delete(l.held, r)
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
	l.mu.Unlock()
}

// legFatal reports whether err means the leg itself is gone (transport
// loss past its recovery, closed device) rather than one command failing.
// Per-command errors (medium, range, not supported, read-only, no space,
// the caller's context) go to read-repair or the caller. So does a busy
// device (blockdev.ErrBusy: BUSY, TASK SET FULL or TASK ABORTED past the
// retry budget): the command was not done, the leg is fine, and failing it
// would mean a degraded mirror and a resync for a LUN reset some other
// initiator sent. Errors of unknown kind are treated as fatal, as md fails
// a disk on any write error.
func legFatal(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, blockdev.ErrUnavailable), errors.Is(err, blockdev.ErrClosed):
		return true
	case errors.Is(err, blockdev.ErrBusy), taskAborted(err),
		errors.Is(err, blockdev.ErrMedium), errors.Is(err, blockdev.ErrInvalid),
		errors.Is(err, blockdev.ErrOutOfRange), errors.Is(err, blockdev.ErrNotSupported),
		errors.Is(err, blockdev.ErrReadOnly), errors.Is(err, blockdev.ErrNoSpace),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	return true
}

// taskAborted reports SCSI status TASK ABORTED (0x40) or BUSY/TASK SET
// FULL carried by err, without importing the initiator: any error in the
// chain with a ScsiStatus() method (initiator/scsi.SenseError has one).
func taskAborted(err error) bool {
	var st interface{ ScsiStatus() uint8 }
	if !errors.As(err, &st) {
		return false
	}
	switch st.ScsiStatus() {
	case 0x08, 0x28, 0x40: // BUSY, TASK SET FULL, TASK ABORTED (SAM-5)
		return true
	}
	return false
}

// limiter is a simple token bucket in bytes per second.
type limiter struct {
	rate int64
	mu   sync.Mutex
	next time.Time
}

func (l *limiter) wait(ctx context.Context, n int64) error {
	if l == nil || l.rate <= 0 {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	d := l.next.Sub(now)
	l.next = l.next.Add(time.Duration(float64(n) / float64(l.rate) * float64(time.Second)))
	l.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
