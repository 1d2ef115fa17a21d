// Package blockdev defines the one interface every lunbridge consumer (the NBD
// bridge, the FUSE bridge, the copy engine) reads and writes through, and
// every provider (a single iSCSI LUN, a multipath set, a mirror) implements.
//
// It owns: the Device interface, the optional capability interfaces
// (Trimmer, Zeroer, Extenter), the Extent type and the sentinel errors.
// It must not import any other lunbridge package, never logs, never starts
// goroutines.
//
// Concurrency contract: every method of every implementation is safe for
// concurrent use. Consumers issue many calls at once; providers pipeline them.
package blockdev

import (
	"context"
	"errors"
)

// Device is a block device of fixed size.
//
// Offsets and lengths passed to ReadAt, WriteAt, Trim and WriteZeroes must be
// multiples of BlockSize and lie within [0, Size()); violating that returns an
// error wrapping ErrInvalid (or ErrOutOfRange when past the end), never a panic.
type Device interface {
	// Size is the capacity in bytes.
	Size() int64
	// BlockSize is the logical block size in bytes (512 or 4096 typically).
	BlockSize() int
	// ReadAt fills p entirely from offset off.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes p at offset off. When fua is set the data is durable
	// (on the medium, not in a volatile cache) before WriteAt returns.
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// Flush makes every write acknowledged before the call durable.
	Flush(ctx context.Context) error
	// Close releases the device. Outstanding calls fail with ErrClosed.
	Close() error
}

// ReadOnlyer is implemented by devices that know whether they reject writes.
type ReadOnlyer interface {
	ReadOnly() bool
}

// Trimmer is implemented by devices that can deallocate a range (SCSI UNMAP).
// After Trim the range reads back as zeroes when the device reports
// ReadZeroesAfterTrim, otherwise its content is unspecified.
type Trimmer interface {
	Trim(ctx context.Context, off, n int64) error
}

// Zeroer is implemented by devices that can zero a range without the caller
// sending zero bytes (SCSI WRITE SAME). With mayTrim the device may also
// deallocate the range.
type Zeroer interface {
	WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error
}

// AsyncIO is implemented by devices that can start a read or write and
// report its end through a callback, so a server with many requests in
// flight needs no goroutine per request. done runs exactly once, possibly
// before the Start call returns, often on the device's own I/O goroutine:
// it must not block. The caller must not touch p until done has run. The
// outcome and its errors are those of ReadAt and WriteAt, with the
// context's cancellation left out: a started I/O always ends.
type AsyncIO interface {
	StartReadAt(p []byte, off int64, done func(error))
	StartWriteAt(p []byte, off int64, fua bool, done func(error))
}

// ExtentFlags describe an Extent, in the same sense as NBD's base:allocation.
type ExtentFlags uint32

const (
	// ExtentHole: the range is not allocated on the device.
	ExtentHole ExtentFlags = 1 << 0
	// ExtentZero: the range reads as zeroes.
	ExtentZero ExtentFlags = 1 << 1
)

// Extent is a run of blocks sharing one allocation state.
type Extent struct {
	Offset int64
	Length int64
	Flags  ExtentFlags
}

// Extenter is implemented by devices that can report allocation status
// (SCSI GET LBA STATUS). The extents returned cover [off, off+n) from off,
// in order, contiguously; they may stop short of off+n (the caller asks
// again from where they end) but never return an empty slice with a nil error.
// Reporting a range as data (Flags 0) is always a safe answer.
type Extenter interface {
	Extents(ctx context.Context, off, n int64) ([]Extent, error)
}

// Reserver is implemented by devices that can take an SPC-3 persistent
// reservation (PERSISTENT RESERVE OUT), so that only registered
// initiators may write: the mirror's owner fences off every other writer.
// A device that cannot answers ErrNotSupported.
type Reserver interface {
	// Register registers key for this initiator, on every I_T nexus the
	// device uses, replacing any key registered there before.
	Register(ctx context.Context, key uint64) error
	// Reserve takes a Write Exclusive – Registrants Only reservation with
	// the registered key. When preempt is not 0 and another registrant
	// holds the reservation with key preempt, that registrant is removed
	// and the reservation taken over (PREEMPT).
	Reserve(ctx context.Context, key, preempt uint64) error
	// Release releases the reservation held with key, if any, and
	// unregisters key on every I_T nexus.
	Release(ctx context.Context, key uint64) error
}

// Identity names the medium behind a device, for multipath grouping and
// for checking that a reconnect reached the same LUN.
type Identity struct {
	WWID   string // preferred designator from VPD 0x83, e.g. "naa.6001405..."
	Serial string // VPD 0x80
	Size   int64
	Block  int
}

// Identifier is implemented by devices that know their Identity.
type Identifier interface {
	Identity() Identity
}

// Sentinel errors. Providers wrap them with %w so consumers can map them to
// errno (FUSE) or NBD error codes at the edge.
var (
	ErrClosed       = errors.New("blockdev: device closed")
	ErrInvalid      = errors.New("blockdev: invalid argument")
	ErrOutOfRange   = errors.New("blockdev: offset or length beyond the end of the device")
	ErrReadOnly     = errors.New("blockdev: device is read-only")
	ErrMedium       = errors.New("blockdev: medium error")
	ErrNoSpace      = errors.New("blockdev: no space left on device")
	ErrNotSupported = errors.New("blockdev: operation not supported by the device")
	ErrUnavailable  = errors.New("blockdev: device unavailable (target unreachable past the replacement timeout)")
	// ErrBusy: the device kept answering "try again" (BUSY, TASK SET FULL,
	// TASK ABORTED) past the command's retry budget. The device itself is
	// fine; the command was not done. A mirror does not fail a leg for it.
	ErrBusy = errors.New("blockdev: device busy past the retry budget (BUSY, TASK SET FULL or TASK ABORTED)")
)

// CheckRange validates an I/O of n bytes at off against d's size and block size.
func CheckRange(d Device, off, n int64) error {
	bs := int64(d.BlockSize())
	if off < 0 || n < 0 {
		return ErrInvalid
	}
	if bs > 0 && (off%bs != 0 || n%bs != 0) {
		return ErrInvalid
	}
	if off > d.Size() || n > d.Size()-off {
		return ErrOutOfRange
	}
	return nil
}
