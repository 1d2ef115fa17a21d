package blockcheck

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memDev is an in-memory target with deliberate bugs, to show that the
// workload plus the model catch a misbehaving device end to end.
type memDev struct {
	mu   sync.Mutex
	data []byte
	n    atomic.Int64
	bug  string
	late []late // ghost: failed writes applied later
}

type late struct {
	due   int64
	apply func()
}

func (m *memDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(p, m.data[off:])
	return nil
}

func (m *memDev) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	i := m.n.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := m.late[:0]
	for _, l := range m.late {
		if i >= l.due {
			l.apply()
		} else {
			keep = append(keep, l)
		}
	}
	m.late = keep
	switch {
	case m.bug == "lose" && i%50 == 0:
		return nil // acknowledged, never written
	case m.bug == "ghost" && i%50 == 0:
		b := append([]byte(nil), p...)
		m.late = append(m.late, late{i + 40, func() { copy(m.data[off:], b) }})
		return errors.New("injected EIO")
	case m.bug == "misdirect" && i%50 == 0 && off >= BlockSize:
		off -= BlockSize
	}
	copy(m.data[off:], p)
	return nil
}

func (m *memDev) Flush(ctx context.Context) error { return nil }
func (m *memDev) Close() error                    { return nil }

// TestWorkloadCatchesBuggyDevice: a device that loses acknowledged
// writes, lands failed writes late, or writes to the wrong place is
// flagged; a correct one is not.
func TestWorkloadCatchesBuggyDevice(t *testing.T) {
	for _, bug := range []string{"", "lose", "ghost", "misdirect"} {
		t.Run("bug="+bug, func(t *testing.T) {
			m := &memDev{data: make([]byte, 256*BlockSize), bug: bug}
			cfg := Config{Duration: 400 * time.Millisecond, Round: 100 * time.Millisecond, Seed: 1, ReadPct: 30, FlushPct: 5, FUAPct: 10,
				Open: func(ctx context.Context, i int) (Target, error) { return shared{m}, nil }}
			var as []Anomaly
			var n, rounds int
			err := Run(context.Background(), cfg, nil, func(h *History) {
				rounds++
				a, k := Check(h)
				as, n = append(as, a...), n+k
			})
			if err != nil {
				t.Fatal(err)
			}
			if rounds != 4 {
				t.Errorf("%d rounds, want 4", rounds)
			}
			if bug == "" {
				if n != 0 {
					t.Fatalf("correct device flagged: %v", as)
				}
				return
			}
			if n == 0 {
				t.Fatalf("device with bug %q not flagged", bug)
			}
			t.Logf("%d anomalies, first: %v", n, as[0])
		})
	}
}
