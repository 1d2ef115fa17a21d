package initiator_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// A byte flipped in a Data-In payload by the fault proxy (TCP, the digests
// read from the login) is recovered by a Data SNACK at ERL 1; at ERL 0
// the same fault fails the connection (session recovery's job).
func TestERL1FaultProxyFlip(t *testing.T) {
	for _, erl := range []int{0, 1} {
		t.Run([]string{"erl0", "erl1"}[erl], func(t *testing.T) {
			defer faketarget.LeakCheck(t)()
			tg := faketarget.New(faketarget.Config{ErrorRecoveryLevel: 1, DataDigest: true, HeaderDigest: true})
			defer tg.Close()
			addr, err := tg.Listen()
			if err != nil {
				t.Fatal(err)
			}
			px, err := faultproxy.New(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer px.Close()
			ctx, cancel := context.WithTimeout(context.Background(), confTimeout)
			defer cancel()
			s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: confIQN, TargetName: tg.Name(), Portal: px.Addr(),
				NopInterval: -1, NoRecovery: true, ErrorRecoveryLevel: erl, MaxRecvDataSegmentLength: 4096,
				HeaderDigest: []string{"CRC32C"}, DataDigest: []string{"CRC32C"}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			d := tg.Disk(0)
			for i := range d {
				d[i] = byte(i * 13)
			}
			px.FlipDataIn(4096, 1)
			cmd := read10(0, 64)
			_, err = s.Do(ctx, cmd)
			if px.Flipped() != 1 {
				t.Fatalf("proxy flipped %d payloads, want 1", px.Flipped())
			}
			if erl == 0 {
				expectConnError(t, err, initiator.ErrProtocol)
				return
			}
			if err != nil {
				t.Fatalf("read at ERL 1: %v", err)
			}
			if !bytes.Equal(cmd.Read, d[:64*512]) {
				t.Fatal("data differs after SNACK recovery")
			}
			if v := tg.Violations(); len(v) > 0 {
				t.Fatalf("violations: %v", v)
			}
		})
	}
}

// The same against a real target. tgtd negotiates ErrorRecoveryLevel up
// to 2 when configured (tgtadm -n ErrorRecoveryLevel; istgt answers 0,
// TestERLOffersProbe) but does not implement SNACK: it logs
// "iscsi_task_rx_start(1785) Cannot handle yet 10" and closes the
// connection. So on tgtd the Data SNACK ends in the fallback: the
// connection is lost, the session is reinstated (ERL 0 path) and the read
// is issued again; it must return the right data with exactly one
// recovery. (LIO serves SNACKs; its test belongs to the VM lab.)
func TestERL1DataDigestRealTgtd(t *testing.T) {
	testenv.RequireRoot(t)
	requireKind(t, targets.KindTgtd)
	srv := startKind(t, targets.KindTgtd, targets.Target{Name: "iqn.2026-11.org.lunbridge.test:erl1",
		LUNs:   []targets.LUN{{Size: 8 << 20}},
		Params: map[string]string{"ErrorRecoveryLevel": "1", "DataDigest": "CRC32C"}})
	px, err := faultproxy.New(srv.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := config(srv, 0, variant{ddigest: []string{"CRC32C"}})
	cfg.Portal = px.Addr()
	cfg.ErrorRecoveryLevel = 1
	var logs bytes.Buffer
	lg := logrus.New()
	lg.SetOutput(&logs)
	lg.SetLevel(logrus.InfoLevel)
	cfg.Logger = logrus.NewEntry(lg)
	s, l := openLUN(t, ctx, srv, 0, 0, cfg)
	defer s.Close()
	if p := s.Params(); p.ErrorRecoveryLvl != 1 || !p.DataDigest {
		t.Fatalf("negotiated ERL %d data digest %v", p.ErrorRecoveryLvl, p.DataDigest)
	}
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i*7 + i>>12)
	}
	if err := l.WriteAt(ctx, want, 0, false); err != nil {
		t.Fatal(err)
	}
	px.FlipDataIn(64<<10, 1)
	got := make([]byte, len(want))
	err = l.ReadAt(ctx, got, 0)
	t.Logf("flipped %d; read: %v; recoveries %d; log:\n%s\ntgtd:\n%s", px.Flipped(), err, s.Recovery().Reconnects, logs.String(), srv.LogTail(15))
	if px.Flipped() != 1 {
		t.Fatalf("proxy flipped %d payloads", px.Flipped())
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read returned wrong data")
	}
	if !strings.Contains(logs.String(), "re-requested by SNACK") {
		t.Error("no SNACK was attempted")
	}
	if n := s.Recovery().Reconnects; n != 1 {
		t.Errorf("%d session recoveries, want 1 (tgtd closes the connection on a SNACK)", n)
	}
}
