package blockcopy

import (
	"errors"
	"os"
	"syscall"
)

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE

	fallocKeepSize  = 0x01 // FALLOC_FL_KEEP_SIZE
	fallocPunchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
)

// nextData returns the offset of the first data at or after off, or end
// when only a hole remains before end. ok is false when the file system
// cannot tell (no SEEK_DATA support).
func nextData(f *os.File, off, end int64) (data int64, ok bool) {
	d, err := syscall.Seek(int(f.Fd()), off, seekData)
	if err != nil {
		if errors.Is(err, syscall.ENXIO) {
			return end, true
		}
		return off, false
	}
	return min(d, end), true
}

// nextHole returns the offset of the first hole at or after off (EOF counts
// as a hole).
func nextHole(f *os.File, off, end int64) int64 {
	h, err := syscall.Seek(int(f.Fd()), off, seekHole)
	if err != nil {
		return end
	}
	return min(h, end)
}

// punchHole deallocates [off, off+n) keeping the file size.
func punchHole(f *os.File, off, n int64) error {
	return syscall.Fallocate(int(f.Fd()), fallocKeepSize|fallocPunchHole, off, n)
}
