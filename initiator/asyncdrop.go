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

// dropHold is what a drop announcement asked of the next reconnect.
type dropHold struct {
	notBefore   time.Time // Time2Wait after the announcement
	retainUntil time.Time // notBefore + Time2Retain
}

// dropState is guarded by Session.recMu: the last announcement for the
// session (session recovery, recovery.go) and for each announced
// connection (ERL 2 connection recovery, connrecovery.go).
type dropState struct {
	sess  dropHold
	conns map[*conn]dropHold
}

// announceDrop handles Async Message event 2 or 3 received on c.
//
// Event 2's Parameter1 is the CID of the connection to be dropped, which
// need not be c: LIO announces, on a surviving connection, that it drops
// one it has lost — possibly after this side already replaced that
// connection with a new one of the same CID (connection recovery), so
// the announcement may be about an earlier instance. A connection named
// by a message it did not arrive on is therefore not closed here: if the
// target does drop it, its read loop sees that and its recovery honours
// the announced Time2Wait and Time2Retain; if the message was about an
// earlier instance, the live one goes on. Closing it would make LIO
// announce that drop in turn, and so on. A connection announced on
// itself (UNH-IOL 20.2) is closed at once, and event 3 closes them all.
func (s *Session) announceDrop(c *conn, a *pdu.AsyncMessage) {
	wait := min(time.Duration(a.Param2)*time.Second, maxAsyncWait)
	retain := min(time.Duration(a.Param3)*time.Second, maxAsyncWait)
	now := time.Now()
	h := dropHold{notBefore: now.Add(wait), retainUntil: now.Add(wait + retain)}
	log := s.log.WithField("event", a.Event)
	gone := s.allConns()
	close := true
	if a.Event == 2 {
		var named *conn
		for _, x := range gone {
			if x.cid != a.Param1 {
				continue
			}
			select {
			case <-x.done:
				log.Infof("target announces it drops connection %d (Time2Wait %v, Time2Retain %v), which is already lost", a.Param1, wait, retain)
				return
			default:
				named = x
			}
		}
		if named == nil {
			log.Warnf("target announces it drops connection %d, which this session does not have: ignored", a.Param1)
			return
		}
		gone, close = []*conn{named}, named == c
	}
	s.recMu.Lock()
	s.drop.sess = h
	if s.drop.conns == nil {
		s.drop.conns = make(map[*conn]dropHold)
	}
	for _, x := range gone {
		s.drop.conns[x] = h
	}
	s.recMu.Unlock()
	what := "every connection of the session"
	if a.Event == 2 {
		what = fmt.Sprintf("connection %d", a.Param1)
	}
	if !close {
		log.Warnf("target announces (on connection %d) it drops connection %d (Time2Wait %v, Time2Retain %v); leaving that to the target", c.cid, a.Param1, wait, retain)
		return
	}
	log.Warnf("target will drop %s (Time2Wait %v, Time2Retain %v); reconnecting no earlier than Time2Wait", what, wait, retain)
	err := fmt.Errorf("target announced it drops the connection (async event %d, Time2Wait %v)", a.Event, wait)
	for _, x := range gone {
		x.fail(err)
	}
}

// dropWait returns how long a session reconnect must still wait for the
// Time2Wait of a drop announcement (0 when none is pending).
func (s *Session) dropWait() time.Duration {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return max(time.Until(s.drop.sess.notBefore), 0)
}

// dropDone clears the announcements once the session reconnected, and
// says so when that came after Time2Retain: the target has then ended
// the announced connections' tasks, and they are issued again as new
// tasks.
func (s *Session) dropDone() {
	s.recMu.Lock()
	d := s.drop.sess
	s.drop = dropState{}
	s.recMu.Unlock()
	if !d.retainUntil.IsZero() && time.Now().After(d.retainUntil) {
		s.log.Warnf("reconnected %v after the target's Time2Retain ran out", time.Since(d.retainUntil).Round(time.Millisecond))
	}
}

// connDrop returns (and forgets) the announcement for the lost
// connection c: its connection recovery waits until notBefore instead of
// DefaultTime2Wait and must be done by retainUntil instead of
// DefaultTime2Retain.
func (s *Session) connDrop(c *conn) (dropHold, bool) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	h, ok := s.drop.conns[c]
	delete(s.drop.conns, c)
	if ok {
		s.drop.sess = dropHold{}
	}
	return h, ok && !h.stale()
}

// dropNoRetain reports whether the target announced it drops c with
// Time2Retain 0: it then ends c's tasks at once, and there is nothing
// for connection recovery to reassign.
func (s *Session) dropNoRetain(c *conn) bool {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	h, ok := s.drop.conns[c]
	return ok && !h.stale() && !h.retainUntil.After(h.notBefore)
}

// stale reports whether the connection the announcement named lived on
// past its Time2Retain (and a grace second): then its loss now is not the
// announced one.
func (h dropHold) stale() bool { return time.Now().After(h.retainUntil.Add(time.Second)) }
