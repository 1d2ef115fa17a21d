package initiator

import (
	"context"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// keepalive pings the target when the connection has been idle for
// NopInterval and fails the connection when no PDU at all arrives within
// NopTimeout of the ping (RFC 7143 Section 11.18; open-iscsi's noop_out).
func (c *conn) keepalive(interval, timeout time.Duration) {
	tick := time.NewTicker(max(interval/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-tick.C:
		}
		idle := time.Since(time.Unix(0, c.lastRx.Load()))
		if idle < interval || c.leaving.Load() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := c.s.pingConn(ctx, c)
		cancel()
		if err == nil {
			continue
		}
		select {
		case <-c.done:
			return
		default:
		}
		// Any PDU received meanwhile proves the link (a busy target may
		// answer the ping late behind large Data-In).
		if time.Since(time.Unix(0, c.lastRx.Load())) < timeout {
			continue
		}
		c.log.Warnf("no answer to NOP-Out within %v: declaring the connection dead", timeout)
		c.fail(fmt.Errorf("link dead: no answer to NOP-Out ping within %v (idle %v)", timeout, idle.Round(time.Millisecond)))
		return
	}
}

// pingConn sends an immediate NOP-Out ping on c and waits for the NOP-In.
func (s *Session) pingConn(ctx context.Context, c *conn) error {
	t := newTask(kindNop)
	return s.control(ctx, c, t, true, &pdu.NopOut{Header: pdu.Header{Immediate: true, Final: true}, TTT: pdu.ReservedTag}, nil)
}
