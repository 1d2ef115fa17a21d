package scsi

import (
	"errors"
	"fmt"
)

// SenseError is a command that did not complete with GOOD: a status other
// than GOOD/CONDITION MET and, for CHECK CONDITION, the decoded sense data.
// It is a per-command error; the connection that carried it is fine.
// Callers match it with errors.As or the Is... helpers below.
type SenseError struct {
	Status    Status
	Key       SenseKey
	ASC, ASCQ byte
	InfoValid bool
	Info      uint64 // INFORMATION field, usually the failing LBA
	Deferred  bool   // reports an earlier command (deferred error)
	// HasSense is false for a status without sense data (BUSY, TASK SET
	// FULL, RESERVATION CONFLICT, or CHECK CONDITION with an empty or
	// undecodable data segment).
	HasSense bool
}

// Error prints words, e.g.
// "ILLEGAL REQUEST: LOGICAL BLOCK ADDRESS OUT OF RANGE (0x05/0x21/0x00)".
// Without sense data it prints the status: "scsi status BUSY".
func (e *SenseError) Error() string {
	if !e.HasSense {
		if e.Status == StatusCheckCondition {
			return "scsi status CHECK CONDITION without sense data"
		}
		return "scsi status " + e.Status.String()
	}
	s := fmt.Sprintf("%s: %s (0x%02x/0x%02x/0x%02x)",
		e.Key, ASCString(e.ASC, e.ASCQ), byte(e.Key), e.ASC, e.ASCQ)
	if e.Deferred {
		s += " [deferred]"
	}
	return s
}

// ScsiStatus returns the status byte, for packages that may not import
// this one (the mirror recognises BUSY and TASK ABORTED by it).
func (e *SenseError) ScsiStatus() uint8 { return uint8(e.Status) }

// CheckStatus turns a command's status and the data segment of its iSCSI
// SCSI Response (SenseLength + sense data, RFC 7143, Section 11.4.7) into an
// error: nil for GOOD and CONDITION MET, otherwise a *SenseError. Sense
// data that cannot be decoded still yields a *SenseError (HasSense false)
// so the command fails.
func CheckStatus(status Status, iscsiDataSegment []byte) error {
	if status.OK() {
		return nil
	}
	if status == StatusCheckCondition {
		if s, err := ParseSenseData(iscsiDataSegment); err == nil {
			return s.AsError()
		}
	}
	return &SenseError{Status: status}
}

func asSense(err error) (*SenseError, bool) {
	var se *SenseError
	if errors.As(err, &se) && se != nil {
		return se, true
	}
	return nil, false
}

func senseIs(err error, key SenseKey, asc, ascq byte) bool {
	se, ok := asSense(err)
	return ok && se.HasSense && se.Key == key && se.ASC == asc && se.ASCQ == ascq
}

// IsUnitAttention reports a UNIT ATTENTION condition (any ASC).
func IsUnitAttention(err error) bool {
	se, ok := asSense(err)
	return ok && se.HasSense && se.Key == KeyUnitAttention
}

// IsRetryable reports errors that resending the same command may cure:
// BUSY, TASK SET FULL, NOT READY while the LU is becoming ready or in an
// ALUA transition (04/01, 04/0A), any UNIT ATTENTION, and ABORTED COMMAND
// unless it reports a protection information error (ASC 0x10).
func IsRetryable(err error) bool {
	se, ok := asSense(err)
	if !ok {
		return false
	}
	switch se.Status {
	case StatusBusy, StatusTaskSetFull:
		return true
	}
	if !se.HasSense {
		return false
	}
	switch se.Key {
	case KeyUnitAttention:
		return true
	case KeyNotReady:
		return se.ASC == 0x04 && (se.ASCQ == 0x01 || se.ASCQ == 0x0a)
	case KeyAbortedCommand:
		return se.ASC != 0x10
	}
	return false
}

// IsWriteProtect reports DATA PROTECT with a write-protect ASC (27/xx)
// other than 27/07, which IsNoSpace reports.
func IsWriteProtect(err error) bool {
	se, ok := asSense(err)
	return ok && se.HasSense && se.Key == KeyDataProtect && se.ASC == 0x27 && se.ASCQ != 0x07
}

// IsOutOfRange reports ILLEGAL REQUEST: LOGICAL BLOCK ADDRESS OUT OF
// RANGE (21/00).
func IsOutOfRange(err error) bool { return senseIs(err, KeyIllegalRequest, 0x21, 0x00) }

// IsMedium reports a MEDIUM ERROR (any ASC): unreadable or unwritable
// blocks. Info usually holds the first bad LBA.
func IsMedium(err error) bool {
	se, ok := asSense(err)
	return ok && se.HasSense && se.Key == KeyMediumError
}

// IsNoSpace reports that a thin-provisioned LU ran out of space: SPACE
// ALLOCATION FAILED WRITE PROTECT (27/07), normally with DATA PROTECT.
func IsNoSpace(err error) bool {
	se, ok := asSense(err)
	return ok && se.HasSense && se.ASC == 0x27 && se.ASCQ == 0x07
}

// IsReservationConflict reports RESERVATION CONFLICT status.
func IsReservationConflict(err error) bool {
	se, ok := asSense(err)
	return ok && se.Status == StatusReservationConflict
}

// IsInvalidOpcode reports ILLEGAL REQUEST: INVALID COMMAND OPERATION CODE
// (20/00). Note that an unsupported service action of a supported opcode
// (READ CAPACITY(16), GET LBA STATUS on some targets) is reported as
// INVALID FIELD IN CDB instead; IsUnsupported covers both.
func IsInvalidOpcode(err error) bool { return senseIs(err, KeyIllegalRequest, 0x20, 0x00) }

// IsInvalidField reports ILLEGAL REQUEST: INVALID FIELD IN CDB (24/00).
func IsInvalidField(err error) bool { return senseIs(err, KeyIllegalRequest, 0x24, 0x00) }

// IsUnsupported reports that the target does not implement the command:
// IsInvalidOpcode or IsInvalidField. Use it to fall back from READ
// CAPACITY(16) to (10), or to stop issuing GET LBA STATUS.
func IsUnsupported(err error) bool { return IsInvalidOpcode(err) || IsInvalidField(err) }

// IsCapacityChanged reports UNIT ATTENTION: CAPACITY DATA HAS CHANGED
// (2A/09): reread the capacity.
func IsCapacityChanged(err error) bool { return senseIs(err, KeyUnitAttention, 0x2a, 0x09) }

// IsLUNsChanged reports UNIT ATTENTION: REPORTED LUNS DATA HAS CHANGED
// (3F/0E): rescan with REPORT LUNS.
func IsLUNsChanged(err error) bool { return senseIs(err, KeyUnitAttention, 0x3f, 0x0e) }

// IsIdentityChange reports a sense after which the logical unit behind the
// LUN number may be another disk, so its identity must be checked again
// before any further I/O: LOGICAL UNIT NOT SUPPORTED (25/00, the LUN is
// gone or was replaced), and the UNIT ATTENTIONs NOT READY TO READY CHANGE,
// MEDIUM MAY HAVE CHANGED (28/xx), POWER ON, RESET, OR BUS DEVICE RESET
// OCCURRED (29/xx), CAPACITY DATA HAS CHANGED (2A/09) and every 3F/xx
// (REPORTED LUNS DATA HAS CHANGED 3F/0E, INQUIRY DATA HAS CHANGED 3F/03,
// DEVICE IDENTIFIER CHANGED 3F/05, CHANGED OPERATING DEFINITION 3F/02 ...).
func IsIdentityChange(err error) bool {
	se, ok := asSense(err)
	if !ok || !se.HasSense {
		return false
	}
	if se.ASC == 0x25 && se.ASCQ == 0x00 {
		return true
	}
	if se.Key != KeyUnitAttention {
		return false
	}
	switch se.ASC {
	case 0x28, 0x29, 0x3f:
		return true
	case 0x2a:
		return se.ASCQ == 0x09
	}
	return false
}
