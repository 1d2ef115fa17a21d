package initiator_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// TestNoRedirect: with Config.NoRedirect a login redirect is returned as
// the LoginError, never followed (fencing logins, review #7).
func TestNoRedirect(t *testing.T) {
	b := newTarget(t, faketarget.Config{PortalGroupTag: 2})
	a := newTarget(t, faketarget.Config{OnLogin: func(c *faketarget.Conn, req *pdu.LoginRequest, _ []pdu.KV) bool {
		c.SendLoginStatus(req, 1, 0x01, pdu.KV{Key: "TargetAddress", Value: "b.example:3260,2"})
		return true
	}})
	var dialed []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed = append(dialed, addr)
		if addr == "b.example:3260" {
			return b.Dial(ctx, network, addr)
		}
		return a.Dial(ctx, network, addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), confTimeout)
	defer cancel()
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: confIQN, TargetName: a.Name(), Portal: "a.example:3260",
		Dial: dial, LoginTimeout: 3 * time.Second, NopInterval: -1, NoRecovery: true, NoRedirect: true})
	if err == nil {
		s.Close()
		t.Fatalf("NoRedirect login followed the redirect: dialed %v, portal group %d", dialed, s.Params().TargetPortalGroupTag)
	}
	var le *initiator.LoginError
	if !errors.As(err, &le) || le.Class != 1 || len(dialed) != 1 {
		t.Fatalf("got %v after dialing %v; want the redirect as a LoginError, one dial", err, dialed)
	}
}
