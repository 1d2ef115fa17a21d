package blockdevtest

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

// Async is a Mem that also offers the non-blocking path (blockdev.AsyncIO),
// the way an iSCSI LUN does: each I/O completes later on another goroutine,
// in no particular order. Fail, when set, is consulted first: a non-nil
// error fails that I/O.
type Async struct {
	*Mem
	Fail func(write bool, off int64) error
}

var _ blockdev.AsyncIO = (*Async)(nil)

func (a *Async) later(write bool, off int64, io func() error, done func(error)) {
	go func() {
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		if a.Fail != nil {
			if err := a.Fail(write, off); err != nil {
				done(err)
				return
			}
		}
		done(io())
	}()
}

func (a *Async) StartReadAt(p []byte, off int64, done func(error)) {
	a.later(false, off, func() error { return a.Mem.ReadAt(context.Background(), p, off) }, done)
}

func (a *Async) StartWriteAt(p []byte, off int64, fua bool, done func(error)) {
	a.later(true, off, func() error { return a.Mem.WriteAt(context.Background(), p, off, fua) }, done)
}
