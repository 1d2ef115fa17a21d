package multipath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// pathConn is one logged-in I_T nexus plus the LU handle on it. The
// iSCSI implementation is iscsiConn; tests use fakes so selectors,
// classification and fencing run without targets.
type pathConn interface {
	blockdev.Device
	blockdev.Trimmer
	blockdev.Zeroer
	blockdev.Extenter
	Identity() blockdev.Identity
	ReadOnly() bool
	TestUnitReady(ctx context.Context) error
	Ping(ctx context.Context) error
	// ALUA reports this port's asymmetric access state; ok is false when
	// the LU does not support ALUA (INQUIRY TPGS 0).
	ALUA(ctx context.Context) (st scsi.AccessState, pref, ok bool, err error)
	// ResetLU sends LOGICAL UNIT RESET through this nexus.
	ResetLU(ctx context.Context) error
	// Abort closes the nexus abortively: no Logout, sockets reset so
	// nothing still queued in our kernel reaches the target later, every
	// outstanding command failed. It returns once that is done.
	Abort()
	// Done is closed when the nexus' connection failed.
	Done() <-chan struct{}
	// Nexus describes the session: target name, target portal group tag, TSIH.
	Nexus() (target string, tpgt int, tsih uint16)
}

// endpoint is how one path reaches the target.
type endpoint interface {
	Portal() string
	ISID() [6]byte
	// connect logs in with the path's ISID and TSIH 0 — reinstating any
	// older session with that ISID in the same target portal group — and
	// opens the LU. login describes the session the login created (zero
	// when the login failed), also when opening the LU failed afterwards:
	// it proves an older nexus dead only if target and portal group match.
	connect(ctx context.Context) (c pathConn, login sessionID, err error)
	// fenceLogin logs in through this endpoint's portal with another
	// path's ISID and logs out again; it returns the target portal group
	// tag of the login, which must match for it to be a reinstatement.
	fenceLogin(ctx context.Context, isid [6]byte) (target string, tpgt int, err error)
}

// sessionID is what, with the initiator name and the ISID, names an iSCSI
// session (RFC 7143, Section 4.4.1): a login with our ISID reinstates the
// old session only when both match.
type sessionID struct {
	target string
	tpgt   int
}

func (s sessionID) String() string { return fmt.Sprintf("%s, portal group %d", s.target, s.tpgt) }

type iscsiEndpoint struct {
	cfg initiator.Config
	lun uint64
}

func (e *iscsiEndpoint) Portal() string { return e.cfg.Portal }
func (e *iscsiEndpoint) ISID() [6]byte  { return e.cfg.ISID }

func (e *iscsiEndpoint) connect(ctx context.Context) (pathConn, sessionID, error) {
	s, err := initiator.Dial(ctx, e.cfg)
	if err != nil {
		return nil, sessionID{}, err
	}
	login := sessionID{s.Config().TargetName, s.Params().TargetPortalGroupTag}
	l, err := initiator.OpenLUN(ctx, s, e.lun)
	if err != nil {
		go s.Close()
		return nil, login, err
	}
	l.SetOwnsSession(true)
	f := scsi.EncodeLUN(e.lun)
	return &iscsiConn{LUN: l, s: s, field: binary.BigEndian.Uint64(f[:])}, login, nil
}

func (e *iscsiEndpoint) fenceLogin(ctx context.Context, isid [6]byte) (string, int, error) {
	cfg := e.cfg
	cfg.ISID = isid
	cfg.NopInterval = -1
	// A redirected login lands in whatever portal group the target
	// names: it would be a new session, not a reinstatement.
	cfg.NoRedirect = true
	s, err := initiator.Dial(ctx, cfg)
	if err != nil {
		return "", 0, err
	}
	tpgt := s.Params().TargetPortalGroupTag
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.CloseContext(cctx)
	return cfg.TargetName, tpgt, nil
}

// iscsiConn is a pathConn over an initiator session and LUN handle.
type iscsiConn struct {
	*initiator.LUN
	s     *initiator.Session
	field uint64
}

func (c *iscsiConn) cmd(ctx context.Context, cdb []byte, read []byte) (int, error) {
	for attempt := 0; ; attempt++ {
		resp, err := c.s.Do(ctx, &initiator.Command{LUN: c.field, CDB: cdb, Read: read})
		if err != nil {
			return 0, err
		}
		err = scsi.CheckStatus(scsi.Status(resp.Status), senseSegment(resp.Sense))
		if err != nil && scsi.IsUnitAttention(err) && attempt < 4 {
			continue // e.g. 29/03 after a LOGICAL UNIT RESET from another path
		}
		return min(resp.Received, len(read)), err
	}
}

// senseSegment rebuilds the iSCSI sense data segment (2-byte SenseLength
// + sense) that scsi.CheckStatus decodes.
func senseSegment(sense []byte) []byte {
	if len(sense) == 0 {
		return nil
	}
	b := make([]byte, 2+len(sense))
	binary.BigEndian.PutUint16(b, uint16(len(sense)))
	copy(b[2:], sense)
	return b
}

func (c *iscsiConn) TestUnitReady(ctx context.Context) error {
	_, err := c.cmd(ctx, scsi.TestUnitReady(), nil)
	return err
}

func (c *iscsiConn) Ping(ctx context.Context) error { return c.s.Ping(ctx) }

func (c *iscsiConn) ALUA(ctx context.Context) (scsi.AccessState, bool, bool, error) {
	if c.LUN.Inquiry.TPGS == scsi.TPGSNone {
		return 0, false, false, nil
	}
	group, ok := c.LUN.DevID.TargetPortGroup()
	if !ok {
		return 0, false, false, errors.New("ALUA: VPD 0x83 names no target port group")
	}
	buf := make([]byte, 1024)
	n, err := c.cmd(ctx, scsi.ReportTargetPortGroups(uint32(len(buf)), false), buf)
	if err != nil {
		return 0, false, true, fmt.Errorf("REPORT TARGET PORT GROUPS: %w", err)
	}
	tpgs, err := scsi.ParseReportTargetPortGroups(buf[:n])
	if err != nil {
		return 0, false, true, fmt.Errorf("REPORT TARGET PORT GROUPS: %w", err)
	}
	for _, g := range tpgs.Groups {
		if g.ID == group {
			return g.State, g.Preferred, true, nil
		}
	}
	return 0, false, true, fmt.Errorf("REPORT TARGET PORT GROUPS: group %d of this port not reported", group)
}

func (c *iscsiConn) ResetLU(ctx context.Context) error {
	return c.s.TaskManagement(ctx, pdu.TMFLogicalUnitReset, c.field)
}

func (c *iscsiConn) Done() <-chan struct{} { return c.s.Done() }

func (c *iscsiConn) Abort() {
	c.s.Abort()
	c.LUN.Close() // the session is closed already: no Logout
}

func (c *iscsiConn) Nexus() (string, int, uint16) {
	return c.s.Config().TargetName, c.s.Params().TargetPortalGroupTag, c.s.TSIH()
}
