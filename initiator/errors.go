package initiator

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrSessionClosed is returned for commands issued after Close/Logout.
	ErrSessionClosed = errors.New("iscsi: session closed")
	// ErrProtocol wraps protocol violations by the target; they are
	// connection-fatal.
	ErrProtocol = errors.New("iscsi: protocol error")

	// ErrNotTarget: the peer's first answer to a Login Request was not
	// an iSCSI PDU (another service on that port). It comes wrapped in a
	// ConnError.
	ErrNotTarget = errors.New("not an iSCSI target")
	// ErrAuth is wrapped by every authentication failure (ours or the
	// target's), so callers can map it to an exit code.
	ErrAuth = errors.New("iscsi: authentication failed")
	// ErrAborted is returned for a task ended by task management.
	ErrAborted = errors.New("iscsi: task aborted")
)

// ConnError is a connection-fatal error: the connection is gone and every
// task on it failed with this error. It is the analogue of http2's
// ConnectionError.
type ConnError struct {
	Portal string
	Err    error
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("iscsi: connection to %s failed: %v", e.Portal, e.Err)
}
func (e *ConnError) Unwrap() error { return e.Err }

// LoginError is a login refused by the target with a non-zero status
// (RFC 7143, Section 11.13.5).
type LoginError struct {
	Class, Detail uint8
	// TargetAddress holds the redirect address for class 1.
	TargetAddress string
}

var loginDetails = map[uint16]string{
	0x0101: "target moved temporarily",
	0x0102: "target moved permanently",
	0x0200: "initiator error",
	0x0201: "authentication failure",
	0x0202: "authorization failure: no access to this target",
	0x0203: "target not found",
	0x0204: "target removed",
	0x0205: "unsupported version",
	0x0206: "too many connections",
	0x0207: "missing parameter",
	0x0208: "cannot include connection in session",
	0x0209: "session type not supported",
	0x020a: "session does not exist",
	0x020b: "invalid request during login",
	0x0300: "target error",
	0x0301: "service unavailable",
	0x0302: "target out of resources",
}

func (e *LoginError) code() uint16 { return uint16(e.Class)<<8 | uint16(e.Detail) }

func (e *LoginError) Error() string {
	name, ok := loginDetails[e.code()]
	if !ok {
		switch e.Class {
		case 1:
			name = "redirect"
		case 2:
			name = "initiator error"
		case 3:
			name = "target error"
		default:
			name = "unknown status"
		}
	}
	s := fmt.Sprintf("iscsi: login rejected: %s (0x%04x)", name, e.code())
	if e.TargetAddress != "" {
		s += " to " + e.TargetAddress
	}
	return s
}

// Is makes errors.Is(err, ErrAuth) true for authentication failures.
func (e *LoginError) Is(target error) bool {
	return target == ErrAuth && e.code() == 0x0201
}

// Retryable reports whether the login may succeed later (class 3).
func (e *LoginError) Retryable() bool { return e.Class == 3 }

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// loginTimeoutError is a login that got no answer within the login
// timeout. Its text is for people; the cause (a deadline, an i/o timeout)
// stays reachable with errors.Is/As.
type loginTimeoutError struct {
	d   time.Duration
	err error
}

func (e *loginTimeoutError) Error() string {
	return fmt.Sprintf("no answer to the login within %v (the login timeout): is this an iSCSI target, and is it overloaded?", e.d)
}
func (e *loginTimeoutError) Unwrap() error { return e.err }
