package targets

import (
	"testing"
)

// What the real targets here answer to ErrorRecoveryLevel 1 and 2 (issue
// 22). tgtd answers 0 by default and the offer (up to 2) once configured
// with tgtadm -n ErrorRecoveryLevel -v 2 — though it implements no SNACK
// ("Cannot handle yet 10", TestERL1DataDigestRealTgtd). istgt answers 0
// (this package refuses istgt's ErrorRecoveryLevel setting above 0).
func TestERLOffers(t *testing.T) {
	offer := func(erl string) [][2]string {
		var o [][2]string
		for _, kv := range probeOffer {
			switch kv[0] {
			case "ErrorRecoveryLevel":
				kv[1] = erl
			case "MaxOutstandingR2T":
				kv[1] = "1" // RFC 7143 13.19 at ERL > 0
			}
			o = append(o, kv)
		}
		return o
	}
	check := func(kind, portal, target, erl, want string) {
		t.Helper()
		got, err := loginKeys(t, portal, target, offer(erl))
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		t.Logf("%s offered ErrorRecoveryLevel=%s: answered %q", kind, erl, got["ErrorRecoveryLevel"])
		if got["ErrorRecoveryLevel"] != want {
			t.Errorf("%s offered ErrorRecoveryLevel=%s answered %q, want %q", kind, erl, got["ErrorRecoveryLevel"], want)
		}
	}
	tg := StartTgtd(t, Target{LUNs: []LUN{{Size: mib}}}, Target{LUNs: []LUN{{Size: mib}}, Params: map[string]string{"ErrorRecoveryLevel": "2"}})
	for _, erl := range []string{"1", "2"} {
		check("tgtd (default)", tg.Portal, tg.Targets[0].Name, erl, "0")
		check("tgtd (ErrorRecoveryLevel 2)", tg.Portal, tg.Targets[1].Name, erl, erl)
	}
	is := StartIstgt(t, Target{LUNs: []LUN{{Size: mib}}})
	for _, erl := range []string{"1", "2"} {
		check("istgt", is.Portal, is.Targets[0].Name, erl, "0")
	}
}
