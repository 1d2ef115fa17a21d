package fusefs_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
	"github.com/lunbridge/lunbridge/fusefs"
	"github.com/lunbridge/lunbridge/fusefs/fusefstest"
)

// slowDev adds latency to every read and write, like a LUN across a
// network, which widens race windows and shows whether requests overlap.
type slowDev struct {
	blockdev.Device
	delay time.Duration
}

func (d slowDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	time.Sleep(d.delay)
	return d.Device.ReadAt(ctx, p, off)
}

func (d slowDev) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	time.Sleep(d.delay)
	return d.Device.WriteAt(ctx, p, off, fua)
}

// TestParallelDirectWrites: writes from several threads to disjoint blocks
// reach the device concurrently (FOPEN_PARALLEL_DIRECT_WRITES), and reads too.
func TestParallelDirectWrites(t *testing.T) {
	const workers, ops, delay = 8, 20, 5 * time.Millisecond
	mp := fusefstest.Mount(t, slowDev{blockdevtest.NewMem(16<<20, 4096), delay}, fusefs.Options{})
	for _, write := range []bool{true, false} {
		start := time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, err := os.OpenFile(mp.File(), os.O_RDWR, 0)
				if err != nil {
					t.Error(err)
					return
				}
				defer f.Close()
				p := make([]byte, 4096)
				for i := range ops {
					off := int64((w*ops + i) * 4096)
					if write {
						_, err = f.WriteAt(p, off)
					} else {
						_, err = f.ReadAt(p, off)
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		serial := time.Duration(workers*ops) * delay
		t.Logf("write=%v: %d ops of %v each took %v (serial would be %v)", write, workers*ops, delay, el, serial)
		if el > serial*2/3 {
			t.Errorf("write=%v: requests did not run in parallel: %v for %v of serial work", write, el, serial)
		}
	}
}

// TestConcurrentWritersSlow: with device latency, unlocked read-modify-write
// would lose updates almost every time.
func TestConcurrentWritersSlow(t *testing.T) {
	fusefstest.RunConcurrentWriters(t, slowDev{blockdevtest.NewMem(1<<20, 4096), 200 * time.Microsecond})
}

// stuckDev blocks reads of its first block until the request is cancelled.
type stuckDev struct {
	blockdev.Device
	started   chan struct{}
	cancelled chan error
}

func (d *stuckDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	if off != 0 {
		return d.Device.ReadAt(ctx, p, off)
	}
	close(d.started)
	<-ctx.Done()
	d.cancelled <- ctx.Err()
	return ctx.Err()
}

// TestInterruptCancelsDevice: killing a process stuck in a read sends
// FUSE_INTERRUPT, which cancels the device call's context.
func TestInterruptCancelsDevice(t *testing.T) {
	d := &stuckDev{Device: blockdevtest.NewMem(1<<20, 512), started: make(chan struct{}), cancelled: make(chan error, 1)}
	mp := fusefstest.Mount(t, d, fusefs.Options{})
	cmd := exec.Command("dd", "if="+mp.File(), "of=/dev/null", "bs=4096", "count=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.started:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the read never reached the device")
	}
	cmd.Process.Kill()
	cmd.Wait()
	select {
	case err := <-d.cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("device call ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the device call was not cancelled after the reader was killed")
	}
}
