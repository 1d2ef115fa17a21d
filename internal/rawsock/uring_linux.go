package rawsock

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Ring receives a TCP connection's bytes through an io_uring: one
// multishot receive (IORING_OP_RECV with IORING_RECV_MULTISHOT) fills
// buffers the ring provides (a registered buffer ring), and the reader
// collects completions with one io_uring_enter that both runs the
// kernel's deferred work (the receive itself, IORING_SETUP_DEFER_TASKRUN)
// and waits. A wake-up costs one system call, where Sock's costs a read
// that finds the socket empty, the poller's epoll_wait and the read that
// gets the bytes.
//
// It is an experiment, behind LUNBRIDGE_IOURING=1 (issue 24 asked for it
// to be tried and kept only if it measures better; docs/benchmarks.md has
// the measurement). What it costs in exchange: the reading goroutine owns
// an OS thread for the connection's life (a ring with
// IORING_SETUP_SINGLE_ISSUER must be entered by the thread that made it),
// waits in a blocking system call the Go scheduler sees as such, and the
// bytes are copied once more, from the ring's buffer into the caller's.
//
// The ring holds a reference to the socket: closing the net.Conn does not
// end a receive in flight, so Shutdown must be called first (it is safe
// from any goroutine); the reader then sees end of file and Close, on the
// reader's goroutine, frees the ring.
type Ring struct {
	fd   int // the ring
	sock int // the socket (owned by the net.Conn)
	sc   syscall.RawConn

	ringMem []byte // SQ and CQ rings, one mapping (IORING_FEAT_SINGLE_MMAP)
	sqeMem  []byte

	sqTail, sqHead *uint32
	sqMask         uint32
	sqFlags        *uint32
	sqArray        unsafe.Pointer
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           unsafe.Pointer

	bufRing  []byte // registered io_uring_buf entries
	bufMem   []byte // the buffers themselves
	nbuf     int
	bufSize  int
	bufTail  uint16
	bufIndex uint16 // bid written at entry 0 (shares a word with the tail)

	armed bool   // a multishot receive is in flight
	cur   []byte // unread bytes of the buffer being consumed
	curID int    // its buffer id (-1: none)
	err   error  // sticky end: io.EOF or the receive's error
	lowat int    // SO_RCVLOWAT as last set

	mode  RingMode
	efd   *os.File        // eventfd the ring signals (RingPoll, RingSQPoll)
	erc   syscall.RawConn // efd in the runtime's poller
	ready func(uintptr) bool

	stats RingStats
}

// RingMode says how a Ring waits and who runs the receive.
type RingMode int

const (
	// RingBlocking: the reader waits in io_uring_enter, which also runs
	// the receive (IORING_SETUP_DEFER_TASKRUN); the reading goroutine is
	// locked to its thread.
	RingBlocking RingMode = iota
	// RingPoll: the ring signals an eventfd the reader waits on in the
	// runtime's poller; the receive runs as task work on the thread that
	// armed it.
	RingPoll
	// RingSQPoll: as RingPoll, with a kernel thread polling the
	// submission queue (IORING_SETUP_SQPOLL), which also runs the receive:
	// no system call on the reader's side at all.
	RingSQPoll
)

// RingStats counts what the ring did (for benchmarks).
type RingStats struct {
	Enters, Completions, Rearms, NoBuffers int64
}

const (
	ioringSetupCQSize              = 1 << 3
	ioringSetupSingleIssuer        = 1 << 12
	ioringSetupDeferTaskrun        = 1 << 13
	ioringFeatSingleMmap           = 1 << 0
	ioringFeatExtArg               = 1 << 8
	ioringOffSQRing                = 0
	ioringOffSQEs                  = 0x10000000
	ioringEnterGetEvents           = 1 << 0
	ioringEnterExtArg              = 1 << 3
	ioringRegisterPbufRing         = 22
	ioringRegisterEventfd          = 4
	ioringSetupSQPoll              = 1 << 1
	ioringSQNeedWakeup             = 1 << 0
	ioringEnterSQWakeup            = 1 << 1
	ioringOpRecv                   = 27
	iosqeBufferSelect              = 1 << 5
	ioringRecvMultishot            = 1 << 1
	ioringCQEFBuffer               = 1 << 0
	ioringCQEFMore                 = 1 << 1
	ioringCQEBufferShift           = 16
	ringBufGroup                   = 0
	ringUserRecv            uint64 = 1
)

type sqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	Resv2                                                           uint64
}

type cqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1 uint32
	Resv2                                                           uint64
}

type uringParams struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  sqringOffsets
	CQOff                                                                  cqringOffsets
}

type uringSQE struct {
	Opcode      uint8
	Flags       uint8
	IOPrio      uint16
	Fd          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	OpFlags     uint32
	UserData    uint64
	BufGroup    uint16
	Personality uint16
	SpliceFdIn  int32
	Addr3       uint64
	Pad         uint64
}

type uringCQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

type uringBufReg struct {
	RingAddr    uint64
	RingEntries uint32
	Bgid        uint16
	Pad         uint16
	Resv        [3]uint64
}

type uringGeteventsArg struct {
	Sigmask   uint64
	SigmaskSz uint32
	MinWait   uint32
	Ts        uint64
}

// ErrRingUnavailable wraps why a ring could not be made (io_uring
// disabled or too old a kernel): the caller then reads with Sock.
var ErrRingUnavailable = errors.New("io_uring unavailable")

// NewRing makes a ring for nc's socket with nbuf buffers of bufSize bytes
// (nbuf a power of two). The calling goroutine must be locked to its OS
// thread (runtime.LockOSThread) and do every later Read and Close.
func NewRing(nc net.Conn, nbuf, bufSize int, mode RingMode) (*Ring, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%w: not a socket", ErrRingUnavailable)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &Ring{sock: -1, fd: -1, sc: rc, curID: -1, nbuf: nbuf, bufSize: bufSize, mode: mode}
	r.ready = func(uintptr) bool { return r.cqReady() }
	rc.Control(func(fd uintptr) { r.sock = int(fd) })
	if err := r.setup(); err != nil {
		r.free()
		return nil, fmt.Errorf("%w: %w", ErrRingUnavailable, err)
	}
	return r, nil
}

func (r *Ring) setup() error {
	p := uringParams{Flags: ioringSetupCQSize, CQEntries: 256}
	switch r.mode {
	case RingBlocking:
		p.Flags |= ioringSetupSingleIssuer | ioringSetupDeferTaskrun
	case RingSQPoll:
		p.Flags |= ioringSetupSQPoll
		p.SQThreadIdle = 1 // ms of spinning before the kernel thread sleeps
	}
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 8, uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return fmt.Errorf("io_uring_setup: %w", e)
	}
	r.fd = int(fd)
	if p.Features&ioringFeatSingleMmap == 0 || p.Features&ioringFeatExtArg == 0 {
		return errors.New("kernel lacks IORING_FEAT_SINGLE_MMAP or EXT_ARG")
	}
	sqSize := int(p.SQOff.Array) + int(p.SQEntries)*4
	cqSize := int(p.CQOff.Cqes) + int(p.CQEntries)*int(unsafe.Sizeof(uringCQE{}))
	var err error
	if r.ringMem, err = unix.Mmap(r.fd, ioringOffSQRing, max(sqSize, cqSize),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("mmap rings: %w", err)
	}
	if r.sqeMem, err = unix.Mmap(r.fd, ioringOffSQEs, int(p.SQEntries)*int(unsafe.Sizeof(uringSQE{})),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("mmap sqes: %w", err)
	}
	at := func(off uint32) unsafe.Pointer { return unsafe.Pointer(&r.ringMem[off]) }
	r.sqHead, r.sqTail = (*uint32)(at(p.SQOff.Head)), (*uint32)(at(p.SQOff.Tail))
	r.sqMask, r.sqArray = *(*uint32)(at(p.SQOff.RingMask)), at(p.SQOff.Array)
	r.sqFlags = (*uint32)(at(p.SQOff.Flags))
	r.cqHead, r.cqTail = (*uint32)(at(p.CQOff.Head)), (*uint32)(at(p.CQOff.Tail))
	r.cqMask, r.cqes = *(*uint32)(at(p.CQOff.RingMask)), at(p.CQOff.Cqes)

	// The provided buffers: a page-aligned ring of io_uring_buf entries.
	if r.bufRing, err = unix.Mmap(-1, 0, max(r.nbuf*16, os.Getpagesize()),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE); err != nil {
		return err
	}
	if r.bufMem, err = unix.Mmap(-1, 0, r.nbuf*r.bufSize,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE|unix.MAP_POPULATE); err != nil {
		return err
	}
	reg := uringBufReg{RingAddr: uint64(uintptr(unsafe.Pointer(&r.bufRing[0]))), RingEntries: uint32(r.nbuf), Bgid: ringBufGroup}
	if _, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), ioringRegisterPbufRing,
		uintptr(unsafe.Pointer(&reg)), 1, 0, 0); e != 0 {
		return fmt.Errorf("register buffer ring: %w", e)
	}
	for i := range r.nbuf {
		r.putBuf(i)
	}
	r.publishBufs()
	if r.mode != RingBlocking {
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			return fmt.Errorf("eventfd: %w", err)
		}
		r.efd = os.NewFile(uintptr(efd), "io_uring-eventfd")
		if r.erc, err = r.efd.SyscallConn(); err != nil {
			return err
		}
		if _, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), ioringRegisterEventfd,
			uintptr(unsafe.Pointer(&efd)), 1, 0, 0); e != 0 {
			return fmt.Errorf("register eventfd: %w", e)
		}
	}
	return nil
}

// putBuf adds buffer id to the provided ring (published by publishBufs).
func (r *Ring) putBuf(id int) {
	idx := int(r.bufTail) & (r.nbuf - 1)
	e := unsafe.Pointer(&r.bufRing[idx*16])
	*(*uint64)(e) = uint64(uintptr(unsafe.Pointer(&r.bufMem[id*r.bufSize])))
	*(*uint32)(unsafe.Add(e, 8)) = uint32(r.bufSize)
	if idx == 0 {
		r.bufIndex = uint16(id) // entry 0's bid shares a word with the tail
	} else {
		*(*uint16)(unsafe.Add(e, 12)) = uint16(id)
	}
	r.bufTail++
}

// publishBufs makes the entries put so far visible to the kernel: one
// atomic store of the word holding entry 0's bid and the ring's tail.
func (r *Ring) publishBufs() {
	w := (*uint32)(unsafe.Pointer(&r.bufRing[12]))
	atomic.StoreUint32(w, uint32(r.bufIndex)|uint32(r.bufTail)<<16)
}

// arm queues the multishot receive.
func (r *Ring) arm() {
	tail := atomic.LoadUint32(r.sqTail)
	idx := tail & r.sqMask
	sqe := (*uringSQE)(unsafe.Pointer(&r.sqeMem[int(idx)*int(unsafe.Sizeof(uringSQE{}))]))
	*sqe = uringSQE{Opcode: ioringOpRecv, Flags: iosqeBufferSelect, IOPrio: ioringRecvMultishot,
		Fd: int32(r.sock), UserData: ringUserRecv, BufGroup: ringBufGroup}
	*(*uint32)(unsafe.Add(r.sqArray, 4*idx)) = idx
	atomic.StoreUint32(r.sqTail, tail+1)
	r.armed = true
	r.stats.Rearms++
}

// enter submits what is queued and, when wait, waits for a completion,
// at most timeout (0: no limit). It reports whether the wait timed out.
func (r *Ring) enter(wait bool, timeout time.Duration) (bool, error) {
	toSubmit := atomic.LoadUint32(r.sqTail) - atomic.LoadUint32(r.sqHead)
	var minComplete, flags uintptr = 0, ioringEnterGetEvents
	if r.mode == RingSQPoll {
		// The kernel thread submits; wake it if it sleeps.
		toSubmit = 0
		if atomic.LoadUint32(r.sqFlags)&ioringSQNeedWakeup != 0 {
			flags |= ioringEnterSQWakeup
		}
	}
	if wait {
		minComplete = 1
	}
	var arg uringGeteventsArg
	var ts unix.Timespec
	var argp, argsz uintptr
	if wait && timeout > 0 {
		ts = unix.NsecToTimespec(int64(timeout))
		arg.Ts = uint64(uintptr(unsafe.Pointer(&ts)))
		flags |= ioringEnterExtArg
		argp, argsz = uintptr(unsafe.Pointer(&arg)), unsafe.Sizeof(arg)
	}
	for {
		r.stats.Enters++
		_, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), minComplete, flags, argp, argsz)
		runtime.KeepAlive(&ts)
		switch e {
		case 0:
			return false, nil
		case unix.EINTR:
			if r.cqReady() {
				return false, nil
			}
			continue
		case unix.ETIME:
			return true, nil
		default:
			return false, fmt.Errorf("io_uring_enter: %w", e)
		}
	}
}

func (r *Ring) cqReady() bool { return atomic.LoadUint32(r.cqTail) != atomic.LoadUint32(r.cqHead) }

// reap takes one completion, if there is one, making its bytes r.cur.
func (r *Ring) reap() bool {
	head := atomic.LoadUint32(r.cqHead)
	if head == atomic.LoadUint32(r.cqTail) {
		return false
	}
	cqe := *(*uringCQE)(unsafe.Add(r.cqes, uintptr(head&r.cqMask)*unsafe.Sizeof(uringCQE{})))
	atomic.StoreUint32(r.cqHead, head+1)
	r.stats.Completions++
	if cqe.UserData != ringUserRecv {
		return true
	}
	if cqe.Flags&ioringCQEFMore == 0 {
		r.armed = false
	}
	switch {
	case cqe.Res > 0 && cqe.Flags&ioringCQEFBuffer != 0:
		id := int(cqe.Flags >> ioringCQEBufferShift)
		if id >= r.nbuf || int(cqe.Res) > r.bufSize {
			r.err = fmt.Errorf("io_uring: completion for buffer %d of %d bytes", id, cqe.Res)
			return true
		}
		r.curID = id
		r.cur = r.bufMem[id*r.bufSize : id*r.bufSize+int(cqe.Res)]
	case cqe.Res == 0:
		r.err = io.EOF
	case -cqe.Res == int32(unix.ENOBUFS):
		r.stats.NoBuffers++ // every buffer holds unread bytes: re-armed once some are read
	case cqe.Res < 0:
		r.err = syscall.Errno(-cqe.Res)
	}
	return true
}

// Read implements io.Reader.
func (r *Ring) Read(p []byte) (int, error) {
	n, _, err := r.ReadCoalesced(p, nil, 0)
	return n, err
}

// ReadCoalesced is Sock.ReadCoalesced's counterpart: when nothing has
// arrived it waits until lowat() bytes are queued (SO_RCVLOWAT holds back
// the socket's wake-up, and so the multishot receive) or maxWait passes.
// lowat may be nil (any byte).
func (r *Ring) ReadCoalesced(p []byte, lowat func() int, maxWait time.Duration) (int, Wait, error) {
	if len(p) == 0 {
		return 0, NoWait, nil
	}
	how := NoWait
	plain := false // after a time-out: wait for any byte
	for {
		if len(r.cur) > 0 {
			n := copy(p, r.cur)
			r.cur = r.cur[n:]
			if len(r.cur) == 0 {
				r.recycle()
			}
			return n, how, nil
		}
		if r.reap() {
			continue
		}
		if r.err != nil {
			return 0, how, r.err
		}
		if !r.armed {
			r.arm()
		}
		want := 1
		if lowat != nil && !plain {
			want = max(lowat(), 1)
		}
		if want != max(r.lowat, 1) && (want == 1 || r.lowat <= 1 || want < r.lowat*3/4 || want > r.lowat*5/4) {
			r.setLowat(want)
		}
		var timeout time.Duration
		if want > 1 {
			timeout, how = maxWait, WaitLowat
		} else if how == NoWait {
			how = WaitAny
		}
		timedOut, err := r.wait(timeout)
		if err != nil {
			return 0, how, err
		}
		if timedOut {
			how, plain = WaitTimer, true
			r.setLowat(1)
			// A socket already past its (old) low-water mark does not wake
			// again when the mark drops: a receive now takes what is there.
			if !r.cqReady() {
				if _, err := r.enter(false, 0); err != nil {
					return 0, how, err
				}
			}
		}
	}
}

// wait waits for a completion, at most timeout (0: no limit).
func (r *Ring) wait(timeout time.Duration) (bool, error) {
	if r.mode == RingBlocking {
		return r.enter(true, timeout)
	}
	if atomic.LoadUint32(r.sqTail) != atomic.LoadUint32(r.sqHead) {
		if _, err := r.enter(false, 0); err != nil { // submit the (re-)armed receive
			return false, err
		}
		if r.cqReady() {
			return false, nil
		}
	}
	if timeout > 0 {
		r.efd.SetReadDeadline(time.Now().Add(timeout))
		defer r.efd.SetReadDeadline(time.Time{})
	}
	err := r.erc.Read(r.ready)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true, nil
	}
	return false, err
}

// recycle gives the consumed buffer back to the kernel.
func (r *Ring) recycle() {
	if r.curID < 0 {
		return
	}
	r.putBuf(r.curID)
	r.publishBufs()
	r.curID = -1
}

func (r *Ring) setLowat(n int) {
	r.lowat = n
	unix.SetsockoptInt(r.sock, unix.SOL_SOCKET, unix.SO_RCVLOWAT, n)
}

// Stats returns the ring's counters.
func (r *Ring) Stats() RingStats { return r.stats }

// Shutdown ends the connection's receive and send (shutdown(2)), so a
// receive in flight completes with end of file. Safe from any goroutine.
func (r *Ring) Shutdown() {
	r.sc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
}

// Close frees the ring (cancelling its receive, which drops its
// reference to the socket). On the goroutine that made the ring.
func (r *Ring) Close() error {
	// A receive still armed may write into the buffers until it ends:
	// end it (shutdown) and collect its last completion before unmapping.
	if r.armed && r.fd >= 0 {
		r.Shutdown()
		for i := 0; r.armed && i < 20; i++ {
			if r.reap() {
				continue
			}
			if _, err := r.enter(true, 50*time.Millisecond); err != nil {
				break
			}
		}
		if r.armed {
			r.bufMem = nil // leaked rather than unmapped under the kernel
		}
	}
	r.free()
	return nil
}

func (r *Ring) free() {
	if r.efd != nil {
		r.efd.Close()
		r.efd = nil
	}
	if r.fd >= 0 {
		unix.Close(r.fd) // cancels requests and releases the socket reference
		r.fd = -1
	}
	for _, m := range []*[]byte{&r.ringMem, &r.sqeMem, &r.bufRing, &r.bufMem} {
		if *m != nil {
			unix.Munmap(*m)
			*m = nil
		}
	}
	r.cur = nil
}
