package blockcopy

import (
	"errors"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
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

// openDirect opens path a second time for O_DIRECT writes when its file
// system takes them (and is not tmpfs, where O_DIRECT only adds a detour
// through the same page cache). It returns the descriptor and the
// alignment every direct write needs (memory, offset and length), taken
// from statx's STATX_DIOALIGN; nil when direct I/O is not available, which
// is not an error: the caller writes through the page cache.
func openDirect(path string) (*os.File, int) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil || sfs.Type == unix.TMPFS_MAGIC {
		return nil, 0
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0
	}
	var stx unix.Statx_t
	err = unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx)
	if err != nil || stx.Mask&unix.STATX_DIOALIGN == 0 || stx.Dio_offset_align == 0 || stx.Dio_mem_align == 0 {
		unix.Close(fd)
		return nil, 0
	}
	align := int(max(stx.Dio_offset_align, stx.Dio_mem_align))
	if align > 1<<16 || align&(align-1) != 0 {
		unix.Close(fd)
		return nil, 0
	}
	return os.NewFile(uintptr(fd), path), align
}

// inMemory reports whether f is on tmpfs, where writes copy into memory
// and never wait for a device.
func inMemory(f *os.File) bool {
	var sfs unix.Statfs_t
	return unix.Fstatfs(int(f.Fd()), &sfs) == nil && sfs.Type == unix.TMPFS_MAGIC
}

// rawPwrite writes all of b at off with raw pwrite system calls, which
// the Go scheduler is not told about: for files whose writes do not sleep
// (inMemory), and one writer at a time.
func rawPwrite(f *os.File, b []byte, off int64) error {
	fd := f.Fd()
	for len(b) > 0 {
		n, _, e := unix.RawSyscall6(unix.SYS_PWRITE64, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(off), 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			return &os.PathError{Op: "write", Path: f.Name(), Err: e}
		case n == 0:
			return &os.PathError{Op: "write", Path: f.Name(), Err: io.ErrShortWrite}
		}
		b = b[n:]
		off += int64(n)
	}
	return nil
}
