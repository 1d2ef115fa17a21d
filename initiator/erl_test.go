package initiator_test

import (
	"testing"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// ErrorRecoveryLevel negotiation (issue 22 item 1): the configured level is
// offered, the session keeps the minimum of both sides.

func loginKey(c *faketarget.Conn, key string) (string, bool) {
	for _, l := range c.Logins() {
		for _, kv := range l.Keys {
			if kv.Key == key {
				return kv.Value, true
			}
		}
	}
	return "", false
}

func TestERLNegotiation(t *testing.T) {
	for _, tc := range []struct {
		name            string
		ours, target    int
		r2t             int
		want            int
		wantR2T, offer  string
		wantOfferedR2Ts string
	}{
		{name: "default-0", ours: 0, target: 2, r2t: 4, want: 0, offer: "0", wantOfferedR2Ts: "4"},
		{name: "1-of-2", ours: 1, target: 2, r2t: 4, want: 1, offer: "1", wantOfferedR2Ts: "1"},
		{name: "2-of-1", ours: 2, target: 1, r2t: 1, want: 1, offer: "2", wantOfferedR2Ts: "1"},
		{name: "1-of-0", ours: 1, target: 0, r2t: 1, want: 0, offer: "1", wantOfferedR2Ts: "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, faketarget.Config{ErrorRecoveryLevel: tc.target, MaxOutstandingR2T: 8}, func(c *initiator.Config) {
				c.ErrorRecoveryLevel = tc.ours
				c.MaxOutstandingR2T = tc.r2t
			})
			if got := e.s.Params().ErrorRecoveryLvl; got != tc.want {
				t.Errorf("negotiated ERL %d, want %d", got, tc.want)
			}
			if v, _ := loginKey(e.c, "ErrorRecoveryLevel"); v != tc.offer {
				t.Errorf("offered ErrorRecoveryLevel=%q, want %q", v, tc.offer)
			}
			// Section 13.19: ERL > 0 with DataSequenceInOrder=Yes needs
			// MaxOutstandingR2T 1.
			if v, _ := loginKey(e.c, "MaxOutstandingR2T"); v != tc.wantOfferedR2Ts {
				t.Errorf("offered MaxOutstandingR2T=%q, want %q", v, tc.wantOfferedR2Ts)
			}
			e.noViolations()
		})
	}
}
