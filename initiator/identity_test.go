package initiator_test

import (
	"context"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/internal/targets"
	"github.com/lunbridge/lunbridge/internal/testenv"
)

// switcher is a TCP forwarder whose upstream can be changed, to make a
// reconnect land somewhere else than the first login did.
type switcher struct {
	ln       net.Listener
	upstream atomic.Value // string; "garbage" answers random bytes
	mu       sync.Mutex
	conns    []net.Conn
}

func newSwitcher(t *testing.T, up string) *switcher {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sw := &switcher{ln: ln}
	sw.upstream.Store(up)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go sw.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close(); sw.cut() })
	return sw
}

func (sw *switcher) serve(c net.Conn) {
	sw.mu.Lock()
	sw.conns = append(sw.conns, c)
	sw.mu.Unlock()
	up := sw.upstream.Load().(string)
	if up == "garbage" {
		junk := make([]byte, 4096)
		rand.Read(junk)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(junk)
		io.Copy(io.Discard, c)
		c.Close()
		return
	}
	u, err := net.Dial("tcp", up)
	if err != nil {
		c.Close()
		return
	}
	sw.mu.Lock()
	sw.conns = append(sw.conns, u)
	sw.mu.Unlock()
	go func() { io.Copy(u, c); u.Close() }()
	io.Copy(c, u)
	c.Close()
}

// cut closes every forwarded connection.
func (sw *switcher) cut() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	for _, c := range sw.conns {
		c.Close()
	}
	sw.conns = nil
}

// After a reconnect that reaches a different LUN (same target name, other
// disk), I/O must fail with a clear error instead of touching the wrong
// disk; a target that answers garbage during re-login gives a clear error
// once the replacement timeout passes.
func TestReconnectToDifferentLUNOrGarbage(t *testing.T) {
	testenv.RequireRoot(t)
	requireKind(t, targets.KindTgtd)
	name := "iqn.2026-11.org.lunbridge.test:same-name"
	a := startKind(t, targets.KindTgtd, targets.Target{Name: name, LUNs: []targets.LUN{{Size: 8 << 20}}})
	b := startKind(t, targets.KindTgtd, targets.Target{Name: name, LUNs: []targets.LUN{{Size: 16 << 20}}})

	t.Run("different-lun", func(t *testing.T) {
		sw := newSwitcher(t, a.Portal)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cfg := resilienceConfig(a, sw.ln.Addr().String())
		s, l := openLUN(t, ctx, a, 0, 0, cfg)
		defer s.Close()
		buf := make([]byte, 4096)
		if err := l.ReadAt(ctx, buf, 0); err != nil {
			t.Fatal(err)
		}
		sw.upstream.Store(b.Portal)
		sw.cut()
		err := l.WriteAt(ctx, buf, 0, false)
		if err == nil || !strings.Contains(err.Error(), "different disk") {
			t.Fatalf("write after reconnecting to another LUN: %v", err)
		}
		t.Logf("refused: %v", err)
		// Nothing reached the other disk.
		if got, _ := readFileAt(b.BackingFile(0, 0), 0, 4096); !allZero(got) {
			t.Fatal("data reached the other LUN")
		}
	})

	t.Run("garbage-relogin", func(t *testing.T) {
		sw := newSwitcher(t, a.Portal)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cfg := resilienceConfig(a, sw.ln.Addr().String())
		cfg.ReplacementTimeout = 2 * time.Second
		s, l := openLUN(t, ctx, a, 0, 0, cfg)
		defer s.Close()
		sw.upstream.Store("garbage")
		sw.cut()
		buf := make([]byte, 4096)
		t0 := time.Now()
		err := l.ReadAt(ctx, buf, 0)
		if !errors.Is(err, blockdev.ErrUnavailable) || time.Since(t0) > 4*time.Second {
			t.Fatalf("after garbage during re-login: %v (after %v)", err, time.Since(t0))
		}
		t.Logf("clear error after %v: %v", time.Since(t0).Round(time.Millisecond), err)
	})
}

func readFileAt(path string, off int64, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	return b, err
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
