package blockcheck

import (
	"strings"
	"testing"
	"time"
)

// synth builds a history by hand on a one-to-four-block space; times are
// in milliseconds.
type synth struct {
	h   *History
	seq uint32
}

func newSynth() *synth { return &synth{h: &History{Blocks: 4}} }

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func (s *synth) op(kind Kind, lba, n int64, inv, comp int, res Result) *Op {
	s.seq++
	o := &Op{ID: s.h.NewID(), Client: 1, Seq: s.seq, Kind: kind, LBA: lba, N: n, Invoke: ms(inv), Complete: ms(comp), Result: res}
	s.h.Add(o)
	return o
}

func (s *synth) write(lba, n int64, inv, comp int, res Result) *Op {
	return s.op(Write, lba, n, inv, comp, res)
}

func (s *synth) fua(lba, n int64, inv, comp int) *Op {
	o := s.write(lba, n, inv, comp, OK)
	o.FUA = true
	return o
}

// seen encodes the block b of w (nil: zero) and decodes it back, the way a
// read sees it.
func seen(w *Op, b int64) Seen {
	buf := make([]byte, BlockSize)
	if w != nil {
		Encode(buf, Header{Client: w.Client, Seq: w.Seq, Op: w.ID, LBA: uint64(b)})
	}
	h, st := Decode(buf)
	return Seen{State: st, H: h}
}

func (s *synth) read(lba int64, inv, comp int, vals ...*Op) *Op {
	o := s.op(Read, lba, int64(len(vals)), inv, comp, OK)
	for i, w := range vals {
		o.Seen = append(o.Seen, seen(w, lba+int64(i)))
	}
	return o
}

func (s *synth) final(vals ...*Op) {
	var f []Seen
	for i, w := range vals {
		f = append(f, seen(w, int64(i)))
	}
	for int64(len(f)) < s.h.Blocks {
		f = append(f, Seen{State: StateZero})
	}
	s.h.SetFinal(f, ms(1000))
}

func (s *synth) crash(at int) { s.h.crashes = append(s.h.crashes, ms(at)) }

func wantAnomaly(t *testing.T, s *synth, kind string) {
	t.Helper()
	as, n := Check(s.h)
	for _, a := range as {
		if a.Kind == kind {
			t.Logf("flagged: %v", a)
			return
		}
	}
	t.Errorf("want a %q anomaly, got %d: %v", kind, n, as)
}

func wantClean(t *testing.T, s *synth) {
	t.Helper()
	if as, n := Check(s.h); n != 0 {
		t.Errorf("want no anomaly, got %d: %v", n, as)
	}
}

// TestCheckFlags: each anomaly kind is caught in a minimal history.
func TestCheckFlags(t *testing.T) {
	t.Run("stale final value", func(t *testing.T) {
		s := newSynth()
		w1 := s.write(0, 1, 0, 10, OK)
		s.write(0, 1, 20, 30, OK)
		s.final(w1)
		wantAnomaly(t, s, StaleFinal)
	})
	t.Run("reordered overlapping writes", func(t *testing.T) {
		// w2 covers blocks 0..1 after w1 covers 0..1: block 1 keeps w2,
		// block 0 went back to w1 (w1 applied twice, or after w2).
		s := newSynth()
		w1 := s.write(0, 2, 0, 10, OK)
		w2 := s.write(0, 2, 20, 30, OK)
		s.final(w1, w2)
		wantAnomaly(t, s, StaleFinal)
	})
	t.Run("lost acked write", func(t *testing.T) {
		s := newSynth()
		s.write(1, 1, 0, 10, OK)
		s.final()
		wantAnomaly(t, s, LostWrite)
	})
	t.Run("ghost write", func(t *testing.T) {
		s := newSynth()
		w1 := s.write(0, 1, 0, 10, Failed)
		s.write(0, 1, 20, 30, OK)
		s.final(w1)
		wantAnomaly(t, s, Ghost)
	})
	t.Run("ghost of an unknown write in a read", func(t *testing.T) {
		s := newSynth()
		w1 := s.write(0, 1, 0, 10, Unknown)
		s.write(0, 1, 20, 30, OK)
		s.read(0, 40, 50, w1)
		wantAnomaly(t, s, Ghost)
	})
	t.Run("stale read", func(t *testing.T) {
		s := newSynth()
		w1 := s.write(0, 1, 0, 10, OK)
		w2 := s.write(0, 1, 20, 30, OK)
		s.read(0, 40, 50, w1)
		s.final(w2)
		wantAnomaly(t, s, StaleRead)
	})
	t.Run("stale zero read", func(t *testing.T) {
		s := newSynth()
		w1 := s.write(2, 1, 0, 10, OK)
		s.read(2, 40, 50, nil)
		s.final(nil, nil, w1)
		wantAnomaly(t, s, StaleRead)
	})
	t.Run("torn block", func(t *testing.T) {
		s := newSynth()
		w1 := s.write(0, 1, 0, 10, OK)
		w2 := s.write(0, 1, 20, 30, OK)
		a, b := make([]byte, BlockSize), make([]byte, BlockSize)
		Encode(a, Header{Client: 1, Seq: w1.Seq, Op: w1.ID})
		Encode(b, Header{Client: 1, Seq: w2.Seq, Op: w2.ID})
		copy(a[512:], b[512:]) // first sector of w1, the rest of w2
		h, st := Decode(a)
		s.h.SetFinal([]Seen{{State: st, H: h}, {}, {}, {}}, ms(1000))
		wantAnomaly(t, s, Torn)
	})
	t.Run("torn read with no write racing it", func(t *testing.T) {
		s := newSynth()
		w1 := s.write(0, 1, 0, 10, OK)
		r := s.op(Read, 0, 1, 20, 30, OK)
		r.Seen = []Seen{{State: StateTorn, H: Header{Client: 1, Seq: w1.Seq, Op: w1.ID}}}
		s.final(w1)
		wantAnomaly(t, s, Torn)
	})
	t.Run("never-issued op", func(t *testing.T) {
		s := newSynth()
		s.write(0, 1, 0, 10, OK)
		s.h.SetFinal([]Seen{seen(&Op{ID: 99, Client: 1, Seq: 7}, 0), {}, {}, {}}, ms(1000))
		wantAnomaly(t, s, NeverIssued)
	})
	t.Run("garbage", func(t *testing.T) {
		s := newSynth()
		s.h.SetFinal([]Seen{{State: StateGarbage}, {}, {}, {}}, ms(1000))
		wantAnomaly(t, s, NeverIssued)
	})
	t.Run("misdirected write", func(t *testing.T) {
		// Block 3 holds the block w1 wrote to LBA 0.
		s := newSynth()
		w1 := s.write(0, 1, 0, 10, OK)
		s.h.SetFinal([]Seen{seen(w1, 0), {}, {}, seen(w1, 0)}, ms(1000))
		wantAnomaly(t, s, NeverIssued)
	})
	t.Run("read from the future", func(t *testing.T) {
		s := newSynth()
		r := s.op(Read, 0, 1, 0, 10, OK)
		w1 := s.write(0, 1, 20, 30, OK)
		r.Seen = []Seen{seen(w1, 0)}
		s.final(w1)
		wantAnomaly(t, s, NeverIssued)
	})
	t.Run("flushed write lost in a crash", func(t *testing.T) {
		s := newSynth()
		s.write(0, 1, 0, 10, OK)
		s.op(Flush, 0, 0, 20, 30, OK)
		s.crash(40)
		s.final()
		wantAnomaly(t, s, LostWrite)
	})
	t.Run("FUA write lost in a crash", func(t *testing.T) {
		s := newSynth()
		s.fua(0, 1, 0, 10)
		s.crash(40)
		s.final()
		wantAnomaly(t, s, LostWrite)
	})
	t.Run("flush from another client covers the write", func(t *testing.T) {
		s := newSynth()
		w1 := s.write(0, 1, 0, 10, OK)
		w2 := s.write(0, 1, 20, 30, OK)
		f := s.op(Flush, 0, 0, 35, 38, OK)
		f.Client = 2
		s.crash(40)
		s.final(w1)
		wantAnomaly(t, s, StaleFinal)
		_ = w2
	})
}

// TestCheckPasses: histories the model allows.
func TestCheckPasses(t *testing.T) {
	t.Run("concurrent writes either order", func(t *testing.T) {
		for _, pick := range []int{0, 1} {
			s := newSynth()
			w1 := s.write(0, 2, 0, 20, OK)
			w2 := s.write(0, 2, 10, 30, OK)
			ws := []*Op{w1, w2}
			s.final(ws[pick], ws[1-pick]) // blocks may differ: no multi-block atomicity
			wantClean(t, s)
		}
	})
	t.Run("failed write may or may not land", func(t *testing.T) {
		for _, v := range []bool{false, true} {
			s := newSynth()
			w0 := s.write(0, 1, 0, 5, OK)
			w1 := s.write(0, 1, 10, 20, Failed)
			if v {
				s.final(w1)
			} else {
				s.final(w0)
			}
			wantClean(t, s)
		}
	})
	t.Run("failed write overlapping a later acked one", func(t *testing.T) {
		s := newSynth()
		w1 := s.write(0, 1, 0, 30, Unknown)
		s.write(0, 1, 20, 25, OK)
		s.final(w1) // w2 started before w1 returned: either order
		wantClean(t, s)
	})
	t.Run("read concurrent with a write", func(t *testing.T) {
		s := newSynth()
		w0 := s.write(0, 1, 0, 5, OK)
		w1 := s.write(0, 1, 10, 30, OK)
		s.read(0, 15, 20, w0)
		s.read(0, 16, 21, w1)
		s.read(0, 29, 40, w0) // w1 not yet complete when the read started
		s.read(0, 12, 13, nil...)
		s.final(w1)
		wantClean(t, s)
	})
	t.Run("torn read racing a write", func(t *testing.T) {
		s := newSynth()
		w0 := s.write(0, 1, 0, 5, OK)
		w1 := s.write(0, 1, 10, 30, OK)
		r := s.op(Read, 0, 1, 20, 25, OK)
		r.Seen = []Seen{{State: StateTorn, H: Header{Client: 1, Seq: w0.Seq, Op: w0.ID}}}
		s.final(w1)
		wantClean(t, s)
	})
	t.Run("zero before the first ack", func(t *testing.T) {
		s := newSynth()
		w1 := s.write(0, 1, 0, 30, OK)
		s.read(0, 10, 40, nil)
		s.final(w1)
		wantClean(t, s)
	})
	t.Run("unflushed write lost in a crash", func(t *testing.T) {
		s := newSynth()
		w0 := s.fua(0, 1, 0, 5)
		s.write(0, 1, 10, 20, OK)
		s.crash(40)
		s.final(w0)
		wantClean(t, s)
	})
	t.Run("flush that started before the write completed", func(t *testing.T) {
		s := newSynth()
		s.write(0, 1, 0, 10, OK)
		s.op(Flush, 0, 0, 5, 15, OK)
		s.crash(40)
		s.final()
		wantClean(t, s)
	})
	t.Run("reads after a crash may miss unflushed writes", func(t *testing.T) {
		s := newSynth()
		s.write(0, 1, 0, 10, OK)
		s.crash(20)
		s.read(0, 30, 40, nil)
		w2 := s.write(0, 1, 50, 60, OK)
		s.read(0, 70, 80, w2)
		s.final(w2)
		wantClean(t, s)
	})
}

// TestNextRound: a round's initial content is the previous round's final
// content; losing it is flagged, keeping it is not.
func TestNextRound(t *testing.T) {
	s := newSynth()
	w1 := s.write(0, 2, 0, 10, OK)
	s.final(w1, w1)
	for _, keep := range []bool{true, false} {
		n := &synth{h: s.h.Next()}
		w2 := n.write(1, 1, 0, 10, OK)
		if keep {
			n.read(0, 20, 30, w1, w2)
			n.final(w1, w2)
			wantClean(t, n)
			if w2.ID <= w1.ID {
				t.Errorf("op ids restarted: %d after %d", w2.ID, w1.ID)
			}
		} else {
			n.final(nil, w2)
			wantAnomaly(t, n, LostWrite)
		}
	}
}

// TestDecode: block round trip and every corruption.
func TestDecode(t *testing.T) {
	b := make([]byte, BlockSize)
	if _, st := Decode(b); st != StateZero {
		t.Fatalf("zero block: %v", st)
	}
	want := Header{Client: 3, Seq: 9, Op: 12345, LBA: 77}
	Encode(b, want)
	if h, st := Decode(b); st != StateValid || h != want {
		t.Fatalf("round trip: %v %+v", st, h)
	}
	for _, off := range []int{5, 9, 20, 30, 33, 40, 600, BlockSize - 1} {
		c := append([]byte(nil), b...)
		c[off] ^= 0x10
		if _, st := Decode(c); st == StateValid {
			t.Errorf("flip at %d still valid", off)
		}
	}
	c := make([]byte, BlockSize)
	c[100] = 1
	if _, st := Decode(c); st != StateGarbage {
		t.Errorf("garbage: %v", st)
	}
	if !strings.Contains(StateTorn.String(), "torn") {
		t.Error(StateTorn.String())
	}
}
