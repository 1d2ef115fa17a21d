package faketarget

import (
	"runtime"
	"strings"
	"time"
)

// TB is the part of testing.TB LeakCheck uses.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
}

// LeakCheck records the goroutines running now and returns a function
// that fails t if goroutines started since are still running after a grace
// period of up to 5 s — go.uber.org/goleak's VerifyNone(t, IgnoreCurrent())
// without the module (it is not in go.mod). Use it as
//
//	defer faketarget.LeakCheck(t)()
func LeakCheck(t TB) func() {
	before := map[string]bool{}
	for id := range goroutines() {
		before[id] = true
	}
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var leaked []string
			for id, stack := range goroutines() {
				if !before[id] && !benign(stack) {
					leaked = append(leaked, stack)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func benign(stack string) bool {
	for _, s := range []string{"testing.tRunner", "testing.(*T).Run", "os/signal.signal_recv", "runtime.ensureSigM", "testing.runFuzzing"} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}

// goroutines maps goroutine ID to stack trace, leaving out the caller's.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // the calling goroutine
		}
		f := strings.Fields(g)
		if len(f) >= 2 && f[0] == "goroutine" {
			out[f[1]] = g
		}
	}
	return out
}
