package initiator_test

import (
	"testing"

	"github.com/lunbridge/lunbridge/initiator"
)

// StableISID is a pure function of its inputs (so a restarted process gets
// its predecessor's ISID) and changes with each of them (so other LUNs,
// paths and instances keep their own sessions).
func TestStableISID(t *testing.T) {
	base := func() [6]byte {
		return initiator.StableISID("iqn.2026-12.org.example:host", "iqn.2026-12.org.example:tgt", "10.0.0.1", 1, "")
	}
	a := base()
	if a != base() {
		t.Fatal("StableISID is not deterministic")
	}
	if a[0] != 0x80 {
		t.Fatalf("ISID %x: want the random format (T=10b, A=0), first byte 0x80", a)
	}
	if a != initiator.StableISID("iqn.2026-12.org.example:host", "iqn.2026-12.org.example:tgt", "10.0.0.1:3260", 1, "") {
		t.Error("the default port changes the ISID: 10.0.0.1 and 10.0.0.1:3260 are the same portal")
	}
	seen := map[[6]byte]string{a: "base"}
	for name, id := range map[string][6]byte{
		"initiator": initiator.StableISID("iqn.2026-12.org.example:other", "iqn.2026-12.org.example:tgt", "10.0.0.1", 1, ""),
		"target":    initiator.StableISID("iqn.2026-12.org.example:host", "iqn.2026-12.org.example:tgt2", "10.0.0.1", 1, ""),
		"portal":    initiator.StableISID("iqn.2026-12.org.example:host", "iqn.2026-12.org.example:tgt", "10.0.0.2", 1, ""),
		"lun":       initiator.StableISID("iqn.2026-12.org.example:host", "iqn.2026-12.org.example:tgt", "10.0.0.1", 2, ""),
		"instance":  initiator.StableISID("iqn.2026-12.org.example:host", "iqn.2026-12.org.example:tgt", "10.0.0.1", 1, "backup"),
		// field boundaries are kept: "ab"+"c" differs from "a"+"bc"
		"boundary": initiator.StableISID("iqn.2026-12.org.example:hos", "tiqn.2026-12.org.example:tgt", "10.0.0.1", 1, ""),
	} {
		if prev, dup := seen[id]; dup {
			t.Errorf("changing the %s gives the same ISID %x as %s", name, id, prev)
		}
		seen[id] = name
		if id[0] != 0x80 {
			t.Errorf("%s: ISID %x not in the random format", name, id)
		}
	}
}
