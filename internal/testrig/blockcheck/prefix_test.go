package blockcheck

import (
	"testing"
	"time"
)

// prefixHistory: client 0 writes block 0 (op 1), then block 1 (op 2),
// then block 0 again (op 3), then block 1 again (op 4), one after the
// other.
func prefixHistory() (*History, []*Op) {
	h := NewHistory(2)
	ms := time.Millisecond
	ops := []*Op{
		{ID: 1, Kind: Write, LBA: 0, N: 1, Invoke: 1 * ms, Complete: 2 * ms},
		{ID: 2, Kind: Write, LBA: 1, N: 1, Invoke: 3 * ms, Complete: 4 * ms},
		{ID: 3, Kind: Write, LBA: 0, N: 1, Invoke: 5 * ms, Complete: 6 * ms},
		{ID: 4, Kind: Write, LBA: 1, N: 1, Invoke: 7 * ms, Complete: 8 * ms},
	}
	for _, o := range ops {
		h.Add(o)
	}
	return h, ops
}

func imageOf(ids ...uint64) []Seen {
	out := make([]Seen, len(ids))
	for b, id := range ids {
		if id != 0 {
			out[b] = Seen{State: StateValid, H: Header{Op: id, LBA: uint64(b)}}
		}
	}
	return out
}

// TestCheckPrefix: every prefix of the history passes (the cut counts the
// writes on the image and missing); a mix of a newer and an older write
// (op 3 on block 0 while block 1 still shows zero, though op 2 completed
// before op 3 was invoked) does not.
func TestCheckPrefix(t *testing.T) {
	for _, tc := range []struct {
		image   []uint64
		ok      bool
		missing int
	}{
		{[]uint64{0, 0}, true, 4},
		{[]uint64{1, 0}, true, 3},
		{[]uint64{1, 2}, true, 2},
		{[]uint64{3, 2}, true, 1},
		{[]uint64{3, 4}, true, 0},
		{[]uint64{3, 0}, false, 0}, // op 3 without op 2
		{[]uint64{1, 4}, false, 0}, // op 4 without op 3
		{[]uint64{0, 2}, false, 0}, // op 2 without op 1
	} {
		h, _ := prefixHistory()
		h.SetFinal(imageOf(tc.image...), 10*time.Millisecond)
		as, n, cut := CheckPrefix(h)
		if tc.ok && n != 0 {
			t.Errorf("image %v: %d anomalies (%v), want a prefix", tc.image, n, as)
		}
		if !tc.ok && (n == 0 || as[0].Kind != NotPrefix) {
			t.Errorf("image %v: %v, want %q", tc.image, as, NotPrefix)
		}
		if tc.ok && (cut.Missing != tc.missing || cut.Acked != 4) {
			t.Errorf("image %v: cut %+v, want %d of 4 missing", tc.image, cut, tc.missing)
		}
	}
}

// TestCheckPrefixInFlight: a write in flight at the cut may be on the
// image or not, also a failed one; a value no write made is reported.
func TestCheckPrefixInFlight(t *testing.T) {
	h := NewHistory(2)
	ms := time.Millisecond
	h.Add(&Op{ID: 1, Kind: Write, LBA: 0, N: 1, Invoke: 1 * ms, Complete: 5 * ms})
	h.Add(&Op{ID: 2, Kind: Write, LBA: 1, N: 1, Invoke: 2 * ms, Complete: 6 * ms, Result: Unknown})
	for _, img := range [][]uint64{{0, 2}, {1, 0}, {1, 2}, {0, 0}} {
		h.SetFinal(imageOf(img...), 10*ms)
		if as, n, _ := CheckPrefix(h); n != 0 {
			t.Errorf("image %v: %v", img, as)
		}
	}
	h.SetFinal(imageOf(7, 0), 10*ms)
	if as, n, _ := CheckPrefix(h); n != 1 || as[0].Kind != NeverIssued {
		t.Errorf("unknown op on the image: %v", as)
	}
}
