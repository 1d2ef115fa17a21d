package nvmetcp

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/internal/testrig/fakenvme"
	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// TestReconnectFencesWrites: a write whose connection is cut lands on the
// target late (1 s after the cut, as a dying controller's backend I/O
// might). The controller reconnects at once, but holds the re-sent write
// (and every write-class command) until 2×KATO + 1 s after it reset the
// old association, so the late copy lands first and the last
// acknowledged write wins: no ghost write. Reads go at once meanwhile.
func TestReconnectFencesWrites(t *testing.T) {
	const kato = 500 * time.Millisecond
	f := fake(t, fakenvme.Config{LateApply: time.Second})
	n := open(t, f, 1, Config{KeepAlive: kato, ReconnectTimeout: 10 * time.Second, IOQueues: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, b := bytes.Repeat([]byte{0xaa}, 4096), bytes.Repeat([]byte{0xbb}, 4096)
	want := bytes.Repeat([]byte{0x5c}, 4096)
	if err := n.WriteAt(ctx, want, 8192, false); err != nil { // read back below
		t.Fatal(err)
	}
	var once atomic.Bool
	cut := make(chan struct{})
	f.SetFault(func(qid uint16, sqe pdu.SQE) fakenvme.Fault {
		if qid > 0 && sqe.Opcode == pdu.IOWrite && sqe.CDW[0] == 0 && once.CompareAndSwap(false, true) {
			close(cut)
			return fakenvme.FaultCutLate
		}
		return fakenvme.FaultNone
	})
	start := time.Now()
	wrote := make(chan error, 1)
	go func() { wrote <- n.WriteAt(ctx, a, 0, false) }()
	select {
	case <-cut:
	case <-time.After(5 * time.Second):
		t.Fatal("the write never reached the controller")
	}

	// A read while the write is held: not delayed by the fence.
	time.Sleep(100 * time.Millisecond)
	rs := time.Now()
	got := make([]byte, 4096)
	if err := n.ReadAt(ctx, got, 8192); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(rs); d > 500*time.Millisecond {
		t.Errorf("read took %v after the reconnect: reads must not wait for the write fence", d)
	}
	if !bytes.Equal(got, want) {
		t.Error("read returned wrong data")
	}
	var err error
	select {
	case err = <-wrote:
		t.Errorf("write finished %v after the cut, before the old association's keep-alive timeout had passed", time.Since(start))
	default:
		err = <-wrote
	}
	if err != nil {
		t.Fatal(err)
	}
	delay, _ := FenceDelay(kato)
	if d := time.Since(start); d < delay {
		t.Errorf("re-sent write acknowledged %v after the cut; the fence is %v", d, delay)
	}
	if err := n.WriteAt(ctx, b, 0, false); err != nil { // the last acknowledged write
		t.Fatal(err)
	}
	// Wait for the old association's copy of the first write to land.
	for f.LateWrites.Load() == 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the late write never landed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := f.Data(1, 0, 4096); !bytes.Equal(d, b) {
		t.Fatalf("ghost write: LBA 0 holds %#x..., want the last acknowledged write %#x...", d[0], b[0])
	}
	st := n.Controller().Stats()
	if st.Reconnects != 1 || st.FencesKATO != 1 || st.FencedCommands < 1 {
		t.Errorf("stats %+v, want 1 reconnect, 1 fence, >= 1 fenced command", st)
	}
}

// TestFenceBoundedByReconnectTimeout: a write that failed with its
// connection and whose fence would end after ReconnectTimeout fails at
// once with ErrUnavailable instead of waiting past the bound.
func TestFenceBoundedByReconnectTimeout(t *testing.T) {
	f := fake(t, fakenvme.Config{})
	n := open(t, f, 1, Config{KeepAlive: 2 * time.Second, ReconnectTimeout: time.Second, IOQueues: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var once atomic.Bool
	f.SetFault(func(qid uint16, sqe pdu.SQE) fakenvme.Fault {
		if qid > 0 && sqe.Opcode == pdu.IOWrite && once.CompareAndSwap(false, true) {
			return fakenvme.FaultClose
		}
		return fakenvme.FaultNone
	})
	start := time.Now()
	err := n.WriteAt(ctx, make([]byte, 512), 0, false)
	if !errors.Is(err, blockdev.ErrUnavailable) {
		t.Fatalf("write: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("write failed after %v, want within the reconnect timeout", d)
	}
	if err := n.ReadAt(ctx, make([]byte, 512), 0); err != nil {
		t.Fatalf("read after the reconnect: %v", err)
	}
}
