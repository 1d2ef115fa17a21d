package scsi

import (
	"errors"
	"reflect"
	"testing"
)

// Two target port group descriptors, hand-built per SPC-4 (the captures
// hold no REPORT TARGET PORT GROUPS exchange): group 1 active/optimized,
// preferred, ports 1 and 2; group 2 standby, port 3.
const rtpgDescs = `80 8f 0001 00 02 00 02 0000 0001 0000 0002
	02 8f 0002 00 00 00 01 0000 0003`

func TestParseReportTargetPortGroups(t *testing.T) {
	want := []TargetPortGroup{
		{Preferred: true, State: StateActiveOptimized, Supported: 0x8f, ID: 1, StatusCode: 2, Ports: []uint16{1, 2}},
		{State: StateStandby, Supported: 0x8f, ID: 2, Ports: []uint16{3}},
	}
	tests := []struct {
		name      string
		in        []byte
		groups    []TargetPortGroup
		extended  bool
		ttime     byte
		truncated bool
		err       error
	}{
		{"length only", hx(t, "0000001c"+rtpgDescs), want, false, 0, false, nil},
		{"extended header", hx(t, "00000020 10 3c 0000"+rtpgDescs), want, true, 60, false, nil},
		{"cut in second group", hx(t, "0000001c"+rtpgDescs)[:4+16+4], want[:1], false, 0, true, nil},
		{"cut in port list", hx(t, "0000001c"+rtpgDescs)[:4+12], nil, false, 0, true, nil},
		{"empty", hx(t, "00000000"), nil, false, 0, false, nil},
		{"short", hx(t, "000000"), nil, false, 0, false, ErrTruncated},
	}
	for _, tt := range tests {
		got, err := ParseReportTargetPortGroups(tt.in)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if !reflect.DeepEqual(got.Groups, tt.groups) || got.Extended != tt.extended ||
			got.TransitionTime != tt.ttime || got.Truncated != tt.truncated {
			t.Errorf("%s:\n got %+v\nwant %+v ext=%v tt=%d trunc=%v", tt.name, got, tt.groups, tt.extended, tt.ttime, tt.truncated)
		}
	}
	tpg, _ := ParseReportTargetPortGroups(hx(t, "0000001c"+rtpgDescs))
	if g, ok := tpg.GroupOfPort(3); !ok || g.ID != 2 || g.State.Active() {
		t.Errorf("GroupOfPort(3) = %+v, %v", g, ok)
	}
	if _, ok := tpg.GroupOfPort(9); ok {
		t.Error("GroupOfPort(9) found")
	}
	names := map[AccessState]string{0: "active/optimized", 1: "active/non-optimized", 2: "standby",
		3: "unavailable", 0xe: "offline", 0xf: "transitioning", 7: "state 0x7"}
	for s, want := range names {
		if s.String() != want {
			t.Errorf("AccessState(%d) = %q, want %q", s, s, want)
		}
	}
}
