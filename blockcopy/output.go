package blockcopy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// OutputKind classifies the path a pull writes to, for the promise that
// nothing is overwritten without Force.
type OutputKind int

const (
	// OutputNew: the path does not exist; it is created.
	OutputNew OutputKind = iota
	// OutputRegular: an existing regular file; overwriting a non-empty one
	// needs Force (or Resume with its sidecar).
	OutputRegular
	// OutputDiscard: the null device; nothing stored, nothing to lose.
	OutputDiscard
	// OutputStream: a FIFO or a socket. It stores nothing, so nothing is
	// destroyed; it cannot seek, so the image must be written strictly in
	// order (ToWriter), like stdout.
	OutputStream
	// OutputDevice: a block device or any other character device. Its
	// content is overwritten, so it needs Force, like a non-empty file.
	OutputDevice
)

func (k OutputKind) String() string {
	switch k {
	case OutputNew:
		return "new file"
	case OutputRegular:
		return "regular file"
	case OutputDiscard:
		return "null device"
	case OutputStream:
		return "FIFO or socket"
	case OutputDevice:
		return "device"
	}
	return fmt.Sprintf("OutputKind(%d)", int(k))
}

// ClassifyOutput says what path is (following symlinks, so a
// /dev/disk/by-id link is the block device it names).
func ClassifyOutput(path string) (OutputKind, os.FileInfo, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return OutputNew, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	return classifyInfo(st), st, nil
}

func classifyInfo(st os.FileInfo) OutputKind {
	m := st.Mode()
	switch {
	case m.IsRegular():
		return OutputRegular
	case m&(os.ModeNamedPipe|os.ModeSocket) != 0:
		return OutputStream
	case m&os.ModeCharDevice != 0 && isDevNull(st):
		return OutputDiscard
	}
	// Block and character devices, and anything else that is not a
	// plain file (a directory fails at open).
	return OutputDevice
}

// isDevNull reports whether st is the null device, at /dev/null or any
// other node with its device number.
func isDevNull(st os.FileInfo) bool {
	null, err := os.Stat(os.DevNull)
	if err != nil {
		return false
	}
	return os.SameFile(st, null) || sameDeviceNumber(st, null)
}

// describeOutput is "a block device (64.0 MiB)" for error messages.
func describeOutput(path string, st os.FileInfo) string {
	m := st.Mode()
	switch {
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		if f, err := os.Open(path); err == nil {
			defer f.Close()
			if n, err := f.Seek(0, 2); err == nil {
				return fmt.Sprintf("a block device of %d bytes", n)
			}
		}
		return "a block device"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&(os.ModeNamedPipe|os.ModeSocket) != 0:
		return "a FIFO or socket"
	}
	return "not a regular file (" + m.Type().String() + ")"
}

// checkOutput is PullFile's refusal of an existing output that is not a
// regular file: a device needs Force; a FIFO cannot take a seeking pull.
func checkOutput(path string, force bool) (regular bool, err error) {
	kind, st, err := ClassifyOutput(path)
	if err != nil {
		return false, err
	}
	switch kind {
	case OutputNew, OutputRegular:
		return true, nil
	case OutputStream:
		return false, fmt.Errorf("%w: %s is %s: a pull to a file seeks; write the image in order to it (ToWriter)", ErrInvalidOutput, path, describeOutput(path, st))
	case OutputDevice:
		if !force {
			return false, fmt.Errorf("%w: %s is %s; its content would be overwritten (use Force)", ErrExists, path, describeOutput(path, st))
		}
	}
	return false, nil
}
