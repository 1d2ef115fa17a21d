package fusefstest

import (
	"context"
	"sync"

	"github.com/lunbridge/lunbridge/blockdev"
)

// Call is one recorded Trim or WriteZeroes.
type Call struct {
	Op      string // "trim" or "zeroes"
	Off, N  int64
	MayTrim bool
}

// Recorder wraps a Device and records Trim/WriteZeroes calls. It implements
// every optional interface; those the wrapped device lacks answer
// blockdev.ErrNotSupported, which fusefs treats like the interface being
// absent.
type Recorder struct {
	blockdev.Device

	// ZeroesAfterTrim, when set, is what ReadZeroesAfterTrim reports;
	// otherwise the wrapped device's answer (false without one).
	ZeroesAfterTrim *bool

	mu    sync.Mutex
	calls []Call
}

var (
	_ blockdev.Device     = (*Recorder)(nil)
	_ blockdev.Trimmer    = (*Recorder)(nil)
	_ blockdev.Zeroer     = (*Recorder)(nil)
	_ blockdev.Extenter   = (*Recorder)(nil)
	_ blockdev.ReadOnlyer = (*Recorder)(nil)
)

// NewRecorder wraps dev.
func NewRecorder(dev blockdev.Device) *Recorder { return &Recorder{Device: dev} }

// Calls returns the calls recorded so far and forgets them.
func (r *Recorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func (r *Recorder) record(c Call) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

func (r *Recorder) ReadOnly() bool {
	ro, ok := r.Device.(blockdev.ReadOnlyer)
	return ok && ro.ReadOnly()
}

func (r *Recorder) ReadZeroesAfterTrim() bool {
	if r.ZeroesAfterTrim != nil {
		return *r.ZeroesAfterTrim
	}
	z, ok := r.Device.(interface{ ReadZeroesAfterTrim() bool })
	return ok && z.ReadZeroesAfterTrim()
}

func (r *Recorder) Trim(ctx context.Context, off, n int64) error {
	t, ok := r.Device.(blockdev.Trimmer)
	if !ok {
		return blockdev.ErrNotSupported
	}
	r.record(Call{Op: "trim", Off: off, N: n})
	return t.Trim(ctx, off, n)
}

func (r *Recorder) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	z, ok := r.Device.(blockdev.Zeroer)
	if !ok {
		return blockdev.ErrNotSupported
	}
	r.record(Call{Op: "zeroes", Off: off, N: n, MayTrim: mayTrim})
	return z.WriteZeroes(ctx, off, n, mayTrim)
}

func (r *Recorder) Extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error) {
	e, ok := r.Device.(blockdev.Extenter)
	if !ok {
		return nil, blockdev.ErrNotSupported
	}
	return e.Extents(ctx, off, n)
}
