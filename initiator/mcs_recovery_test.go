package initiator_test

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// countHook counts the warnings of command timeouts.
type countHook struct {
	mu       sync.Mutex
	timeouts []string
}

func (h *countHook) Levels() []logrus.Level { return []logrus.Level{logrus.WarnLevel} }
func (h *countHook) Fire(e *logrus.Entry) error {
	if len(e.Message) >= 17 && e.Message[:17] == "command timed out" {
		h.mu.Lock()
		h.timeouts = append(h.timeouts, fmt.Sprintf("%s %v", e.Message, e.Data))
		h.mu.Unlock()
	}
	return nil
}

// Issue item 16b: MC/S (4 connections) on istgt, one connection reset
// under a bounded read workload. ERL 0 must recover the whole session
// (reinstatement) and no command may go unanswered afterwards: with
// CommandTimeout 5 s, no command times out. LUNBRIDGE_MCS_RUNS repeats it.
func TestMCSIstgtResetOneNoLostCommands(t *testing.T) {
	testenv.RequireRoot(t)
	requireKind(t, targets.KindIstgt)
	srv := startKind(t, targets.KindIstgt,
		targets.Target{Name: "iqn.2026-11.org.lunbridge.test:mcsreset", LUNs: []targets.LUN{{Size: 32 << 20}}, Params: map[string]string{"MaxConnections": "4"}})
	runs := 3
	if v, err := strconv.Atoi(os.Getenv("LUNBRIDGE_MCS_RUNS")); err == nil && v > 0 {
		runs = v
	}
	bad := 0
	useSS := os.Getenv("LUNBRIDGE_MCS_KILL") == "ss"
	mixed := os.Getenv("LUNBRIDGE_MCS_MIXED") != ""
	for run := 0; run < runs; run++ {
		px, err := faultproxy.New(srv.Portal)
		if err != nil {
			t.Fatal(err)
		}
		portal := px.Addr()
		if useSS {
			portal = srv.Portal // ss -K kills our own socket, as in the report
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		hook := &countHook{}
		lg := logrus.New()
		lg.SetOutput(io.Discard)
		if os.Getenv("LUNBRIDGE_MCS_DEBUG") != "" {
			lg.SetOutput(os.Stderr)
			lg.SetLevel(logrus.DebugLevel)
		}
		lg.AddHook(hook)
		cfg := resilienceConfig(srv, portal)
		cfg.MaxConnections = 4
		cfg.CommandTimeout = 5 * time.Second
		cfg.Logger = logrus.NewEntry(lg)
		s, l := openLUN(t, ctx, srv, 0, 0, cfg)
		var ios, errs atomic.Int64
		wctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				rng := rand.New(rand.NewSource(int64(run*100 + w)))
				buf := make([]byte, 64<<10)
				wbuf := make([]byte, 64<<10)
				region := l.Size() / 16
				for wctx.Err() == nil {
					n := int64(1+rng.Intn(16)) * 4096
					off := rng.Int63n((l.Size()-n)/4096) * 4096
					write := mixed && rng.Intn(2) == 0
					if mixed {
						// Writes and verifying reads in the worker's own region.
						off = int64(w)*region + rng.Int63n((region-n)/4096)*4096
					}
					var err error
					async := w%2 == 0 // the non-blocking path, as the NBD server uses it
					switch {
					case write && async:
						rng.Read(wbuf[:n])
						ch := make(chan error, 1)
						l.StartWriteAt(wbuf[:n], off, false, func(err error) { ch <- err })
						err = <-ch
					case write:
						rng.Read(wbuf[:n])
						err = l.WriteAt(ctx, wbuf[:n], off, false)
					case async:
						ch := make(chan error, 1)
						l.StartReadAt(buf[:n], off, func(err error) { ch <- err })
						err = <-ch
					default:
						err = l.ReadAt(ctx, buf[:n], off)
					}
					if err == nil && write {
						err = l.ReadAt(ctx, buf[:n], off)
						if err == nil && string(buf[:n]) != string(wbuf[:n]) {
							err = fmt.Errorf("verify mismatch at %d", off)
						}
					}
					if err != nil {
						errs.Add(1)
					}
					ios.Add(1)
				}
			}(w)
		}
		time.Sleep(300 * time.Millisecond)
		if useSS {
			killOneSS(t, srv.Portal)
		} else if !px.ResetOne() {
			t.Fatal("no connection to reset")
		}
		deadline := time.Now().Add(30 * time.Second)
		for s.Recovery().Reconnects == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		// Long enough for an unanswered command to time out (5 s).
		time.Sleep(7 * time.Second)
		stop()
		wg.Wait()
		hook.mu.Lock()
		tos := append([]string(nil), hook.timeouts...)
		hook.mu.Unlock()
		t.Logf("run %d: %d reads, %d errors, recovered %d times in %v, %d connections, %d command timeouts %v",
			run, ios.Load(), errs.Load(), s.Recovery().Reconnects, s.Recovery().LastDuration.Round(time.Millisecond), s.Connections(), len(tos), tos)
		if len(tos) > 0 || errs.Load() > 0 {
			bad++
		}
		s.Close()
		px.Close()
		cancel()
	}
	if os.Getenv("LUNBRIDGE_MCS_DEBUG") != "" {
		t.Logf("istgt log:\n%s", srv.LogTail(300))
	}
	if bad > 0 {
		t.Errorf("%d of %d runs had commands unanswered after recovering from one reset connection", bad, runs)
	}
}

// killOneSS kills one of our TCP connections to portal with ss -K (the
// initiator's socket only, as an administrator would).
func killOneSS(t *testing.T, portal string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(portal)
	out, err := exec.Command("ss", "-Htn", "state", "established", "dst", "127.0.0.1", "dport", "=", port).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatal("no connection to kill")
	}
	f := strings.Fields(lines[0])
	_, lport, _ := net.SplitHostPort(f[2])
	if out, err := exec.Command("ss", "-K", "dst", "127.0.0.1", "dport", "=", port, "sport", "=", lport).CombinedOutput(); err != nil {
		t.Fatalf("ss -K: %v %s", err, out)
	}
	t.Logf("killed local port %s of %d connections", lport, len(lines))
}
