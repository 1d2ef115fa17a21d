package mirror

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/lunbridge/lunbridge/blockdev"
)

// prState is one LU's persistent reservation state, shared by the
// handles (I_T nexuses) that reach it.
type prState struct {
	mu     sync.Mutex
	keys   map[*prLeg]uint64
	holder *prLeg
	resKey uint64
}

var errConflict = errors.New("RESERVATION CONFLICT")

// prLeg is a leg handle with its own I_T nexus: writes from an
// unregistered handle conflict while the LU is reserved (WERO).
type prLeg struct {
	*faulty
	st *prState
}

func newPRLeg(f *faulty, st *prState) *prLeg { return &prLeg{faulty: f, st: st} }

func (l *prLeg) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	l.st.mu.Lock()
	_, reg := l.st.keys[l]
	conflict := l.st.holder != nil && !reg
	l.st.mu.Unlock()
	if conflict {
		return errConflict
	}
	return l.faulty.WriteAt(ctx, p, off, fua)
}

func (l *prLeg) Register(ctx context.Context, key uint64) error {
	l.st.mu.Lock()
	defer l.st.mu.Unlock()
	l.st.keys[l] = key
	return nil
}

func (l *prLeg) Reserve(ctx context.Context, key, preempt uint64) error {
	l.st.mu.Lock()
	defer l.st.mu.Unlock()
	if l.st.keys[l] != key {
		return errConflict
	}
	if h := l.st.holder; h != nil && h != l {
		if preempt == 0 || l.st.resKey != preempt {
			return errConflict
		}
		for o, k := range l.st.keys {
			if k == preempt && o != l { // all but the preempting nexus (SPC-3)
				delete(l.st.keys, o)
			}
		}
	}
	l.st.holder, l.st.resKey = l, key
	return nil
}

func (l *prLeg) Release(ctx context.Context, key uint64) error {
	l.st.mu.Lock()
	defer l.st.mu.Unlock()
	if l.st.holder == l {
		l.st.holder, l.st.resKey = nil, 0
	}
	delete(l.st.keys, l)
	return nil
}

var _ blockdev.Reserver = (*prLeg)(nil)

// TestReserveFencesOtherWriters: with Reserve the owner holds a WERO
// reservation on each leg that supports it (a leg without support is used
// unfenced); another initiator's writes conflict; a clean Close releases;
// a takeover from a dead owner preempts its reservation.
func TestReserveFencesOtherWriters(t *testing.T) {
	ctx := context.Background()
	ma, mb := newLegs()
	st := &prState{keys: map[*prLeg]uint64{}}
	opts := testOpts()
	opts.Reserve = true
	m, err := Create(ctx, newPRLeg(wrap(ma), st), wrap(mb), CreateOptions{Options: opts, ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	if !m.reserved[0] || m.reserved[1] || st.resKey != m.owner.Assembly {
		t.Fatalf("reserved %v, key %x, want leg A reserved with %x", m.reserved, st.resKey, m.owner.Assembly)
	}
	buf := make([]byte, 4096)
	if err := m.WriteAt(ctx, buf, 0, true); err != nil {
		t.Fatalf("owner's write: %v", err)
	}
	other := newPRLeg(wrap(ma), st)
	if err := other.WriteAt(ctx, buf, 0, false); !errors.Is(err, errConflict) {
		t.Fatalf("another initiator's write: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if st.holder != nil || len(st.keys) != 0 {
		t.Fatalf("not released at Close: holder %v keys %v", st.holder, st.keys)
	}
	// The owner dies holding the reservation; the next assembly takes
	// both over.
	m2, err := Assemble(ctx, newPRLeg(wrap(ma), st), wrap(mb), AssembleOptions{Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	old := m2.owner.Assembly
	m2.halt()
	m3, err := Assemble(ctx, newPRLeg(wrap(ma), st), wrap(mb), AssembleOptions{Options: opts})
	if err != nil {
		t.Fatalf("takeover of a dead owner's reservation: %v", err)
	}
	if st.resKey != m3.owner.Assembly || st.resKey == old {
		t.Fatalf("reservation key %x after the takeover, want %x", st.resKey, m3.owner.Assembly)
	}
	if err := m3.WriteAt(ctx, buf, 0, true); err != nil {
		t.Fatal(err)
	}
	m3.Close()
	// A reservation nobody recorded (another host's initiator) refuses.
	intruder := newPRLeg(wrap(ma), st)
	intruder.Register(ctx, 42)
	intruder.Reserve(ctx, 42, 0)
	if _, err := Assemble(ctx, newPRLeg(wrap(ma), st), wrap(mb), AssembleOptions{Options: opts}); !errors.Is(err, ErrOwned) {
		t.Fatalf("assembly under a foreign reservation: %v", err)
	}
}

// TestReaddAfterNewSessionKeepsFence: a leg failed and added back comes
// back on a new session (a new I_T nexus). The target (tgtd) still names
// the old nexus, registered with this assembly's key, as the reservation
// holder: the returning leg takes the reservation over from its own key
// instead of being refused as "in use by another assembly".
func TestReaddAfterNewSessionKeepsFence(t *testing.T) {
	ctx := context.Background()
	a, b := newLegs()
	stA, stB := &prState{keys: map[*prLeg]uint64{}}, &prState{keys: map[*prLeg]uint64{}}
	r := &reopener{}
	r.set(func() blockdev.Device { return newPRLeg(wrap(b), stB) }) // a new nexus each time
	opts := readdOpts(r)
	opts.Reserve = true
	m, err := Create(ctx, newPRLeg(wrap(a), stA), newPRLeg(wrap(b), stB), CreateOptions{Options: opts, ChunkSize: testChunk, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.FailLeg(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteAt(ctx, make([]byte, 4096), 2*testChunk, false); err != nil {
		t.Fatal(err)
	}
	if err := m.AddLeg(ctx, "B"); err != nil {
		t.Fatalf("add of leg B on a new session: %v", err)
	}
	st := waitSync(t, m)
	if st.Legs[1].State != "in-sync" {
		t.Fatalf("after add: %+v", st.Legs[1])
	}
	nb := m.LegDevice("B").(*prLeg)
	stB.mu.Lock()
	holder := stB.holder
	stB.mu.Unlock()
	if holder != nb {
		t.Fatal("the returning leg's session does not hold the reservation")
	}
	// Another initiator is still fenced off.
	if err := newPRLeg(wrap(b), stB).WriteAt(ctx, make([]byte, 512), 0, false); !errors.Is(err, errConflict) {
		t.Fatalf("another initiator's write: %v, want a conflict", err)
	}
}
