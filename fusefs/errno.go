package fusefs

import (
	"context"
	"errors"
	"syscall"

	"github.com/lunbridge/lunbridge/blockdev"
)

// ToErrno maps an error from a blockdev.Device to the errno a FUSE reply
// carries, in the spirit of go-fuse's fs.ToErrno:
//
//	nil                              0
//	blockdev.ErrReadOnly             EROFS
//	blockdev.ErrOutOfRange           EINVAL
//	blockdev.ErrInvalid              EINVAL
//	blockdev.ErrMedium               EIO
//	blockdev.ErrNoSpace              ENOSPC
//	blockdev.ErrUnavailable          EIO
//	blockdev.ErrClosed               EIO
//	blockdev.ErrNotSupported         EOPNOTSUPP
//	context.Canceled, DeadlineExceeded  EINTR
//	a syscall.Errno in the chain     that errno
//	anything else                    EIO
func ToErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	switch {
	case errors.Is(err, blockdev.ErrReadOnly):
		return syscall.EROFS
	case errors.Is(err, blockdev.ErrOutOfRange), errors.Is(err, blockdev.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, blockdev.ErrNoSpace):
		return syscall.ENOSPC
	case errors.Is(err, blockdev.ErrNotSupported):
		return syscall.EOPNOTSUPP
	case errors.Is(err, blockdev.ErrMedium), errors.Is(err, blockdev.ErrUnavailable), errors.Is(err, blockdev.ErrClosed):
		return syscall.EIO
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return syscall.EIO
}
