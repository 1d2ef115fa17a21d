package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// Portal is one network portal of a target with its portal group tag.
type Portal struct {
	Address string `json:"address"` // host:port
	Tag     int    `json:"tpgt"`
}

// Target is one SendTargets record.
type Target struct {
	Name    string   `json:"name"`
	Portals []Portal `json:"portals"`
}

// SendTargets opens a discovery session with cfg (TargetName must be
// empty), asks SendTargets=<which> ("All" when empty) and logs out.
func SendTargets(ctx context.Context, cfg initiator.Config, which string) ([]Target, error) {
	if cfg.TargetName != "" {
		return nil, fmt.Errorf("discovery: SendTargets needs a discovery session (no TargetName)")
	}
	// Discovery sessions never offer digests.
	cfg.HeaderDigest, cfg.DataDigest = []string{"None"}, []string{"None"}
	s, err := initiator.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer s.CloseContext(ctx)
	if which == "" {
		which = "All"
	}
	kvs, err := s.Text(ctx, []pdu.KV{{Key: "SendTargets", Value: which}})
	if err != nil {
		return nil, fmt.Errorf("SendTargets: %w", err)
	}
	out, err := ParseSendTargets(kvs, cfg.Logger)
	if errors.Is(err, initiator.ErrProtocol) {
		// A protocol error ends the session without a Logout, as session
		// recovery would (UNH-IOL FFP 18.4); a discovery session has
		// nothing to recover.
		s.Abandon()
	}
	return out, err
}

// operationalKeys are the login and operational keys of RFC 7143 Section
// 13 (and 12): negotiated at login, never part of a SendTargets response.
var operationalKeys = map[string]bool{
	"HeaderDigest": true, "DataDigest": true, "MaxConnections": true, "InitialR2T": true, "ImmediateData": true,
	"MaxRecvDataSegmentLength": true, "MaxBurstLength": true, "FirstBurstLength": true, "DefaultTime2Wait": true,
	"DefaultTime2Retain": true, "MaxOutstandingR2T": true, "DataPDUInOrder": true, "DataSequenceInOrder": true,
	"ErrorRecoveryLevel": true, "SessionType": true, "TaskReporting": true, "iSCSIProtocolLevel": true,
	"AuthMethod": true, "InitiatorName": true, "InitiatorAlias": true, "TargetPortalGroupTag": true,
	"OFMarker": true, "IFMarker": true, "OFMarkInt": true, "IFMarkInt": true, "SendTargets": true,
}

// ParseSendTargets turns a SendTargets response (RFC 7143, Appendix C)
// into records. TargetAddress entries that are link-local or malformed are
// skipped with a log line; a TargetAddress before any TargetName is an error.
func ParseSendTargets(kvs []pdu.KV, log *logrus.Entry) ([]Target, error) {
	var out []Target
	for _, kv := range kvs {
		switch kv.Key {
		case "TargetName":
			if kv.Value == "" {
				return nil, fmt.Errorf("discovery: empty TargetName in SendTargets response")
			}
			out = append(out, Target{Name: kv.Value})
		case "TargetAddress":
			if len(out) == 0 {
				return nil, fmt.Errorf("discovery: TargetAddress %q before any TargetName", kv.Value)
			}
			p, err := ParseTargetAddress(kv.Value)
			if err != nil {
				warn(log, "skipping portal %q of %s: %v", kv.Value, out[len(out)-1].Name, err)
				continue
			}
			if unusableHost(hostOf(p.Address)) {
				warn(log, "skipping unusable portal %s of %s (link-local or unspecified address)", p.Address, out[len(out)-1].Name)
				continue
			}
			t := &out[len(out)-1]
			t.Portals = append(t.Portals, p)
		case "TargetAlias":
		default:
			if operationalKeys[kv.Key] {
				// "No other keys are allowed" (Appendix C); a
				// negotiation key here is not taken up (UNH-IOL FFP
				// 18.4: the initiator does not negotiate it).
				return nil, fmt.Errorf("%w: SendTargets response carries %s=%s (only TargetName and TargetAddress are allowed, RFC 7143 Appendix C)", initiator.ErrProtocol, kv.Key, kv.Value)
			}
			warn(log, "ignoring key %s in SendTargets response", kv.Key)
		}
	}
	return out, nil
}

func warn(log *logrus.Entry, format string, args ...any) {
	if log != nil {
		log.Warnf(format, args...)
	}
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

// ParseTargetAddress parses "host[:port][,tpgt]" with bracketed IPv6
// (RFC 7143, Section 13.8).
func ParseTargetAddress(v string) (Portal, error) {
	addr, tag := v, -1
	if i := strings.LastIndexByte(v, ','); i >= 0 && !strings.Contains(v[i:], "]") {
		t, err := strconv.Atoi(v[i+1:])
		if err != nil || t < 0 || t > 65535 {
			return Portal{}, fmt.Errorf("bad portal group tag %q", v[i+1:])
		}
		addr, tag = v[:i], t
	}
	p, err := normalizePortal(addr)
	if err != nil {
		return Portal{}, err
	}
	return Portal{Address: p, Tag: tag}, nil
}

// unusableHost reports link-local (with or without a zone, "fe80::1%eth0")
// and unspecified addresses: an initiator elsewhere cannot reach them.
func unusableHost(h string) bool {
	ip := net.ParseIP(h)
	if ip == nil {
		if a, err := netip.ParseAddr(h); err == nil {
			return a.Zone() != "" || a.IsLinkLocalUnicast() || a.IsUnspecified()
		}
		return false
	}
	return ip.IsLinkLocalUnicast() || ip.IsUnspecified()
}
