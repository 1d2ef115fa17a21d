package initiator_test

import (
	"context"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// Review #14: an array redirects logins from its group address to one
// port. That port dies and the group now redirects to another one: ERL 0
// recovery must go back to the group address (the portal as configured)
// and follow its redirect, not retry the dead port for ever.
func TestRecoveryFollowsGroupRedirect(t *testing.T) {
	tg := newTarget(t, faketarget.Config{}) // the array, behind both ports
	var mu sync.Mutex
	port := "p1.example:3260" // where the group redirects to
	dead := map[string]bool{}
	var dialed []string
	group := newTarget(t, faketarget.Config{OnLogin: func(c *faketarget.Conn, req *pdu.LoginRequest, _ []pdu.KV) bool {
		mu.Lock()
		to := port
		mu.Unlock()
		c.SendLoginStatus(req, 1, 0x01, pdu.KV{Key: "TargetAddress", Value: to + ",1"})
		return true
	}})
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		gone := dead[addr]
		mu.Unlock()
		switch {
		case addr == "group.example:3260":
			return group.Dial(ctx, network, addr)
		case gone:
			return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
		}
		return tg.Dial(ctx, network, addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), confTimeout)
	defer cancel()
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: confIQN, TargetName: tg.Name(), Portal: "group.example:3260",
		Dial: dial, LoginTimeout: 2 * time.Second, NopInterval: -1, ReplacementTimeout: 8 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Do(ctx, tur()); err != nil {
		t.Fatal(err)
	}
	// Port 1 dies; the group now sends logins to port 2.
	mu.Lock()
	dead["p1.example:3260"] = true
	port = "p2.example:3260"
	mu.Unlock()
	for _, c := range tg.Conns() {
		c.Close()
	}
	if _, err := s.Do(ctx, tur()); err != nil {
		mu.Lock()
		t.Fatalf("after port 1 died: %v (dialed %v)", err, dialed)
	}
	if r := s.Recovery(); r.Reconnects != 1 {
		t.Errorf("%d reconnects, want 1", r.Reconnects)
	}
	mu.Lock()
	defer mu.Unlock()
	if last := dialed[len(dialed)-1]; last != "p2.example:3260" {
		t.Errorf("last dialed %s, want p2.example:3260 (dialed %v)", last, dialed)
	}
	for _, v := range tg.Violations() {
		t.Errorf("target saw a violation: %s", v)
	}
}
