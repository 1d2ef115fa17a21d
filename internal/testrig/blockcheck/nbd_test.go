package blockcheck

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

// serveProc is `lunbridge serve` on a Unix socket, restartable.
type serveProc struct {
	t    *testing.T
	bin  string
	sock string
	url  string

	mu  sync.Mutex
	p   *proc
	hwm int
}

// startServe starts `lunbridge serve --persistent --shared 0` (multi-conn)
// for url; t.Cleanup stops it (SIGTERM) and checks its clean exit.
func startServe(t *testing.T, url string) *serveProc {
	s := &serveProc{t: t, bin: lunbridge(t), sock: filepath.Join(t.TempDir(), "nbd.sock"), url: url}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.mu.Lock()
		p := s.p
		s.mu.Unlock()
		if err := p.stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
		s.hwm = max(s.hwm, p.hwm)
	})
	return s
}

func (s *serveProc) start() error {
	p := startProc(s.t, s.bin, "serve", "--listen", "unix:"+s.sock, "--persistent", "--shared", "0", s.url)
	l, err := p.line(30 * time.Second)
	if err != nil {
		p.kill9()
		return err
	}
	if !strings.HasPrefix(l, "nbd+unix://") {
		p.kill9()
		return fmt.Errorf("serve printed %q", l)
	}
	s.mu.Lock()
	s.p = p
	s.mu.Unlock()
	return nil
}

// kill9 kills serve with SIGKILL, records the crash and starts it again.
func (s *serveProc) kill9(h *History) error {
	s.mu.Lock()
	p := s.p
	s.mu.Unlock()
	p.kill9()
	h.Crash()
	s.mu.Lock()
	s.hwm = max(s.hwm, p.hwm)
	s.mu.Unlock()
	return s.start()
}

func (s *serveProc) sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p.sampleRSS()
	s.hwm = max(s.hwm, s.p.hwm)
}

func (s *serveProc) opener() func(ctx context.Context, i int) (Target, error) {
	return func(ctx context.Context, i int) (Target, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return DialNBD(ctx, "unix", s.sock, "")
	}
}

func iscsiURL(srv *targets.Server, portal string) string {
	return fmt.Sprintf("iscsi://%s/%s/%d", portal, srv.Targets[0].Name, srv.LUNNumber(0))
}

// nbdKill9: clients on their own NBD connections to one serve (multi-conn)
// while serve is killed with SIGKILL and restarted every ~3 s; the clients
// reconnect. Writes acknowledged before a completed FLUSH (or with FUA)
// must survive each kill.
func nbdKill9(t *testing.T, kind string) {
	r := scenario(t, "kill-9 serve", "nbd", kind)
	srv := startTarget(t, kind)
	s := startServe(t, srv.URL(0, 0))
	cfg := Config{Duration: runTime(10 * time.Second), Open: s.opener()}
	check(t, r, cfg, func(ctx context.Context, h *History) {
		every(ctx, 3*time.Second, func() {
			if err := s.kill9(h); err != nil {
				t.Errorf("restart serve: %v", err)
				return
			}
			h.Fault()
		})
	})
	s.sample()
	r.PeakRSS = mib(s.hwm) + " (serve)"
}

// nbdConnReset: serve's iSCSI connection goes through a fault proxy that
// resets it every ~2 s (3 s on istgt).
func nbdConnReset(t *testing.T, kind string) {
	r := scenario(t, "conn-reset", "nbd", kind)
	srv := startTarget(t, kind)
	px := newProxy(t, srv.Portal)
	s := startServe(t, iscsiURL(srv, px.Addr()))
	cfg := Config{Duration: runTime(8 * time.Second), Open: s.opener()}
	period := 2 * time.Second
	if kind == targets.KindIstgt {
		period = 3 * time.Second
	}
	check(t, r, cfg, func(ctx context.Context, h *History) {
		every(ctx, period, func() {
			px.ResetAll()
			h.Fault()
		})
	})
	s.sample()
	r.PeakRSS = mib(s.hwm) + " (serve)"
}
