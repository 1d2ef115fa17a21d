package initiator_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// ERL 2 connection recovery (connrecovery.go) on the fake target.

// writeTap records the ITT and CmdSN of every WRITE the target receives
// and cuts the connection once, at the first write's status (status) or
// at its Data-Out at offset cutOff (data).
type writeTap struct {
	mu     sync.Mutex
	itts   map[uint32]uint32 // ITT -> CmdSN
	first  uint32
	cutOff uint32
	done   bool
}

func newWriteTap(cutOff uint32) *writeTap {
	return &writeTap{itts: map[uint32]uint32{}, cutOff: cutOff}
}

func (w *writeTap) onPDU(c *faketarget.Conn, p pdu.PDU, _ []byte) bool {
	if q, ok := p.(*pdu.SCSICommand); ok && q.CDB[0] == 0x2a {
		w.mu.Lock()
		if len(w.itts) == 0 {
			w.first = q.ITT
		}
		w.itts[q.ITT] = q.CmdSN
		w.mu.Unlock()
	}
	return false
}

func (w *writeTap) cutStatus(itt uint32) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done || itt != w.first || len(w.itts) == 0 {
		return false
	}
	w.done = true
	return true
}

func (w *writeTap) cutDataOut(itt, off uint32) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done || itt != w.first || off != w.cutOff {
		return false
	}
	w.done = true
	return true
}

// A read in flight on a lost connection of a two-connection session is
// reassigned to the survivor with ExpDataSN = the next DataSN it expects,
// the target re-sends from there, and the data is right.
func TestConnRecoveryReadResumes(t *testing.T) {
	var once sync.Once
	e := erl2Env(t, 2, faketarget.Config{CutDataIn: func(_, sn uint32) (hit bool) {
		if sn == 5 {
			once.Do(func() { hit = true })
		}
		return hit
	}}, nil)
	tsih := e.s.TSIH()
	cmd := read10(16, 16)
	r := await(t, e.ctx, goDo(e.ctx, e.s, cmd))
	if r.err != nil || r.resp.Status != 0 || r.resp.Received != 16*512 {
		t.Fatalf("read: status %d, %d bytes, %v", r.resp.Status, r.resp.Received, r.err)
	}
	if !bytes.Equal(cmd.Read, e.tg.Disk(0)[16*512:32*512]) {
		t.Fatal("reassigned read returned wrong data")
	}
	var ra []*pdu.TaskMgmtRequest
	for _, c := range e.tg.Conns() {
		ra = append(ra, reassigns(c)...)
	}
	if len(ra) != 1 || ra[0].ExpDataSN != 5 {
		t.Fatalf("TASK REASSIGNs %+v, want one with ExpDataSN 5", ra)
	}
	waitFor(t, e.ctx, "the replacement connection", func() bool { return e.s.Connections() == 2 })
	keptSession(t, e, tsih)
}

// A write whose connection is lost (while its data goes out, or after it
// executed but before its status) is reassigned: the target asks for the
// missing data with a recovery R2T or only re-sends the status. The disk
// holds the data, and the command was executed exactly once.
func TestConnRecoveryWriteExecutedOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(w *writeTap, cfg *faketarget.Config)
	}{
		{"data", func(w *writeTap, cfg *faketarget.Config) { cfg.CutDataOut = w.cutDataOut }},
		{"status", func(w *writeTap, cfg *faketarget.Config) { cfg.CutStatus = w.cutStatus }},
	} {
		for _, conns := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/%dconns", tc.name, conns), func(t *testing.T) {
				w := newWriteTap(96 << 10)
				cfg := faketarget.Config{OnPDU: w.onPDU, LUNs: []faketarget.LUNConfig{{Blocks: 4096}}}
				tc.cut(w, &cfg)
				e := erl2Env(t, conns, cfg, nil)
				tsih := e.s.TSIH()
				data := make([]byte, 128<<10) // beyond FirstBurstLength: R2Ts
				rand.New(rand.NewSource(3)).Read(data)
				r := await(t, e.ctx, goDo(e.ctx, e.s, write10(100, data)))
				if r.err != nil || r.resp.Status != 0 {
					t.Fatalf("write: status %d, %v", r.resp.Status, r.err)
				}
				if !bytes.Equal(e.tg.Disk(0)[100*512:100*512+len(data)], data) {
					t.Fatal("disk does not hold the written data")
				}
				w.mu.Lock()
				cut, sn := w.done, w.itts[w.first]
				w.mu.Unlock()
				if !cut {
					t.Fatal("the connection was never cut")
				}
				if n := e.tg.Executions()[sn]; n != 1 || len(e.tg.Executions()) != 1 {
					t.Fatalf("write CmdSN %d executed %d times (all: %v), want once", sn, n, e.tg.Executions())
				}
				if len(e.tg.Reassigned()) != 1 {
					t.Fatalf("target reassigned %v, want the write", e.tg.Reassigned())
				}
				keptSession(t, e, tsih)
			})
		}
	}
}

// A refused TASK REASSIGN falls back to session reinstatement: the write
// is issued again in the new session and lands once.
func TestConnRecoveryRefusedReinstates(t *testing.T) {
	w := newWriteTap(96 << 10)
	e := erl2Env(t, 2, faketarget.Config{OnPDU: w.onPDU, CutDataOut: w.cutDataOut, LUNs: []faketarget.LUNConfig{{Blocks: 4096}},
		ReassignResponse: func(uint32) uint8 { return pdu.TMFRespNoReassign }}, nil)
	tsih := e.s.TSIH()
	data := make([]byte, 128<<10)
	rand.New(rand.NewSource(4)).Read(data)
	r := await(t, e.ctx, goDo(e.ctx, e.s, write10(8, data)))
	if r.err != nil || r.resp.Status != 0 {
		t.Fatalf("write: status %d, %v", r.resp.Status, r.err)
	}
	if !bytes.Equal(e.tg.Disk(0)[8*512:8*512+len(data)], data) {
		t.Fatal("disk does not hold the written data")
	}
	if rec := e.s.Recovery(); rec.Reconnects != 1 {
		t.Fatalf("session reinstated %d times, want 1", rec.Reconnects)
	}
	if e.s.TSIH() == tsih {
		t.Fatal("same TSIH after the fallback: the session was not reinstated")
	}
	total := 0
	for _, n := range e.tg.Executions() {
		total += n
	}
	if total != 1 {
		t.Fatalf("%d executions (%v), want the write once", total, e.tg.Executions())
	}
	var refused int
	for _, c := range e.tg.Conns() {
		refused += len(reassigns(c))
	}
	if refused != 1 {
		t.Fatalf("%d TASK REASSIGNs, want 1 (refused)", refused)
	}
	e.noViolations()
}

// When no connection can be logged in again within Time2Wait +
// Time2Retain (1 s here), connection recovery gives up and the session is
// reinstated; the read is issued again and completes.
func TestConnRecoveryTime2RetainExpiry(t *testing.T) {
	var once sync.Once
	var refused atomic.Int32
	e := erl2Env(t, 1, faketarget.Config{
		Time2Retain: 1,
		CutDataIn: func(_, sn uint32) (hit bool) {
			if sn == 2 {
				once.Do(func() { hit = true })
			}
			return hit
		},
		OnLogin: func(c *faketarget.Conn, req *pdu.LoginRequest, _ []pdu.KV) bool {
			if req.TSIH != 0 {
				refused.Add(1)
				c.SendLoginStatus(req, 3, 0x01) // service unavailable: try again
				return true
			}
			return false
		},
	}, nil)
	if p := e.s.Params(); p.DefaultTime2Ret != 1 {
		t.Fatalf("DefaultTime2Retain %d, want 1", p.DefaultTime2Ret)
	}
	start := time.Now()
	cmd := read10(0, 16)
	r := await(t, e.ctx, goDo(e.ctx, e.s, cmd))
	if r.err != nil || !bytes.Equal(cmd.Read, e.tg.Disk(0)[:16*512]) {
		t.Fatalf("read: %v", r.err)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("session reinstated after %v, before Time2Retain (1 s) ran out", d)
	}
	if refused.Load() < 2 {
		t.Fatalf("%d connection recovery logins, want several within Time2Retain", refused.Load())
	}
	if rec := e.s.Recovery(); rec.Reconnects != 1 || rec.ConnRecoveries != 0 {
		t.Fatalf("recovery %+v, want one session reinstatement and no connection recovery", rec)
	}
	e.noViolations()
}

// Four connections at ERL 2 under a write-verify workload; the target
// drops them one at a time. Every command succeeds, every read verifies,
// the TSIH never changes (no reinstatement), and no write is executed
// twice.
func TestConnRecoveryFourConnsKillOneAtATime(t *testing.T) {
	// Connections 0 and 2 are dropped when a command arrives on them
	// (CutCommand: that command is executed where it is reassigned), so
	// those drops have a task in flight; 1 and 3 at a random moment. Each
	// command takes 1 ms at the target, so that there are often more.
	var armed atomic.Int32
	armed.Store(-1)
	e := erl2Env(t, 4, faketarget.Config{LUNs: []faketarget.LUNConfig{{Blocks: 8192}}, NoRecord: true,
		OnConnect: func(c *faketarget.Conn) { c.SetDelay(time.Millisecond) },
		CutCommand: func(c *faketarget.Conn, _ *pdu.SCSICommand) bool {
			cid := int32(c.CID())
			return armed.Load() == cid && armed.CompareAndSwap(cid, -1)
		}}, nil)
	tsih := e.s.TSIH()
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	const workers = 8
	region := 8192 / workers
	var ios, errs atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := 1 + rng.Intn(64)
				lba := w*region + rng.Intn(region-n)
				data := make([]byte, n*512)
				rng.Read(data)
				var err error
				if w%2 == 0 {
					// Session.Do, blocking.
					_, err = e.s.Do(e.ctx, write10(uint32(lba), data))
					if err == nil {
						rd := read10(uint32(lba), uint16(n))
						_, err = e.s.Do(e.ctx, rd)
						if err == nil && !bytes.Equal(rd.Read, data) {
							err = fmt.Errorf("verify mismatch at LBA %d", lba)
						}
					}
				} else {
					// The LUN handle; reads on the non-blocking path.
					err = lun.WriteAt(e.ctx, data, int64(lba)*512, false)
					if err == nil {
						got := make([]byte, len(data))
						ch := make(chan error, 1)
						lun.StartReadAt(got, int64(lba)*512, func(err error) { ch <- err })
						err = <-ch
						if err == nil && !bytes.Equal(got, data) {
							err = fmt.Errorf("verify mismatch at LBA %d (non-blocking read)", lba)
						}
					}
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				ios.Add(1)
			}
		}(w)
	}
	for cid := int32(0); cid < 4; cid++ {
		time.Sleep(150 * time.Millisecond)
		before := e.s.Recovery().ConnRecoveries
		if cid%2 == 0 {
			// Drop connection cid at its next command.
			armed.Store(cid)
		} else {
			// Drop it at a random moment.
			for _, c := range e.tg.Conns() {
				if c.CID() == uint16(cid) && c.SessionTSIH() == tsih {
					c.Close()
				}
			}
		}
		waitFor(t, e.ctx, "connection recovery", func() bool {
			return e.s.Recovery().ConnRecoveries > before && e.s.Connections() == 4
		})
	}
	time.Sleep(150 * time.Millisecond)
	close(stop)
	wg.Wait()
	if errs.Load() != 0 {
		t.Fatalf("%d of %d commands failed: %v", errs.Load(), ios.Load(), firstErr.Load())
	}
	for sn, n := range e.tg.Executions() {
		if n != 1 {
			t.Errorf("CmdSN %d executed %d times", sn, n)
		}
	}
	rec := e.s.Recovery()
	if rec.ConnRecoveries != 4 {
		t.Errorf("%d connection recoveries, want 4", rec.ConnRecoveries)
	}
	if info := e.s.Info(); info.ConnRecoveries != 4 || info.Connections != 4 {
		t.Errorf("Info: %d connection recoveries, %d connections; want 4 and 4", info.ConnRecoveries, info.Connections)
	}
	if len(e.tg.Reassigned()) < 2 {
		t.Errorf("%d tasks reassigned, want at least one per connection dropped at a command", len(e.tg.Reassigned()))
	}
	t.Logf("%d write-verify rounds, 4 connections dropped one at a time, %d connection recoveries, %d tasks reassigned",
		ios.Load(), rec.ConnRecoveries, len(e.tg.Reassigned()))
	keptSession(t, e, tsih)
}

// Closing the session while a connection recovery keeps failing to log
// in ends it at once: the waiting command returns, and no goroutine stays
// behind (newEnv's leak check).
func TestConnRecoveryCloseDuringRecovery(t *testing.T) {
	var once sync.Once
	var tries atomic.Int32
	e := erl2Env(t, 1, faketarget.Config{
		CutDataIn: func(_, sn uint32) (hit bool) {
			if sn == 1 {
				once.Do(func() { hit = true })
			}
			return hit
		},
		OnLogin: func(c *faketarget.Conn, req *pdu.LoginRequest, _ []pdu.KV) bool {
			if req.TSIH != 0 {
				tries.Add(1)
				c.SendLoginStatus(req, 3, 0x01)
				return true
			}
			return false
		},
	}, nil)
	ch := goDo(e.ctx, e.s, read10(0, 16))
	waitFor(t, e.ctx, "a connection recovery login", func() bool { return tries.Load() > 0 })
	start := time.Now()
	e.s.Close()
	r := await(t, e.ctx, ch)
	if r.err == nil {
		t.Fatal("read succeeded on a closed session")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the read returned %v after Close", d)
	}
}

// Close while the leading connection is lost and its recovery waits out
// Time2Wait: the session is logged out on the surviving connection, and
// Close reports success.
func TestConnRecoveryCloseLogsOutOnSurvivor(t *testing.T) {
	e := erl2Env(t, 2, faketarget.Config{Time2Wait: 2}, nil)
	if p := e.s.Params(); p.DefaultTime2Wait != 2 {
		t.Fatalf("DefaultTime2Wait %d, want 2", p.DefaultTime2Wait)
	}
	c1, err := e.tg.WaitConn(e.ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	e.c.Close() // the leading connection
	waitFor(t, e.ctx, "the loss to be seen", func() bool { return e.s.Connections() == 1 })
	if err := e.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	lo := ofOpcode(c1.Received(), pdu.OpLogoutReq)
	if len(lo) != 1 || lo[0].PDU.(*pdu.LogoutRequest).Reason != pdu.LogoutCloseSession {
		t.Fatalf("Logouts on the surviving connection: %v, want one closing the session", lo)
	}
}
