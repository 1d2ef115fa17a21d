package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// TestCLIErrorRecoveryLevel: --erl is offered at login and the negotiated
// level (the minimum of ours and the target's) is shown by info, in text
// and JSON; the default offers 0; out-of-range values are usage errors.
func TestCLIErrorRecoveryLevel(t *testing.T) {
	_, addr := fakePortal(t, faketarget.Config{ErrorRecoveryLevel: 1, LUNs: []faketarget.LUNConfig{{Number: 0}}})
	url := "iscsi://" + addr + "/" + faketarget.DefaultTargetName + "/0"
	for _, tc := range []struct {
		args []string
		want int
	}{{nil, 0}, {[]string{"--erl", "1"}, 1}, {[]string{"--erl", "2"}, 1}} {
		r := lbRun(t, 20*time.Second, nil, append(tc.args, "info", "--json", url)...)
		r.mustOK(t, "info")
		var info struct {
			Session struct {
				ERL *int `json:"error_recovery_level"`
			} `json:"session"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || info.Session.ERL == nil || *info.Session.ERL != tc.want {
			t.Errorf("%v: info --json session: %s (%v), want error_recovery_level %d", tc.args, r.stdout, err, tc.want)
		}
	}
	r := lbRun(t, 20*time.Second, nil, "--erl", "1", "info", url)
	r.mustOK(t, "info")
	if !strings.Contains(r.stdout, "ERL 1") {
		t.Errorf("info text does not show the negotiated ERL:\n%s", r.stdout)
	}
	r = lbRun(t, 20*time.Second, nil, "--erl", "3", "info", url)
	if r.code != ExitUsage || !strings.Contains(r.stderr, "--erl") {
		t.Errorf("--erl 3: exit %d, stderr %s", r.code, r.stderr)
	}
}
