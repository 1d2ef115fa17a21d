package targets

import (
	"errors"
	"testing"

	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// StartTgtd starts a real tgtd with the targets (LUNs at 1..n) and stops it
// and removes its backing files at the end of the test.
func StartTgtd(t testing.TB, targets ...Target) *Server {
	t.Helper()
	return StartWith(t, KindTgtd, Options{}, targets...)
}

// StartIstgt starts a real istgt, one LogicalUnit section per target (LUNs at
// 0..n-1). Requests istgt cannot serve skip the test ("istgt cannot ...").
func StartIstgt(t testing.TB, targets ...Target) *Server {
	t.Helper()
	return StartWith(t, KindIstgt, Options{}, targets...)
}

// StartWith is StartTgtd / StartIstgt with options (extra portals, port).
// A missing binary or root calls testenv.Unavailable (fails under CI=true,
// skips otherwise); an ErrUnsupported request skips.
func StartWith(t testing.TB, kind string, opts Options, targets ...Target) *Server {
	t.Helper()
	testenv.RequireRoot(t)
	if err := Available(kind); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	opts.Detached = false
	s, err := Launch(kind, opts, targets...)
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			t.Skipf("%v", err)
		}
		t.Fatalf("start %s: %v", kind, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			// Close kills a daemon that ignores its stop request; that
			// is the target's hiccup (istgt sometimes hangs tearing down
			// multi-connection sessions), not the test's failure.
			if s.alive() {
				t.Errorf("stop %s: %v; log tail:\n%s", kind, err, s.LogTail(20))
			} else {
				t.Logf("stop %s: %v (killed)", kind, err)
			}
		}
		if err := s.Remove(); err != nil {
			t.Errorf("remove %s: %v", s.WorkDir, err)
		}
	})
	return s
}

// Stop stops the daemon (idempotent). Backing files stay until the test's
// cleanup (or Remove). Errors go to the log set in Options.Logf.
func (s *Server) Stop() {
	if err := s.Close(); err != nil {
		s.log("targets: stop %s: %v; log tail:\n%s", s.Kind, err, s.LogTail(20))
	}
}

// Restart stops the daemon and starts it again on the same port with the
// same backing files (a target reboot).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.RestartErr(); err != nil {
		t.Fatalf("restart %s: %v", s.Kind, err)
	}
}

// AddPortal adds a listening portal to a running tgtd ("127.0.0.2" or
// "127.0.0.2:PORT"). On istgt it skips: pass Options.ExtraPortals to
// StartWith instead.
func (s *Server) AddPortal(t testing.TB, addr string) {
	t.Helper()
	if err := s.AddPortalErr(addr); err != nil {
		if errors.Is(err, ErrUnsupported) {
			t.Skipf("%v", err)
		}
		t.Fatalf("%v", err)
	}
}
