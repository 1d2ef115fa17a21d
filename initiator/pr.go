package initiator

import (
	"context"
	"fmt"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

var _ blockdev.Reserver = (*LUN)(nil)

// PRReadKeys returns the keys registered with the LU (PERSISTENT RESERVE
// IN, READ KEYS).
func (l *LUN) PRReadKeys(ctx context.Context) (scsi.PRKeys, error) {
	buf := make([]byte, 8+8*64)
	n, err := l.execN(ctx, scsi.PersistentReserveIn(scsi.PRInReadKeys, uint16(len(buf))), buf)
	if err != nil {
		return scsi.PRKeys{}, err
	}
	return scsi.ParsePRKeys(buf[:n])
}

// PRReadReservation returns the LU's persistent reservation, if any
// (PERSISTENT RESERVE IN, READ RESERVATION).
func (l *LUN) PRReadReservation(ctx context.Context) (scsi.PRReservation, error) {
	buf := make([]byte, 24)
	n, err := l.execN(ctx, scsi.PersistentReserveIn(scsi.PRInReadReservation, uint16(len(buf))), buf)
	if err != nil {
		return scsi.PRReservation{}, err
	}
	return scsi.ParsePRReservation(buf[:n])
}

// PROut runs one PERSISTENT RESERVE OUT with the basic parameter list.
func (l *LUN) PROut(ctx context.Context, sa, typ byte, key, saKey uint64) error {
	if err := l.exec(ctx, scsi.PersistentReserveOut(sa, typ), nil, scsi.PROutParams(key, saKey, false)); err != nil {
		return fmt.Errorf("iscsi: LUN %d: PERSISTENT RESERVE OUT service action %#x: %w", l.number, sa, err)
	}
	return nil
}

// Register registers key for this I_T nexus whatever key it had
// (REGISTER AND IGNORE EXISTING KEY).
func (l *LUN) Register(ctx context.Context, key uint64) error {
	return l.PROut(ctx, scsi.PROutRegisterAndIgnoreKey, 0, 0, key)
}

// Reserve takes a Write Exclusive – Registrants Only reservation with key
// (registered first with Register). When another registrant holds it with
// key preempt, every registration is cleared (CLEAR) and the reservation
// taken anew: istgt 0.5's PREEMPT removes the preempting registrant
// instead of the preempted one, so PREEMPT is not used.
func (l *LUN) Reserve(ctx context.Context, key, preempt uint64) error {
	err := l.PROut(ctx, scsi.PROutReserve, scsi.PRTypeWriteExclusiveRegsOnly, key, 0)
	if err == nil || preempt == 0 || !scsi.IsReservationConflict(err) {
		return err
	}
	r, rerr := l.PRReadReservation(ctx)
	if rerr != nil {
		return err
	}
	if r.Held && r.Key != preempt {
		return fmt.Errorf("iscsi: LUN %d: reserved with key %#x, not %#x: %w", l.number, r.Key, preempt, err)
	}
	if r.Held {
		if err := l.PROut(ctx, scsi.PROutClear, 0, key, 0); err != nil {
			return err
		}
		if err := l.Register(ctx, key); err != nil {
			return err
		}
	}
	return l.PROut(ctx, scsi.PROutReserve, scsi.PRTypeWriteExclusiveRegsOnly, key, 0)
}

// Release releases the reservation held with key (a no-op for a
// registrant that does not hold it) and unregisters the I_T nexus.
func (l *LUN) Release(ctx context.Context, key uint64) error {
	if err := l.PROut(ctx, scsi.PROutRelease, scsi.PRTypeWriteExclusiveRegsOnly, key, 0); err != nil {
		return err
	}
	return l.PROut(ctx, scsi.PROutRegister, 0, key, 0)
}
