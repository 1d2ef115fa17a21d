package mirror

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// withWWID gives a device an identity, like a LUN reached through two
// portals.
type withWWID struct {
	blockdev.Device
	wwid string
}

func (w withWWID) Identity() blockdev.Identity {
	return blockdev.Identity{WWID: w.wwid, Size: w.Size(), Block: w.BlockSize()}
}

// keepOpen survives the mirror's Close, so the test can look at the leg.
type keepOpen struct{ *blockdevtest.Mem }

func (keepOpen) Close() error { return nil }

// TestCreateRefusesSameLUN: one LUN given as both legs (the same device, or
// two handles with one WWID) is refused before anything is written.
func TestCreateRefusesSameLUN(t *testing.T) {
	ctx := context.Background()
	mem := blockdevtest.NewMem(testSize, 512)
	if m, err := Create(ctx, mem, mem, CreateOptions{AssumeClean: true}); !errors.Is(err, ErrSameLUN) {
		if m != nil {
			m.Close()
		}
		t.Fatalf("same device twice: %v, want ErrSameLUN", err)
	}
	a := withWWID{mem, "naa.6001405aaaaaaaaa"}
	b := withWWID{blockdevtest.NewMem(testSize, 512), "naa.6001405aaaaaaaaa"}
	if m, err := Create(ctx, a, b, CreateOptions{Force: true}); !errors.Is(err, ErrSameLUN) {
		if m != nil {
			m.Close()
		}
		t.Fatalf("same WWID twice: %v, want ErrSameLUN", err)
	}
	if ok, _ := HasMetadata(ctx, mem); ok {
		t.Fatal("a refused create wrote metadata")
	}
}

// TestPlanCreateMatchesCreate: the geometry shown before asking is what
// Create does: the exported size, and metadata written only inside
// [MetaStart, MetaStart+MetaBytes) of each leg.
func TestPlanCreateMatchesCreate(t *testing.T) {
	ctx := context.Background()
	ma := blockdevtest.NewMem(testSize, 512)
	mb := blockdevtest.NewMem(testSize+8<<20, 4096)
	g, err := PlanCreate(ma, mb, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := HasMetadata(ctx, ma); ok || err != nil {
		t.Fatalf("HasMetadata on an empty leg: %v %v", ok, err)
	}
	m, err := Create(ctx, keepOpen{ma}, keepOpen{mb}, CreateOptions{AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	if m.Size() != g.Exported || m.BlockSize() != g.BlockSize {
		t.Fatalf("plan %+v, mirror size %d block %d", g, m.Size(), m.BlockSize())
	}
	m.Close()
	for i, d := range []*blockdevtest.Mem{ma, mb} {
		if ok, err := HasMetadata(ctx, d); !ok || err != nil {
			t.Fatalf("leg %d: HasMetadata after create: %v %v", i, ok, err)
		}
		if g.MetaStart[i] < g.Exported || g.MetaStart[i]+g.MetaBytes[i] > d.Size() {
			t.Fatalf("leg %d: metadata [%d,+%d) overlaps the data or passes the end: %+v", i, g.MetaStart[i], g.MetaBytes[i], g)
		}
		es, err := d.Extents(ctx, 0, d.Size())
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.Flags&blockdev.ExtentHole == 0 && (e.Offset < g.MetaStart[i] || e.Offset+e.Length > g.MetaStart[i]+g.MetaBytes[i]) {
				t.Fatalf("leg %d: create wrote [%d,+%d) outside the planned metadata %+v", i, e.Offset, e.Length, g)
			}
		}
	}
	// A damaged superblock (bad checksum) still counts as mirror metadata.
	for slot := 0; slot < 2; slot++ {
		b := make([]byte, 4096)
		off := layout{unit: 4096, legSize: ma.Size()}.headerOff(slot)
		ma.ReadAt(ctx, b, off)
		b[100] ^= 0xff
		ma.WriteAt(ctx, b, off, false)
	}
	if ok, err := HasMetadata(ctx, ma); !ok || err != nil {
		t.Fatalf("HasMetadata on a damaged superblock: %v %v", ok, err)
	}
}

// TestCompareLegs: two fresh legs are proven equal from allocation alone;
// legs with equal data by reading; legs that differ name the first
// differing block, even when a later chunk differs too and is compared
// first by another worker.
func TestCompareLegs(t *testing.T) {
	ctx := context.Background()
	const n = 8 << 20
	a, b := blockdevtest.NewMem(n, 512), blockdevtest.NewMem(n, 512)
	res, err := CompareLegs(ctx, a, b, n, CompareOptions{})
	if err != nil || res.Method != "unmapped" || res.Compared != 0 || res.FirstDiff != -1 {
		t.Fatalf("fresh legs: %+v %v", res, err)
	}
	data := bytes.Repeat([]byte("lunbridge"), 512*7/9+1)[:512*7]
	for _, d := range []*blockdevtest.Mem{a, b} {
		d.WriteAt(ctx, data[:512*7/512*512], 3<<20, false)
	}
	var last int64
	res, err = CompareLegs(ctx, a, b, n, CompareOptions{ChunkSize: 64 << 10, Workers: 3, Progress: func(done, total int64) {
		if done < last || total != n {
			t.Errorf("progress %d/%d after %d", done, total, last)
		}
		last = done
	}})
	if err != nil || res.Method != "compared" || res.Compared != n || res.FirstDiff != -1 || last != n {
		t.Fatalf("equal legs: %+v %v (progress at %d)", res, err, last)
	}
	// Without Extenter the proof reads, even on fresh legs.
	c, d := blockdevtest.NewMem(n, 512), blockdevtest.NewMem(n, 512)
	if res, err := CompareLegs(ctx, wrap(c), wrap(d), n, CompareOptions{}); err != nil || res.Method != "compared" {
		t.Fatalf("legs without allocation status: %+v %v", res, err)
	}
	one := []byte{1}
	one = append(one, make([]byte, 511)...)
	b.WriteAt(ctx, one, 7<<20, false)
	b.WriteAt(ctx, one, 5<<20+1024, false)
	b.WriteAt(ctx, one, 5<<20+4096, false)
	for _, w := range []int{1, 4, 16} {
		res, err = CompareLegs(ctx, a, b, n, CompareOptions{ChunkSize: 64 << 10, Workers: w})
		if !errors.Is(err, ErrLegsDiffer) || res.FirstDiff != 5<<20+1024 {
			t.Fatalf("workers %d: differing legs: %+v %v, want the first difference at %d", w, res, err, 5<<20+1024)
		}
	}
	// Only the range asked about counts.
	if res, err := CompareLegs(ctx, a, b, 5<<20, CompareOptions{}); err != nil || res.FirstDiff != -1 {
		t.Fatalf("equal prefix: %+v %v", res, err)
	}
}
