package mirror

import (
	"context"
	"fmt"

	"github.com/lunbridge/lunbridge/blockdev"
)

// The asynchronous leg's Device side: reads go to the primary; a write
// is acknowledged by the primary and then journaled (drjournal.go).

func (a *Async) check(off, n int64) error {
	a.mu.Lock()
	closed := a.closing || a.closed
	a.mu.Unlock()
	if closed {
		return blockdev.ErrClosed
	}
	return blockdev.CheckRange(a, off, n)
}

// Size is the exported size.
func (a *Async) Size() int64 { return a.size }

// BlockSize is the larger of the primary's and the remote's.
func (a *Async) BlockSize() int { return a.bs }

// MaxTransfer is the primary's transfer limit.
func (a *Async) MaxTransfer() int {
	if t, ok := a.primary.(interface{ MaxTransfer() int }); ok {
		return t.MaxTransfer()
	}
	return 0
}

// Primary is the device writes are acknowledged from (a *Mirror when the
// primary is a synchronous mirror).
func (a *Async) Primary() blockdev.Device { return a.primary }

// ReadAt reads from the primary.
func (a *Async) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := a.check(off, int64(len(p))); err != nil {
		return err
	}
	return a.primary.ReadAt(ctx, p, off)
}

// WriteAt writes p to the primary and journals it for the remote.
func (a *Async) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return a.write(ctx, jWrite, off, int64(len(p)), fua, p, func(ctx context.Context) error {
		return a.primary.WriteAt(ctx, p, off, fua)
	})
}

// WriteZeroes zeroes a range on the primary and journals it.
func (a *Async) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	return a.write(ctx, jZero, off, n, false, nil, func(ctx context.Context) error {
		return zeroLeg(ctx, a.primary, off, n, mayTrim)
	})
}

// Trim deallocates a range where the devices can; it reads back as zeroes
// on both afterwards.
func (a *Async) Trim(ctx context.Context, off, n int64) error {
	return a.WriteZeroes(ctx, off, n, true)
}

// Flush flushes the primary and journals a replay point (a SYNCHRONIZE
// CACHE of the remote at this place in the order). It does not wait for
// the remote.
func (a *Async) Flush(ctx context.Context) error {
	if err := a.check(0, 0); err != nil {
		return err
	}
	a.mu.Lock()
	dep := a.next
	a.mu.Unlock()
	if err := a.primary.Flush(ctx); err != nil {
		return err
	}
	a.mu.Lock()
	a.appendLocked(&jentry{kind: jFlush, dep: dep})
	a.mu.Unlock()
	return nil
}

func (a *Async) write(ctx context.Context, kind uint8, off, n int64, fua bool, p []byte, op func(context.Context) error) error {
	if err := a.check(off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := a.throttleWait(ctx, n); err != nil {
		return err
	}
	r, err := a.rl.lock(ctx, off, n)
	if err != nil {
		return err
	}
	defer a.rl.unlock(r)
	a.mu.Lock()
	dep := a.next
	a.mu.Unlock()
	e := &jentry{kind: kind, off: off, n: n, fua: fua, dep: dep}
	if kind == jWrite {
		// Copied before the primary write starts the clock: the caller
		// owns p again once we return.
		e.data = append([]byte(nil), p...)
	}
	if err := op(ctx); err != nil {
		// What the primary holds now is unknown: copy the range instead.
		a.mu.Lock()
		a.markLocked(a.bitmap, e)
		if a.mode == AsyncJournal {
			a.dropJournalLocked(AsyncResync, fmt.Sprintf("a primary write failed: %v", err))
		}
		a.mu.Unlock()
		return err
	}
	a.mu.Lock()
	a.appendLocked(e)
	a.mu.Unlock()
	return nil
}
