package initiator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// Logging out one connection of a multi-connection session (RFC 7143,
// Sections 11.9.1 event 1, 11.14), when the target asks for it with an
// Async Message (event 1) and the session has another live connection:
// the connection takes no new commands from then on, the commands still
// allegiant to it are given until shortly before the target's deadline
// (Parameter3) to finish, and then a Logout with reason 1 (close the
// connection) for its CID goes out on it; after the response it is
// closed and the session goes on with the other connections. Only a
// connection with no task left is logged out that way: the tasks of a
// connection closed by a Logout end at the target "without notice" at
// ERL < 2, and issuing them again could not be ordered after them. If
// tasks remain, or the Logout fails, the session is logged out and
// reinstated as before (its ordering argument holds).

var errConnLeaving = errors.New("connection is being logged out at the target's request")

// errConnLoggedOut closes a connection logged out on purpose: no recovery.
var errConnLoggedOut = errors.New("connection logged out at the target's request")

// logoutOneConn tries to log out c alone within d; it reports false when
// the caller must log out the whole session instead (nothing was sent on
// c then, except possibly a refused Logout).
func (s *Session) logoutOneConn(c *conn, d time.Duration) bool {
	s.connMu.Lock()
	other := false
	for _, x := range s.conns {
		if x == c || x.leaving.Load() {
			continue
		}
		select {
		case <-x.done:
		default:
			other = true
		}
	}
	s.connMu.Unlock()
	if !other {
		return false
	}
	// Under c.wmu: a command being issued on c is sent before this, or
	// sees leaving and goes to another connection.
	c.wmu.Lock()
	c.leaving.Store(true)
	c.wmu.Unlock()
	deadline := time.Now().Add(d - min(s.tmfTimeout(), d/2)) // leave time for the Logout
	for s.tasksOn(c) > 0 && time.Now().Before(deadline) {
		select {
		case <-c.done:
			return true // failed meanwhile: recovery has it
		case <-time.After(10 * time.Millisecond):
		}
	}
	if n := s.tasksOn(c); n > 0 {
		c.log.Warnf("%d commands still on the connection the target asked to log out; logging out the session", n)
		return false
	}
	// The connection has no task and takes no new one: whatever the
	// Logout's outcome, it is closed and dropped, and its loss (the
	// target closes it after the Logout Response, possibly before we
	// read that) starts no recovery.
	c.loggedOut.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), min(d, s.tmfTimeout()))
	defer cancel()
	t := newTask(kindLogout)
	req := &pdu.LogoutRequest{Header: pdu.Header{Immediate: true, Final: true}, Reason: pdu.LogoutCloseConnection, CID: c.cid}
	err := s.control(ctx, c, t, true, req, nil)
	if err == nil {
		if r := t.ctl.(*pdu.LogoutResponse); r.Response != 0 {
			err = fmt.Errorf("iscsi: logout of connection %d refused (response %d)", c.cid, r.Response)
		}
	}
	c.fail(errConnLoggedOut)
	<-c.exit
	s.replaceConn(c, nil)
	if err != nil {
		c.log.WithError(err).Warn("logging out the connection failed; closed it (it had no commands)")
	} else {
		c.log.Info("connection logged out at the target's request; the session goes on with its other connections")
	}
	return true
}

// tasksPerConn estimates the commands in flight on one connection: the
// session's, shared evenly. For receive coalescing, which only needs an
// estimate, on every wait (tasksOn walks every task: 3% of the CPU of 4 KiB
// reads at QD32).
func (s *Session) tasksPerConn() int {
	s.taskMu.Lock()
	n := len(s.tasks)
	s.taskMu.Unlock()
	s.connMu.Lock()
	c := max(len(s.conns), 1)
	s.connMu.Unlock()
	return n / c
}

// tasksOn counts the tasks allegiant to c (the commands in flight on it).
func (s *Session) tasksOn(c *conn) int {
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	n := 0
	for _, t := range s.tasks {
		if t.conn == c {
			n++
		}
	}
	return n
}
