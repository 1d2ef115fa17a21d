package nvmetcp

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// Namespace is one namespace of a controller as a blockdev.Device.
type Namespace struct {
	c         *Controller
	nsid      uint32
	id        pdu.Namespace
	size      int64
	bs        int
	shift     uint
	ownsCtrl  bool
	closed    atomic.Bool
	maxBlocks int64         // per Read/Write
	gen       atomic.Uint64 // the controller association last checked
	noWZ      atomic.Bool   // the controller refused Write Zeroes once
}

var (
	_ blockdev.Device     = (*Namespace)(nil)
	_ blockdev.Trimmer    = (*Namespace)(nil)
	_ blockdev.Zeroer     = (*Namespace)(nil)
	_ blockdev.Identifier = (*Namespace)(nil)
)

// OpenNamespace identifies namespace nsid of c.
func OpenNamespace(ctx context.Context, c *Controller, nsid uint32) (*Namespace, error) {
	if nsid == 0 || nsid == 0xffffffff {
		return nil, fmt.Errorf("nvmetcp: namespace ID %d: %w", nsid, blockdev.ErrInvalid)
	}
	id, err := c.IdentifyNamespace(ctx, nsid)
	if err != nil {
		return nil, err
	}
	if id.NSZE == 0 {
		return nil, fmt.Errorf("nvmetcp: namespace %d of %s is not active", nsid, c.cfg.SubNQN)
	}
	bs, err := id.BlockSize()
	if err != nil {
		return nil, err
	}
	if id.NSZE > uint64(1<<62)/uint64(bs) {
		return nil, fmt.Errorf("nvmetcp: namespace %d: %d blocks is too large", nsid, id.NSZE)
	}
	n := &Namespace{c: c, nsid: nsid, id: id, bs: bs, size: int64(id.NSZE) * int64(bs)}
	n.gen.Store(c.gen.Load())
	for 1<<n.shift != bs {
		n.shift++
	}
	c.mu.Lock()
	x := c.maxXfer
	c.mu.Unlock()
	n.maxBlocks = max(1, min(int64(x/bs), 1<<16))
	return n, nil
}

// SetOwnsController makes Close close the controller too.
func (n *Namespace) SetOwnsController(v bool) { n.ownsCtrl = v }

// Controller returns the namespace's controller.
func (n *Namespace) Controller() *Controller { return n.c }

// NSID returns the namespace ID.
func (n *Namespace) NSID() uint32 { return n.nsid }

// Identify returns the Identify Namespace data read at open.
func (n *Namespace) Identify() pdu.Namespace { return n.id }

func (n *Namespace) Size() int64    { return n.size }
func (n *Namespace) BlockSize() int { return n.bs }

// Identity names the namespace: its NGUID, else EUI-64, else the
// controller serial and NSID.
func (n *Namespace) Identity() blockdev.Identity {
	info := n.c.Info()
	id := blockdev.Identity{Serial: info.Serial, Size: n.size, Block: n.bs}
	switch {
	case n.id.NGUID != [16]byte{}:
		id.WWID = "eui." + hex.EncodeToString(n.id.NGUID[:])
	case n.id.EUI64 != [8]byte{}:
		id.WWID = "eui." + hex.EncodeToString(n.id.EUI64[:])
	default:
		id.WWID = fmt.Sprintf("nvme.%s-%s-ns%d", info.SubNQN, info.Serial, n.nsid)
	}
	return id
}

func (n *Namespace) check(off, l int64) error {
	if n.closed.Load() {
		return blockdev.ErrClosed
	}
	return blockdev.CheckRange(n, off, l)
}

// io runs one I/O command and turns its status into a blockdev error.
func (n *Namespace) io(ctx context.Context, op string, sqe pdu.SQE, out, in []byte) error {
	sqe.NSID = n.nsid
	cqe, err := n.c.exec(ctx, false, op, sqe, out, in, n.recheck)
	if err != nil {
		return err
	}
	return statusErr(op, cqe.StatusField())
}

// statusErr maps NVMe status to the blockdev sentinels (NVMe Base 2.0,
// Section 4.6.1.2).
func statusErr(op string, st pdu.Status) error {
	if st.OK() {
		return nil
	}
	e := &StatusError{Op: op, Status: st}
	var s error
	switch {
	case st.SCT() == 0 && (st.SC() == 0x80 || st.SC() == 0x81):
		s = blockdev.ErrOutOfRange
	case st.SCT() == 0 && (st.SC() == 0x01 || st.SC() == 0x02), st.SCT() == 1 && st.SC() == 0x83:
		s = blockdev.ErrNotSupported
	case st.SCT() == 1 && st.SC() == 0x82:
		s = blockdev.ErrReadOnly
	case st.SCT() == 2 && st.SC() == 0x86, st.SCT() == 2 && st.SC() == 0x82:
		s = blockdev.ErrReadOnly
	case st.SCT() == 2:
		s = blockdev.ErrMedium
	case st.SCT() == 3:
		s = blockdev.ErrUnavailable
	default:
		s = blockdev.ErrMedium
	}
	return fmt.Errorf("%w: %w", s, e)
}

func rwSQE(op uint8, lba uint64, blocks int64, fua bool) pdu.SQE {
	cdw12 := uint32(blocks - 1)
	if fua {
		cdw12 |= 1 << 30
	}
	return pdu.SQE{Opcode: op, CDW: [6]uint32{uint32(lba), uint32(lba >> 32), cdw12}}
}

// ReadAt reads p at off, in commands of at most the transfer limit.
func (n *Namespace) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := n.check(off, int64(len(p))); err != nil {
		return err
	}
	chunk := int(n.maxBlocks) * n.bs
	for len(p) > 0 {
		k := min(len(p), chunk)
		if err := n.io(ctx, "read", rwSQE(pdu.IORead, uint64(off>>n.shift), int64(k>>n.shift), false), nil, p[:k]); err != nil {
			return err
		}
		p, off = p[k:], off+int64(k)
	}
	return nil
}

// WriteAt writes p at off; fua sets Force Unit Access on every command.
func (n *Namespace) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := n.check(off, int64(len(p))); err != nil {
		return err
	}
	chunk := int(n.maxBlocks) * n.bs
	for len(p) > 0 {
		k := min(len(p), chunk)
		if err := n.io(ctx, "write", rwSQE(pdu.IOWrite, uint64(off>>n.shift), int64(k>>n.shift), fua), p[:k], nil); err != nil {
			return err
		}
		p, off = p[k:], off+int64(k)
	}
	return nil
}

// Flush commits the volatile write cache.
func (n *Namespace) Flush(ctx context.Context) error {
	if n.closed.Load() {
		return blockdev.ErrClosed
	}
	return n.io(ctx, "flush", pdu.SQE{Opcode: pdu.IOFlush}, nil, nil)
}

// Trim deallocates [off, off+l) with Dataset Management (AD), up to 256
// ranges of at most 2^32-1 blocks per command.
func (n *Namespace) Trim(ctx context.Context, off, l int64) error {
	if err := n.check(off, l); err != nil {
		return err
	}
	if n.c.Info().ONCS&pdu.ONCSDSM == 0 {
		return fmt.Errorf("nvmetcp: dataset management: %w", blockdev.ErrNotSupported)
	}
	lba, blocks := uint64(off>>n.shift), uint64(l>>n.shift)
	for blocks > 0 {
		var buf []byte
		nr := 0
		for blocks > 0 && nr < 256 {
			k := min(blocks, 0xffffffff)
			buf = pdu.AppendDSMRange(buf, pdu.DSMRange{NLB: uint32(k), SLBA: lba})
			lba, blocks, nr = lba+k, blocks-k, nr+1
		}
		sqe := pdu.SQE{Opcode: pdu.IODSM, CDW: [6]uint32{uint32(nr - 1), 1 << 2}}
		if err := n.io(ctx, "dataset management", sqe, buf, nil); err != nil {
			return err
		}
	}
	return nil
}

// ReadZeroesAfterTrim: DLFEAT bits 2:0 = 001b.
func (n *Namespace) ReadZeroesAfterTrim() bool { return n.id.DLFEAT&7 == 1 }

// WriteZeroes zeroes [off, off+l) with Write Zeroes (DEAC when mayTrim),
// or by writing zero buffers when the controller has no Write Zeroes.
func (n *Namespace) WriteZeroes(ctx context.Context, off, l int64, mayTrim bool) error {
	if err := n.check(off, l); err != nil {
		return err
	}
	if n.c.Info().ONCS&pdu.ONCSWriteZeroes == 0 || n.noWZ.Load() {
		return n.writeZeroBuffers(ctx, off, l)
	}
	lba, blocks := uint64(off>>n.shift), l>>n.shift
	for blocks > 0 {
		k := min(blocks, 1<<16)
		sqe := rwSQE(pdu.IOWriteZeroes, lba, k, false)
		if mayTrim {
			sqe.CDW[2] |= 1 << 25 // DEAC
		}
		if err := n.io(ctx, "write zeroes", sqe, nil, nil); err != nil {
			// A controller may advertise Write Zeroes and still refuse it
			// for one namespace (Linux nvmet on a file whose file system
			// has no FALLOC_FL_ZERO_RANGE, such as tmpfs): write zeroes.
			// Linux nvmet answers SCT 1 SC 0x83; others Invalid Opcode/Field.
			if errors.Is(err, blockdev.ErrNotSupported) {
				n.noWZ.Store(true)
				done := int64(lba)<<n.shift - off
				return n.writeZeroBuffers(ctx, off+done, l-done)
			}
			return err
		}
		lba, blocks = lba+uint64(k), blocks-k
	}
	return nil
}

func (n *Namespace) writeZeroBuffers(ctx context.Context, off, l int64) error {
	z := make([]byte, min(l, int64(n.maxBlocks)*int64(n.bs), 1<<20))
	for l > 0 {
		k := min(l, int64(len(z)))
		if err := n.WriteAt(ctx, z[:k], off, false); err != nil {
			return err
		}
		off, l = off+k, l-k
	}
	return nil
}

// Close closes the namespace handle, and the controller when owned.
func (n *Namespace) Close() error {
	if n.closed.Swap(true) {
		return nil
	}
	if n.ownsCtrl {
		return n.c.Close()
	}
	return nil
}

// recheck identifies the namespace again after the controller
// reconnected: a reconnect that reached another medium (size, NGUID,
// EUI-64 or block size changed) fails every I/O instead of writing to it.
func (n *Namespace) recheck(ctx context.Context, g uint64) error {
	if n.gen.Load() == g {
		return nil
	}
	id, err := n.c.IdentifyNamespace(ctx, n.nsid)
	if err != nil {
		return err
	}
	bs, err := id.BlockSize()
	if err != nil || bs != n.bs || !n.sameNamespace(id) {
		return fmt.Errorf("nvmetcp: namespace %d changed across a reconnect (%d blocks of %d bytes, NGUID %x): %w",
			n.nsid, id.NSZE, bs, id.NGUID, blockdev.ErrUnavailable)
	}
	n.gen.Store(g)
	return nil
}

// sameNamespace reports whether id describes the namespace n was opened on.
func (n *Namespace) sameNamespace(id pdu.Namespace) bool {
	return id.NSZE == n.id.NSZE && bytes.Equal(id.NGUID[:], n.id.NGUID[:]) && id.EUI64 == n.id.EUI64
}
