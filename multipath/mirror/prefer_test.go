package mirror

import (
	"bytes"
	"context"
	"testing"
)

// TestPreferStaleLegLosesNothing is review #1: leg A dies, a write with FUA
// lands on leg B only, and a restart with Prefer "A" (a unit file that
// settles split brains automatically) must not copy the stale leg A over
// B. Prefer is refused; A is resynced from B.
func TestPreferStaleLegLosesNothing(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	a, b := wrap(ma), wrap(mb)
	m, err := Create(ctx, a, b, CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.WriteAt(ctx, bytes.Repeat([]byte{0xAA}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	a.dead.Store(true) // leg A lost
	if err := m.WriteAt(ctx, bytes.Repeat([]byte{0xBB}, 4096), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: testOpts(), Prefer: "A"})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if err := m2.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if got[0] != 0xBB {
		t.Fatalf("block 0 reads %#x after Assemble(Prefer: A), want the acknowledged 0xBB", got[0])
	}
	st := waitSync(t, m2)
	if st.Resync == nil || st.Resync.Target != "A" || st.Resync.Mode != "incremental" {
		t.Fatalf("stale leg A not resynced from B: %+v", st.Resync)
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	sameData(t, ma, mb, m2.Size())
	ma.ReadAt(ctx, got, 0)
	if got[0] != 0xBB {
		t.Fatalf("leg A block 0 %#x after resync, want 0xBB", got[0])
	}
}

// TestPreferCleanPairNotResynced: Prefer on a clean, in-sync pair changes
// nothing (review #1: it used to force a full resync on every start).
func TestPreferCleanPairNotResynced(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	m, err := Create(ctx, wrap(ma), wrap(mb), CreateOptions{Options: testOpts(), ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, leg := range []string{"A", "B"} {
		m2, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: testOpts(), Prefer: leg})
		if err != nil {
			t.Fatal(err)
		}
		st := waitSync(t, m2)
		if st.Resync != nil || st.BytesResynced != 0 || st.State != "clean" {
			t.Fatalf("Prefer %s on a clean pair: state %s, resync %+v, %d bytes copied", leg, st.State, st.Resync, st.BytesResynced)
		}
		if err := m2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
