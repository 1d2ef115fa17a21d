package multipath

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// TestReinstateRedirectedElsewhereProvesNothing (review #7): a write fails
// on the only path; the path's reinstatement login is redirected to a
// portal of another target portal group. That login makes a new session
// beside the old one (RFC 7143, Section 4.4.1), so it must not release
// the held write.
func TestReinstateRedirectedElsewhereProvesNothing(t *testing.T) {
	g2 := faketarget.New(faketarget.Config{PortalGroupTag: 2})
	defer g2.Close()
	addr2, err := g2.Listen()
	if err != nil {
		t.Fatal(err)
	}
	var redirect atomic.Bool
	g1 := faketarget.New(faketarget.Config{
		OnLogin: func(c *faketarget.Conn, req *pdu.LoginRequest, _ []pdu.KV) bool {
			if !redirect.Load() {
				return false
			}
			c.SendLoginStatus(req, 1, 0x01, pdu.KV{Key: "TargetAddress", Value: addr2 + ",2"})
			return true
		},
		OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
			if cmd.CDB[0] != 0x2a && cmd.CDB[0] != 0x8a {
				return false
			}
			// The write stays "queued" in this target; the
			// connection drops.
			redirect.Store(true)
			c.Close()
			return true
		},
	})
	defer g1.Close()
	addr1, err := g1.Listen()
	if err != nil {
		t.Fatal(err)
	}
	cfg := initiator.Config{InitiatorName: "iqn.2026-11.org.lunbridge:multipath-test", TargetName: faketarget.DefaultTargetName, Portal: addr1}
	ctx := context.Background()
	d, err := Open(ctx, []initiator.Config{cfg}, 0, Options{FenceTimeout: 100 * time.Millisecond, CheckInterval: 200 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.WriteAt(ctx, make([]byte, 512), 0, false) }()
	if !waitFor(10*time.Second, func() bool { return len(g2.Conns()) > 0 && d.Status().Paths[0].State == StateActive }) {
		t.Fatalf("path not reinstated through the redirect: %+v", d.Status().Paths[0])
	}
	select {
	case err := <-done:
		t.Fatalf("write released (err %v) after a login into portal group 2 (fences: %d reinstated, %d reset)",
			err, d.Status().FencesReinstated, d.Status().FencesReset)
	case <-time.After(1500 * time.Millisecond):
	}
	if st := d.Status(); st.FencesReinstated != 0 || st.FencesReset != 0 {
		t.Fatalf("fences counted: %+v", st)
	}
	d.Close()
	if err := <-done; err == nil {
		t.Fatal("held write succeeded at Close")
	}
}
