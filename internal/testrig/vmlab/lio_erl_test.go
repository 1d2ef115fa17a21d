package vmlab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
)

// lockedBuffer collects the initiator's log from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLIOERL1DataSNACK is the ERL 1 proof on a target that serves SNACKs (tgtd closes the
// connection on one, TestERL1DataDigestRealTgtd): LIO with default_erl=1 and both digests
// CRC32C, reached through a fault proxy that flips one byte in the payload of chosen Data-In
// PDUs. Each damaged PDU fails its data digest; at ERL 1 the initiator drops it, re-requests it
// with a Data SNACK and holds the status until LIO has re-sent it. Every read must return the
// written data, with one SNACK per damaged PDU, in the same session (same TSIH, no session
// recovery) and without a failed command.
//
// What LIO (6.1) does, seen with this test: default_erl=1 is offered at login and ERL 1 is
// negotiated; with MaxBurstLength 262144 and 64 KiB Data-In PDUs it sets the A bit on every
// fourth Data-In (DataSN 3, 7, ...), which the initiator acknowledges with the status while a hole
// is open; a Data SNACK (BegRun = the damaged DataSN, RunLength 1) is answered by re-sending
// exactly that Data-In, with no duplicate, no Reject, no dropped connection and nothing in dmesg.
// Three damaged PDUs of one task (three SNACKs) are repaired the same way.
func TestLIOERL1DataSNACK(t *testing.T) {
	Require(t)
	start := time.Now()
	erl := 1
	lt := BootLIO(t, LIOOptions{ERL: &erl, Digest: "crc32c", SizeMB: 32, Timeout: 4 * time.Minute})
	t.Logf("LIO ready after %v", time.Since(start).Round(time.Second))
	tpg := "/sys/kernel/config/target/iscsi/" + lt.IQN + "/tpgt_1"
	out, rc, err := lt.VM.Run("cat "+tpg+"/attrib/default_erl "+tpg+"/param/ErrorRecoveryLevel", 30*time.Second)
	if err != nil || rc != 0 || strings.Fields(out)[0] != "1" {
		t.Fatalf("default_erl: %q rc %d err %v", out, rc, err)
	}

	px, err := faultproxy.New(lt.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var logs lockedBuffer
	lg := logrus.New()
	lg.SetOutput(&logs)
	lg.SetLevel(logrus.InfoLevel)
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: lioInitiatorName, TargetName: lt.IQN,
		Portal: px.Addr(), Logger: logrus.NewEntry(lg), ErrorRecoveryLevel: 1,
		HeaderDigest: []string{"CRC32C"}, DataDigest: []string{"CRC32C"},
		MaxRecvDataSegmentLength: 64 << 10, ReplacementTimeout: 20 * time.Second, LoginTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer s.Close()
	p := s.Params()
	if p.ErrorRecoveryLvl != 1 || !p.DataDigest || !p.HeaderDigest {
		t.Fatalf("negotiated ERL %d header digest %v data digest %v, want 1, true, true", p.ErrorRecoveryLvl, p.HeaderDigest, p.DataDigest)
	}
	tsih := s.TSIH()
	l, err := initiator.OpenLUN(ctx, s, uint64(lt.DiskLUN))
	if err != nil {
		t.Fatal(err)
	}

	// 6 MiB at an unaligned block offset: 4 MiB written before the faults, 2 MiB after.
	const base = 1<<20 + 7*512
	want := make([]byte, 6<<20)
	for i := range want {
		want[i] = byte(i*7 + i>>13 + 1)
	}
	if err := l.WriteAt(ctx, want[:4<<20], base, false); err != nil {
		t.Fatalf("write: %v", err)
	}
	check := func(what string, off, n int) {
		t.Helper()
		got := make([]byte, n)
		if err := l.ReadAt(ctx, got, base+int64(off)); err != nil {
			t.Fatalf("%s: read: %v", what, err)
		}
		if !bytes.Equal(got, want[off:off+n]) {
			t.Fatalf("%s: read returned wrong data (first difference at byte %d)", what, lioFirstDiff(got, want[off:off+n]))
		}
	}
	check("clean read", 0, 4<<20)
	if px.Flipped() != 0 || strings.Contains(logs.String(), "SNACK") {
		t.Fatalf("SNACK before any fault:\n%s", logs.String())
	}

	// One damaged PDU in one 4 MiB read, then three in four parallel 1 MiB reads.
	px.FlipDataIn(32<<10, 1)
	check("read with one damaged Data-In", 0, 4<<20)
	if px.Flipped() != 1 {
		t.Fatalf("proxy damaged %d Data-In payloads, want 1", px.Flipped())
	}
	px.FlipDataIn(32<<10, 3) // re-arming restarts Flipped's count
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(off int) {
			defer wg.Done()
			got := make([]byte, 1<<20)
			if err := l.ReadAt(ctx, got, base+int64(off)); err != nil {
				errs <- fmt.Errorf("parallel read at +%d: %w", off, err)
			} else if !bytes.Equal(got, want[off:off+1<<20]) {
				errs <- fmt.Errorf("parallel read at +%d: wrong data at byte %d", off, lioFirstDiff(got, want[off:off+1<<20]))
			}
		}(i << 20)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if px.Flipped() != 3 {
		t.Fatalf("proxy damaged %d Data-In payloads in the parallel reads, want 3", px.Flipped())
	}
	damaged := 1 + px.Flipped()
	px.FlipDataIn(0, 0)

	// The session goes on: more writes, the whole 6 MiB read back.
	if err := l.WriteAt(ctx, want[4<<20:], base+4<<20, false); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	check("final read", 0, len(want))

	log := logs.String()
	snacks := strings.Count(log, "will be re-requested by SNACK")
	recovered := strings.Count(log, "recovered by SNACK")
	rs := s.Recovery()
	dmesg, _, _ := lt.VM.Run("dmesg | grep -i -E 'snack|recover|digest|datain|reinstat' | tail -n 20", 30*time.Second)
	t.Logf("damaged %d Data-In PDUs; Data SNACKs %d; tasks recovered by SNACK %d; session recoveries %d; TSIH %#x -> %#x; %v in all\ninitiator log (warnings and up):\n%s\nLIO dmesg:\n%s",
		damaged, snacks, recovered, rs.Reconnects, tsih, s.TSIH(), time.Since(start).Round(time.Second), lioWarnings(log), dmesg)
	if snacks != 4 {
		t.Errorf("%d Data SNACKs, want 4 (one per damaged PDU)", snacks)
	}
	if recovered < 2 || recovered > 4 {
		t.Errorf("%d tasks recovered by SNACK, want 2..4 (one per task with a damaged PDU)", recovered)
	}
	if rs.Reconnects != 0 || rs.Recovering {
		t.Errorf("session recovered %d times (recovering %v): ERL 1 must repair in place", rs.Reconnects, rs.Recovering)
	}
	if s.TSIH() != tsih {
		t.Errorf("TSIH changed from %#x to %#x: the session was reinstated", tsih, s.TSIH())
	}
	if strings.Contains(log, "level=error") {
		t.Errorf("errors in the initiator log")
	}
	if err := s.Close(); err != nil {
		t.Errorf("logout: %v", err)
	}
	if r := lt.Stop(); !r.Pass {
		t.Errorf("scenario result: %v", r)
	}
}

// lioWarnings keeps the log lines at warning level and above.
func lioWarnings(log string) string {
	var b strings.Builder
	for _, ln := range strings.Split(log, "\n") {
		if strings.Contains(ln, "level=warn") || strings.Contains(ln, "level=error") {
			b.WriteString(ln + "\n")
		}
	}
	return b.String()
}

// TestLIOMCSSessionRecovery: LIO with a given default_erl (lunbridge.lio.erl) and
// MaxConnections=4; one connection of the session is reset by the proxy under a write-verify
// workload (8 workers, each writing and verifying 64 KiB blocks of its own region in order).
// Every command must complete, the session must be reinstated exactly once (connection recovery,
// ERL 2, is not implemented: every loss is repaired by session reinstatement, also at negotiated
// ERL 2), and the LUN must hold what the model says (no write lost, none applied out of order).
//
// What LIO (Debian 6.1.0-57, 6.1.192) does: with a four-connection session (MC/S), our
// reinstatement login after one connection's reset often oopses the guest kernel: general
// protection fault at the non-canonical address 0xdeacfffffffffffc (a poisoned list pointer) in
// iscsit_inc_conn_usage_count <- iscsit_stop_session <- iscsi_check_for_session_reinstatement
// <- iscsi_target_do_login, then "Kernel panic - not syncing". 9 of 13 runs crashed: default_erl
// 0 (2 of 4), 1 (2 of 3), 2 (5 of 6, negotiated 0, 1 or 2); waiting DefaultTime2Wait (2 s)
// before the reinstatement did not avoid it (3 of 4 crashed), nor did a Logout (close the
// session, answered) on a surviving connection first (1 of 4 crashed): LIO looks the old session
// up by ISID while tearing it down. With one connection it recovers
// cleanly (ERL 2 negotiated). So the four-connection cases run only with
// LUNBRIDGE_VMLAB_LIO_OOPS=1, to reproduce the crash; by default the test runs the
// one-connection case.
func TestLIOMCSSessionRecovery(t *testing.T) {
	type tc struct{ target, ours, conns int }
	cases := []tc{{2, 2, 1}}
	if os.Getenv("LUNBRIDGE_VMLAB_LIO_OOPS") == "1" {
		cases = append(cases, tc{0, 0, 4}, tc{1, 1, 4}, tc{2, 2, 4}, tc{2, 0, 4})
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("target%d-ours%d-conns%d", c.target, c.ours, c.conns), func(t *testing.T) {
			lioMCSRecovery(t, c.target, c.ours, c.conns)
		})
	}
}

func lioMCSRecovery(t *testing.T, target, erl, conns int) {
	Require(t)
	start := time.Now()
	want := min(target, erl)
	lt := BootLIO(t, LIOOptions{ERL: &target, MaxConnections: 4, SizeMB: 32, Timeout: 4 * time.Minute})
	px, err := faultproxy.New(lt.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var logs lockedBuffer
	lg := logrus.New()
	lg.SetOutput(&logs)
	lg.SetLevel(logrus.InfoLevel)
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: lioInitiatorName, TargetName: lt.IQN,
		Portal: px.Addr(), Logger: logrus.NewEntry(lg), ErrorRecoveryLevel: erl, MaxConnections: conns,
		ReplacementTimeout: 30 * time.Second, LoginTimeout: 30 * time.Second, CommandTimeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer s.Close()
	if p := s.Params(); p.ErrorRecoveryLvl != want || p.MaxConnections != conns || s.Connections() != conns {
		t.Fatalf("negotiated ERL %d MaxConnections %d, %d connections; want %d, %d, %[5]d", p.ErrorRecoveryLvl, p.MaxConnections, s.Connections(), want, conns)
	}
	tsih := s.TSIH()
	l, err := initiator.OpenLUN(ctx, s, uint64(lt.DiskLUN))
	if err != nil {
		t.Fatal(err)
	}
	// 8 workers, each writing and verifying 64 KiB blocks in its own 512 KiB region, in order.
	const workers, region, blk = 8, 512 << 10, 64 << 10
	model := make([]byte, workers*region)
	var wg sync.WaitGroup
	var ios sync.WaitGroup
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
				if !started && gen == 4 {
					started = true
					ios.Done()
				}
			}
		}(w)
	}
	ios.Wait()
	if !px.ResetOne() {
		t.Fatal("no connection to reset")
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.Recovery().Reconnects == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s.Recovery().Reconnects == 0 {
		stop()
		cancel()
		wg.Wait()
		t.Fatalf("no session recovery within 20 s; initiator:\n%s", lioWarnings(logs.String()))
	}
	time.Sleep(2 * time.Second) // I/O goes on after the recovery
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
	t.Logf("ERL %d, %d connections after recovery; session recoveries %d in %v; TSIH %#x -> %#x; %v in all\n%s",
		s.Params().ErrorRecoveryLvl, s.Connections(), rs.Reconnects, rs.LastDuration, tsih, s.TSIH(), time.Since(start).Round(time.Second), lioWarnings(logs.String()))
	if rs.Reconnects != 1 {
		t.Errorf("%d session recoveries, want 1", rs.Reconnects)
	}
	if err := s.Close(); err != nil {
		t.Errorf("logout: %v", err)
	}
	if r := lt.Stop(); !r.Pass {
		t.Errorf("scenario result: %v", r)
	}
}
