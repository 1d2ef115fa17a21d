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
			if k == preempt {
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
