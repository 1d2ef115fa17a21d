package blockcopy

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/filedev"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// patternDev is a read-only device of any size whose content is computed
// from the offset: all data, no storage.
type patternDev struct{ size int64 }

func (d *patternDev) Size() int64    { return d.size }
func (d *patternDev) BlockSize() int { return 512 }
func (d *patternDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := blockdev.CheckRange(d, off, int64(len(p))); err != nil {
		return err
	}
	for i := 0; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], uint64(off+int64(i))*0x9e3779b97f4a7c15|1)
	}
	return nil
}
func (d *patternDev) WriteAt(context.Context, []byte, int64, bool) error { return blockdev.ErrReadOnly }
func (d *patternDev) Flush(context.Context) error                        { return nil }
func (d *patternDev) Close() error                                       { return nil }

// heapPeak samples HeapInuse until stop is closed.
func heapPeak(stop <-chan struct{}, peak *atomic.Uint64) {
	var ms runtime.MemStats
	for {
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > peak.Load() {
			peak.Store(ms.HeapInuse)
		}
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func measureAlloc(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := make(chan struct{})
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() { heapPeak(stop, &peak); close(done) }()
	start := time.Now()
	fn()
	close(stop)
	<-done
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%s: %v, allocated %d MiB in total, peak heap in use %d MiB, Sys %d MiB",
		name, time.Since(start).Round(time.Millisecond), alloc>>20, peak.Load()>>20, after.Sys>>20)
	if alloc > 100<<20 || peak.Load() > 100<<20 {
		t.Fatalf("%s: memory not bounded: allocated %d MiB, peak %d MiB", name, alloc>>20, peak.Load()>>20)
	}
}

// TestBoundedMemory4GiB pulls 4 GiB devices: one all data (streamed), one
// sparse file-backed (to a file on /dev/shm, with checksum). Memory stays
// below 100 MiB either way.
func TestBoundedMemory4GiB(t *testing.T) {
	testenv.Short(t)
	const size = 4 << 30
	measureAlloc(t, "4 GiB data → stream", func() {
		res, err := ToWriter(context.Background(), &patternDev{size: size}, io.Discard, Options{})
		if err != nil || res.BytesRead != size {
			t.Fatalf("%v %+v", err, res)
		}
	})

	dir := shmDir(t)
	srcPath := filepath.Join(dir, "src")
	f, err := os.Create(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	buf := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(9, 9))
	for off := int64(0); off < size; off += 64 << 20 {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		f.WriteAt(buf, off+int64(r.IntN(60))<<20)
	}
	f.Close()
	src, err := filedev.Open(srcPath, 512, true)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	buf = nil
	out := filepath.Join(dir, "out")
	measureAlloc(t, "4 GiB sparse → file", func() {
		res, err := PullFile(context.Background(), src, out, PullOptions{Options: Options{Checksum: true}})
		if err != nil || res.BytesWritten != 64<<20 {
			t.Fatalf("%v %+v", err, res)
		}
	})
	if du := allocated(t, out); du > 80<<20 {
		t.Fatalf("output allocates %d MiB", du>>20)
	}
}

func shmDir(t *testing.T) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("/dev/shm", "blockcopy-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestMeasureThroughput reports (does not assert) pull throughput from a
// file-backed device on /dev/shm to /dev/shm. Set LUNBRIDGE_MEASURE=1.
func TestMeasureThroughput(t *testing.T) {
	if os.Getenv("LUNBRIDGE_MEASURE") == "" {
		t.Skip("set LUNBRIDGE_MEASURE=1 to measure")
	}
	const size = 1 << 30
	dir := shmDir(t)
	for _, tc := range []struct {
		name    string
		written float64
	}{{"random 100%", 1}, {"sparse 10% (1 MiB runs)", 0.1}, {"sparse 10% (4 KiB runs)", -0.1}} {
		srcPath := filepath.Join(dir, "src")
		os.Remove(srcPath)
		f, _ := os.Create(srcPath)
		f.Truncate(size)
		r := rand.New(rand.NewPCG(1, 1))
		run := 1 << 20
		frac := tc.written
		if frac < 0 {
			run, frac = 4096, -frac
		}
		buf := make([]byte, run)
		for off := int64(0); off < size; off += int64(run) {
			if r.Float64() < frac {
				for i := range buf {
					buf[i] = byte(r.Uint32())
				}
				f.WriteAt(buf, off)
			}
		}
		f.Close()
		src, _ := filedev.Open(srcPath, 512, true)
		for _, sha := range []bool{false, true, false} {
			out := filepath.Join(dir, "out")
			os.Remove(out)
			res, err := PullFile(context.Background(), src, out, PullOptions{Options: Options{Checksum: sha}, Force: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%-26s sha256=%-5v %7.0f MB/s  read %4d MiB  written %4d MiB  holes %4d MiB  du %4d MiB",
				tc.name, sha, res.MBPerSec(), res.BytesRead>>20, res.BytesWritten>>20, res.HoleBytes>>20, allocated(t, out)>>20)
			os.Remove(out)
		}
		src.Close()
	}
}
