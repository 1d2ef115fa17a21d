package scsi

import (
	"errors"
	"fmt"
)

// Sentinel errors wrapped by every parser in this package.
var (
	// ErrTruncated means the input ends before a mandatory field.
	ErrTruncated = errors.New("scsi: truncated data")
	// ErrMalformed means a field holds a value the standard forbids or that
	// does not match what was asked for (wrong page code, bad response code).
	ErrMalformed = errors.New("scsi: malformed data")
	// ErrNoSense means a data segment carries no sense data at all.
	ErrNoSense = errors.New("scsi: no sense data")
)

func errShort(what string, got, want int) error {
	return fmt.Errorf("%w: %s: %d bytes, need %d", ErrTruncated, what, got, want)
}

func errBad(what string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(what, args...))
}
