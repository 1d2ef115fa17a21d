package fusefs

import (
	"context"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// syncRaw wraps the raw file system of go-fuse's fs bridge to honour the
// per-request O_DSYNC the kernel puts in fuse_write_in.flags. With direct
// I/O the kernel sends no FSYNC after an O_DSYNC, O_SYNC or RWF_DSYNC
// write: the daemon must make the write durable before it replies. The
// bridge drops WriteIn.Flags before calling the node, so syncRaw records
// the request (by its cancel channel, which the bridge passes on as the
// fuse.Context's Cancel) for fileNode.Write to find and write with FUA.
// Should a go-fuse release ever stop passing that channel through, the
// write is not marked as done with FUA and syncRaw flushes the device
// before replying: slower, never less durable.
type syncRaw struct {
	fuse.RawFileSystem
	file *fileNode
}

func (r *syncRaw) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if in.Flags&syscall.O_DSYNC == 0 {
		return r.RawFileSystem.Write(cancel, in, data)
	}
	mark := r.begin(cancel)
	n, st := r.RawFileSystem.Write(cancel, in, data)
	return r.end(cancel, mark, n, st)
}

func (r *syncRaw) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if in.Flags&syscall.O_DSYNC == 0 {
		return r.RawFileSystem.Writev(cancel, in, data)
	}
	mark := r.begin(cancel)
	n, st := r.RawFileSystem.Writev(cancel, in, data)
	return r.end(cancel, mark, n, st)
}

func (r *syncRaw) begin(cancel <-chan struct{}) *atomic.Bool {
	mark := new(atomic.Bool)
	if cancel != nil {
		r.file.dsync.Store(cancel, mark)
	}
	return mark
}

func (r *syncRaw) end(cancel <-chan struct{}, mark *atomic.Bool, n uint32, st fuse.Status) (uint32, fuse.Status) {
	if cancel != nil {
		r.file.dsync.Delete(cancel)
	}
	if !st.Ok() || n == 0 || mark.Load() {
		return n, st
	}
	if err := r.file.io.Flush(context.Background(), false); err != nil {
		return 0, fuse.Status(r.file.fail("write sync", int64(0), int64(n), err))
	}
	return n, st
}
