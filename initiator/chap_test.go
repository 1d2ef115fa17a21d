package initiator_test

import (
	"bytes"
	"context"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// Review #17: the default CHAP_A offer lists the strongest algorithm
// first (the target takes the first it supports), and a target that only
// knows MD5 still logs us in. 7 (SHA-256) is not offered: tgtd takes 7 for
// SHA-1 (see TestInteropCHAPAlgorithm).
func TestCHAPOfferStrongestFirst(t *testing.T) {
	e := newEnv(t, faketarget.Config{CHAPUser: "inituser", CHAPSecret: "initsecret12"}, func(c *initiator.Config) {
		c.CHAP = &initiator.CHAP{User: "inituser", Secret: "initsecret12"}
	})
	var offer string
	for _, r := range e.c.Logins() {
		for _, kv := range r.Keys {
			if kv.Key == "CHAP_A" {
				offer = kv.Value
			}
		}
	}
	if offer != "8,6,5" {
		t.Fatalf("CHAP_A offered %q, want \"8,6,5\" (SHA3-256, SHA-1, MD5)", offer)
	}
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := lun.ReadAt(e.ctx, make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	e.noViolations()
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Review #17 on real targets: with the strongest-first offer, one-way and
// mutual CHAP logins to tgtd and istgt still work; the test logs the
// algorithm each one picked. (Offering 8,7,6,5 made tgtd answer CHAP_A=7,
// compute SHA-1 and reject our SHA-256 response with 0x0200.)
func TestInteropCHAPAlgorithm(t *testing.T) {
	testenv.RequireRoot(t)
	for _, kind := range []string{targets.KindTgtd, targets.KindIstgt} {
		t.Run(kind, func(t *testing.T) {
			requireKind(t, kind)
			vs := []variant{{name: "chapalg", auth: "chap"}, {name: "chapalgmutual", auth: "mutual"}}
			srv := startKind(t, kind, vs[0].target(), vs[1].target())
			for i, v := range vs {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				var out syncBuffer
				lg := logrus.New()
				lg.SetOutput(&out)
				lg.SetLevel(logrus.DebugLevel)
				cfg := config(srv, i, v)
				cfg.Logger = logrus.NewEntry(lg)
				s, err := initiator.Dial(ctx, cfg)
				if err != nil {
					t.Fatalf("%s: login: %v\nlog:\n%s\ntarget log:\n%s", v.auth, err, out.String(), srv.LogTail(10))
				}
				l, err := initiator.OpenLUN(ctx, s, uint64(srv.LUNNumber(0)))
				if err != nil {
					t.Fatal(err)
				}
				if err := l.ReadAt(ctx, make([]byte, 4096), 0); err != nil {
					t.Errorf("%s: read: %v", v.auth, err)
				}
				s.Close()
				cancel()
				sent := regexp.MustCompile(`login -> CHAP_A=([0-9,]+)`).FindStringSubmatch(out.String())
				got := regexp.MustCompile(`login <- CHAP_A=([0-9]+)`).FindStringSubmatch(out.String())
				if sent == nil || sent[1] != "8,6,5" || got == nil {
					t.Fatalf("%s: offer %v, answer %v; log:\n%s", v.auth, sent, got, out.String())
				}
				t.Logf("%s %s: offered CHAP_A=%s, target chose %s", kind, v.auth, sent[1], got[1])
			}
		})
	}
}
