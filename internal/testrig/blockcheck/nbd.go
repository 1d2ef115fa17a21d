package blockcheck

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// NBD protocol numbers (the NBD protocol document, doc/proto.md).
const (
	nbdMagic       = 0x4e42444d41474943
	nbdOptMagic    = 0x49484156454F5054 // IHAVEOPT
	nbdRepMagic    = 0x3e889045565a9
	nbdReqMagic    = 0x25609513
	nbdSimpleMagic = 0x67446698

	nbdFlagFixedNewstyle = 1
	nbdFlagNoZeroes      = 2

	nbdOptGo     = 7
	nbdRepAck    = 1
	nbdRepInfo   = 3
	nbdRepErrBit = 1 << 31
	nbdInfoExp   = 0

	nbdCmdRead  = 0
	nbdCmdWrite = 1
	nbdCmdDisc  = 2
	nbdCmdFlush = 3
	nbdCmdFlFUA = 1

	nbdTxFlagSendFUA = 1 << 3
)

// NBDClient is a minimal synchronous NBD client (fixed newstyle, OPT_GO,
// simple replies): one request at a time, for a workload client.
type NBDClient struct {
	c      net.Conn
	Size   int64
	Flags  uint16
	cookie uint64
	broken atomic.Bool
	hdr    [28]byte
}

// DialNBD connects to an NBD server ("unix" or "tcp") and negotiates
// export name with OPT_GO.
func DialNBD(ctx context.Context, network, addr, name string) (*NBDClient, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	n := &NBDClient{c: c}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if err := n.handshake(name); err != nil {
		c.Close()
		return nil, fmt.Errorf("nbd handshake: %w", err)
	}
	c.SetDeadline(time.Time{})
	return n, nil
}

func (n *NBDClient) handshake(name string) error {
	be := binary.BigEndian
	var b [18]byte
	if _, err := io.ReadFull(n.c, b[:]); err != nil {
		return err
	}
	if be.Uint64(b[:]) != nbdMagic || be.Uint64(b[8:]) != nbdOptMagic {
		return errors.New("not a fixed newstyle NBD server")
	}
	hs := be.Uint16(b[16:])
	if hs&nbdFlagFixedNewstyle == 0 {
		return errors.New("server lacks fixed newstyle")
	}
	cf := uint32(nbdFlagFixedNewstyle)
	if hs&nbdFlagNoZeroes != 0 {
		cf |= nbdFlagNoZeroes
	}
	msg := be.AppendUint32(nil, cf)
	data := be.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = be.AppendUint16(data, 0)
	msg = be.AppendUint64(msg, nbdOptMagic)
	msg = be.AppendUint32(msg, nbdOptGo)
	msg = be.AppendUint32(msg, uint32(len(data)))
	msg = append(msg, data...)
	if _, err := n.c.Write(msg); err != nil {
		return err
	}
	for {
		var r [20]byte
		if _, err := io.ReadFull(n.c, r[:]); err != nil {
			return err
		}
		if be.Uint64(r[:]) != nbdRepMagic {
			return errors.New("bad option reply magic")
		}
		typ, ln := be.Uint32(r[12:]), be.Uint32(r[16:])
		if ln > 1<<16 {
			return fmt.Errorf("option reply of %d bytes", ln)
		}
		p := make([]byte, ln)
		if _, err := io.ReadFull(n.c, p); err != nil {
			return err
		}
		switch {
		case typ&nbdRepErrBit != 0:
			return fmt.Errorf("OPT_GO refused: reply %#x %q", typ, p)
		case typ == nbdRepInfo && len(p) >= 12 && be.Uint16(p) == nbdInfoExp:
			n.Size, n.Flags = int64(be.Uint64(p[2:])), be.Uint16(p[10:])
		case typ == nbdRepAck:
			if n.Size == 0 {
				return errors.New("no NBD_INFO_EXPORT before ACK")
			}
			return nil
		}
	}
}

// Broken reports whether the connection failed (the client must redial).
func (n *NBDClient) Broken() bool { return n.broken.Load() }

// NBDError is an error the server answered (errno value).
type NBDError uint32

func (e NBDError) Error() string { return fmt.Sprintf("nbd: server error %d", uint32(e)) }

func (n *NBDClient) do(ctx context.Context, typ, flags uint16, off int64, length uint32, wdata, rdata []byte) error {
	if n.broken.Load() {
		return errors.New("nbd: connection broken")
	}
	be := binary.BigEndian
	n.cookie++
	h := n.hdr[:0]
	h = be.AppendUint32(h, nbdReqMagic)
	h = be.AppendUint16(h, flags)
	h = be.AppendUint16(h, typ)
	h = be.AppendUint64(h, n.cookie)
	h = be.AppendUint64(h, uint64(off))
	h = be.AppendUint32(h, length)
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(2 * time.Minute)
	}
	n.c.SetDeadline(dl)
	fail := func(err error) error {
		n.broken.Store(true)
		n.c.Close()
		return fmt.Errorf("nbd: %w", err)
	}
	bufs := net.Buffers{h, wdata}
	if _, err := bufs.WriteTo(n.c); err != nil {
		return fail(err)
	}
	if typ == nbdCmdDisc {
		return nil
	}
	var r [16]byte
	if _, err := io.ReadFull(n.c, r[:]); err != nil {
		return fail(err)
	}
	if be.Uint32(r[:]) != nbdSimpleMagic {
		return fail(errors.New("bad reply magic"))
	}
	if be.Uint64(r[8:]) != n.cookie {
		return fail(fmt.Errorf("reply cookie %d, want %d", be.Uint64(r[8:]), n.cookie))
	}
	if e := be.Uint32(r[4:]); e != 0 {
		return NBDError(e)
	}
	if rdata != nil {
		if _, err := io.ReadFull(n.c, rdata); err != nil {
			return fail(err)
		}
	}
	return nil
}

// ReadAt reads len(p) bytes at off.
func (n *NBDClient) ReadAt(ctx context.Context, p []byte, off int64) error {
	return n.do(ctx, nbdCmdRead, 0, off, uint32(len(p)), nil, p)
}

// WriteAt writes p at off, with NBD_CMD_FLAG_FUA when fua is set.
func (n *NBDClient) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	var fl uint16
	if fua {
		if n.Flags&nbdTxFlagSendFUA == 0 {
			return errors.New("nbd: export does not take FUA")
		}
		fl = nbdCmdFlFUA
	}
	return n.do(ctx, nbdCmdWrite, fl, off, uint32(len(p)), p, nil)
}

// Flush sends NBD_CMD_FLUSH.
func (n *NBDClient) Flush(ctx context.Context) error {
	return n.do(ctx, nbdCmdFlush, 0, 0, 0, nil, nil)
}

// Close sends NBD_CMD_DISC (when the connection is healthy) and closes.
func (n *NBDClient) Close() error {
	if !n.broken.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		n.do(ctx, nbdCmdDisc, 0, 0, 0, nil, nil)
		cancel()
	}
	return n.c.Close()
}
