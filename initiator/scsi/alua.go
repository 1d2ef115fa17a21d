package scsi

import (
	"encoding/binary"
	"fmt"
)

// AccessState is an ASYMMETRIC ACCESS STATE (SPC-4, "Asymmetric logical
// unit access").
type AccessState byte

// Asymmetric access states.
const (
	StateActiveOptimized    AccessState = 0x0
	StateActiveNonOptimized AccessState = 0x1
	StateStandby            AccessState = 0x2
	StateUnavailable        AccessState = 0x3
	StateLBADependent       AccessState = 0x4
	StateOffline            AccessState = 0xe
	StateTransitioning      AccessState = 0xf
)

var accessStateNames = map[AccessState]string{
	StateActiveOptimized:    "active/optimized",
	StateActiveNonOptimized: "active/non-optimized",
	StateStandby:            "standby",
	StateUnavailable:        "unavailable",
	StateLBADependent:       "logical block dependent",
	StateOffline:            "offline",
	StateTransitioning:      "transitioning",
}

// String returns the state's name ("active/optimized", "standby", ...).
func (s AccessState) String() string {
	if n, ok := accessStateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state 0x%x", byte(s))
}

// Active reports whether I/O may be sent through a port in this state.
func (s AccessState) Active() bool {
	return s == StateActiveOptimized || s == StateActiveNonOptimized
}

// TargetPortGroup is one target port group descriptor (SPC-4, "REPORT
// TARGET PORT GROUPS parameter data"):
//
//	byte 0: PREF (7) | ASYMMETRIC ACCESS STATE (3-0)
//	byte 1: T_SUP O_SUP - LBD_SUP U_SUP S_SUP AN_SUP AO_SUP
//	bytes 2-3: TARGET PORT GROUP; 5: STATUS CODE; 7: TARGET PORT COUNT
//	then 4 bytes per port, RELATIVE TARGET PORT IDENTIFIER in bytes 2-3
type TargetPortGroup struct {
	Preferred  bool
	State      AccessState
	Supported  byte // byte 1: the states this group supports
	ID         uint16
	StatusCode byte // 0 none, 1 altered by SET TARGET PORT GROUPS, 2 implicitly
	Ports      []uint16
}

// TargetPortGroups is REPORT TARGET PORT GROUPS parameter data.
type TargetPortGroups struct {
	Groups []TargetPortGroup
	// Extended is set when the data uses the extended header (format
	// type 1); then TransitionTime is IMPLICIT TRANSITION TIME, seconds.
	Extended       bool
	TransitionTime byte
	// Truncated is set when RETURN DATA LENGTH promises more than was
	// returned; Groups holds the complete descriptors.
	Truncated  bool
	FullLength int // allocation length that returns everything
}

// ParseReportTargetPortGroups decodes REPORT TARGET PORT GROUPS parameter
// data in either format: length only (descriptors at byte 4) or the
// extended header (FORMAT TYPE 001b in byte 4 bits 6-4, descriptors at
// byte 8). The two are told apart by byte 4, whose bits 6-4 are reserved
// (zero) in a descriptor.
func ParseReportTargetPortGroups(b []byte) (TargetPortGroups, error) {
	if len(b) < 4 {
		return TargetPortGroups{}, errShort("REPORT TARGET PORT GROUPS data", len(b), 4)
	}
	var t TargetPortGroups
	n := 4 + uint64(binary.BigEndian.Uint32(b))
	t.FullLength = int(min(n, 1<<31))
	if n > uint64(len(b)) {
		t.Truncated = true
		n = uint64(len(b))
	}
	body := b[4:n]
	if len(body) >= 4 && (body[0]>>4)&0x07 == 1 {
		t.Extended = true
		t.TransitionTime = body[1]
		body = body[4:]
	}
	for len(body) > 0 {
		if len(body) < 8 {
			t.Truncated = true
			break
		}
		cnt := int(body[7])
		sz := 8 + 4*cnt
		if sz > len(body) {
			t.Truncated = true
			break
		}
		g := TargetPortGroup{
			Preferred:  body[0]&0x80 != 0,
			State:      AccessState(body[0] & 0x0f),
			Supported:  body[1],
			ID:         binary.BigEndian.Uint16(body[2:]),
			StatusCode: body[5],
			Ports:      make([]uint16, cnt),
		}
		for i := range cnt {
			g.Ports[i] = binary.BigEndian.Uint16(body[8+4*i+2:])
		}
		t.Groups = append(t.Groups, g)
		body = body[sz:]
	}
	return t, nil
}

// GroupOfPort returns the group that contains relative target port id.
func (t TargetPortGroups) GroupOfPort(port uint16) (TargetPortGroup, bool) {
	for _, g := range t.Groups {
		for _, p := range g.Ports {
			if p == port {
				return g, true
			}
		}
	}
	return TargetPortGroup{}, false
}
