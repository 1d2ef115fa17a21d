package scsi

import (
	"encoding/binary"
	"fmt"
)

// Operation codes of the persistent reservation commands (SPC-4, 6.15
// and 6.16).
const (
	OpPersistentReserveIn  = 0x5e
	OpPersistentReserveOut = 0x5f
)

// PERSISTENT RESERVE IN service actions (SPC-4, Table 171).
const (
	PRInReadKeys        = 0x00
	PRInReadReservation = 0x01
)

// PERSISTENT RESERVE OUT service actions (SPC-4, Table 180).
const (
	PROutRegister                 = 0x00
	PROutReserve                  = 0x01
	PROutRelease                  = 0x02
	PROutClear                    = 0x03
	PROutPreempt                  = 0x04
	PROutPreemptAndAbort          = 0x05
	PROutRegisterAndIgnoreKey     = 0x06
	PROutParameterListLength      = 24 // the basic parameter list
	PRTypeWriteExclusive          = 0x1
	PRTypeExclusiveAccess         = 0x3
	PRTypeWriteExclusiveRegsOnly  = 0x5 // Write Exclusive – Registrants Only
	PRTypeExclusiveAccessRegsOnly = 0x6
	PRTypeWriteExclusiveAllRegs   = 0x7
	PRTypeExclusiveAccessAllRegs  = 0x8
)

// PersistentReserveIn builds PERSISTENT RESERVE IN (SPC-4, 6.15).
//
//	byte 0  0x5e   byte 1  service action (bits 4:0)   bytes 7-8  allocation length
func PersistentReserveIn(sa byte, allocLen uint16) []byte {
	c := make([]byte, 10)
	c[0] = OpPersistentReserveIn
	c[1] = sa & 0x1f
	binary.BigEndian.PutUint16(c[7:], allocLen)
	return c
}

// PersistentReserveOut builds PERSISTENT RESERVE OUT (SPC-4, 6.16) with
// LU_SCOPE and the basic 24-byte parameter list.
//
//	byte 0  0x5f   byte 1  service action (bits 4:0)
//	byte 2  scope (bits 7:4, 0 = LU_SCOPE) | type (bits 3:0)
//	bytes 5-8  parameter list length
func PersistentReserveOut(sa, typ byte) []byte {
	c := make([]byte, 10)
	c[0] = OpPersistentReserveOut
	c[1] = sa & 0x1f
	c[2] = typ & 0x0f
	binary.BigEndian.PutUint32(c[5:], PROutParameterListLength)
	return c
}

// PROutParams builds the basic PERSISTENT RESERVE OUT parameter list
// (SPC-4, Table 182): reservation key, service action reservation key and
// the APTPL bit (persist through power loss).
//
//	0-7 reservation key   8-15 service action reservation key
//	16-19 obsolete        20 SPEC_I_PT(3) ALL_TG_PT(2) APTPL(0)   21-23 reserved/obsolete
func PROutParams(key, saKey uint64, aptpl bool) []byte {
	b := make([]byte, PROutParameterListLength)
	binary.BigEndian.PutUint64(b[0:], key)
	binary.BigEndian.PutUint64(b[8:], saKey)
	if aptpl {
		b[20] = 0x01
	}
	return b
}

// PRKeys is the READ KEYS parameter data (SPC-4, 6.15.2).
type PRKeys struct {
	Generation uint32
	Keys       []uint64
}

// ParsePRKeys decodes READ KEYS data; keys past the returned data (a short
// allocation length) are left out.
func ParsePRKeys(b []byte) (PRKeys, error) {
	if len(b) < 8 {
		return PRKeys{}, fmt.Errorf("scsi: READ KEYS data of %d bytes: %w", len(b), ErrTruncated)
	}
	k := PRKeys{Generation: binary.BigEndian.Uint32(b[0:])}
	n := int(binary.BigEndian.Uint32(b[4:]))
	if n%8 != 0 {
		return k, fmt.Errorf("scsi: READ KEYS additional length %d is not a multiple of 8: %w", n, ErrMalformed)
	}
	for off := 8; off+8 <= len(b) && off < 8+n; off += 8 {
		k.Keys = append(k.Keys, binary.BigEndian.Uint64(b[off:]))
	}
	return k, nil
}

// PRReservation is the READ RESERVATION parameter data (SPC-4, 6.15.3).
type PRReservation struct {
	Generation uint32
	Held       bool // a reservation exists
	Key        uint64
	Scope      byte
	Type       byte
}

// ParsePRReservation decodes READ RESERVATION data.
func ParsePRReservation(b []byte) (PRReservation, error) {
	if len(b) < 8 {
		return PRReservation{}, fmt.Errorf("scsi: READ RESERVATION data of %d bytes: %w", len(b), ErrTruncated)
	}
	r := PRReservation{Generation: binary.BigEndian.Uint32(b[0:])}
	n := binary.BigEndian.Uint32(b[4:])
	if n == 0 {
		return r, nil
	}
	if n < 16 || len(b) < 24 {
		return r, fmt.Errorf("scsi: READ RESERVATION additional length %d with %d bytes: %w", n, len(b), ErrMalformed)
	}
	r.Held = true
	r.Key = binary.BigEndian.Uint64(b[8:])
	r.Scope, r.Type = b[21]>>4, b[21]&0x0f
	return r, nil
}
