package multipath

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/fakenvme"
	"github.com/lunbridge/lunbridge/nvmetcp"
	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// nvmeRig is one fake NVMe subsystem with two ports and a multipath
// Device over both.
type nvmeRig struct {
	ctl   *fakenvme.Controller
	d     *Device
	addrs []string
}

func newNVMeRig(t *testing.T, opts Options, noEvents bool) *nvmeRig {
	t.Helper()
	ctl, err := fakenvme.Listen(fakenvme.Config{ANA: true, NoANAEvents: noEvents, Namespaces: []fakenvme.NSConfig{{BlockSize: 512, Blocks: 8192}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctl.Close() })
	a2, _, err := ctl.AddPort()
	if err != nil {
		t.Fatal(err)
	}
	r := &nvmeRig{ctl: ctl, addrs: []string{ctl.Addr(), a2}}
	var cfgs []nvmetcp.Config
	for _, a := range r.addrs {
		cfgs = append(cfgs, nvmetcp.Config{Addr: a, SubNQN: ctl.NQN(), IOQueues: 2, KeepAlive: 500 * time.Millisecond})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	r.d, err = OpenNVMe(ctx, cfgs, 1, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.d.Close() })
	return r
}

// nvmeLoad writes and reads back random blocks until stop is closed and
// returns the first error; model holds what the device must contain.
func nvmeLoad(d *Device, seed int64, stop <-chan struct{}, model []byte, ios *int) error {
	rng := rand.New(rand.NewSource(seed))
	ctx := context.Background()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		n := (1 + rng.Intn(16)) * 512
		off := int64(rng.Intn(len(model)-n)) &^ 511
		buf := make([]byte, n)
		rng.Read(buf)
		if err := d.WriteAt(ctx, buf, off, false); err != nil {
			return err
		}
		copy(model[off:], buf)
		got := make([]byte, n)
		if err := d.ReadAt(ctx, got, off); err != nil {
			return err
		}
		if !bytes.Equal(got, buf) {
			return fmt.Errorf("%d bytes at %d read back differently", n, off)
		}
		*ios = i + 1
	}
}

func alive(wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return false
	case <-time.After(time.Millisecond):
		return true
	}
}

func pathStates(d *Device) []State {
	var out []State
	for _, p := range d.Status().Paths {
		out = append(out, p.State)
	}
	return out
}

func nvmeWait(t *testing.T, what string, timeout time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNVMeANAStates: two controllers of one subsystem, the namespace's
// ANA group optimized on port 0 and non-optimized on port 1. Under
// continuous write/read-verify I/O the ANA states switch (port 0
// inaccessible, then change, then persistent loss; port 1 optimized and
// back): I/O follows the optimized path with no error and no path
// failure (an ANA status is not a transport error: nothing to fence, no
// reconnect), and the states are re-read on the ANA status itself — the
// checker's period is a minute, far longer than the test, and this
// controller sends no ANA change events.
func TestNVMeANAStates(t *testing.T) {
	r := newNVMeRig(t, Options{Policy: PolicyFailover, CheckInterval: time.Minute}, true)
	r.ctl.SetANAState(1, pdu.ANANonOptimized)
	r.d.refreshALUA()
	st := r.d.Status()
	if st.Paths[0].State != StateActive || st.Paths[1].State != StateStandby || st.Paths[1].ALUA != "active/non-optimized" {
		t.Fatalf("initial states %+v", st.Paths)
	}
	model := make([]byte, r.d.Size())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ioErr error
	ios := 0
	wg.Add(1)
	go func() { defer wg.Done(); ioErr = nvmeLoad(r.d, 1, stop, model, &ios) }()
	pathIOs := func(i int) int64 { return r.d.Status().Paths[i].IOs }
	// Each step makes the path in use unusable, so running I/O meets an
	// ANA status; the other path's new state is learnt from that too.
	steps := []struct {
		s0, s1 pdu.ANAState
		active int
	}{
		{pdu.ANAInaccessible, pdu.ANAOptimized, 1},
		{pdu.ANAOptimized, pdu.ANAInaccessible, 0},
		{pdu.ANAChange, pdu.ANAOptimized, 1},
		{pdu.ANAOptimized, pdu.ANAPersistentLoss, 0},
		{pdu.ANAInaccessible, pdu.ANANonOptimized, 1},
	}
	for i, s := range steps {
		time.Sleep(100 * time.Millisecond)
		refused := r.ctl.ANARefused.Load()
		// Make the path in use unusable first, so the running I/O meets
		// the ANA status.
		if s.active == 1 {
			r.ctl.SetANAState(1, s.s1)
			r.ctl.SetANAState(0, s.s0)
		} else {
			r.ctl.SetANAState(0, s.s0)
			r.ctl.SetANAState(1, s.s1)
		}
		before := pathIOs(s.active)
		nvmeWait(t, fmt.Sprintf("step %d: I/O on the optimized path", i), 10*time.Second, func() bool {
			return pathIOs(s.active) > before+20 || !alive(&wg)
		})
		if r.ctl.ANARefused.Load() == refused {
			t.Fatalf("step %d: no I/O met the ANA status", i)
		}
		st := r.d.Status()
		if st.Paths[s.active].State != StateActive {
			t.Fatalf("step %d: path %d is %s, want active (%+v)", i, s.active, st.Paths[s.active].State, st.Paths)
		}
	}
	close(stop)
	wg.Wait()
	if ioErr != nil {
		t.Fatalf("I/O failed during the ANA changes: %v", ioErr)
	}
	st = r.d.Status()
	for _, p := range st.Paths {
		if p.Errors != 0 || p.Failovers != 0 && p.LastError != "" {
			t.Errorf("path %d: %d errors, last %q: an ANA status failed the path", p.Index, p.Errors, p.LastError)
		}
	}
	if st.FencesKATO != 0 || r.ctl.ANARefused.Load() == 0 {
		t.Errorf("fences %d, ANA refusals %d", st.FencesKATO, r.ctl.ANARefused.Load())
	}
	if got := r.ctl.Data(1, 0, int64(len(model))); !bytes.Equal(got, model) {
		t.Fatal("namespace content differs from the model")
	}
	t.Logf("%d write+verify rounds, ANA refusals %d, ANA log reads %d, states %v", ios, r.ctl.ANARefused.Load(), r.ctl.ANALogs.Load(), pathStates(r.d))
}

// TestNVMePortLoss: port 0 goes away mid-I/O (its listener closed and
// its connections dropped, as when nvmet's port loses the subsystem
// link). I/O fails over to port 1 with no error; a write that failed
// with the connection is held until the keep-alive timeout has passed
// (fences_keep_alive), and the data verifies.
func TestNVMePortLoss(t *testing.T) {
	r := newNVMeRig(t, Options{Policy: PolicyFailover, CheckInterval: 200 * time.Millisecond}, false)
	model := make([]byte, r.d.Size())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ioErr error
	ios := 0
	wg.Add(1)
	go func() { defer wg.Done(); ioErr = nvmeLoad(r.d, 2, stop, model, &ios) }()
	time.Sleep(200 * time.Millisecond)
	// Fail a write on purpose: drop port 0 while a write is in flight.
	r.ctl.SetFault(func(qid uint16, sqe pdu.SQE) fakenvme.Fault {
		if qid > 0 && sqe.Opcode == pdu.IOWrite {
			r.ctl.SetFault(nil)
			go r.ctl.ClosePort(0)
			return fakenvme.FaultStall
		}
		return fakenvme.FaultNone
	})
	nvmeWait(t, "failover to path 1", 15*time.Second, func() bool {
		st := r.d.Status()
		return st.Paths[1].State == StateActive && st.Paths[1].IOs > 50
	})
	close(stop)
	wg.Wait()
	if ioErr != nil {
		t.Fatalf("I/O failed across the port loss: %v", ioErr)
	}
	st := r.d.Status()
	if st.Paths[0].State == StateActive || st.FencesKATO < 1 {
		t.Fatalf("after the port loss: %+v, fences by keep-alive %d", st.Paths, st.FencesKATO)
	}
	if got := r.ctl.Data(1, 0, int64(len(model))); !bytes.Equal(got, model) {
		t.Fatal("namespace content differs from the model")
	}
	t.Logf("%d rounds; last failover %d ms; path 0: %s", ios, st.LastFailoverMs, st.Paths[0].LastError)
}

// TestNVMeANAChangeEvent: a change that leaves every path usable (port 0
// optimized -> non-optimized, port 1 non-optimized -> optimized) fails
// no command, so only the controller's ANA change event (an
// Asynchronous Event Request completed with notice 03h) tells the host;
// I/O moves to the newly optimized path well before the checker's next
// run (a minute away).
func TestNVMeANAChangeEvent(t *testing.T) {
	r := newNVMeRig(t, Options{Policy: PolicyFailover, CheckInterval: time.Minute}, false)
	r.ctl.SetANAState(1, pdu.ANANonOptimized)
	nvmeWait(t, "path 1 non-optimized", 5*time.Second, func() bool { return r.d.Status().Paths[1].ALUA == "active/non-optimized" })
	model := make([]byte, r.d.Size())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ioErr error
	ios := 0
	wg.Add(1)
	go func() { defer wg.Done(); ioErr = nvmeLoad(r.d, 3, stop, model, &ios) }()
	time.Sleep(100 * time.Millisecond)
	r.ctl.SetANAState(0, pdu.ANANonOptimized)
	r.ctl.SetANAState(1, pdu.ANAOptimized)
	before := r.d.Status().Paths[1].IOs
	nvmeWait(t, "I/O on path 1 after the ANA change event", 10*time.Second, func() bool {
		st := r.d.Status()
		return st.Paths[1].State == StateActive && st.Paths[1].IOs > before+20 || !alive(&wg)
	})
	close(stop)
	wg.Wait()
	if ioErr != nil {
		t.Fatal(ioErr)
	}
	if r.ctl.ANAEvents.Load() == 0 || r.ctl.ANARefused.Load() != 0 {
		t.Fatalf("ANA events %d, refusals %d", r.ctl.ANAEvents.Load(), r.ctl.ANARefused.Load())
	}
	if got := r.ctl.Data(1, 0, int64(len(model))); !bytes.Equal(got, model) {
		t.Fatal("namespace content differs from the model")
	}
}
