package rawsock

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// TestRingStream sends 48 MiB in random pieces through a socket read by a
// ring with small buffers (so the multishot receive runs out of them and
// is re-armed), with random read sizes and random coalescing targets; the
// bytes must arrive whole and in order, and end of file must follow.
func TestRingStream(t *testing.T) {
	for _, mode := range []RingMode{RingBlocking, RingPoll, RingSQPoll} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) { testRingStream(t, mode) })
	}
}

func testRingStream(t *testing.T, mode RingMode) {
	a, b := tcpPair(t)
	r := rand.New(rand.NewPCG(3, 4))
	want := make([]byte, 48<<20)
	for i := range want {
		want[i] = byte(r.Uint32())
	}
	type result struct {
		got   []byte
		err   error
		stats RingStats
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		ring, err := NewRing(b, 8, 4096, mode)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer ring.Close()
		rr := rand.New(rand.NewPCG(5, 6))
		var out bytes.Buffer
		buf := make([]byte, 200_000)
		for {
			p := buf[:1+rr.IntN(len(buf)-1)]
			lowat := func() int { return 1 + rr.IntN(64<<10) }
			n, _, err := ring.ReadCoalesced(p, lowat, time.Millisecond)
			out.Write(p[:n])
			if err != nil {
				done <- result{got: out.Bytes(), err: err, stats: ring.Stats()}
				return
			}
			if rr.IntN(200) == 0 {
				time.Sleep(2 * time.Millisecond) // let the buffers fill: ENOBUFS
			}
		}
	}()
	for off := 0; off < len(want); {
		n := min(1+r.IntN(300<<10), len(want)-off)
		if _, err := a.Write(want[off : off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	a.Close()
	res := <-done
	if errors.Is(res.err, ErrRingUnavailable) {
		t.Skipf("no io_uring here: %v", res.err)
	}
	if res.err != io.EOF {
		t.Fatalf("ring read ended with %v, want EOF", res.err)
	}
	if !bytes.Equal(res.got, want) {
		t.Fatalf("ring delivered %d bytes, not the %d sent (or different)", len(res.got), len(want))
	}
	if res.stats.Rearms < 2 {
		t.Errorf("the receive was armed %d times: the out-of-buffers path never ran (%+v)", res.stats.Rearms, res.stats)
	}
	t.Logf("%+v", res.stats)
}

// TestRingShutdownUnblocks: a reader waiting in io_uring_enter returns when
// another goroutine shuts the connection down (closing the net.Conn alone
// would not end the receive: the ring holds the socket), and Close after a
// wait that was never answered frees the ring without hanging.
func TestRingShutdownUnblocks(t *testing.T) {
	_, b := tcpPair(t)
	ringc := make(chan *Ring, 1)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		ring, err := NewRing(b, 4, 4096, RingBlocking)
		if err != nil {
			ringc <- nil
			errc <- err
			return
		}
		ringc <- ring
		_, err = ring.Read(make([]byte, 10))
		ring.Close()
		errc <- err
	}()
	ring := <-ringc
	if ring == nil {
		t.Skipf("no io_uring here: %v", <-errc)
	}
	time.Sleep(20 * time.Millisecond)
	ring.Shutdown()
	b.Close()
	select {
	case err := <-errc:
		if err != io.EOF {
			t.Fatalf("read after shutdown: %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not end a ring read")
	}
}
