package initiator

import (
	"os"
	"runtime"

	"github.com/lunbridge/lunbridge/internal/rawsock"
)

// useRing turns on the io_uring receive (rawsock.Ring) for every
// connection: LUNBRIDGE_IOURING=1. An experiment kept for measuring (issue
// 24; docs/benchmarks.md): it is not faster on this workload, so it is off
// by default.
var useRing, ringMode = func() (bool, rawsock.RingMode) {
	switch os.Getenv("LUNBRIDGE_IOURING") {
	case "1", "blocking":
		return true, rawsock.RingBlocking
	case "poll":
		return true, rawsock.RingPoll
	case "sqpoll":
		return true, rawsock.RingSQPoll
	}
	return false, 0
}()

// Ring buffers: enough for a 1 MiB Data-In sequence in flight.
const (
	ringBufs    = 32
	ringBufSize = 64 << 10
)

// startRing makes the connection's ring, locking the read loop to its
// thread when the ring needs it (RingBlocking: the thread that made the
// ring must enter it); nil, unlocked, when io_uring is unavailable: the
// read loop then reads with rawsock.Sock.
func (c *conn) startRing() *rawsock.Ring {
	lock := ringMode == rawsock.RingBlocking
	if lock {
		runtime.LockOSThread()
	}
	r, err := rawsock.NewRing(c.nc, ringBufs, ringBufSize, ringMode)
	if err != nil {
		if lock {
			runtime.UnlockOSThread()
		}
		c.log.WithError(err).Info("LUNBRIDGE_IOURING is set but there is no ring: reading with read(2)")
		return nil
	}
	c.ring.Store(r)
	select {
	case <-c.done:
		r.Shutdown() // failed before the ring was there to be shut down
	default:
	}
	return r
}

// stopRing frees the ring and unlocks the thread startRing locked.
func (c *conn) stopRing(r *rawsock.Ring) {
	r.Close()
	if ringMode == rawsock.RingBlocking {
		runtime.UnlockOSThread()
	}
}
