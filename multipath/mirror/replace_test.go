package mirror

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// replaceMirror creates a clean mirror over two WWID-carrying legs, writes
// a pattern, and fails leg B: ready for ReplaceLeg.
func replaceMirror(t *testing.T, opts Options) (m *Mirror, a *blockdevtest.Mem, pattern []byte) {
	t.Helper()
	ctx := context.Background()
	a, b := newLegs()
	m, err := Create(ctx, withWWID{wrap(a), "wwid-a"}, withWWID{wrap(b), "wwid-b"}, CreateOptions{Options: opts, ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	pattern = make([]byte, 8<<20)
	rand.New(rand.NewSource(1)).Read(pattern)
	if err := m.WriteAt(ctx, pattern, 5<<20, false); err != nil {
		t.Fatal(err)
	}
	if err := m.FailLeg(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	return m, a, pattern
}

// roDev is a leg whose LUN is write protected.
type roDev struct{ blockdev.Device }

func (roDev) ReadOnly() bool { return true }

// TestReplaceLegRefusals: a healthy leg, a read-only device, one too
// small, the surviving leg's LUN (same device, same WWID, a copy of its
// metadata) and another mirror's leg are all refused, and the mirror is
// left as it was: leg B failed, leg A serving.
func TestReplaceLegRefusals(t *testing.T) {
	ctx := context.Background()
	a, b := newLegs()
	la := withWWID{wrap(a), "wwid-a"}
	m, err := Create(ctx, la, withWWID{wrap(b), "wwid-b"}, CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	fresh := func() blockdev.Device { return withWWID{wrap(blockdevtest.NewMem(testSize, 512)), "wwid-c"} }
	if err := m.ReplaceLeg(ctx, "B", fresh()); !errors.Is(err, blockdev.ErrInvalid) {
		t.Fatalf("replace of a healthy leg: %v, want ErrInvalid", err)
	}
	if st := m.Status(); st.Legs[1].State != "in-sync" {
		t.Fatalf("a refused replace touched the healthy leg: %+v", st.Legs[1])
	}
	if err := m.FailLeg(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	if err := m.ReplaceLeg(ctx, "A", fresh()); !errors.Is(err, blockdev.ErrInvalid) {
		t.Fatalf("replace of leg A, the only in-sync leg: %v", err)
	}

	// Another mirror's leg C (clean, not in use) and its partner D.
	mc, md := blockdevtest.NewMem(testSize, 512), blockdevtest.NewMem(testSize, 512)
	other, err := Create(ctx, keepOpen{mc}, keepOpen{md}, CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	// A copy of leg A's metadata without a WWID (a cloned LUN).
	clone := blockdevtest.NewMem(testSize, 512)
	buf := readAll(t, a, testSize)
	if err := clone.WriteAt(ctx, buf, 0, false); err != nil {
		t.Fatal(err)
	}
	ro := blockdevtest.NewMem(testSize, 512)
	ro.SetReadOnly(true)

	for _, tc := range []struct {
		name string
		dev  blockdev.Device
		want error
	}{
		{"read-only", ro, blockdev.ErrReadOnly},
		{"too small", withWWID{blockdevtest.NewMem(m.Size(), 512), "wwid-small"}, ErrTooSmall},
		{"larger blocks", withWWID{blockdevtest.NewMem(testSize, 4096), "wwid-4k"}, ErrTooSmall},
		{"same device as leg A", la, ErrSameLUN},
		{"same WWID as leg A", withWWID{blockdevtest.NewMem(testSize, 512), "wwid-a"}, ErrSameLUN},
		{"copy of leg A", clone, ErrSameLUN},
	} {
		closes := &atomic.Int64{}
		err := m.ReplaceLeg(ctx, "B", &countClose{Device: tc.dev, n: closes})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if closes.Load() != 1 {
			t.Errorf("%s: refused device closed %d times", tc.name, closes.Load())
		}
	}
	// Another mirror's leg, in use: refused, also forced (alive here).
	if err := m.ReplaceLegWith(ctx, "B", keepOpen{mc}, ReplaceOptions{Force: true}); !errors.Is(err, ErrOwned) {
		t.Fatalf("leg of a mirror in use on this host, forced: %v, want ErrOwned", err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	// Closed cleanly: still refused without force.
	if err := m.ReplaceLeg(ctx, "B", keepOpen{mc}); !errors.Is(err, ErrHasMetadata) {
		t.Fatalf("leg of another mirror: %v, want ErrHasMetadata", err)
	}
	if st := m.Status(); st.Legs[1].State != "failed" || st.Legs[0].State != "in-sync" || st.Resync != nil && st.Resync.Mode == "replace" {
		t.Fatalf("after the refusals: %+v", st)
	}
	// Forced: taken and fully resynced.
	if err := m.ReplaceLegWith(ctx, "B", keepOpen{mc}, ReplaceOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	st := waitSync(t, m)
	if st.Legs[1].State != "in-sync" || st.Resync.Mode != "replace" {
		t.Fatalf("after a forced replace: %+v %+v", st.Legs[1], st.Resync)
	}
	sameData(t, a, mc, m.Size())
}

type countClose struct {
	blockdev.Device
	n *atomic.Int64
}

func (c *countClose) Close() error { c.n.Add(1); return nil }

func (c *countClose) ReadOnly() bool {
	r, ok := c.Device.(blockdev.ReadOnlyer)
	return ok && r.ReadOnly()
}

func (c *countClose) Identity() blockdev.Identity {
	if id, ok := c.Device.(interface{ Identity() blockdev.Identity }); ok {
		return id.Identity()
	}
	return blockdev.Identity{}
}

// TestReplaceLegFullResyncUnderWrites: a blank LUN replacing failed leg B
// gets every chunk (not only the dirty ones) copied from leg A, while
// writes go on and reach both legs; at the end the new leg equals leg A
// and what the writers were told, the old leg's device is closed, and the
// new leg has its own identity.
func TestReplaceLegFullResyncUnderWrites(t *testing.T) {
	ctx := context.Background()
	m, a, pattern := replaceMirror(t, testOpts())
	defer m.Close()
	before := m.Status()
	c := blockdevtest.NewMem(testSize+(4<<20), 512) // larger is fine
	fc := wrap(c)
	fc.writeDelay.Store(int64(200 * time.Microsecond)) // the resync overlaps the writes
	if err := m.ReplaceLeg(ctx, "B", withWWID{fc, "wwid-c"}); err != nil {
		t.Fatal(err)
	}
	st := m.Status()
	if st.Legs[1].State != "resyncing" || st.Resync == nil || st.Resync.Mode != "replace" || st.Resync.TotalChunks != st.Chunks {
		t.Fatalf("just after replace: %+v %+v", st.Legs[1], st.Resync)
	}
	if st.Legs[1].UUID == before.Legs[1].UUID || st.Legs[1].WWID != "wwid-c" {
		t.Fatalf("the new leg kept the old identity: %+v", st.Legs[1])
	}
	md := newModel(m.Size())
	copy(md.data[5<<20:], pattern)
	stop := make(chan struct{})
	done := make(chan struct{})
	var n int64
	var errs []error
	go func() {
		defer close(done)
		n, errs = md.workload(ctx, m, 4, m.Size(), stop)
	}()
	// Let writes overlap the copy, then let it finish.
	time.Sleep(300 * time.Millisecond)
	fc.writeDelay.Store(0)
	close(stop)
	<-done
	if len(errs) > 0 || n == 0 {
		t.Fatalf("%d writes, errors %v", n, errs)
	}
	st = waitSync(t, m)
	if st.Legs[1].State != "in-sync" || st.Resync.DoneChunks != st.Chunks {
		t.Fatalf("after the resync: %+v %+v", st.Legs[1], st.Resync)
	}
	sameData(t, a, c, m.Size())
	if got := readAll(t, c, m.Size()); !bytes.Equal(got, md.data) {
		t.Fatal("the new leg does not hold what the writers were told")
	}
}

// TestReplaceLegCrashMidResync: the process dies while the new leg is
// being copied. Its metadata says it is not in sync: alone it is refused,
// with leg A the copy resumes and completes.
func TestReplaceLegCrashMidResync(t *testing.T) {
	ctx := context.Background()
	opts := testOpts()
	m, a, _ := replaceMirror(t, opts)
	c := blockdevtest.NewMem(testSize, 512)
	fc := wrap(c)
	fc.writeDelay.Store(int64(2 * time.Millisecond))
	if err := m.ReplaceLeg(ctx, "B", fc); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.Status().Resync.DoneChunks < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := m.Status(); st.Resync.DoneChunks == 0 || st.Resync.DoneChunks >= st.Chunks {
		t.Fatalf("resync not under way: %+v", st.Resync)
	}
	m.halt() // crash: no clean close
	fc.writeDelay.Store(0)
	ins, err := Inspect(ctx, nil, c)
	if err != nil {
		t.Fatal(err)
	}
	if ins.Legs[1].State != "resync-target" {
		t.Fatalf("the half-copied new leg: %+v", ins.Legs[1])
	}
	if _, err := Assemble(ctx, nil, c, AssembleOptions{Options: opts}); !errors.Is(err, ErrNotInSync) {
		t.Fatalf("the half-copied new leg alone: %v, want ErrNotInSync", err)
	}
	m2, err := Assemble(ctx, wrap(a), fc, AssembleOptions{Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	st := waitSync(t, m2)
	if st.Legs[1].State != "in-sync" {
		t.Fatalf("after the resumed copy: %+v", st.Legs[1])
	}
	sameData(t, a, c, m2.Size())
}

// TestReplaceLegThenReadd: after a replace, automatic re-add accepts the
// new device (its new identity) once Installed pointed Reopen at it, and
// the prober never reopened the leg while the replace ran.
func TestReplaceLegThenReadd(t *testing.T) {
	ctx := context.Background()
	r := &reopener{}
	_, oldB := newLegs()
	r.set(func() blockdev.Device { return wrap(oldB) })
	r.down.Store(true)
	m, a, _ := replaceMirror(t, readdOpts(r))
	defer m.Close()
	if err := m.AddLeg(ctx, "B"); err == nil {
		t.Fatal("add of an unreachable leg succeeded")
	}
	c := blockdevtest.NewMem(testSize, 512)
	fc := wrap(c)
	calls := r.calls.Load()
	err := m.ReplaceLegWith(ctx, "B", nil, ReplaceOptions{
		Open: func(context.Context) (blockdev.Device, error) {
			time.Sleep(100 * time.Millisecond) // probes would be due meanwhile
			return fc, nil
		},
		Installed: func() { r.set(func() blockdev.Device { return wrap(c) }); r.down.Store(false) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.calls.Load(); got != calls {
		t.Fatalf("reopened the leg %d times during the replace", got-calls)
	}
	waitSync(t, m)
	fc.dead.Store(true) // the new leg fails; re-add reopens it
	if err := m.WriteAt(ctx, make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, m, 10*time.Second, "re-add of the new leg", func(st Status) bool { return bothInSync(st) && st.Legs[1].ReAdds > 0 })
	if st.Resync.Mode != "incremental" {
		t.Fatalf("re-add of the replaced leg: %+v", st.Resync)
	}
	sameData(t, a, c, m.Size())
}

// TestReattachBlankAfterDegradedStart: assembled with leg B missing and
// not written yet, a blank device given to Reattach is fully resynced, not
// taken as an in-sync leg B (which it is not: it holds none of the data).
func TestReattachBlankAfterDegradedStart(t *testing.T) {
	ctx := context.Background()
	a, b := newLegs()
	m, err := Create(ctx, wrap(a), wrap(b), CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 3<<20)
	rand.New(rand.NewSource(5)).Read(p)
	if err := m.WriteAt(ctx, p, 7<<20, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2, err := Assemble(ctx, wrap(a), nil, AssembleOptions{Options: testOpts()})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	c := blockdevtest.NewMem(testSize, 512)
	if err := m2.Reattach(ctx, wrap(c)); err != nil {
		t.Fatal(err)
	}
	st := waitSync(t, m2)
	if st.Legs[1].State != "in-sync" || st.Resync == nil || st.Resync.Mode != "full" {
		t.Fatalf("blank leg after a degraded start: %+v %+v", st.Legs[1], st.Resync)
	}
	sameData(t, a, c, m2.Size())
}
