package scsi

import "fmt"

// Status is a SCSI status code (SAM-5, "Status codes").
type Status byte

// Status codes a device server returns (SAM-5).
const (
	StatusGood                Status = 0x00
	StatusCheckCondition      Status = 0x02
	StatusConditionMet        Status = 0x04
	StatusBusy                Status = 0x08
	StatusReservationConflict Status = 0x18
	StatusTaskSetFull         Status = 0x28
	StatusACAActive           Status = 0x30
	StatusTaskAborted         Status = 0x40
)

var statusNames = map[Status]string{
	StatusGood:                "GOOD",
	StatusCheckCondition:      "CHECK CONDITION",
	StatusConditionMet:        "CONDITION MET",
	StatusBusy:                "BUSY",
	StatusReservationConflict: "RESERVATION CONFLICT",
	StatusTaskSetFull:         "TASK SET FULL",
	StatusACAActive:           "ACA ACTIVE",
	StatusTaskAborted:         "TASK ABORTED",
}

// String returns the SAM-5 name, or "status 0xNN" for an unknown code.
func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status 0x%02x", byte(s))
}

// OK reports whether the command completed successfully (GOOD or
// CONDITION MET).
func (s Status) OK() bool { return s == StatusGood || s == StatusConditionMet }
