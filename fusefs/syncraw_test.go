package fusefs

import (
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// noNodeRaw stands in for a go-fuse bridge that does not pass the request's
// cancel channel on to the node: its writes never reach fileNode.Write.
type noNodeRaw struct {
	fuse.RawFileSystem
	writes int
}

func (r *noNodeRaw) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	r.writes++
	return uint32(len(data[0])), fuse.OK
}

// TestSyncRawFallbackFlush: an O_DSYNC write that was not written with FUA
// (the node never saw the request's flags) is followed by a device flush
// before the reply; a plain write is not.
func TestSyncRawFallbackFlush(t *testing.T) {
	m := blockdevtest.NewMem(1<<20, 512)
	file := &fileNode{io: newBlockIO(m)}
	inner := &noNodeRaw{RawFileSystem: fuse.NewDefaultRawFileSystem()}
	raw := &syncRaw{RawFileSystem: inner, file: file}
	cancel := make(chan struct{})
	for _, tc := range []struct {
		flags   uint32
		flushes int64
	}{{syscall.O_RDWR, 0}, {syscall.O_RDWR | syscall.O_DSYNC, 1}, {syscall.O_RDWR | syscall.O_SYNC, 2}} {
		n, st := raw.Writev(cancel, &fuse.WriteIn{Flags: tc.flags, Size: 512}, [][]byte{make([]byte, 512)})
		if n != 512 || !st.Ok() {
			t.Fatalf("flags %#x: Writev = %d, %v", tc.flags, n, st)
		}
		if got := m.Flushes.Load(); got != tc.flushes {
			t.Errorf("flags %#x: %d flushes after the write, want %d", tc.flags, got, tc.flushes)
		}
		if _, ok := file.dsync.Load((<-chan struct{})(cancel)); ok {
			t.Errorf("flags %#x: request still recorded after the reply", tc.flags)
		}
	}
}
