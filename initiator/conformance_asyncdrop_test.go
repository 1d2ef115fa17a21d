package initiator_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// UNH-IOL 20.2 and 20.3 at ErrorRecoveryLevel 2 with two connections
// (MC/S): the Async Message's Parameter2 (Time2Wait) and Parameter3
// (Time2Retain) govern the connection recovery of the announced
// connections, not the negotiated DefaultTime2Wait (2 s here) and
// DefaultTime2Retain. The recovery's first step — a Logout with reason 2
// on the surviving connection, or a login of a new connection — comes no
// earlier than Parameter2 after the message and within the test plan's
// bound; the held READ is reassigned and completes; the session is kept.
// With Parameter3 = 0 the target ends the tasks at once: nothing to
// reassign, the session is reinstated instead.
func TestConformanceAsyncDropConnectionERL2(t *testing.T) {
	for _, tc := range []struct {
		name         string
		ev           uint8
		wait, retain uint16
		early, due   time.Duration
		reinstate    bool
		// onSurvivor sends event 2 on the other connection, Parameter1
		// naming the one to drop, and the target then drops it (what
		// LIO does); lost drops it first, so the message announces a
		// loss the initiator already saw.
		onSurvivor, lost bool
	}{
		// 20.2: Parameter2 0, Parameter3 1: reconnect within 1 s.
		{name: "event2-survivor", ev: 2, wait: 0, retain: 1, early: 0, due: time.Second},
		// 20.3: Parameter2 1, Parameter3 2: wait 1 s, no longer than 2 s.
		{name: "event3", ev: 3, wait: 1, retain: 2, early: time.Second, due: 2 * time.Second},
		{name: "event2-no-retain", ev: 2, wait: 0, retain: 0, due: time.Second, reinstate: true},
		{name: "event2-on-survivor", ev: 2, wait: 0, retain: 1, due: time.Second, onSurvivor: true},
		{name: "event2-already-lost", ev: 2, wait: 2, retain: 20, due: 3 * time.Second, onSurvivor: true, lost: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu      sync.Mutex
				heldOn  *faketarget.Conn
				held    *pdu.SCSICommand
				arrived = make(chan struct{})
				logins  []time.Time
			)
			tcfg := faketarget.Config{
				OnLogin: func(c *faketarget.Conn, _ *pdu.LoginRequest, _ []pdu.KV) bool {
					if len(c.Logins()) == 1 {
						mu.Lock()
						logins = append(logins, time.Now())
						mu.Unlock()
					}
					return false
				},
				OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
					mu.Lock()
					defer mu.Unlock()
					if cmd.CDB[0] != 0x28 || held != nil {
						return false
					}
					cp := *cmd
					heldOn, held = c, &cp
					close(arrived)
					return true
				},
			}
			e := erl2Env(t, 2, tcfg, nil)
			tsih := e.s.TSIH()
			mu.Lock()
			n0 := len(logins)
			mu.Unlock()
			cmd := read10(0, 16)
			pending := goDo(e.ctx, e.s, cmd)
			select {
			case <-arrived:
			case <-e.ctx.Done():
				t.Fatal("no READ arrived")
			}
			mu.Lock()
			a := heldOn
			mu.Unlock()
			var b *faketarget.Conn
			for _, c := range e.tg.Conns() {
				if c != a {
					b = c
				}
			}
			on := a
			if tc.onSurvivor {
				on = b
			}
			sent := time.Now()
			if tc.lost {
				a.Close()
				waitFor(t, e.ctx, "the initiator to see the loss", func() bool {
					return e.s.Connections() == 1 || e.s.Recovery().ConnRecoveries > 0
				})
			}
			on.SendAsync(tc.ev, a.CID(), tc.wait, tc.retain, nil)
			if tc.onSurvivor && !tc.lost {
				// Announced on another connection: the target drops it.
				a.Close()
			}
			if tc.ev == 2 && !tc.reinstate {
				select {
				case <-b.Done():
					t.Fatal("the initiator closed the connection the message came on, not the one it announced")
				case <-time.After(50 * time.Millisecond):
				}
			}
			// The first recovery step: a Logout (reason 2) on the survivor,
			// or the first new login.
			var first time.Time
			waitFor(t, e.ctx, "a reconnect or a Logout for recovery", func() bool {
				mu.Lock()
				if len(logins) > n0 {
					first = logins[n0]
				}
				mu.Unlock()
				if tc.ev == 2 {
					for _, r := range ofOpcode(b.Received(), pdu.OpLogoutReq) {
						if r.At.After(sent) && (first.IsZero() || r.At.Before(first)) {
							first = r.At
						}
					}
				}
				return !first.IsZero()
			})
			el := first.Sub(sent)
			t.Logf("first recovery step %v after the message", el.Round(time.Millisecond))
			if el < tc.early {
				t.Errorf("recovery began %v after the message, before Time2Wait (%v)", el, tc.early)
			}
			if el > tc.due {
				t.Errorf("recovery began %v after the message, want within %v", el, tc.due)
			}
			if tc.reinstate {
				// The reinstated session issues the READ again: answer it.
				if res := await(t, e.ctx, pending); res.err != nil {
					t.Fatalf("READ after reinstatement: %v", res.err)
				}
				if n := e.s.Recovery().Reconnects; n != 1 {
					t.Errorf("%d session reinstatements, want 1 (Time2Retain 0: nothing to reassign)", n)
				}
				for _, c := range e.tg.Conns() {
					if r := reassigns(c); len(r) != 0 {
						t.Errorf("TASK REASSIGN sent after the target announced Time2Retain 0")
					}
				}
				return
			}
			var carrier *faketarget.Conn
			waitFor(t, e.ctx, "the TASK REASSIGN of the held READ", func() bool {
				for _, c := range e.tg.Conns() {
					for _, q := range reassigns(c) {
						if q.RTT == held.ITT {
							carrier = c
						}
					}
				}
				return carrier != nil
			})
			if err := carrier.DataIn(held, e.tg.Disk(0)[:16*512]); err != nil {
				t.Fatal(err)
			}
			if res := await(t, e.ctx, pending); res.err != nil || !bytes.Equal(cmd.Read, e.tg.Disk(0)[:16*512]) {
				t.Fatalf("reassigned READ: %v", res.err)
			}
			keptSession(t, e, tsih)
		})
	}
}
