package initiator

import (
	"context"
	"errors"
	"fmt"

	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// Ghost writes after session reinstatement.
//
// RFC 7143 (Section 6.3.5) has the target terminate every task of the old
// session when the session is reinstated, but not every target waits for
// its backend before it answers the login. tgtd closes the old connection
// and accepts the new login at once while its bs_rdwr worker thread is
// still inside pwrite(2) for a write of the old session (tgt
// usr/iscsi/conn.c: "This task is in SCSI. We need to wait for I/O
// completion", and the login goes on). A write re-issued after recovery, or
// a newer write to the same blocks, could then be overtaken by that ghost:
// with the old write held 2 s in tgtd's backend, the reinstating login was
// answered within 2 ms and the old write landed 2 s after the newer one
// had been acknowledged (TestReinstatementTargetGuarantee).
//
// So after every recovery, before callers' I/O resumes, each LUN handle
// sends a TEST UNIT READY with the ORDERED task attribute (SAM-5 8.6): the
// target starts it only when every older task in the LU's task set has
// completed, the old session's included (tgtd: cmd_enabled() holds an
// ORDERED command while the LU queue has active commands; TEST UNIT READY
// itself never touches the backing store). istgt already answers the
// reinstating login only after the old connection's I/O. Each attempt is
// bounded by LoginTimeout; a backend stuck longer makes recovery reconnect
// again, and callers see the replacement timeout. Commands sent with
// Session.Do directly, without a LUN handle, get no such barrier.

// drainOldTasks returns once the target has completed every task that was
// in the LU's task set before it. Transport errors are returned (recovery
// reconnects again); a target that answers the ORDERED command with a SCSI
// error cannot be drained this way and is only logged.
func (l *LUN) drainOldTasks(ctx context.Context) error {
	_, err := l.doAttr(ctx, pdu.AttrOrdered, scsi.TestUnitReady(), nil, nil)
	var serr *scsi.SenseError
	if errors.As(err, &serr) {
		l.s.log.WithField("lun", l.number).WithError(err).Warn("ORDERED TEST UNIT READY refused after reconnect: cannot wait for the old session's commands")
		return nil
	}
	if err != nil {
		return fmt.Errorf("LUN %d: waiting for the old session's commands after reconnect: %w", l.number, err)
	}
	return nil
}
