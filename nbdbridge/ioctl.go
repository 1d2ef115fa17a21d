package nbdbridge

// ioctl numbers from include/uapi/linux/nbd.h: _IO(0xab, n).
const (
	ioctlSetSock       = 0xab00
	ioctlSetBlksize    = 0xab01
	ioctlSetSize       = 0xab02
	ioctlDoIt          = 0xab03
	ioctlClearSock     = 0xab04
	ioctlClearQue      = 0xab05
	ioctlPrintDebug    = 0xab06
	ioctlSetSizeBlocks = 0xab07
	ioctlDisconnect    = 0xab08
	ioctlSetTimeout    = 0xab09
	ioctlSetFlags      = 0xab0a
)

// ioctlCall is one ioctl(2) on the nbd device with an integer argument.
type ioctlCall struct {
	Req uintptr
	Arg uintptr
}

// ioctlSetup is the sequence nbd-client uses to configure a device before
// NBD_DO_IT: block size, size in blocks, clear old sockets, flags, timeout,
// one SET_SOCK per connection.
func ioctlSetup(size, blockSize uint64, flags uint16, timeoutSec uint64, fds []int) []ioctlCall {
	calls := []ioctlCall{
		{ioctlSetBlksize, uintptr(blockSize)},
		{ioctlSetSizeBlocks, uintptr(size / blockSize)},
		{ioctlClearSock, 0},
		{ioctlSetFlags, uintptr(flags)},
	}
	if timeoutSec > 0 {
		calls = append(calls, ioctlCall{ioctlSetTimeout, uintptr(timeoutSec)})
	}
	for _, fd := range fds {
		calls = append(calls, ioctlCall{ioctlSetSock, uintptr(fd)})
	}
	return calls
}
