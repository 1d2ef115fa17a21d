package vmlab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
)

// TestLIOERL2ConnectionRecovery: LIO with default_erl=2 and MaxConnections=4, a four-connection
// ErrorRecoveryLevel 2 session (MC/S) under a write-verify workload (8 workers, each writing
// and verifying 64 KiB blocks of its own region in order); the fault proxy resets one of the
// four connections. At ERL 2 the initiator recovers the connection inside the session — a new
// connection logged in with the session's TSIH, the lost connection's tasks moved to it with
// TASK REASSIGN — so the session is never reinstated, which is what makes LIO 6.1 oops with an
// MC/S session (TestLIOMCSSessionRecovery). Asserted: same TSIH, no failed command, no session
// reinstatement, at least one connection recovery, the session back to four connections, and
// the LUN holds what the model says. On failure the initiator's recovery log and the guest's
// dmesg are logged.
//
// What LIO (Debian 6.1.0-57, 6.1.192) does, seen in four runs (2026-12-06): ERL 2 and
// MaxConnections 4 are negotiated, the four connections log in. After the reset LIO announces,
// on a surviving connection, Async Message event 2 with Parameter1 = the lost CID, Time2Wait 2,
// Time2Retain 20 (which the initiator closed the wrong connection for until 6446802). After
// Time2Wait the initiator logs the lost CID out with reason 2 on a survivor and sends TASK
// REASSIGN for its tasks there. LIO answers every TASK REASSIGN whose task it holds with
// response 255 "function rejected", with nothing in dmesg (runs 2-4). In run 1 LIO logged
// "Unable to locate RefTaskTag: 0x65000000 in connection recovery command list" for one (its
// answer was lost with the connection). This matches LIO's code: iscsit_tmr_task_reassign stores
// iSCSI response codes (ISCSI_TMF_RSP_COMPLETE = 0, ..._NO_TASK = 1) in se_tmr->response, which
// iscsit_build_task_mgt_rsp then converts as target-core codes (TMR_FUNCTION_FAILED = 0,
// TMR_FUNCTION_COMPLETE = 1, ...): a reassignment LIO accepted (and goes on with) goes out as
// "function rejected", a task it does not have as "function complete". The initiator takes the
// rejection at its word and falls back to session reinstatement, and the guest kernel dies: a
// NULL pointer dereference in target_release_cmd_kref <- transport_generic_free_cmd <-
// iscsit_free_cmd <- iscsit_close_connection <- iscsit_take_action_for_connection_exit (runs 3,
// 4), or the general protection fault of TestLIOMCSSessionRecovery in
// iscsi_check_for_session_reinstatement (run 1).
//
// Run 5 checked the reading with an initiator that took 255 for "function complete" (an
// experiment, not committed): the test passed — one connection recovery, no reinstatement,
// TSIH kept, every I/O verified, LIO alive — but I/O stalled for the 30 s command timeout: a
// command lost in the reset (CmdSN 103) was not at LIO, whose "task does not exist" arrived as
// "function complete"; at the timeout the command retry (retry.go: LIO's ExpCmdSN was 103)
// plugged the gap and the commands queued behind it were aborted and issued again. So the test
// cannot pass against this LIO as the initiator stands; it runs only with
// LUNBRIDGE_VMLAB_LIO_ERL2=1 (like LUNBRIDGE_VMLAB_LIO_OOPS), to reproduce.
func TestLIOERL2ConnectionRecovery(t *testing.T) {
	Require(t)
	if os.Getenv("LUNBRIDGE_VMLAB_LIO_ERL2") != "1" {
		t.Skip("LIO 6.1 answers TASK REASSIGN with inverted response codes and oopses on the fallback (see the comment); set LUNBRIDGE_VMLAB_LIO_ERL2=1 to run it")
	}
	start := time.Now()
	erl := 2
	lt := BootLIO(t, LIOOptions{ERL: &erl, MaxConnections: 4, SizeMB: 32, Timeout: 5 * time.Minute})
	t.Logf("LIO ready after %v", time.Since(start).Round(time.Second))
	dmesg := func() string {
		out, _, err := lt.VM.Run("dmesg | tail -60", 30*time.Second)
		if err != nil {
			return fmt.Sprintf("(dmesg: %v)\nconsole:\n%s", err, lastLines(lt.VM.Output(), 80))
		}
		return out
	}
	var logs lockedBuffer
	defer func() {
		if t.Failed() {
			t.Logf("initiator log (recovery lines):\n%s\nguest dmesg:\n%s", recoveryLines(logs.String(), 80), dmesg())
		}
	}()
	px, err := faultproxy.New(lt.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lg := logrus.New()
	lg.SetOutput(&logs)
	lg.SetLevel(logrus.DebugLevel)
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: lioInitiatorName, TargetName: lt.IQN,
		Portal: px.Addr(), Logger: logrus.NewEntry(lg), ErrorRecoveryLevel: 2, MaxConnections: 4,
		ReplacementTimeout: 60 * time.Second, LoginTimeout: 30 * time.Second, CommandTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer s.Close()
	if p := s.Params(); p.ErrorRecoveryLvl != 2 || p.MaxConnections != 4 || s.Connections() != 4 {
		t.Fatalf("negotiated ERL %d MaxConnections %d, %d connections; want 2, 4, 4", p.ErrorRecoveryLvl, p.MaxConnections, s.Connections())
	}
	tsih := s.TSIH()
	l, err := initiator.OpenLUN(ctx, s, uint64(lt.DiskLUN))
	if err != nil {
		t.Fatal(err)
	}
	const workers, region, blk = 8, 512 << 10, 64 << 10
	model := make([]byte, workers*region)
	var wg, ios sync.WaitGroup
	var ops atomic.Int64
	errs := make(chan error, workers)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	ios.Add(workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			got := make([]byte, blk)
			for gen, started := 0, false; wctx.Err() == nil; gen++ {
				off := w*region + (gen%(region/blk))*blk
				b := model[off : off+blk]
				for i := range b {
					b[i] = byte(gen*31 + w*7 + i>>9)
				}
				if err := l.WriteAt(ctx, b, int64(off), false); err != nil {
					errs <- fmt.Errorf("worker %d write %d: %w", w, gen, err)
					return
				}
				if err := l.ReadAt(ctx, got, int64(off)); err != nil || !bytes.Equal(got, b) {
					errs <- fmt.Errorf("worker %d verify %d: %v (equal %v)", w, gen, err, bytes.Equal(got, b))
					return
				}
				ops.Add(2)
				if !started && gen == 4 {
					started = true
					ios.Done()
				}
			}
		}(w)
	}
	ios.Wait()
	before := ops.Load()
	if !px.ResetOne() {
		t.Fatal("no connection to reset")
	}
	reset := time.Now()
	// Recovered: four live connections again (the reset one replaced).
	deadline := reset.Add(30 * time.Second)
	for time.Now().Before(deadline) && !(connRecovered(s) && s.Connections() == 4 && ops.Load() > before+16) {
		time.Sleep(50 * time.Millisecond)
	}
	recoveredIn := time.Since(reset)
	time.Sleep(3 * time.Second) // I/O goes on after the recovery
	stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := make([]byte, len(model))
	if err := l.ReadAt(ctx, got, 0); err != nil {
		t.Fatalf("final read: %v", err)
	}
	if !bytes.Equal(got, model) {
		t.Errorf("LUN differs from the model at byte %d", lioFirstDiff(got, model))
	}
	rs := s.Recovery()
	sessions, _ := lt.Sessions(30 * time.Second)
	t.Logf("ERL %d, %d connections; connection recoveries %d, session reinstatements %d; TSIH %#x -> %#x; %d I/Os; recovered within %v; %v in all\nLIO sessions:\n%s\ninitiator warnings:\n%s",
		s.Params().ErrorRecoveryLvl, s.Connections(), connRecoveries(s), rs.Reconnects, tsih, s.TSIH(), ops.Load(),
		recoveredIn.Round(time.Millisecond), time.Since(start).Round(time.Second), strings.TrimSpace(sessions), lioWarnings(logs.String()))
	if s.TSIH() != tsih {
		t.Errorf("TSIH %#x -> %#x: the session was reinstated", tsih, s.TSIH())
	}
	if rs.Reconnects != 0 {
		t.Errorf("%d session reinstatements, want 0", rs.Reconnects)
	}
	if n := connRecoveries(s); n < 1 {
		t.Errorf("%d connection recoveries, want >= 1", n)
	}
	if n := s.Connections(); n != 4 {
		t.Errorf("%d connections after the recovery, want 4", n)
	}
	if err := s.Close(); err != nil {
		t.Errorf("logout: %v", err)
	}
	if r := lt.Stop(); !r.Pass {
		t.Errorf("scenario result: %v", r)
	}
}

// connRecoveries is the session's count of ERL 2 connection recoveries.
func connRecoveries(s *initiator.Session) int64 { return s.Recovery().ConnRecoveries }

func connRecovered(s *initiator.Session) bool { return connRecoveries(s) > 0 }

// recoveryLines keeps the last n log lines about recovery (reassign,
// logout, login, async messages, warnings).
func recoveryLines(log string, n int) string {
	var keep []string
	for _, ln := range strings.Split(log, "\n") {
		l := strings.ToLower(ln)
		for _, w := range []string{"level=warn", "level=error", "reassign", "logout", "logged in", "recover", "async", "retried", "drop"} {
			if strings.Contains(l, w) {
				keep = append(keep, ln)
				break
			}
		}
	}
	return lastLines(strings.Join(keep, "\n"), n)
}
