package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// metaBytes is a leg's metadata area (bitmaps and headers).
func metaBytes(t *testing.T, d *blockdevtest.Mem) []byte {
	t.Helper()
	h, err := readHeader(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	start := h.layout().metaStart()
	b := make([]byte, d.Size()-start)
	if err := d.ReadAt(context.Background(), b, start); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOwnerRoundTrip(t *testing.T) {
	h := &header{Mirror: newUUID(), Index: 0, LegSize: 1 << 30, Exported: 1 << 29, Chunk: 4 << 20, BlockSize: 512,
		Unit: 4096, BitmapBytes: 4096, Gen: 1, GenID: 2, InSync: 3,
		Owner: Owner{Active: true, HostID: "3d1219c7c4c5404aaa1f6d2a48adfda4", Host: "vm", BootID: "51df5e46-fdae-4b33-baba-a83af49513aa",
			PID: 4242, ProcStart: 1761055, Since: 77, Assembly: 0xfeedface}}
	g, err := decodeHeader(h.encode(4096))
	if err != nil || !reflect.DeepEqual(g, h) {
		t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, g, h)
	}
	// A header without the owner words (as older versions wrote) has none.
	h.Owner = Owner{}
	b := h.encode(4096)
	if !bytes.Equal(b[328:512], make([]byte, 512-328)) {
		t.Fatal("no owner must leave the reserved bytes zero")
	}
	if g, err := decodeHeader(b); err != nil || g.Owner.Active {
		t.Fatalf("header without owner: %v %+v", err, g.Owner)
	}
}

// TestSecondAssemblerRefused is review #2: while an assembly owns the
// mirror, a second Assemble is refused (also with Force, the owner being
// alive on this host, and from another host without Force); a read-only
// open is allowed and writes nothing; the owner keeps its assembly id;
// after the owner dies uncleanly a new assembly takes over without Force
// and runs the crash resync; a clean Close clears the record.
func TestSecondAssemblerRefused(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	host := newTestEnv("machine-1", "boot-1")
	opts := Options{BitmapIdle: time.Hour, env: host.hostEnv()}
	m1, err := Create(ctx, wrap(ma), wrap(mb), CreateOptions{Options: opts, ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	own := m1.owner
	p := bytes.Repeat([]byte{0x5a}, 8192)
	if err := m1.WriteAt(ctx, p, 2<<20, true); err != nil {
		t.Fatal(err)
	}
	before := [2][]byte{metaBytes(t, ma), metaBytes(t, mb)}

	for _, force := range []bool{false, true} {
		m2, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: opts, Force: force})
		if err == nil {
			st := m2.Status()
			m2.halt()
			t.Fatalf("second assembler (force %v) accepted while the owner runs: state %s, resync %+v", force, st.State, st.Resync)
		}
		if !errors.Is(err, ErrOwned) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", own.PID)) ||
			!strings.Contains(err.Error(), "running on this host") {
			t.Fatalf("second assembler (force %v): %v", force, err)
		}
		t.Logf("force %v: %v", force, err)
	}
	// Another host cannot tell whether the owner lives: refused without Force.
	other := Options{BitmapIdle: time.Hour, env: newTestEnv("machine-2", "boot-2").hostEnv()}
	if _, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: other}); !errors.Is(err, ErrOwned) ||
		!strings.Contains(err.Error(), "host testhost") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("assembler on another host: %v", err)
	}
	// A degraded start on one leg is no way around it.
	if _, err := Assemble(ctx, nil, wrap(mb), AssembleOptions{Options: opts}); !errors.Is(err, ErrOwned) {
		t.Fatalf("degraded second assembler: %v", err)
	}
	// A reader is fine beside the owner and writes nothing.
	r, err := OpenReadOnly(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	if err := r.ReadAt(ctx, got, 2<<20); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read-only read: %v equal=%v", err, bytes.Equal(got, p))
	}
	if err := r.WriteAt(ctx, got, 0, false); err == nil {
		t.Fatal("read-only view accepted a write")
	}
	r.Close()
	st, err := Inspect(ctx, ma, mb)
	if err != nil || st.Owner == nil || st.Owner.Assembly != own.Assembly {
		t.Fatalf("inspect: %v owner %+v", err, st.Owner)
	}
	after := [2][]byte{metaBytes(t, ma), metaBytes(t, mb)}
	for i := range before {
		if !bytes.Equal(before[i], after[i]) {
			t.Fatalf("leg %s metadata changed by refused assemblers or the reader", legName(i))
		}
	}
	// The owner's own commits keep its record.
	if err := m1.WriteAt(ctx, p, 5<<20, true); err != nil {
		t.Fatal(err)
	}
	if err := m1.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*blockdevtest.Mem{ma, mb} {
		h, err := readHeader(ctx, d)
		if err != nil || h.Owner != own {
			t.Fatalf("owner record after the owner's commits: %v %+v, want %+v", err, h.Owner, own)
		}
	}

	// The owner dies (no Close): this host takes over without Force and
	// resyncs the dirty chunks.
	m1.halt()
	m3, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: opts})
	if err != nil {
		t.Fatalf("takeover from a dead owner: %v", err)
	}
	s3 := waitSync(t, m3)
	if s3.Resync == nil || s3.Resync.Mode != "crash" {
		t.Fatalf("takeover did not run the crash resync: %+v", s3.Resync)
	}
	h, _ := readHeader(ctx, ma)
	if !h.Owner.Active || h.Owner.Assembly != m3.owner.Assembly || h.Owner.Assembly == own.Assembly {
		t.Fatalf("new owner not recorded: %+v", h.Owner)
	}
	if err := m3.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*blockdevtest.Mem{ma, mb} {
		if h, err := readHeader(ctx, d); err != nil || h.Owner.Active {
			t.Fatalf("owner left after a clean Close: %v %+v", err, h.Owner)
		}
	}
	sameData(t, ma, mb, m3.Size())
}

// TestForcedTakeoverFromAnotherHost: Force takes a mirror over from an
// owner on another host; a rebooted host takes over without it.
func TestForcedTakeoverFromAnotherHost(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	h1 := newTestEnv("machine-1", "boot-1")
	m1, err := Create(ctx, wrap(ma), wrap(mb), CreateOptions{Options: Options{env: h1.hostEnv()}, ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	m1.WriteAt(ctx, make([]byte, 4096), 0, false)
	// Host 1 reboots: its old owner record is dead.
	rebooted := Options{env: newTestEnv("machine-1", "boot-1b").hostEnv()}
	m2, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: rebooted})
	if err != nil {
		t.Fatalf("after a reboot: %v", err)
	}
	waitSync(t, m2)
	m2.halt()
	// Host 2 finds host 1's record: Force needed.
	h2 := Options{env: newTestEnv("machine-2", "boot-2").hostEnv()}
	if _, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: h2}); !errors.Is(err, ErrOwned) {
		t.Fatalf("without force: %v", err)
	}
	m3, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: h2, Force: true})
	if err != nil {
		t.Fatalf("with force: %v", err)
	}
	waitSync(t, m3)
	if err := m3.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStaleLegOwnerRecordIgnored: a leg dropped while an owner ran keeps
// that owner's record; once the survivor was closed cleanly, the record
// on the stale leg does not block the next assembly.
func TestStaleLegOwnerRecordIgnored(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	a, b := wrap(ma), wrap(mb)
	h2 := Options{env: newTestEnv("machine-2", "boot-2").hostEnv()}
	m1, err := Create(ctx, a, b, CreateOptions{Options: h2, ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	b.dead.Store(true)
	if err := m1.WriteAt(ctx, make([]byte, 4096), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}
	if h, _ := readHeader(ctx, mb); !h.Owner.Active {
		t.Fatal("test setup: the dropped leg should still carry the owner record")
	}
	m2, err := Assemble(ctx, wrap(ma), wrap(mb), AssembleOptions{Options: Options{env: newTestEnv("machine-1", "boot-1").hostEnv()}})
	if err != nil {
		t.Fatalf("stale leg's owner record blocked assembly: %v", err)
	}
	waitSync(t, m2)
	m2.Close()
}

// TestProcStartReal checks the real /proc lookups the owner check uses.
func TestProcStartReal(t *testing.T) {
	st, ok := realEnv.procStart(os.Getpid())
	if !ok || st == 0 {
		t.Fatalf("own process: start %d ok %v", st, ok)
	}
	if _, ok := realEnv.procStart(1 << 30); ok {
		t.Fatal("a pid beyond pid_max reported alive")
	}
	o := realEnv.newOwner()
	if o.HostID == "" || o.BootID == "" || realEnv.state(o) != ownerAlive {
		t.Fatalf("own owner record %+v: state %v", o, realEnv.state(o))
	}
	o.ProcStart++ // same pid, another process: the pid was reused
	if realEnv.state(o) != ownerDead {
		t.Fatal("reused pid taken for the owner")
	}
}
