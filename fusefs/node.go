package fusefs

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
)

// Linux fallocate(2) modes and lseek(2) whences (not in package syscall).
const (
	fallocKeepSize  = 0x1
	fallocPunchHole = 0x2
	fallocZeroRange = 0x10
	seekData        = 3
	seekHole        = 4
)

// rootNode is the mount's root directory; it holds the one file.
type rootNode struct {
	fs.Inode
	name string
	file *fileNode
}

var (
	_ fs.NodeOnAdder   = (*rootNode)(nil)
	_ fs.NodeGetattrer = (*rootNode)(nil)
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeSetattrer = (*fileNode)(nil)
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
	_ fs.NodeWriter    = (*fileNode)(nil)
	_ fs.NodeFsyncer   = (*fileNode)(nil)
	_ fs.NodeFlusher   = (*fileNode)(nil)
	_ fs.NodeAllocater = (*fileNode)(nil)
	_ fs.NodeLseeker   = (*fileNode)(nil)
	_ fs.NodeStatfser  = (*rootNode)(nil)
)

func (r *rootNode) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, r.file, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
	r.AddChild(r.name, ch, false)
}

func (r *rootNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o755
	out.Nlink = 2
	out.Uid, out.Gid = r.file.uid, r.file.gid
	t := r.file.born
	out.SetTimes(&t, &t, &t)
	return 0
}

// Statfs reports the device as the file system's capacity, all of it used,
// so df shows the LUN's size.
func (r *rootNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	bs := uint64(r.file.io.bs)
	out.Bsize = uint32(bs)
	out.Frsize = uint32(bs)
	out.Blocks = uint64(r.file.io.size) / bs
	out.Files = 2
	out.NameLen = 255
	return 0
}

// fileNode is the image file. Its attributes besides the size live in
// memory only.
type fileNode struct {
	fs.Inode
	io       *blockIO
	readOnly bool
	cache    bool
	log      *logrus.Entry
	born     time.Time
	uid, gid uint32

	// dsync holds the WRITE requests in flight whose fuse_write_in.flags
	// carry O_DSYNC (see syncRaw), keyed by the request's cancel channel,
	// which go-fuse hands to Write as the fuse.Context's Cancel.
	dsync sync.Map // <-chan struct{} -> *atomic.Bool (set once written with FUA)

	mu    sync.Mutex // guards the in-memory attributes below
	mode  uint32     // permission bits
	atime time.Time
	ctime time.Time
	mtime atomic.Int64 // UnixNano; writes bump it without taking mu
}

func (f *fileNode) fail(op string, off, n int64, err error) syscall.Errno {
	errno := ToErrno(err)
	if f.log != nil && errno != syscall.EINTR {
		f.log.WithFields(logrus.Fields{"op": op, "off": off, "len": n, "errno": errno.Error()}).WithError(err).Debug("fusefs: request failed")
	}
	return errno
}

func (f *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fillAttr(&out.Attr)
	return 0
}

func (f *fileNode) fillAttr(a *fuse.Attr) {
	f.mu.Lock()
	a.Mode = syscall.S_IFREG | f.mode
	at, ct := f.atime, f.ctime
	f.mu.Unlock()
	mt := time.Unix(0, f.mtime.Load())
	a.Size = uint64(f.io.size)
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = uint32(max(f.io.bs, 4096))
	a.Nlink = 1
	a.Uid, a.Gid = f.uid, f.gid
	a.SetTimes(&at, &mt, &ct)
}

// Setattr refuses size changes (the device has a fixed size) and keeps the
// rest — mode, owner, times — in memory.
func (f *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && sz != uint64(f.io.size) {
		return syscall.EPERM
	}
	now := time.Now()
	f.mu.Lock()
	if m, ok := in.GetMode(); ok {
		f.mode = m & 0o7777
		if f.readOnly {
			f.mode &^= 0o222
		}
	}
	if u, ok := in.GetUID(); ok {
		f.uid = u
	}
	if g, ok := in.GetGID(); ok {
		f.gid = g
	}
	if t, ok := in.GetATime(); ok {
		f.atime = t
	}
	if t, ok := in.GetMTime(); ok {
		f.mtime.Store(t.UnixNano())
	}
	f.ctime = now
	f.mu.Unlock()
	f.fillAttr(&out.Attr)
	return 0
}

// fileHandle is an open file description of the image file.
type fileHandle struct {
	// sync: opened O_SYNC or O_DSYNC (O_SYNC includes the O_DSYNC bit),
	// so every write must be durable before it is acknowledged.
	sync bool
}

func (f *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if f.readOnly && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	fh := &fileHandle{sync: flags&syscall.O_DSYNC != 0}
	if f.cache {
		return fh, fuse.FOPEN_KEEP_CACHE, 0
	}
	return fh, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES, 0
}

// syncWrite reports whether this write must be durable when it returns:
// the handle was opened O_SYNC/O_DSYNC, or the request's flags say
// O_DSYNC (pwritev2 RWF_DSYNC/RWF_SYNC, a sync mount). It marks such a
// request as served with FUA, so syncRaw need not flush after it.
func (f *fileNode) syncWrite(ctx context.Context, fh fs.FileHandle) (bool, *atomic.Bool) {
	var mark *atomic.Bool
	if fc, ok := ctx.(*fuse.Context); ok && fc.Cancel != nil {
		if v, ok := f.dsync.Load(fc.Cancel); ok {
			mark = v.(*atomic.Bool)
		}
	}
	h, _ := fh.(*fileHandle)
	return mark != nil || (h != nil && h.sync), mark
}

func (f *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := f.io.ReadAt(ctx, dest, off)
	if err != nil {
		return nil, f.fail("read", off, int64(len(dest)), err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *fileNode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if f.readOnly {
		return 0, syscall.EROFS
	}
	fua, mark := f.syncWrite(ctx, fh)
	n, err := f.io.writeAt(ctx, data, off, fua)
	if err != nil {
		return 0, f.fail("write", off, int64(len(data)), err)
	}
	if mark != nil {
		mark.Store(true)
	}
	f.mtime.Store(time.Now().UnixNano())
	return uint32(n), 0
}

func (f *fileNode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if f.readOnly {
		return 0
	}
	if err := f.io.Flush(ctx, false); err != nil {
		return f.fail("fsync", 0, 0, err)
	}
	return 0
}

// Flush is close(2): it flushes the device when anything was written since
// the last flush, so that close reports write-back errors as NFS does.
func (f *fileNode) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	if f.readOnly {
		return 0
	}
	if err := f.io.Flush(ctx, true); err != nil {
		return f.fail("flush", 0, 0, err)
	}
	return 0
}

// Allocate implements fallocate(2) on a file whose size cannot change; see
// the package documentation for the table of modes.
func (f *fileNode) Allocate(ctx context.Context, fh fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	if f.readOnly {
		return syscall.EROFS
	}
	devSize := uint64(f.io.size)
	keep := mode&fallocKeepSize != 0
	// Clamp to the device first: [o, o+n) is then within it, no overflow.
	beyond := off > devSize || size > devSize-off
	o := int64(min(off, devSize))
	n := int64(min(size, devSize-uint64(o)))
	var err error
	switch mode &^ fallocKeepSize {
	case 0: // preallocate: every byte of a device is allocated already
		if beyond && !keep {
			return syscall.EFBIG
		}
		return 0
	case fallocPunchHole:
		if !keep {
			return syscall.EOPNOTSUPP // fallocate(2): PUNCH_HOLE needs KEEP_SIZE
		}
		err = f.io.ZeroRange(ctx, o, n, zeroPunch)
	case fallocZeroRange:
		if beyond && !keep {
			return syscall.EFBIG
		}
		err = f.io.ZeroRange(ctx, o, n, zeroKeep)
	default: // COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE, combinations
		return syscall.EOPNOTSUPP
	}
	if err != nil {
		return f.fail("fallocate", o, n, err)
	}
	f.mtime.Store(time.Now().UnixNano())
	return 0
}

func (f *fileNode) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	var data bool
	switch whence {
	case seekData:
		data = true
	case seekHole:
	default:
		return 0, syscall.EINVAL
	}
	if off >= uint64(f.io.size) {
		return 0, syscall.ENXIO
	}
	pos, err := f.io.Seek(ctx, int64(off), data)
	if err != nil {
		return 0, f.fail("lseek", int64(off), 0, err)
	}
	return uint64(pos), 0
}
