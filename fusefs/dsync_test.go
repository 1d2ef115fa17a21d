package fusefs_test

import (
	"context"
	"os"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
	"github.com/lunbridge/lunbridge/fusefs"
	"github.com/lunbridge/lunbridge/fusefs/fusefstest"
)

// durDev counts the writes that reach the device with FUA, those without,
// and the flushes.
type durDev struct {
	blockdev.Device
	fua, plain, flushes atomic.Int64
}

func (d *durDev) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if fua {
		d.fua.Add(1)
	} else {
		d.plain.Add(1)
	}
	return d.Device.WriteAt(ctx, p, off, fua)
}

func (d *durDev) Flush(ctx context.Context) error {
	d.flushes.Add(1)
	return d.Device.Flush(ctx)
}

func (d *durDev) reset() { d.fua.Store(0); d.plain.Store(0); d.flushes.Store(0) }

// TestSyncWrites: a write through a handle opened O_SYNC or O_DSYNC, or
// issued with pwritev2(RWF_DSYNC), is durable on the device (FUA, or a
// flush) when the system call returns — the kernel sends no FSYNC for it
// under direct I/O. A plain write is not (review #4).
func TestSyncWrites(t *testing.T) {
	for _, bs := range []int{512, 4096} {
		d := &durDev{Device: blockdevtest.NewMem(16*mib, bs)}
		mp := fusefstest.Mount(t, d, fusefs.Options{})
		buf := make([]byte, 8192)
		for i := range buf {
			buf[i] = byte(i)
		}
		for _, tc := range []struct {
			name  string
			flags int
			rwf   int // pwritev2 flags; 0 means pwrite
			sync  bool
		}{
			{"plain", os.O_RDWR, 0, false},
			{"O_DSYNC", os.O_RDWR | unix.O_DSYNC, 0, true},
			{"O_SYNC", os.O_RDWR | unix.O_SYNC, 0, true},
			{"RWF_DSYNC", os.O_RDWR, unix.RWF_DSYNC, true},
			{"RWF_SYNC", os.O_RDWR, unix.RWF_SYNC, true},
		} {
			for _, w := range []struct {
				off int64
				n   int
			}{{0, 8192}, {1000, 100}, {int64(bs) - 7, 4096}} {
				f, err := os.OpenFile(mp.File(), tc.flags, 0)
				if err != nil {
					t.Fatal(err)
				}
				d.reset()
				var n int
				if tc.rwf != 0 {
					n, err = unix.Pwritev2(int(f.Fd()), [][]byte{buf[:w.n]}, w.off, tc.rwf)
				} else {
					n, err = f.WriteAt(buf[:w.n], w.off)
				}
				fua, plain, flushes := d.fua.Load(), d.plain.Load(), d.flushes.Load()
				f.Close()
				if err != nil || n != w.n {
					t.Fatalf("bs %d %s: write %d at %d: %d, %v", bs, tc.name, w.n, w.off, n, err)
				}
				// Durable: every device write was FUA, or a flush followed.
				durable := plain == 0 && fua > 0 || flushes > 0
				if durable != tc.sync {
					t.Errorf("bs %d %s: write %d at %d returned after %d FUA writes, %d plain writes, %d flushes; want durable=%v",
						bs, tc.name, w.n, w.off, fua, plain, flushes, tc.sync)
				}
			}
		}
	}
}
