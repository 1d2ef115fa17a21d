package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

func waitSync(t *testing.T, m *Mirror) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := m.WaitResync(ctx, time.Second, nil); err != nil {
		t.Fatalf("resync: %v; %+v", err, m.Status())
	}
	return m.Status()
}

func TestMetadataRoundTrip(t *testing.T) {
	h := &header{Mirror: newUUID(), Leg: newUUID(), Peer: newUUID(), Index: 1, LegSize: 1 << 30, Exported: 1<<30 - 1<<20,
		Chunk: 4 << 20, BlockSize: 512, Unit: 4096, BitmapBytes: 4096, Events: 7, Gen: 3, GenID: 99, InSync: 2,
		WWID: "naa.6001405abc", PeerWWID: "naa.6001405def", Updated: 5}
	b := h.encode(4096)
	g, err := decodeHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, h) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", g, h)
	}
	b[200] ^= 1
	if _, err := decodeHeader(b); !errors.Is(err, errMetaChecksum) {
		t.Fatalf("corrupt header: %v", err)
	}
}

func TestWritesReachBothLegs(t *testing.T) {
	ctx := context.Background()
	a, b := newLegs()
	m, err := Create(ctx, wrap(a), wrap(b), CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(testSize - 2*4096 - 2*4096); m.Size() != want {
		t.Fatalf("size %d, want %d", m.Size(), want)
	}
	md := newModel(m.Size())
	stop := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() { close(stop) })
	n, errs := md.workload(ctx, m, 8, m.Size(), stop)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if st := m.Status(); st.DirtyChunks == 0 || st.State != "active" {
		t.Fatalf("after writes: %+v", st)
	}
	// Bits are cleared lazily once chunks are idle and flushed.
	deadline := time.Now().Add(5 * time.Second)
	for m.Status().DirtyChunks != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if st := m.Status(); st.DirtyChunks != 0 {
		t.Fatalf("bits not cleared: %+v", st)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes", n)
	for _, leg := range []blockdev.Device{a, b} {
		if !bytes.Equal(readAll(t, leg, m.Size()), md.data) {
			t.Fatal("a leg alone does not hold the acknowledged data")
		}
	}
	st, err := Inspect(ctx, a, b)
	if err != nil || st.State != "clean" {
		t.Fatalf("inspect: %v %+v", err, st)
	}
}

func TestDegradedThenIncrementalResync(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	a, b := wrap(ma), wrap(mb)
	m, err := Create(ctx, a, b, CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	md := newModel(m.Size())
	stop := make(chan struct{})
	done := make(chan struct{})
	var n int64
	var errs []error
	// Writers touch the first 16 MiB only, so few chunks get dirty.
	go func() { n, errs = md.workload(ctx, m, 8, 16<<20, stop); close(done) }()
	time.Sleep(100 * time.Millisecond)
	b.dead.Store(true) // leg B's target goes away mid-write
	time.Sleep(200 * time.Millisecond)
	if st := m.Status(); st.State != "degraded" || st.Legs[1].State != "failed" {
		t.Fatalf("not degraded: %+v", st)
	}
	// On-disk: leg A records that it went on without B.
	ha, err := readHeader(ctx, ma)
	if err != nil || ha.InSync != 1 {
		t.Fatalf("leg A metadata: %v %+v", err, ha)
	}
	b2 := wrap(mb)
	if err := m.Reattach(ctx, b2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	<-done
	if len(errs) > 0 {
		t.Fatalf("caller saw errors: %v", errs)
	}
	st := waitSync(t, m)
	t.Logf("%d writes; resync %s: %d of %d bytes (%.1f%%), %.0f MB/s", n, st.Resync.Mode, st.BytesResynced, m.Size(),
		100*float64(st.BytesResynced)/float64(m.Size()), st.Resync.MBPerSec)
	if st.Resync.Mode != "incremental" || st.BytesResynced == 0 || st.BytesResynced > 17<<20 {
		t.Fatalf("resync copied %d bytes (mode %s), want only the dirty chunks of the first 16 MiB", st.BytesResynced, st.Resync.Mode)
	}
	if st.State == "degraded" || st.Legs[1].State != "in-sync" {
		t.Fatalf("after resync: %+v", st)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	sameData(t, ma, mb, m.Size())
	if !bytes.Equal(readAll(t, ma, m.Size()), md.data) {
		t.Fatal("acknowledged data lost")
	}
}

func TestLastLegNeverFailed(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	a, b := wrap(ma), wrap(mb)
	m, err := Create(ctx, a, b, CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	b.failFlush.Store(true)
	if err := m.Flush(ctx); err != nil {
		t.Fatalf("flush with one failing leg: %v", err)
	}
	if st := m.Status(); st.Legs[1].State != "failed" {
		t.Fatalf("leg failing a flush not failed: %+v", st.Legs[1])
	}
	a.setMedium(0, 4096)
	buf := make([]byte, 4096)
	if err := m.ReadAt(ctx, buf, 0); !errors.Is(err, blockdev.ErrMedium) {
		t.Fatalf("medium error on the last leg: %v", err)
	}
	a.dead.Store(true)
	if err := m.WriteAt(ctx, buf, 0, false); !errors.Is(err, blockdev.ErrUnavailable) {
		t.Fatalf("write on a dead last leg: %v", err)
	}
	if st := m.Status(); st.Legs[0].State != "in-sync" {
		t.Fatalf("last leg failed: %+v", st.Legs[0])
	}
	m.halt()
}

func TestReadRepair(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	a, b := wrap(ma), wrap(mb)
	m, err := Create(ctx, a, b, CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte("lunbridge"), 1024)[:8192]
	if err := m.WriteAt(ctx, p, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	ma.WriteAt(ctx, make([]byte, 4096), 1<<20, false) // rot behind our back
	a.setMedium(1<<20, 1<<20+4096)
	b.setMedium(0, 0)
	for i := 0; i < 4; i++ { // whichever leg is picked, the data comes back
		got := make([]byte, 8192)
		if err := m.ReadAt(ctx, got, 1<<20); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("read %d: %v equal=%v", i, err, bytes.Equal(got, p))
		}
	}
	got := make([]byte, 8192)
	ma.ReadAt(ctx, got, 1<<20)
	if !bytes.Equal(got, p) {
		t.Fatal("bad range not rewritten from the good leg")
	}
	if st := m.Status(); st.State == "degraded" {
		t.Fatalf("medium error failed the leg: %+v", st)
	}
	m.Close()
}

func TestCrashOnlyDirtyChunksResynced(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	a, b := wrap(ma), wrap(mb)
	m, err := Create(ctx, a, b, CreateOptions{Options: Options{BitmapIdle: time.Hour}, ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	b.writeDelay.Store(int64(2 * time.Millisecond)) // B lags: in-flight writes are on A only
	md := newModel(m.Size())
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { md.workload(ctx, m, 8, 8<<20, stop); close(done) }()
	time.Sleep(200 * time.Millisecond)
	a.dead.Store(true) // SIGKILL: nothing reaches the legs any more
	b.dead.Store(true)
	close(stop)
	<-done
	m.halt()

	st0, err := Inspect(ctx, ma, mb)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: Options{BitmapIdle: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	st := waitSync(t, m2)
	t.Logf("crash: %s; dirty %d chunks; resynced %d of %d bytes", st0.Verdict, st0.DirtyChunks, st.BytesResynced, m2.Size())
	if st.Resync == nil || st.Resync.Mode != "crash" || st.BytesResynced != st0.DirtyChunks*testChunk || st0.DirtyChunks > 8 {
		t.Fatalf("want only the %d dirty chunks resynced: %+v", st0.DirtyChunks, st.Resync)
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	sameData(t, ma, mb, m2.Size())
}

func TestSplitBrainRefusedPreferResyncs(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	m, err := Create(ctx, wrap(ma), wrap(mb), CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	for i, d := range []*blockdevtest.Mem{ma, mb} {
		var m1 *Mirror
		if i == 0 {
			m1, err = Assemble(ctx, wrap(d), nil, AssembleOptions{Options: testOpts()})
		} else {
			m1, err = Assemble(ctx, nil, wrap(d), AssembleOptions{Options: testOpts()})
		}
		if err != nil {
			t.Fatalf("degraded start on leg %s: %v", legName(i), err)
		}
		if err := m1.WriteAt(ctx, bytes.Repeat([]byte{byte('A' + i)}, 4096), int64(i)<<20, false); err != nil {
			t.Fatal(err)
		}
		m1.Close()
		time.Sleep(10 * time.Millisecond)
	}
	_, err = Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: testOpts()})
	if !errors.Is(err, ErrSplitBrain) || !strings.Contains(err.Error(), "leg A") || !strings.Contains(err.Error(), "written without leg") {
		t.Fatalf("split brain not refused: %v", err)
	}
	t.Log(err)
	st, err := Inspect(ctx, ma, mb)
	if err != nil || st.State != "split-brain" {
		t.Fatalf("inspect: %v %+v", err, st)
	}
	m2, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: testOpts(), Prefer: "A"})
	if err != nil {
		t.Fatal(err)
	}
	s := waitSync(t, m2)
	if s.Resync.Mode != "full" || s.BytesResynced != m2.Size() {
		t.Fatalf("prefer: %+v", s.Resync)
	}
	m2.Close()
	sameData(t, ma, mb, m2.Size())
	got := make([]byte, 4096)
	mb.ReadAt(ctx, got, 0)
	if got[0] != 'A' {
		t.Fatal("leg B not resynced from A")
	}
	mb.ReadAt(ctx, got, 1<<20)
	if got[0] != 0 {
		t.Fatal("leg B kept its own write")
	}
	if _, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{}); err != nil {
		t.Fatalf("after prefer: %v", err)
	}
}

func TestCheckFindsAndRepairs(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	m, err := Create(ctx, wrap(ma), wrap(mb), CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{7}, 1<<20)
	if err := m.WriteAt(ctx, p, 3<<20, false); err != nil {
		t.Fatal(err)
	}
	mb.WriteAt(ctx, []byte(strings.Repeat("x", 512)), 3<<20+4096, false) // behind our back
	r, err := m.Check(ctx, false)
	if err != nil || r.Mismatches != 1 || r.MismatchBlocks != 1 || r.FirstOffsets[0] != 3<<20+4096 {
		t.Fatalf("check: %v %+v", err, r)
	}
	if r, err = m.Check(ctx, true); err != nil || r.Repaired != 1 {
		t.Fatalf("repair: %v %+v", err, r)
	}
	if r, err = m.Check(ctx, false); err != nil || r.Mismatches != 0 || r.Chunks != m.nchunks {
		t.Fatalf("after repair: %v %+v", err, r)
	}
	m.Close()
}

func TestTornMetadataSurvives(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	m, err := Create(ctx, wrap(ma), wrap(mb), CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	m.WriteAt(ctx, make([]byte, 4096), 0, false)
	m.halt() // bit 0 dirty on both legs
	for _, d := range []*blockdevtest.Mem{ma, mb} {
		h, err := readHeader(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		// Tear the newest slot: a half-written bitmap on A, a garbage header on B.
		if d == ma {
			d.WriteAt(ctx, bytes.Repeat([]byte{0xff}, 512), h.layout().bitmapOff(h.slot), false)
		} else {
			d.WriteAt(ctx, bytes.Repeat([]byte{0xee}, 512), h.layout().headerOff(h.slot), false)
		}
		g, err := readHeader(ctx, d)
		if err != nil || g.slot == h.slot || g.Events >= h.Events {
			t.Fatalf("torn slot not survived: %v", err)
		}
	}
	m2, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: testOpts()})
	if err != nil {
		t.Fatal(err)
	}
	waitSync(t, m2)
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestInitialSyncAndMismatchedLegs(t *testing.T) {
	ctx := context.Background()
	ma := blockdevtest.NewMem(testSize, 512)
	mb := blockdevtest.NewMem(testSize+8<<20, 4096)
	ma.WriteAt(ctx, bytes.Repeat([]byte{1}, 1<<20), 5<<20, false)
	m, err := Create(ctx, wrap(ma), wrap(mb), CreateOptions{Options: testOpts(), ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	if m.BlockSize() != 4096 {
		t.Fatalf("block size %d", m.BlockSize())
	}
	st := waitSync(t, m)
	if st.BytesResynced != m.Size() || st.State == "degraded" {
		t.Fatalf("initial sync: %+v", st)
	}
	m.Close()
	sameData(t, ma, mb, m.Size())
	if _, err := Create(ctx, ma, mb, CreateOptions{}); !errors.Is(err, ErrHasMetadata) {
		t.Fatalf("create over a mirror: %v", err)
	}
	other := blockdevtest.NewMem(testSize, 512)
	m3, err := Create(ctx, wrap(other), blockdevtest.NewMem(testSize, 512), CreateOptions{AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	m3.Close()
	if _, err := Assemble(ctx, wrap(ma), wrap(other), AssembleOptions{}); !errors.Is(err, ErrMismatch) {
		t.Fatalf("legs of two mirrors: %v", err)
	}
}

// Closing a mirror in the middle of a resync stops the resync; the copies
// cut short by that are not the target leg's fault, so the leg is not
// failed: the next assembly resumes the resync from the bitmap.
func TestCloseDuringResyncKeepsTheLeg(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	a, b := wrap(ma), wrap(mb)
	b.writeDelay.Store(int64(2 * time.Millisecond)) // slow enough to be mid-copy
	opts := testOpts()
	m, err := Create(ctx, a, b, CreateOptions{Options: opts, ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.Status().BytesResynced == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := m.Status(); st.BytesResynced == 0 || st.BytesResynced >= m.Size() {
		t.Fatalf("resync not under way: %+v", st)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	st := m.Status()
	if st.Legs[1].State == "failed" || st.Legs[1].Error != "" {
		t.Fatalf("closing mid-resync failed leg B: %+v", st.Legs[1])
	}
	// Assembled again, the resync picks up where it stopped.
	b.writeDelay.Store(0)
	m2, err := Assemble(ctx, a, b, AssembleOptions{Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	st = waitSync(t, m2)
	if st.Legs[1].State != "in-sync" {
		t.Fatalf("after the resumed resync: %+v", st)
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	sameData(t, ma, mb, m2.Size())
}

// statusErr carries a SCSI status the way initiator/scsi.SenseError does.
type statusErr uint8

func (e statusErr) Error() string     { return fmt.Sprintf("scsi status %#x", uint8(e)) }
func (e statusErr) ScsiStatus() uint8 { return uint8(e) }

// TestBusyDoesNotFailLeg: a leg answering BUSY past its retry budget
// (blockdev.ErrBusy) or TASK ABORTED (a LUN reset by another initiator)
// is not failed by a read or by a write no leg completed (review #8).
func TestBusyDoesNotFailLeg(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{{"ErrBusy", fmt.Errorf("lun 0: %w", blockdev.ErrBusy)}, {"TASK ABORTED", fmt.Errorf("write: %w", statusErr(0x40))}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ma, mb := newLegs()
			a, b := wrap(ma), wrap(mb)
			a.opErr, b.opErr = tc.err, tc.err
			m, err := Create(ctx, a, b, CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
			if err != nil {
				t.Fatal(err)
			}
			defer m.halt()
			buf := make([]byte, 4096)
			// Chunk 0 dirty first, so the injected errors hit data, not
			// the bitmap write.
			if err := m.WriteAt(ctx, buf, 0, false); err != nil {
				t.Fatal(err)
			}
			// A read: served by the other leg, the busy leg stays.
			a.errOps.Store(1)
			b.errOps.Store(1)
			if err := m.ReadAt(ctx, buf, 0); err != nil && !errors.Is(err, blockdev.ErrBusy) && !errors.Is(err, tc.err) {
				t.Fatalf("read: %v", err)
			}
			// A write neither leg completed: the caller hears of it, no
			// leg is failed.
			a.errOps.Store(1)
			b.errOps.Store(1)
			if err := m.WriteAt(ctx, buf, 0, false); err == nil {
				t.Fatal("write that no leg completed succeeded")
			}
			for i, l := range m.Status().Legs {
				if l.State != "in-sync" {
					t.Fatalf("leg %d failed by %v: %+v", i, tc.err, l)
				}
			}
			if err := m.WriteAt(ctx, buf, 0, false); err != nil {
				t.Fatalf("write after the busy spell: %v", err)
			}
		})
	}
}
