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
// REASSIGN for its tasks there.
//
// LIO's TASK REASSIGN answers are swapped, in its source (checked in 3.x, 6.x and a
// post-6.1 tree; no fix upstream found): iscsit_tmr_task_reassign returns an iSCSI code
// (ISCSI_TMF_RSP_COMPLETE 0, _NO_TASK 1, _TASK_ALLEGIANT 3, _REJECTED 255, _NOT_SUPPORTED 5),
// iscsit_handle_task_mgt_cmd stores it in se_tmr->response, and iscsit_build_task_mgt_rsp
// converts that field as a target-core code (iscsit_convert_tcm_tmr_rsp, enum tcm_tmrsp_table:
// TMR_FUNCTION_FAILED 0, TMR_FUNCTION_COMPLETE 1, TMR_TASK_DOES_NOT_EXIST 2,
// TMR_LUN_DOES_NOT_EXIST 3, ...). On the wire: accepted (goes on with the task, as
// iscsit_tmr_post_handler tests the same field against ISCSI_TMF_RSP_COMPLETE) -> 255
// "function rejected"; no such task -> 0 "function complete"; still allegiant -> 2 "LUN does
// not exist"; genuinely rejected or not supported -> 255. Runs 1-4 (before the quirk) saw 255
// for every task LIO held; the initiator fell back to session reinstatement and the guest
// died (NULL pointer dereference in target_release_cmd_kref <- transport_generic_free_cmd <-
// iscsit_free_cmd <- iscsit_close_connection, or the general protection fault of
// TestLIOMCSSessionRecovery). Run 5, reading 255 as complete, passed once but stalled 30 s: a
// command lost in the reset was not at LIO, whose "task does not exist" arrived as 0.
//
// Since then the initiator reads LIO's answers swapped when the LUN's INQUIRY vendor is
// "LIO-ORG" (initiator/connrecovery.go, reassignResponse; unit tests TestLIOSwapped* on the
// fake target). With it (runs 6-10, 2026-12-06) the reassignment itself works: tasks LIO held
// are reassigned ("task 0x67 reassigned"), a task LIO did not have is sent again at once
// ("task 0x75 was not at the target; command retried with CmdSN 113"), the connection is
// recovered in about 2.1 s, TSIH kept. But LIO 6.1 then oopses on its own: a NULL pointer
// dereference in transport_generic_free_cmd <- iscsit_free_cmd <- iscsit_ack_from_expstatsn <-
// iscsit_process_scsi_cmd within about a second of the reassignment — when a later command's
// ExpStatSN acknowledges the reassigned task's status and LIO frees the task (runs 8 and 10;
// runs 6 and 7 died within a second of the reassignment too, their first oops not captured),
// then a second one in iscsit_close_connection <- iscsit_connection_recovery_transport_reset.
// From then on LIO answers nothing (NOP-Out pings time out, logins get "service
// unavailable"), and every worker's I/O fails after the replacement timeout. Run 9 passed
// (13 s, 2940 I/Os verified, recovered within 2.07 s, TSIH kept) only because the reset
// connection carried no task: nothing was reassigned. The crash needs no reinstatement and no
// wrong answer from the initiator: acknowledging StatSN is mandatory. So LIO 6.1 cannot
// complete an ERL 2 connection recovery that moves a task whichever way the initiator reads
// its answers, and the test runs only with LUNBRIDGE_VMLAB_LIO_ERL2=1 (like
// LUNBRIDGE_VMLAB_LIO_OOPS), to reproduce.
//
// Debian's 6.12 (6.12.118+deb12-amd64, LUNBRIDGE_VMLAB_KPKG=linux-image-6.12-amd64) is no
// better, two runs (2026-12-06): it still swaps the TASK REASSIGN codes (the tasks it took
// came back as 255, read as complete: "task 0x79 reassigned", "task 0x6f reassigned"; lost
// commands as 0: "task 0x5c0 was not at the target; command retried"), and it oopses the same
// way within a few seconds of the reassignment — NULL pointer dereference in
// target_release_cmd_kref <- transport_generic_free_cmd <- iscsit_free_cmd <-
// iscsit_discard_cr_cmds_by_expstatsn <- iscsit_build_logout_rsp (run 1: the first recovery
// took 2.04 s with 2 tasks reassigned, then LIO announced it drops a survivor, oopsed again
// in iscsit_close_connection/kthread_stop and answered nothing: every I/O failed after the
// replacement timeout) and <- iscsit_free_connection_recovery_entries <-
// iscsit_close_session (run 2: one task reassigned, then LIO dropped a survivor and the
// initiator reinstated the session, TSIH 1 -> 2). So the test stays opt-in on every
// kernel the lab can boot. A run counts only if the recovery moved a task (RecoveryStats
// TasksReassigned or CommandsResent).
func TestLIOERL2ConnectionRecovery(t *testing.T) {
	Require(t)
	if os.Getenv("LUNBRIDGE_VMLAB_LIO_ERL2") != "1" {
		t.Skip("LIO 6.1 oopses after a successful TASK REASSIGN, when the reassigned task's status is acknowledged (see the comment); set LUNBRIDGE_VMLAB_LIO_ERL2=1 to run it")
	}
	start := time.Now()
	erl := 2
	lt := BootLIO(t, LIOOptions{ERL: &erl, MaxConnections: 4, SizeMB: 32, Timeout: 5 * time.Minute})
	t.Logf("LIO ready after %v", time.Since(start).Round(time.Second))
	dmesg := func() string {
		oops := oopses(lt.VM.Output())
		out, _, err := lt.VM.Run("dmesg | tail -60", 30*time.Second)
		if err != nil {
			return fmt.Sprintf("%s(dmesg: %v)\nconsole:\n%s", oops, err, lastLines(lt.VM.Output(), 80))
		}
		return oops + out
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
	t.Logf("ERL %d, %d connections; connection recoveries %d (%d tasks reassigned, %d commands sent again), session reinstatements %d; TSIH %#x -> %#x; %d I/Os; recovered within %v; %v in all\nLIO sessions:\n%s\ninitiator warnings:\n%s",
		s.Params().ErrorRecoveryLvl, s.Connections(), connRecoveries(s), rs.TasksReassigned, rs.CommandsResent, rs.Reconnects, tsih, s.TSIH(), ops.Load(),
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
	// A reset connection that carried no task proves nothing about TASK REASSIGN.
	if rs.TasksReassigned+rs.CommandsResent < 1 {
		t.Errorf("the recovery moved no task (0 reassigned, 0 sent again): the reset connection carried none; the run does not count")
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

// oopses returns the kernel oops reports on the guest's console (each
// "BUG:" line and what follows up to its end-of-trace line), so a crash
// early in the run is not lost behind the tail of dmesg.
func oopses(console string) string {
	var b strings.Builder
	in := 0
	for _, ln := range strings.Split(console, "\n") {
		if strings.Contains(ln, "BUG:") || strings.Contains(ln, "general protection fault") {
			in = 60
		}
		if in > 0 {
			b.WriteString(ln + "\n")
			in--
			if strings.Contains(ln, "---[ end trace") {
				in = 0
				b.WriteString("\n")
			}
		}
	}
	return b.String()
}
