package initiator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"net"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
)

// Config describes one session: where to log in, as whom, and what to offer.
// Zero values take the defaults noted (open-iscsi's, where it has one).
type Config struct {
	InitiatorName  string // required
	InitiatorAlias string
	// TargetName is the target IQN; empty means a discovery session.
	TargetName string
	// Portal is host:port (port 3260 when omitted).
	Portal string

	CHAP *CHAP // nil: AuthMethod None

	// Offered digests, in preference order; default {"None"}.
	HeaderDigest, DataDigest []string

	MaxRecvDataSegmentLength int  // default 1 MiB (one Data-In PDU per 1 MiB read)
	FirstBurstLength         int  // default 262144
	MaxBurstLength           int  // default 16776192
	InitialR2T               bool // default false (No)
	// NoImmediateData turns ImmediateData off (default Yes).
	NoImmediateData   bool
	MaxOutstandingR2T int // default 1
	MaxConnections    int // default 1
	// ErrorRecoveryLevel is the level offered at login (0, 1 or 2; default
	// 0). The session uses the minimum of this and the target's answer
	// (Params.ErrorRecoveryLvl). At 1 a Data-In digest error, a DataSN or
	// StatSN gap and the A bit are handled by SNACK on the same
	// connection (erl1.go), falling back to session recovery (level 0)
	// when the target does not help. At 2 a lost connection is recovered
	// inside the session: its tasks are reassigned to another or a new
	// connection with TASK REASSIGN (connrecovery.go), falling back to
	// session recovery when that fails. Discovery sessions always
	// offer 0 (Section 7.4.1).
	ErrorRecoveryLevel int

	// QueueDepth bounds commands in flight (default 128); the target's
	// CmdSN window bounds them further.
	QueueDepth int

	// ISID is the initiator session ID, kept across reconnects. Zero means
	// a random one (NewISID), which can never reinstate a session of an
	// earlier process; a long-running owner of a LUN should pass
	// StableISID so that a restarted process ends its predecessor's
	// session (and the predecessor's writes) at login.
	ISID [6]byte

	// LoginTimeout bounds connect plus login (default 15 s).
	LoginTimeout time.Duration

	// NopInterval is the idle time after which a NOP-Out ping checks the
	// link (default 5 s, like open-iscsi's noop_out_interval); NopTimeout
	// is how long the answer may take (default 5 s). A dead link is
	// declared within NopInterval+NopTimeout. Negative disables pings.
	NopInterval, NopTimeout time.Duration

	// CommandTimeout bounds one SCSI command (default 30 s, like the Linux
	// SCSI disk timeout); a command that exceeds it is escalated: ABORT
	// TASK, then LOGICAL UNIT RESET, then the connection is dropped (and
	// recovered). Negative disables it.
	CommandTimeout time.Duration

	// ReplacementTimeout bounds how long I/O waits for session recovery
	// after the connection is lost (default 120 s, like open-iscsi's
	// replacement_timeout); negative waits forever. Recovery itself
	// goes on in the background until Close.
	ReplacementTimeout time.Duration
	// NoRecovery fails I/O at once when the connection is lost and does
	// not reconnect (replacement timeout 0).
	NoRecovery bool

	// NotReadyWait bounds how long a LUN handle retries NOT READY
	// "becoming ready" / ALUA "transitioning" (default 30 s); negative
	// returns such errors at once (multipath tries another path instead).
	NotReadyWait time.Duration

	// OnUnitAttention, when set, is told of every UNIT ATTENTION a LUN
	// handle absorbs (LUN number and the decoded sense), e.g. so multipath
	// can re-check identity on 3F/0E and 2A/09 or re-read ALUA on 2A/06.
	// It must not block.
	OnUnitAttention func(lun uint64, sense error)

	// TCPUserTimeout is the sockets' TCP_USER_TIMEOUT: how long sent data
	// may stay unacknowledged before the kernel fails the connection
	// (default min(30 s, ReplacementTimeout); negative leaves the kernel's
	// default of about 15 minutes). Every iSCSI socket also has SO_LINGER
	// 0, so closing a connection never leaves PDUs to be delivered later.
	TCPUserTimeout time.Duration

	// NoRedirect makes a login redirect (status 0x0101/0x0102) an error
	// instead of following it. Fencing logins set it: a redirected login
	// may land in another target portal group, which is a new session,
	// not a reinstatement of the one being fenced.
	NoRedirect bool

	// Dial opens the TCP connection (default net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Logger receives login steps (debug) and PDU traces (trace); nil is silent.
	Logger *logrus.Entry
}

// CHAP holds CHAP credentials (RFC 7143, Section 12.1.3).
type CHAP struct {
	User, Secret string
	// TargetUser and TargetSecret enable mutual CHAP: the target must prove
	// it knows TargetSecret.
	TargetUser, TargetSecret string
	// Algorithms offered in order (CHAP_A): 5 MD5, 6 SHA-1, 7 SHA-256,
	// 8 SHA3-256. Default {8, 6, 5}: strongest first, as the target takes
	// the first it supports; 7 only on request, because tgtd answers
	// CHAP_A=7 but computes SHA-1 and then fails the login.
	Algorithms []int
	// AllowShortSecret accepts secrets shorter than 12 bytes (96 bits,
	// RFC 7143 Section 9.2.1).
	AllowShortSecret bool
}

func (c *Config) withDefaults() Config {
	d := *c
	if len(d.HeaderDigest) == 0 {
		d.HeaderDigest = []string{"None"}
	}
	if len(d.DataDigest) == 0 {
		d.DataDigest = []string{"None"}
	}
	setDefault(&d.MaxRecvDataSegmentLength, 1<<20)
	setDefault(&d.FirstBurstLength, 262144)
	setDefault(&d.MaxBurstLength, 16776192)
	setDefault(&d.MaxOutstandingR2T, 1)
	setDefault(&d.MaxConnections, 1)
	setDefault(&d.QueueDepth, 128)
	if d.NopInterval == 0 {
		d.NopInterval = 5 * time.Second
	}
	if d.NopTimeout <= 0 {
		d.NopTimeout = 5 * time.Second
	}
	if d.NotReadyWait == 0 {
		d.NotReadyWait = 30 * time.Second
	}
	if d.CommandTimeout == 0 {
		d.CommandTimeout = 30 * time.Second
	}
	if d.ReplacementTimeout == 0 {
		d.ReplacementTimeout = 120 * time.Second
	}
	if d.LoginTimeout == 0 {
		d.LoginTimeout = 15 * time.Second
	}
	if d.Dial == nil {
		var nd net.Dialer
		d.Dial = nd.DialContext
	}
	if d.Logger == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		d.Logger = logrus.NewEntry(l)
	}
	if d.ISID == ([6]byte{}) {
		d.ISID = NewISID()
	}
	return d
}

func setDefault(p *int, v int) {
	if *p <= 0 {
		*p = v
	}
}

// StableISID derives an ISID from what names one owner of one LUN through
// one portal: initiator name, target name, portal, LUN and an instance name
// ("" for the default owner). The same inputs give the same ISID in every
// process, so a restarted process's login reinstates, and thereby ends, the
// session of the process it replaces (RFC 7143 Section 6.3.5), as
// open-iscsi's stable per-interface ISID does. Distinct inputs give
// distinct ISIDs, so sessions to other LUNs, other paths (portals) or other
// instances are left alone; a second process on the same LUN must use
// another instance name.
//
// The format is the random type (T=10b, Section 11.12.5): byte 0 is 0x80,
// bytes 1-5 (B, C and the qualifier D) are 40 bits of SHA-256 of the
// inputs.
func StableISID(initiatorName, targetName, portal string, lun uint64, instance string) [6]byte {
	h := sha256.New()
	for _, p := range []string{"lunbridge-isid-v1", initiatorName, targetName, portalAddr(portal), strconv.FormatUint(lun, 10), instance} {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	var id [6]byte
	copy(id[1:], h.Sum(nil))
	id[0] = 0x80
	return id
}

// NewISID returns a random-format ISID (T=10b, RFC 7143 Section 11.12.5):
// byte 0 = 0x80, bytes 1-3 random, qualifier 0.
func NewISID() [6]byte {
	var id [6]byte
	rand.Read(id[1:4])
	id[0] = 0x80
	return id
}

// portalAddr adds the default port 3260 when host has none.
func portalAddr(p string) string {
	if _, _, err := net.SplitHostPort(p); err == nil {
		return p
	}
	return net.JoinHostPort(trimBrackets(p), "3260")
}

func trimBrackets(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}
