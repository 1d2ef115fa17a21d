package multipath

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

func openFake(t *testing.T, eps []endpoint, o Options) *Device {
	t.Helper()
	if o.CheckInterval == 0 {
		o.CheckInterval = 100 * time.Millisecond
	}
	d, err := openEndpoints(context.Background(), eps, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func pathIOs(d *Device) []int64 {
	var out []int64
	for _, p := range d.Status().Paths {
		out = append(out, p.IOs)
	}
	return out
}

func TestSelectors(t *testing.T) {
	ctx := context.Background()
	for _, pol := range []string{PolicyFailover, PolicyRoundRobin, PolicyQueueLength, PolicyServiceTime} {
		t.Run(pol, func(t *testing.T) {
			lu := newFakeLU(1<<20, "naa.1")
			_, eps := fakePaths(lu, 3)
			d := openFake(t, eps, Options{Policy: pol})
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 4096)
					for i := range 150 {
						if err := d.WriteAt(ctx, buf, int64((g*150+i)%256)*4096, false); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			ios := pathIOs(d)
			t.Logf("%s: per-path I/Os %v", pol, ios)
			for i, n := range ios {
				if pol == PolicyFailover {
					if (i == 0) != (n == 600) {
						t.Errorf("failover: path %d did %d I/Os, want all on path 0", i, n)
					}
				} else if n == 0 {
					t.Errorf("%s: path %d got no I/O: %v", pol, i, ios)
				}
			}
			st := d.Status()
			if pol == PolicyFailover && (st.Paths[0].State != StateActive || st.Paths[1].State != StateStandby) {
				t.Errorf("states %v %v", st.Paths[0].State, st.Paths[1].State)
			}
		})
	}
}

func TestClassification(t *testing.T) {
	ctx := context.Background()
	lu := newFakeLU(1<<20, "naa.1")
	fe, eps := fakePaths(lu, 2)
	d := openFake(t, eps, Options{})
	buf := make([]byte, 512)
	// A medium error goes to the caller unchanged; the path stays.
	fe[0].conn().mode.Store(modeSense)
	err := d.ReadAt(ctx, buf, 0)
	var se *scsi.SenseError
	if !errors.Is(err, blockdev.ErrMedium) || !errors.As(err, &se) {
		t.Fatalf("medium error: got %v", err)
	}
	if st := d.Status(); st.Paths[0].State != StateActive || st.Failovers != 0 {
		t.Fatalf("a SCSI error failed the path: %+v", st.Paths[0])
	}
	// A transport error fails the path and the read is re-issued at once.
	fe[0].set(func(e *fakeEP) { e.down = true })
	fe[0].conn().mode.Store(modeFail)
	if err := d.ReadAt(ctx, buf, 0); err != nil {
		t.Fatalf("read after a transport error: %v", err)
	}
	st := d.Status()
	if st.Paths[0].State == StateActive || st.Paths[1].State != StateActive || st.Failovers != 1 || st.Paths[1].IOs != 1 {
		t.Fatalf("after failover: %+v", st)
	}
	if lu.resets != 0 {
		t.Fatalf("a read triggered a LU reset")
	}
	if c := classifyErr(context.DeadlineExceeded); c != classPath {
		t.Errorf("deadline: %v", c)
	}
	for _, e := range []error{blockdev.ErrReadOnly, blockdev.ErrOutOfRange, blockdev.ErrNoSpace, &scsi.SenseError{Status: scsi.StatusReservationConflict}} {
		if c := classifyErr(e); c != classCaller {
			t.Errorf("%v: class %v", e, c)
		}
	}
}

// TestTaskAbortedRetried: TASK ABORTED (a LUN reset or PREEMPT AND ABORT
// from another nexus, TAS=1) and a LUN's "busy past its retry budget" are
// re-issued, bounded, without failing the path (review #8).
func TestTaskAbortedRetried(t *testing.T) {
	ctx := context.Background()
	lu := newFakeLU(1<<20, "naa.1")
	fe, eps := fakePaths(lu, 2)
	d := openFake(t, eps, Options{})
	c := fe[0].conn()
	buf := bytes.Repeat([]byte{7}, 512)
	for _, e := range []error{&scsi.SenseError{Status: scsi.StatusTaskAborted}, fmt.Errorf("lun 0: %w", blockdev.ErrBusy)} {
		c.ioErr = e
		c.errN.Store(2)
		if err := d.WriteAt(ctx, buf, 0, false); err != nil {
			t.Fatalf("write answered %v twice: %v", e, err)
		}
		if c.errN.Load() != 0 {
			t.Fatalf("%v: not re-issued", e)
		}
	}
	if st := d.Status(); st.Paths[0].State != StateActive || st.Failovers != 0 {
		t.Fatalf("TASK ABORTED failed the path: %+v", st.Paths[0])
	}
	// Bounded: a LUN that is busy for ever gives ErrBusy, which a mirror
	// does not count against its leg.
	for i := range fe {
		fe[i].conn().ioErr = &scsi.SenseError{Status: scsi.StatusTaskAborted}
		fe[i].conn().errN.Store(1 << 20)
	}
	err := d.WriteAt(ctx, buf, 0, false)
	if !errors.Is(err, blockdev.ErrBusy) {
		t.Fatalf("endless TASK ABORTED: got %v, want ErrBusy", err)
	}
	for i := range fe {
		fe[i].conn().errN.Store(0)
	}
}

// TestNoGhostWrite: a write that failed on path A while still queued in
// the target is re-issued on B only after A's nexus is dead — by a LU reset
// when A cannot be reinstated, by reinstatement when it can.
func TestNoGhostWrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fenceOK bool
		want    string
	}{{"lu-reset", false, "lu reset via"}, {"reinstatement", true, "reinstate "}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			lu := newFakeLU(1<<20, "naa.1")
			fe, eps := fakePaths(lu, 2)
			d := openFake(t, eps, Options{FenceTimeout: 200 * time.Millisecond})
			fe[0].set(func(e *fakeEP) { e.down = true })
			fe[1].set(func(e *fakeEP) { e.noFenc = !tc.fenceOK })
			fe[0].conn().mode.Store(modeGhost)
			newer := bytes.Repeat([]byte{2}, 512)
			t0 := time.Now()
			if err := d.WriteAt(ctx, newer, 0, false); err != nil {
				t.Fatal(err)
			}
			held := time.Since(t0)
			ev := lu.Events()
			t.Logf("held %v; events %q", held, ev)
			fenceAt, writeAt := -1, -1
			for i, e := range ev {
				if strings.HasPrefix(e, tc.want) && fenceAt < 0 {
					fenceAt = i
				}
				if strings.HasPrefix(e, "write on 127.0.0.2") && writeAt < 0 {
					writeAt = i
				}
			}
			if fenceAt < 0 || writeAt < 0 || fenceAt > writeAt {
				t.Fatalf("want %q before the re-issued write, events %q", tc.want, ev)
			}
			if tc.fenceOK && lu.resets != 0 {
				t.Errorf("reinstatement worked but a LU reset was sent too")
			}
			if !tc.fenceOK && held < 150*time.Millisecond {
				t.Errorf("write re-issued after %v, before the fence timeout", held)
			}
			// The old copy must not land anymore.
			if n := lu.releaseGhosts(); n != 0 {
				t.Fatalf("%d ghost writes still queued after failover", n)
			}
			got := make([]byte, 512)
			d.ReadAt(ctx, got, 0)
			if !bytes.Equal(got, newer) {
				t.Fatal("data lost")
			}
			st := d.Status()
			if st.FencesReset+st.FencesReinstated != 1 {
				t.Errorf("fences: %+v", st)
			}
		})
	}
}

func TestNoPath(t *testing.T) {
	ctx := context.Background()
	buf := make([]byte, 512)
	t.Run("timeout", func(t *testing.T) {
		lu := newFakeLU(1<<20, "naa.1")
		fe, eps := fakePaths(lu, 2)
		d := openFake(t, eps, Options{NoPathTimeout: 300 * time.Millisecond})
		for _, e := range fe {
			e.set(func(e *fakeEP) { e.down = true })
			e.conn().kill()
		}
		t0 := time.Now()
		err := d.ReadAt(ctx, buf, 0)
		el := time.Since(t0)
		if !errors.Is(err, blockdev.ErrUnavailable) || !strings.Contains(err.Error(), "127.0.0.1:3260") || !strings.Contains(err.Error(), "127.0.0.2:3260") || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("err %v", err)
		}
		if el < 250*time.Millisecond || el > 2*time.Second {
			t.Fatalf("failed after %v", el)
		}
		t.Logf("after %v: %v", el, err)
	})
	t.Run("fail-at-once", func(t *testing.T) {
		lu := newFakeLU(1<<20, "naa.1")
		fe, eps := fakePaths(lu, 1)
		d := openFake(t, eps, Options{NoPathTimeout: FailAtOnce})
		fe[0].set(func(e *fakeEP) { e.down = true })
		fe[0].conn().kill()
		waitFor(time.Second, func() bool { return d.Status().Paths[0].State != StateActive })
		t0 := time.Now()
		if err := d.ReadAt(ctx, buf, 0); !errors.Is(err, blockdev.ErrUnavailable) || time.Since(t0) > 100*time.Millisecond {
			t.Fatalf("err %v after %v", err, time.Since(t0))
		}
	})
	t.Run("resume", func(t *testing.T) {
		lu := newFakeLU(1<<20, "naa.1")
		fe, eps := fakePaths(lu, 2)
		d := openFake(t, eps, Options{NoPathTimeout: 5 * time.Second})
		for _, e := range fe {
			e.set(func(e *fakeEP) { e.down = true })
			e.conn().kill()
		}
		time.AfterFunc(500*time.Millisecond, func() { fe[1].set(func(e *fakeEP) { e.down = false }) })
		t0 := time.Now()
		if err := d.WriteAt(ctx, buf, 0, false); err != nil {
			t.Fatal(err)
		}
		t.Logf("write resumed after %v", time.Since(t0))
		if time.Since(t0) < 400*time.Millisecond {
			t.Fatal("did not wait for a path")
		}
	})
}

func TestIdentityMismatch(t *testing.T) {
	a, b := newFakeLU(1<<20, "naa.1"), newFakeLU(1<<20, "naa.2")
	fe, eps := fakePaths(a, 2)
	fe[1].lu = b
	_, err := openEndpoints(context.Background(), eps, Options{})
	if err == nil || !strings.Contains(err.Error(), "naa.1") || !strings.Contains(err.Error(), "naa.2") {
		t.Fatalf("want a refusal naming both identities, got %v", err)
	}
	t.Log(err)

	// After a reconnect a path reaches another LU: it stays failed.
	fe, eps = fakePaths(a, 2)
	d := openFake(t, eps, Options{})
	fe[1].set(func(e *fakeEP) { e.lu = b })
	fe[1].conn().kill()
	if !waitFor(2*time.Second, func() bool {
		return strings.Contains(d.Status().Paths[1].LastError, "different LU")
	}) {
		t.Fatalf("status %+v", d.Status().Paths[1])
	}
	if s := d.Status().Paths[1].State; s == StateActive || s == StateStandby {
		t.Fatalf("mismatched path is %v", s)
	}
}

func TestALUA(t *testing.T) {
	ctx := context.Background()
	lu := newFakeLU(1<<20, "naa.1")
	fe, eps := fakePaths(lu, 2)
	standby, opt, trans := scsi.StateStandby, scsi.StateActiveOptimized, scsi.StateTransitioning
	fe[0].alua, fe[1].alua = &standby, &opt
	d := openFake(t, eps, Options{Policy: PolicyRoundRobin})
	buf := make([]byte, 512)
	for range 10 {
		if err := d.ReadAt(ctx, buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	st := d.Status()
	if st.Paths[0].IOs != 0 || st.Paths[1].IOs != 10 || st.Paths[0].ALUA != "standby" || st.Paths[0].State != StateStandby {
		t.Fatalf("standby path used: %+v", st.Paths)
	}
	// Both transitioning: I/O waits, then goes where the state settles.
	fe[1].set(func(e *fakeEP) { e.alua = &trans })
	d.refreshALUA()
	time.AfterFunc(300*time.Millisecond, func() { fe[0].set(func(e *fakeEP) { e.alua = &opt }) })
	if err := d.ReadAt(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	if st := d.Status(); st.Paths[0].IOs != 1 {
		t.Fatalf("after transition: %+v", st.Paths)
	}
}

func TestFailback(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []string{"immediate", "manual", "1"} {
		t.Run(mode, func(t *testing.T) {
			lu := newFakeLU(1<<20, "naa.1")
			fe, eps := fakePaths(lu, 2)
			d := openFake(t, eps, Options{Failback: mode})
			buf := make([]byte, 512)
			fe[0].set(func(e *fakeEP) { e.down = true })
			fe[0].conn().kill()
			d.ReadAt(ctx, buf, 0)
			if st := d.Status(); st.Paths[1].State != StateActive {
				t.Fatalf("no failover: %+v", st.Paths)
			}
			fe[0].set(func(e *fakeEP) { e.down = false })
			back := waitFor(3*time.Second, func() bool {
				d.ReadAt(ctx, buf, 0)
				return d.Status().Paths[0].State == StateActive
			})
			if back != (mode != "manual") {
				t.Fatalf("failback %s: back=%v %+v", mode, back, d.Status().Paths)
			}
		})
	}
}

func TestTURFineIOFails(t *testing.T) {
	ctx := context.Background()
	lu := newFakeLU(1<<20, "naa.1")
	fe, eps := fakePaths(lu, 2)
	d := openFake(t, eps, Options{IOTimeout: 50 * time.Millisecond, MaxPathErrors: 2})
	fe[0].set(func(e *fakeEP) { e.mode = modeHang })
	fe[0].conn().mode.Store(modeHang)
	buf := make([]byte, 512)
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		if err := d.ReadAt(ctx, buf, 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	st := d.Status()
	t.Logf("path 0: %+v", st.Paths[0])
	if st.Paths[0].State == StateActive || !strings.Contains(st.Paths[0].LastError, "I/O fails") {
		t.Fatalf("hanging path back in service: %+v", st.Paths[0])
	}
	if st.Paths[0].Failovers > 3 {
		t.Fatalf("path flapped %d times", st.Paths[0].Failovers)
	}
}

func TestServeControl(t *testing.T) {
	lu := newFakeLU(1<<20, "naa.1")
	_, eps := fakePaths(lu, 2)
	d := openFake(t, eps, Options{Policy: PolicyRoundRobin})
	d.ReadAt(context.Background(), make([]byte, 512), 0)
	sock := t.TempDir() + "/c.sock"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.ServeControl(ctx, sock) }()
	var raw []byte
	if !waitFor(2*time.Second, func() bool {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return false
		}
		defer c.Close()
		raw, _ = io.ReadAll(c)
		return true
	}) {
		t.Fatal("control socket not served")
	}
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil || len(st.Paths) != 2 || st.Policy != PolicyRoundRobin || st.Identity.WWID != "naa.1" || st.Paths[0].IOs+st.Paths[1].IOs != 1 {
		t.Fatalf("status %s: %v", raw, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatal("socket file left behind")
	}
}
