package initiator

import (
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// Async Messages announcing a dropped connection (RFC 7143, Section
// 11.9.1): event 2, the target drops this connection (Parameter1 its
// CID); event 3, it drops every connection of the session. Parameter2
// (Time2Wait) is the minimum time to wait before reconnecting or
// reassigning, Parameter3 (Time2Retain) the time after that wait during
// which the target still holds the connection's (the session's) tasks.
// The initiator closes the connection(s) at once, does not log in again
// before Time2Wait, and makes its first attempt at Time2Wait, inside
// Time2Retain (UNH-IOL initiator FFP 20.2, 20.3).

// maxAsyncWait caps Parameter2 and Parameter3: the keys they stand for
// (DefaultTime2Wait, DefaultTime2Retain) range over 0 to 3600 s.
const maxAsyncWait = 3600 * time.Second

// dropHold is what the last drop announcement asked of the next
// reconnect; guarded by Session.recMu.
type dropHold struct {
	notBefore   time.Time // Time2Wait after the announcement
	retainUntil time.Time // notBefore + Time2Retain
}

// announceDrop handles Async Message event 2 or 3 received on c.
func (s *Session) announceDrop(c *conn, a *pdu.AsyncMessage) {
	wait := min(time.Duration(a.Param2)*time.Second, maxAsyncWait)
	retain := min(time.Duration(a.Param3)*time.Second, maxAsyncWait)
	now := time.Now()
	s.recMu.Lock()
	s.drop = dropHold{notBefore: now.Add(wait), retainUntil: now.Add(wait + retain)}
	s.recMu.Unlock()
	s.log.WithField("event", a.Event).Warnf("target will drop %s (Time2Wait %v, Time2Retain %v); reconnecting no earlier than Time2Wait",
		map[uint8]string{2: "this connection", 3: "every connection of the session"}[a.Event], wait, retain)
	err := fmt.Errorf("target announced it drops the connection (async event %d, Time2Wait %v)", a.Event, wait)
	if a.Event == 3 {
		for _, x := range s.allConns() {
			x.fail(err)
		}
	}
	c.fail(err)
}

// dropWait returns how long a reconnect must still wait for the Time2Wait
// of a drop announcement (0 when none is pending).
func (s *Session) dropWait() time.Duration {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return max(time.Until(s.drop.notBefore), 0)
}

// dropDone clears the announcement once a reconnect succeeded, and says
// so when it came after Time2Retain: the target has then ended the
// announced connections' tasks, and they are issued again as new tasks.
func (s *Session) dropDone() {
	s.recMu.Lock()
	d := s.drop
	s.drop = dropHold{}
	s.recMu.Unlock()
	if !d.retainUntil.IsZero() && time.Now().After(d.retainUntil) {
		s.log.Warnf("reconnected %v after the target's Time2Retain ran out", time.Since(d.retainUntil).Round(time.Millisecond))
	}
}
