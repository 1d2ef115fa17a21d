package nbdbridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// AttachOptions configure a kernel attach.
type AttachOptions struct {
	// Connections is the number of sockets handed to the kernel (one per
	// hardware queue); more than one needs Options.MultiConn. Default 1.
	Connections int
	// Timeout is the kernel's per-request timeout (NBD_ATTR_TIMEOUT); 0
	// keeps the kernel default.
	Timeout time.Duration
	// DeadConnTimeout is how long the kernel queues I/O after our sockets
	// die, waiting for a Reconnect (netlink only). 0 keeps the default.
	DeadConnTimeout time.Duration
	// Reconnect hands fresh sockets to a device that is still configured but
	// whose server died (NBD_CMD_RECONFIGURE) instead of connecting anew.
	Reconnect bool
	// ClientFlags are NBD_CFLAG_* bits for CONNECT.
	ClientFlags uint64
	// Backend is NBD_ATTR_BACKEND_IDENTIFIER (shown in /sys/block/nbdN/backend).
	Backend string
	// Ioctl forces the ioctl path even when the netlink family exists.
	Ioctl bool
}

// Attachment is a device bound to /dev/nbdN and served by this process.
type Attachment struct {
	// Index is N in /dev/nbdN.
	Index int
	// Netlink tells which path configured the device.
	Netlink bool

	srv    *Server
	cancel context.CancelFunc
	wg     sync.WaitGroup // serving loops and the NBD_DO_IT thread
	devf   *os.File       // ioctl path: the open /dev/nbdN
	ioErr  error
}

// ErrNoNetlink means the kernel has no "nbd" generic netlink family (the nbd
// module is not loaded, or too old).
var ErrNoNetlink = errors.New("nbd: generic netlink family \"nbd\" not found (modprobe nbd?)")

// ParseDevice returns N for "/dev/nbdN" (or "nbdN").
func ParseDevice(path string) (int, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(path, "/dev/"), "nbd")
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || s != strconv.Itoa(n) {
		return 0, fmt.Errorf("nbd: %q is not an nbd device (want /dev/nbdN)", path)
	}
	return n, nil
}

// Attach binds the server's device to /dev/nbd<index> (index < 0: any free
// device, netlink only). Each connection is a socketpair whose kernel end is
// handed over and whose other end is served by ServeTransmission until the
// kernel disconnects. ctx bounds the setup only.
func (s *Server) Attach(ctx context.Context, index int, o AttachOptions) (*Attachment, error) {
	n := o.Connections
	if n <= 0 {
		n = 1
	}
	if n > 1 && !s.opts.MultiConn {
		return nil, errors.New("nbd: several connections need MultiConn (a flush must cover every connection)")
	}
	bs := uint64(s.minBS)
	if bs < 512 || bs > 4096 || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("nbd: kernel nbd needs a block size that is a power of two in [512, 4096], not %d", bs)
	}
	serveCtx, cancel := context.WithCancel(context.Background())
	a := &Attachment{Index: index, srv: s, cancel: cancel}
	kfds, err := a.startSockets(serveCtx, n)
	closeK := func() {
		for _, fd := range kfds {
			unix.Close(fd)
		}
	}
	if err != nil {
		closeK()
		a.Close()
		return nil, err
	}
	cfg := nlConfig{
		Index:           index,
		Size:            uint64(s.dev.Size()),
		BlockSize:       bs,
		Timeout:         o.Timeout,
		DeadConnTimeout: o.DeadConnTimeout,
		ServerFlags:     uint64(s.TransmissionFlags(false)),
		ClientFlags:     o.ClientFlags,
		FDs:             kfds,
		Backend:         o.Backend,
	}
	if !o.Ioctl {
		a.Index, err = netlinkConnect(ctx, cfg, o.Reconnect)
		if err == nil {
			a.Netlink = true
			closeK() // the kernel holds its own references now
			return a, nil
		}
		if !errors.Is(err, ErrNoNetlink) || o.Reconnect {
			closeK()
			a.Close()
			return nil, err
		}
		s.log.Info("nbd: no netlink family, falling back to ioctls")
	}
	if index < 0 {
		closeK()
		a.Close()
		return nil, errors.New("nbd: the ioctl path needs an explicit /dev/nbdN")
	}
	if err := a.ioctlConnect(cfg); err != nil {
		closeK()
		a.Close()
		return nil, err
	}
	closeK()
	return a, nil
}

func (a *Attachment) startSockets(ctx context.Context, n int) ([]int, error) {
	var kfds []int
	for i := 0; i < n; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return kfds, fmt.Errorf("nbd: socketpair: %w", err)
		}
		kfds = append(kfds, fds[1])
		f := os.NewFile(uintptr(fds[0]), fmt.Sprintf("nbd-sock-%d", i))
		nc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return kfds, fmt.Errorf("nbd: socket: %w", err)
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.srv.ServeTransmission(ctx, nc); err != nil {
				a.srv.log.WithError(err).Warn("nbd: kernel connection ended")
			}
		}()
	}
	return kfds, nil
}

// Wait returns once the kernel has disconnected every socket (after a
// Detach, `lunbridge detach`, or a DISCONNECT from anyone).
func (a *Attachment) Wait() error {
	a.wg.Wait()
	if a.devf != nil {
		a.devf.Close()
	}
	return a.ioErr
}

// Detach disconnects the device (the kernel sends NBD_CMD_DISC on each
// socket after its queued requests) and waits up to timeout for the serving
// loops to end.
func (a *Attachment) Detach(timeout time.Duration) error {
	var err error
	if a.Netlink {
		err = Detach(a.Index)
	} else if a.devf != nil {
		err = ioctl(int(a.devf.Fd()), ioctlDisconnect, 0)
	}
	done := make(chan struct{})
	go func() { a.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		a.Close()
		<-done
		if err == nil {
			err = errors.New("nbd: kernel did not disconnect in time")
		}
	}
	return err
}

// Close stops serving without telling the kernel. In netlink mode the
// device stays configured and queues I/O for DeadConnTimeout, waiting for
// an Attach with Reconnect.
func (a *Attachment) Close() error {
	a.cancel()
	return nil
}

func netlinkConnect(ctx context.Context, cfg nlConfig, reconnect bool) (int, error) {
	c, fam, err := dialNBD()
	if err != nil {
		return -1, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	cmd := uint8(nlCmdConnect)
	var data []byte
	if reconnect {
		if cfg.Index < 0 {
			return -1, errors.New("nbd: reconnect needs an explicit /dev/nbdN")
		}
		cmd = nlCmdReconfigure
		data, err = encodeReconfigure(cfg)
	} else {
		data, err = encodeConnect(cfg)
	}
	if err != nil {
		return -1, err
	}
	msgs, err := c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: genlVersion},
		Data:   data,
	}, fam.ID, netlink.Request|netlink.Acknowledge)
	if err != nil {
		what := "connect"
		if reconnect {
			what = "reconfigure"
		}
		return -1, fmt.Errorf("nbd: netlink %s /dev/nbd%d: %w", what, cfg.Index, err)
	}
	for _, m := range msgs {
		if idx, ok := decodeIndex(m.Data); ok {
			return idx, nil
		}
	}
	return cfg.Index, nil
}

func dialNBD() (*genetlink.Conn, genetlink.Family, error) {
	c, err := genetlink.Dial(nil)
	if err != nil {
		return nil, genetlink.Family{}, fmt.Errorf("nbd: generic netlink: %w", err)
	}
	fam, err := c.GetFamily(genlFamily)
	if err != nil {
		c.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, fam, ErrNoNetlink
		}
		return nil, fam, fmt.Errorf("nbd: generic netlink family: %w", err)
	}
	return c, fam, nil
}

// Detach disconnects /dev/nbd<index>: netlink DISCONNECT, else the ioctl
// pair NBD_DISCONNECT + NBD_CLEAR_SOCK that nbd-client -d uses.
func Detach(index int) error {
	c, fam, err := dialNBD()
	if err == nil {
		defer c.Close()
		data, _ := encodeIndex(index)
		_, err = c.Execute(genetlink.Message{
			Header: genetlink.Header{Command: nlCmdDisconnect, Version: genlVersion},
			Data:   data,
		}, fam.ID, netlink.Request|netlink.Acknowledge)
		if err != nil {
			return fmt.Errorf("nbd: netlink disconnect /dev/nbd%d: %w", index, err)
		}
		return nil
	}
	if !errors.Is(err, ErrNoNetlink) {
		return err
	}
	f, err := openNBD(index)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := ioctl(int(f.Fd()), ioctlDisconnect, 0); err != nil {
		return fmt.Errorf("nbd: NBD_DISCONNECT: %w", err)
	}
	ioctl(int(f.Fd()), ioctlClearSock, 0)
	return nil
}

// Status reports the kernel's view of nbd devices (index < 0: all).
func Status(index int) ([]DeviceStatus, error) {
	c, fam, err := dialNBD()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	data, _ := encodeIndex(index)
	msgs, err := c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: nlCmdStatus, Version: genlVersion},
		Data:   data,
	}, fam.ID, netlink.Request)
	if err != nil {
		return nil, fmt.Errorf("nbd: netlink status: %w", err)
	}
	var out []DeviceStatus
	for _, m := range msgs {
		ds, err := decodeStatus(m.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
	}
	return out, nil
}

// ioctlConnect configures the device and runs NBD_DO_IT, all from one OS
// thread (the kernel ties the configuration to the task: another thread
// gets EBUSY).
func (a *Attachment) ioctlConnect(cfg nlConfig) error {
	f, err := openNBD(cfg.Index)
	if err != nil {
		return err
	}
	a.devf = f
	setup := make(chan error, 1)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd := int(f.Fd())
		for _, c := range ioctlSetup(cfg.Size, cfg.BlockSize, uint16(cfg.ServerFlags), secondsOrZero(cfg.Timeout), cfg.FDs) {
			if err := ioctl(fd, c.Req, c.Arg); err != nil {
				ioctl(fd, ioctlClearSock, 0)
				setup <- fmt.Errorf("nbd: ioctl %#x: %w", c.Req, err)
				return
			}
		}
		setup <- nil
		err := ioctl(fd, ioctlDoIt, 0) // blocks until disconnect
		ioctl(fd, ioctlClearQue, 0)
		ioctl(fd, ioctlClearSock, 0)
		if err != nil && !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
			a.ioErr = fmt.Errorf("nbd: NBD_DO_IT: %w", err)
		}
	}()
	return <-setup
}

func secondsOrZero(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return seconds(d)
}

func ioctl(fd int, req, arg uintptr) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if e != 0 {
		return e
	}
	return nil
}

func openNBD(index int) (*os.File, error) {
	f, err := os.OpenFile(fmt.Sprintf("/dev/nbd%d", index), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("nbd: /dev/nbd%d does not exist and the kernel has no nbd netlink family (modprobe nbd): %w", index, err)
	}
	if err != nil {
		return nil, fmt.Errorf("nbd: %w", err)
	}
	return f, nil
}
