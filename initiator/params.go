package initiator

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// Params are the operational values in force for a session after login
// (RFC 7143, Section 13). MaxRecvDataSegmentLength is kept per direction.
type Params struct {
	HeaderDigest, DataDigest bool
	// MaxRecvDSL is what we accept per PDU (our declaration).
	MaxRecvDSL int
	// MaxXmitDSL is what the target accepts per PDU (its declaration;
	// 8192 when it declared nothing).
	MaxXmitDSL        int
	FirstBurstLength  int
	MaxBurstLength    int
	InitialR2T        bool
	ImmediateData     bool
	MaxOutstandingR2T int
	MaxConnections    int
	DataPDUInOrder    bool
	DataSeqInOrder    bool
	DefaultTime2Wait  int
	DefaultTime2Ret   int
	ErrorRecoveryLvl  int

	TargetAlias          string
	TargetPortalGroupTag int
}

// rfcDefaults are the values that hold for keys nobody negotiated
// (RFC 7143, Section 13).
func rfcDefaults() Params {
	return Params{
		MaxRecvDSL: 8192, MaxXmitDSL: 8192,
		FirstBurstLength: 65536, MaxBurstLength: 262144,
		InitialR2T: true, ImmediateData: true,
		MaxOutstandingR2T: 1, MaxConnections: 1,
		DataPDUInOrder: true, DataSeqInOrder: true,
		DefaultTime2Wait: 2, DefaultTime2Ret: 20,
	}
}

func (p Params) String() string {
	return fmt.Sprintf("HeaderDigest=%v DataDigest=%v MaxRecvDSL=%d MaxXmitDSL=%d FirstBurstLength=%d MaxBurstLength=%d InitialR2T=%v ImmediateData=%v MaxOutstandingR2T=%d MaxConnections=%d ERL=%d",
		yesNo(p.HeaderDigest), yesNo(p.DataDigest), p.MaxRecvDSL, p.MaxXmitDSL, p.FirstBurstLength, p.MaxBurstLength,
		yesNo(p.InitialR2T), yesNo(p.ImmediateData), p.MaxOutstandingR2T, p.MaxConnections, p.ErrorRecoveryLvl)
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// negotiator tracks the operational keys of one login (RFC 7143,
// Sections 6.2 and 13).
type negotiator struct {
	cfg       *Config
	discovery bool
	p         Params
	offered   map[string]string // keys we proposed, with the value
	answered  map[string]bool   // keys the target answered or declared
	added     bool              // login of an added connection (MC/S)
}

// addedConn makes the negotiator propose only connection-only keys
// (HeaderDigest, DataDigest, MaxRecvDataSegmentLength; RFC 7143 Section 13
// "CO"), starting from the session's values.
func (n *negotiator) addedConn(session Params) {
	n.added = true
	mrdsl := n.p.MaxRecvDSL
	n.p = session
	n.p.MaxRecvDSL = mrdsl
	n.p.MaxXmitDSL = 8192
}

func newNegotiator(cfg *Config, discovery bool) *negotiator {
	n := &negotiator{cfg: cfg, discovery: discovery, p: rfcDefaults(), offered: map[string]string{}, answered: map[string]bool{}}
	n.p.MaxRecvDSL = cfg.MaxRecvDataSegmentLength
	return n
}

// erl is the ErrorRecoveryLevel offered: the configured one (0 to 2), and
// 0 on discovery sessions ("ErrorRecoveryLevel MUST be 0", Section 7.4.1).
func (n *negotiator) erl() int {
	if n.discovery {
		return 0
	}
	return min(max(n.cfg.ErrorRecoveryLevel, 0), 2)
}

// maxOutstandingR2T is the MaxOutstandingR2T offered: "when
// ErrorRecoveryLevel is not 0 and DataSequenceInOrder is Yes,
// MaxOutstandingR2T MUST be 1" (Section 13.19); we offer
// DataSequenceInOrder=Yes, so a level above 0 offers 1.
func (n *negotiator) maxOutstandingR2T() int {
	if n.erl() > 0 {
		return 1
	}
	return n.cfg.MaxOutstandingR2T
}

// proposals returns the operational keys of our first request.
func (n *negotiator) proposals() []pdu.KV {
	c := n.cfg
	kvs := []pdu.KV{
		kv("HeaderDigest", strings.Join(c.HeaderDigest, ",")),
		kv("DataDigest", strings.Join(c.DataDigest, ",")),
	}
	if n.discovery {
		// No digests on discovery sessions (real targets answer None anyway).
		kvs = []pdu.KV{kv("HeaderDigest", "None"), kv("DataDigest", "None")}
	} else if n.added {
		kvs = append(kvs, kv("MaxRecvDataSegmentLength", strconv.Itoa(c.MaxRecvDataSegmentLength)))
		for _, p := range kvs {
			n.offered[p.Key] = p.Value
		}
		return kvs
	} else {
		kvs = append(kvs,
			kv("MaxConnections", strconv.Itoa(c.MaxConnections)),
			kv("InitialR2T", yesNo(c.InitialR2T)),
			kv("ImmediateData", yesNo(!c.NoImmediateData)),
			kv("MaxBurstLength", strconv.Itoa(c.MaxBurstLength)),
			kv("FirstBurstLength", strconv.Itoa(min(c.FirstBurstLength, c.MaxBurstLength))),
			kv("MaxOutstandingR2T", strconv.Itoa(n.maxOutstandingR2T())),
			kv("DataPDUInOrder", "Yes"),
			kv("DataSequenceInOrder", "Yes"),
		)
	}
	// Level 2 needs the target to keep a lost connection's tasks
	// (DefaultTime2Retain, Minimum function: the RFC default 20 s) and
	// waits no longer than the target asks (DefaultTime2Wait, Maximum
	// function: offering 0 takes the target's value).
	t2w, t2r := "2", "0"
	if n.erl() >= 2 {
		t2w, t2r = "0", "20"
	}
	kvs = append(kvs,
		kv("MaxRecvDataSegmentLength", strconv.Itoa(c.MaxRecvDataSegmentLength)),
		kv("DefaultTime2Wait", t2w),
		kv("DefaultTime2Retain", t2r),
		kv("ErrorRecoveryLevel", strconv.Itoa(n.erl())),
	)
	for _, p := range kvs {
		n.offered[p.Key] = p.Value
	}
	return kvs
}

func parseNum(key, v string, lo, hi int) (int, error) {
	x, err := strconv.ParseUint(v, 0, 64)
	if err != nil || x < uint64(lo) || x > uint64(hi) {
		return 0, protoErr("%s=%q: not a number in [%d, %d]", key, v, lo, hi)
	}
	return int(x), nil
}

func parseBool(key, v string) (bool, error) {
	switch v {
	case "Yes":
		return true, nil
	case "No":
		return false, nil
	}
	return false, protoErr("%s=%q: not Yes or No", key, v)
}

// isSpecial reports the reserved answers of RFC 7143 Section 6.2.
func isSpecial(v string) bool {
	return v == "Reject" || v == "Irrelevant" || v == "NotUnderstood"
}

// handle processes one key from the target during operational negotiation.
// It returns a pair to send back when the key was a proposal by the target
// that needs an answer.
func (n *negotiator) handle(kv pdu.KV) (*pdu.KV, error) {
	k, v := kv.Key, kv.Value
	ours, weOffered := n.offered[k]
	if n.answered[k] && k != "TargetAddress" {
		// "An initiator that detects [a repeated key] MUST drop the
		// connection" (Section 6.3).
		return nil, protoErr("target sent key %s twice", k)
	}
	n.answered[k] = true

	// Declarative keys.
	switch k {
	case "TargetAlias":
		n.p.TargetAlias = v
		return nil, nil
	case "TargetPortalGroupTag":
		t, err := parseNum(k, v, 0, 65535)
		n.p.TargetPortalGroupTag = t
		return nil, err
	case "TargetAddress":
		return nil, nil
	case "MaxRecvDataSegmentLength":
		if isSpecial(v) {
			return nil, nil
		}
		x, err := parseNum(k, v, 512, 1<<24-1)
		n.p.MaxXmitDSL = x
		return nil, err
	}

	if weOffered && isSpecial(v) {
		// Keep the current (default) value (Section 6.2). NotUnderstood
		// for an RFC 7143 key is a protocol error, but targets answer
		// this way for keys they do not implement; tolerate it.
		n.cfg.Logger.WithField("key", k).Debugf("target answered %s", v)
		return nil, nil
	}
	if !weOffered {
		return n.answerProposal(k, v)
	}

	var err error
	switch k {
	case "HeaderDigest", "DataDigest":
		// Accept any value we offered (tgtd picks CRC32C even from
		// "None,CRC32C"; see real-targets.md).
		if !contains(strings.Split(ours, ","), v) {
			return nil, protoErr("%s=%s was not offered (%s)", k, v, ours)
		}
		on := v == "CRC32C"
		if k == "HeaderDigest" {
			n.p.HeaderDigest = on
		} else {
			n.p.DataDigest = on
		}
	case "MaxConnections":
		n.p.MaxConnections, err = n.minimum(k, v, ours, 1, 65535)
	case "MaxBurstLength":
		n.p.MaxBurstLength, err = n.minimum(k, v, ours, 512, 1<<24-1)
	case "FirstBurstLength":
		n.p.FirstBurstLength, err = n.minimum(k, v, ours, 512, 1<<24-1)
	case "MaxOutstandingR2T":
		n.p.MaxOutstandingR2T, err = n.minimum(k, v, ours, 1, 65535)
	case "DefaultTime2Retain":
		n.p.DefaultTime2Ret, err = n.minimum(k, v, ours, 0, 3600)
	case "ErrorRecoveryLevel":
		n.p.ErrorRecoveryLvl, err = n.minimum(k, v, ours, 0, 2)
	case "DefaultTime2Wait":
		var x int
		x, err = parseNum(k, v, 0, 3600)
		o, _ := strconv.Atoi(ours)
		n.p.DefaultTime2Wait = max(x, o) // Maximum function
	case "InitialR2T", "DataPDUInOrder", "DataSequenceInOrder":
		var b bool
		b, err = parseBool(k, v) // OR function
		o := ours == "Yes"
		if o && !b {
			return nil, protoErr("%s: answered No to Yes (OR function)", k)
		}
		switch k {
		case "InitialR2T":
			n.p.InitialR2T = b || o
		case "DataPDUInOrder":
			n.p.DataPDUInOrder = b || o
		default:
			n.p.DataSeqInOrder = b || o
		}
	case "ImmediateData":
		var b bool
		b, err = parseBool(k, v) // AND function
		n.p.ImmediateData = b && ours == "Yes"
	}
	return nil, err
}

// minimum implements the Minimum result function; a target that answers
// more than offered is tolerated by taking the minimum.
func (n *negotiator) minimum(k, v, ours string, lo, hi int) (int, error) {
	x, err := parseNum(k, v, lo, hi)
	if err != nil {
		return 0, err
	}
	o, _ := strconv.Atoi(ours)
	if x > o {
		n.cfg.Logger.WithField("key", k).Warnf("target answered %d above our offer %d; using %d", x, o, o)
		return o, nil
	}
	return x, nil
}

// answerProposal answers a key the target proposed on its own.
func (n *negotiator) answerProposal(k, v string) (*pdu.KV, error) {
	ans := func(val string) (*pdu.KV, error) { return &pdu.KV{Key: k, Value: val}, nil }
	if isSpecial(v) {
		return nil, nil
	}
	switch k {
	case "IFMarker", "OFMarker":
		// Obsolete (Section 13.25): answer No; a target that proposes
		// "No" gets "No".
		return ans("No")
	case "IFMarkInt", "OFMarkInt":
		return ans("Reject")
	case "HeaderDigest", "DataDigest":
		if contains(strings.Split(v, ","), "None") {
			return ans("None")
		}
		return ans("Reject")
	case "InitialR2T", "DataPDUInOrder", "DataSequenceInOrder":
		b, err := parseBool(k, v)
		if err != nil {
			return nil, err
		}
		if k == "InitialR2T" {
			n.p.InitialR2T = b
		} else if k == "DataPDUInOrder" {
			n.p.DataPDUInOrder = b
		} else {
			n.p.DataSeqInOrder = b
		}
		return ans(yesNo(b))
	case "ImmediateData":
		b, err := parseBool(k, v)
		if err != nil {
			return nil, err
		}
		n.p.ImmediateData = b && !n.cfg.NoImmediateData
		return ans(yesNo(n.p.ImmediateData))
	case "MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T", "MaxConnections", "DefaultTime2Retain", "ErrorRecoveryLevel":
		x, err := parseNum(k, v, 0, 1<<24-1)
		if err != nil {
			return nil, err
		}
		switch k {
		case "MaxBurstLength":
			n.p.MaxBurstLength = x
		case "FirstBurstLength":
			n.p.FirstBurstLength = x
		case "MaxOutstandingR2T":
			n.p.MaxOutstandingR2T = x
		case "MaxConnections":
			n.p.MaxConnections = 1
			x = 1
		case "DefaultTime2Retain":
			n.p.DefaultTime2Ret = x
		case "ErrorRecoveryLevel":
			// Minimum function: at most what we are configured for.
			x = min(x, n.erl())
			n.p.ErrorRecoveryLvl = x
		}
		return ans(strconv.Itoa(x))
	case "DefaultTime2Wait":
		x, err := parseNum(k, v, 0, 3600)
		if err != nil {
			return nil, err
		}
		n.p.DefaultTime2Wait = x
		return ans(strconv.Itoa(x))
	}
	// Unknown and private (X-) keys: NotUnderstood (Section 6.2).
	return ans("NotUnderstood")
}

// finish checks the integrity rules once every value is known.
func (n *negotiator) finish() (Params, error) {
	p := n.p
	// Answers a target may omit (RFC 7143, Section 6.2.2): the outcome of
	// an AND key offered No is No, of an OR key offered Yes is Yes (LIO
	// omits them).
	for k, v := range n.offered {
		if n.answered[k] {
			continue
		}
		switch {
		case k == "ImmediateData" && v == "No":
			p.ImmediateData = false
		case k == "InitialR2T" && v == "Yes":
			p.InitialR2T = true
		case k == "DataPDUInOrder" && v == "Yes":
			p.DataPDUInOrder = true
		case k == "DataSequenceInOrder" && v == "Yes":
			p.DataSeqInOrder = true
		}
	}
	if p.FirstBurstLength > p.MaxBurstLength {
		p.FirstBurstLength = p.MaxBurstLength
	}
	if p.MaxXmitDSL <= 0 {
		p.MaxXmitDSL = 8192
	}
	return p, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func kv(k, v string) pdu.KV { return pdu.KV{Key: k, Value: v} }
