package initiator

import (
	"testing"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// TestCoalescerPolicy: no coalescing without a size estimate, below
// coalesceMinQueue outstanding commands, or when plain waits already find
// several responses; a wait ended by the timer turns it off for a number
// of waits that doubles with each time-out in a row.
func TestCoalescerPolicy(t *testing.T) {
	var co coalescer
	out := func(n int) func() int { return func() int { return n } }
	if got := co.lowat(out(32)); got != 1 {
		t.Fatalf("lowat %d before any response, want 1", got)
	}
	var st pdu.BHS
	st[0] = byte(pdu.OpDataIn)
	st[1] = 0x81 // F and S: status with the data
	for range coalesceSample {
		co.received(4144)
		co.completed(&st)
	}
	if co.perResp != 4144 {
		t.Fatalf("perResp %d, want 4144", co.perResp)
	}
	if got := co.lowat(out(coalesceMinQueue - 1)); got != 1 {
		t.Fatalf("lowat %d with %d outstanding, want 1", got, coalesceMinQueue-1)
	}
	if got := co.lowat(out(32)); got != 2*4144 {
		t.Fatalf("lowat %d at the start, want two responses (%d)", got, 2*4144)
	}
	for range 10 {
		co.waited(false)
	}
	if got := co.lowat(out(32)); got != min(8*4144, coalesceMaxBytes) {
		t.Fatalf("lowat %d after ten waits that reached it, want a quarter of 32 responses, at most coalesceMaxBytes", got)
	}
	co.waited(true)
	if got := co.lowat(out(32)); got != 1 {
		t.Fatalf("lowat %d right after a time-out, want 1", got)
	}
	co.waited(true) // a second in a row: off for two waits
	offs := 0
	for co.lowat(out(32)) == 1 {
		offs++
		if offs > 10 {
			t.Fatal("coalescing stays off after two time-outs")
		}
	}
	if offs != 2 {
		t.Fatalf("off for %d waits after the second time-out, want 2", offs)
	}
	for range 4 {
		co.plain(64 << 10) // plain waits find 16 responses: no need
	}
	for i := range coalesceProbe {
		if got := co.lowat(out(32)); got != 1 {
			t.Fatalf("wait %d: lowat %d while plain waits find many responses, want 1", i, got)
		}
	}
}
