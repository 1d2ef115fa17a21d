package blockcopy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// fillMem writes a mix into m: random data regions, explicit zero regions
// (allocated zeroes) and holes. It returns the full expected content.
func fillMem(t testing.TB, m *blockdevtest.Mem, seed uint64) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	size := m.Size()
	want := make([]byte, size)
	bs := int64(m.BlockSize())
	ctx := context.Background()
	for off := int64(0); off < size; {
		n := (r.Int64N(3<<20)/bs + 1) * bs
		n = min(n, size-off)
		switch r.IntN(4) {
		case 0, 1: // random data
			p := want[off : off+n]
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			if err := m.WriteAt(ctx, p, off, false); err != nil {
				t.Fatal(err)
			}
		case 2: // allocated zeroes
			if err := m.WriteAt(ctx, want[off:off+n], off, false); err != nil {
				t.Fatal(err)
			}
		case 3: // hole
		}
		off += n
	}
	return want
}

func sum(p []byte) string {
	h := sha256.Sum256(p)
	return hex.EncodeToString(h[:])
}

func readAll(t testing.TB, d blockdev.Device) []byte {
	t.Helper()
	p := make([]byte, d.Size())
	if err := d.ReadAt(context.Background(), p, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

// slowDev delays reads (randomly, so they complete out of order) and
// forwards the optional interfaces of the device it wraps.
type slowDev struct {
	blockdev.Device
	maxDelay time.Duration
	reads    atomic.Int64
	writes   atomic.Int64
	zeroes   atomic.Int64
	trims    atomic.Int64 // WriteZeroes calls with mayTrim
	id       string
}

func (s *slowDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	s.reads.Add(int64(len(p)))
	if s.maxDelay > 0 {
		select {
		case <-time.After(time.Duration(rand.Int64N(int64(s.maxDelay)))):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Device.ReadAt(ctx, p, off)
}

func (s *slowDev) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	s.writes.Add(int64(len(p)))
	return s.Device.WriteAt(ctx, p, off, fua)
}

func (s *slowDev) Extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error) {
	if e, ok := s.Device.(blockdev.Extenter); ok {
		return e.Extents(ctx, off, n)
	}
	return []blockdev.Extent{{Offset: off, Length: n}}, nil
}

func (s *slowDev) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	s.zeroes.Add(n)
	if mayTrim {
		s.trims.Add(1)
	}
	if z, ok := s.Device.(blockdev.Zeroer); ok {
		return z.WriteZeroes(ctx, off, n, mayTrim)
	}
	return blockdev.ErrNotSupported
}

func (s *slowDev) ReadOnly() bool {
	r, ok := s.Device.(blockdev.ReadOnlyer)
	return ok && r.ReadOnly()
}

func tempFile(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(t.TempDir(), name)
}

// allocated is the disk usage of path in bytes.
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st os.FileInfo
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return statBlocks(st) * 512
}

// fileIs fails the test unless the file at path holds exactly want.
func fileIs(t testing.TB, path string, want []byte, what string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: pulled file differs from the device", what)
	}
}
