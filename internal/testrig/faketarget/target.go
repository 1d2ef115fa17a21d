// Package faketarget is a scriptable in-process iSCSI target for tests.
//
// It performs a real, minimal login (AuthMethod None, or CHAP MD5 with a
// configured secret; operational keys answered with configurable values)
// and then serves a default full feature phase backed by in-memory disks:
// INQUIRY (standard, VPD 0x00/0x80/0x83/0xB0), READ CAPACITY 10/16, TEST
// UNIT READY, READ/WRITE 10/16 with R2T solicitation within the negotiated
// limits, SYNCHRONIZE CACHE, REPORT LUNS, MODE SENSE(6), NOP-Out echo, task
// management, Text SendTargets and Logout. The real initiator runs its
// normal code paths against it.
//
// On top of that, hooks (Config.OnLogin, OnCommand, OnPDU, OnDataOut) let a
// test take over any PDU and answer with arbitrary PDUs through the Conn
// helpers (SendDataIn, SendStatus, SendR2T, SendNopIn, SendAsync,
// SendReject, SendRaw, Send for anything else), move the command window
// (SetWindow, SetWindowSize), skew StatSN (SetStatSN) or delay answers.
// With Config.ErrorRecoveryLevel above 0 it keeps what it sent and serves
// SNACKs, and scripted faults damage, drop or acknowledge-request Data-In
// and status PDUs (erl.go). With Config.MaxConnections above 1 or
// ErrorRecoveryLevel 2, connections share sessions (session.go): added
// connections join by TSIH, the command window is the session's, Logout
// reason 2 and TASK REASSIGN recover a lost connection's tasks, and
// Config.Cut* hooks drop a connection at a scripted point.
//
// While it serves, the target checks the initiator's side of the protocol
// it can see — CmdSN inside the advertised window, Data-Out sizes, DataSN,
// Buffer Offsets, F bits, Target Transfer Tags, unsolicited data limits,
// repeated login keys — and records every breach as a violation
// (Target.Violations), so a test can both script a fault and assert that
// the initiator never broke a rule while handling it.
//
// Every received full-feature PDU is logged (Conn.Received, Conn.WaitFor).
// Hooks run on the connection's read goroutine: they may send, but must
// not block waiting for further PDUs (start a goroutine for that).
//
// It imports only the standard library and the initiator's codecs
// (initiator/pdu, initiator/scsi), never the initiator itself.
package faketarget

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// DefaultTargetName is the IQN the target answers to when Config.TargetName
// is empty.
const DefaultTargetName = "iqn.2026-11.org.lunbridge:fake"

// ClosedWindow as Config.Window makes the target log in with a zero command
// window (MaxCmdSN = ExpCmdSN - 1).
const ClosedWindow = -1

// LUNConfig describes one logical unit backed by memory.
type LUNConfig struct {
	Number    uint64
	Blocks    uint64 // default 2048
	BlockSize int    // default 512
}

// Config describes the target. Zero values take the defaults noted.
type Config struct {
	TargetName string // default DefaultTargetName
	Alias      string

	// CHAPUser and CHAPSecret, when CHAPSecret is set, make the target
	// require CHAP (MD5 only). TargetCHAPUser/TargetCHAPSecret answer a
	// mutual challenge.
	CHAPUser, CHAPSecret             string
	TargetCHAPUser, TargetCHAPSecret string

	// Operational values the target answers with (RFC 7143, Section 13).
	MaxRecvDataSegmentLength int  // target's declaration, default 8192
	FirstBurstLength         int  // default 65536
	MaxBurstLength           int  // default 262144
	InitialR2T               bool // target wants R2T (OR function)
	NoImmediateData          bool // target refuses immediate data (AND function)
	MaxOutstandingR2T        int  // default 1
	HeaderDigest, DataDigest bool // choose CRC32C when offered
	// R2TSize caps each R2T's Desired Data Transfer Length below
	// MaxBurstLength so one write takes several R2Ts (default: no cap).
	R2TSize int

	// Window is the number of commands the target accepts at login
	// (MaxCmdSN - ExpCmdSN + 1); 0 means 32, ClosedWindow a zero window.
	Window int
	// InitialStatSN is the StatSN of the first Login Response (default 0x100).
	InitialStatSN uint32

	// ExtraLoginKeys are added to the first operational-stage Login
	// Response. Keys the initiator did not send are target proposals that
	// the initiator must answer before the target leaves the stage.
	ExtraLoginKeys []pdu.KV

	// SeparateStatus sends read status in a SCSI Response instead of the
	// final Data-In (S bit).
	SeparateStatus bool

	// ErrorRecoveryLevel is the highest level the target accepts (the
	// answer is the minimum of the offer and this; default 0). Above 0 the
	// target keeps every Data-In and status it sent and serves SNACKs
	// (erl.go): Data/R2T SNACKs re-send the Data-In range, Status SNACKs
	// the status PDUs, DataACKs are recorded.
	ErrorRecoveryLevel int
	// CorruptDataIn, when it returns true for a Data-In about to go out
	// (ITT, DataSN, and whether it is re-sent for a SNACK), flips one
	// byte of its payload on the wire: its data digest then fails. The
	// target keeps the correct copy.
	CorruptDataIn func(itt, dataSN uint32, resend bool) bool
	// DropDataIn, when it returns true, does not send the Data-In at all
	// (kept for a SNACK): the initiator sees a DataSN gap.
	DropDataIn func(itt, dataSN uint32, resend bool) bool
	// CorruptDataInHeader likewise flips a byte of the header digest.
	CorruptDataInHeader func(itt, dataSN uint32, resend bool) bool
	// DataACK, when it returns true for a Data-In (ITT, DataSN), sets its
	// A bit with a fresh Target Transfer Tag (ERL >= 1 only).
	DataACK func(itt, dataSN uint32) bool
	// DropStatus, when it returns true for a SCSI Response (ITT and the
	// StatSN it was given), keeps it for a Status SNACK but does not send
	// it: the initiator sees a StatSN gap at the next status.
	DropStatus func(itt, statSN uint32) bool
	// DropCommand, when it returns true for a SCSI Command PDU (ITT,
	// CmdSN), discards it and its immediate data as if its header digest
	// had failed (RFC 7143, Section 7.8): the target's ExpCmdSN stays at
	// the command (later commands are served, but not acknowledged until
	// the gap is filled), and a retry with the same CmdSN fills it (initiator command retry, Section 6.2.1).
	// The dropped PDU is still logged, with Received.Dropped set. A
	// command whose CmdSN the target already received is discarded as a
	// duplicate (Section 4.2.2.1) and recorded as a violation: only a
	// command that never arrived may be retried. Only without sessions
	// (MaxConnections <= 1 and ErrorRecoveryLevel < 2), whose CmdSN
	// checks session.go does.
	DropCommand func(itt, cmdSN uint32) bool
	// RejectSNACK answers every SNACK with a Reject (reason SNACK reject);
	// IgnoreSNACK drops them.
	RejectSNACK, IgnoreSNACK bool

	// MaxConnections is the most connections a session may have (the
	// answer is the minimum of the offer and this; default 1). Above 1,
	// or with ErrorRecoveryLevel 2, connections share sessions
	// (session.go): a login with the session's TSIH joins it, the command
	// window is the session's, Logout reason 1/2 may name another
	// connection, and TASK REASSIGN moves tasks of a lost connection.
	MaxConnections int
	// Time2Wait and Time2Retain are the DefaultTime2Wait (Maximum with
	// the offer) and DefaultTime2Retain (Minimum with the offer; 0 means
	// 20, negative 0) the target answers; after a connection is lost its
	// tasks can be reassigned between Time2Wait and Time2Wait+Time2Retain.
	Time2Wait, Time2Retain int
	// ReassignResponse, when set, answers TASK REASSIGN for the task
	// with ITT itt: any value but 0 (function complete) refuses it.
	ReassignResponse func(itt uint32) uint8
	// ReassignWire, when set, maps the response the target decided for a
	// TASK REASSIGN to the one that goes on the wire — LIO61ReassignWire
	// answers as LIO 6.1 does. The target acts on its own decision.
	ReassignWire func(resp uint8) uint8
	// LoseCommand, when it returns true for a SCSI command arriving on c
	// (sessions only), closes c before the command is counted: it is lost
	// with the connection, the target never had it and its CmdSN stays a
	// gap until the initiator sends it again.
	LoseCommand func(c *Conn, cmd *pdu.SCSICommand) bool
	// CutDataIn, when it returns true for the Data-In about to go out
	// (ITT, DataSN), closes the connection instead; CutStatus likewise
	// before the SCSI Response of itt (the task is then done, its status
	// kept for a reassign); CutDataOut when a Data-Out at offset arrives
	// (it is dropped).
	// CutCommand, when it returns true for a SCSI command arriving on c
	// (sessions only), closes c instead of executing it; the command is
	// executed on the connection it is reassigned to.
	CutCommand func(c *Conn, cmd *pdu.SCSICommand) bool
	CutDataIn  func(itt, dataSN uint32) bool
	CutStatus  func(itt uint32) bool
	CutDataOut func(itt, offset uint32) bool

	// PortalGroupTag is the TargetPortalGroupTag the login answers
	// (default 1).
	PortalGroupTag int

	// Portals are the TargetAddress values SendTargets reports (default:
	// the listener's address, or 127.0.0.1:3260).
	Portals []string

	// LUNs served; default one LUN 0 of 2048 512-byte blocks.
	LUNs []LUNConfig
	// Vendor is the T10 VENDOR IDENTIFICATION of standard INQUIRY data
	// ("LUNBRIDG" if empty; "LIO-ORG" to pose as LIO).
	Vendor string

	// NoRecord keeps no log of received PDUs (Received and WaitFor see
	// nothing), so a long workload does not grow the target's memory.
	NoRecord bool

	// Hooks. Each returns true when it handled the PDU (the default
	// behaviour is then skipped).
	OnLogin   func(c *Conn, req *pdu.LoginRequest, keys []pdu.KV) bool
	OnPDU     func(c *Conn, p pdu.PDU, data []byte) bool
	OnCommand func(c *Conn, cmd *pdu.SCSICommand, data []byte) bool
	OnDataOut func(c *Conn, d *pdu.DataOut, data []byte) bool
	// OnConnect is called when a connection enters full feature phase.
	OnConnect func(c *Conn)
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.TargetName == "" {
		d.TargetName = DefaultTargetName
	}
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&d.MaxRecvDataSegmentLength, 8192)
	def(&d.FirstBurstLength, 65536)
	def(&d.MaxBurstLength, 262144)
	def(&d.MaxOutstandingR2T, 1)
	def(&d.PortalGroupTag, 1)
	if d.Window == 0 {
		d.Window = 32
	}
	if d.InitialStatSN == 0 {
		d.InitialStatSN = 0x100
	}
	if len(d.LUNs) == 0 {
		d.LUNs = []LUNConfig{{Number: 0}}
	}
	for i := range d.LUNs {
		if d.LUNs[i].Blocks == 0 {
			d.LUNs[i].Blocks = 2048
		}
		if d.LUNs[i].BlockSize == 0 {
			d.LUNs[i].BlockSize = 512
		}
	}
	return d
}

// Target is a fake iSCSI target. Create it with New, connect the initiator
// through Dial (net.Pipe) or Listen (TCP on 127.0.0.1), and Close it at the
// end of the test: Close ends every connection and waits for every
// goroutine the target started.
type Target struct {
	cfg   Config
	disks map[uint64]*disk

	mu         sync.Mutex
	conns      []*Conn
	violations []string
	ln         net.Listener
	closed     bool
	connCh     chan struct{} // closed and replaced when a connection is added
	wg         sync.WaitGroup
	nextTSIH   uint16
	sessions   map[uint16]*session
	execs      map[uint32]int
	reassigned []uint32
}

// New returns a target with cfg.
func New(cfg Config) *Target {
	t := &Target{cfg: cfg.withDefaults(), disks: map[uint64]*disk{}, connCh: make(chan struct{}), nextTSIH: 1}
	for _, l := range t.cfg.LUNs {
		t.disks[l.Number] = newDisk(l)
	}
	return t
}

// Config returns the configuration with defaults applied.
func (t *Target) Config() Config { return t.cfg }

// Name returns the target's IQN.
func (t *Target) Name() string { return t.cfg.TargetName }

// Disk returns the backing store of LUN n (nil when there is none). Tests
// may read and write it directly between commands.
func (t *Target) Disk(n uint64) []byte {
	if d := t.disks[n]; d != nil {
		return d.data
	}
	return nil
}

// Dial has the signature of initiator.Config.Dial: it returns one end of a
// net.Pipe and serves the other.
func (t *Target) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	client, server := net.Pipe()
	if err := t.Serve(server); err != nil {
		client.Close()
		return nil, err
	}
	return client, nil
}

// Serve serves nc on a new goroutine.
func (t *Target) Serve(nc net.Conn) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		nc.Close()
		return errors.New("faketarget: target closed")
	}
	c := newConn(t, nc)
	t.conns = append(t.conns, c)
	close(t.connCh)
	t.connCh = make(chan struct{})
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		c.serve()
	}()
	return nil
}

// Listen starts accepting TCP connections on 127.0.0.1 and returns the
// address.
func (t *Target) Listen() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		ln.Close()
		return "", errors.New("faketarget: target closed")
	}
	t.ln = ln
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if t.Serve(nc) != nil {
				return
			}
		}
	}()
	return ln.Addr().String(), nil
}

// Close closes the listener and every connection and waits for all the
// target's goroutines.
func (t *Target) Close() error {
	t.mu.Lock()
	t.closed = true
	if t.ln != nil {
		t.ln.Close()
	}
	conns := append([]*Conn(nil), t.conns...)
	t.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	t.wg.Wait()
	return nil
}

// Conns returns every connection served so far, oldest first.
func (t *Target) Conns() []*Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]*Conn(nil), t.conns...)
}

// WaitConn waits until the target has served n connections and returns
// the n-th (1-based).
func (t *Target) WaitConn(ctx context.Context, n int) (*Conn, error) {
	for {
		t.mu.Lock()
		if len(t.conns) >= n {
			c := t.conns[n-1]
			t.mu.Unlock()
			return c, nil
		}
		ch := t.connCh
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("faketarget: waiting for connection %d: %w", n, ctx.Err())
		}
	}
}

// Violations returns every protocol rule the initiator was seen to break.
func (t *Target) Violations() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.violations...)
}

func (t *Target) violate(format string, args ...any) {
	t.mu.Lock()
	t.violations = append(t.violations, fmt.Sprintf(format, args...))
	t.mu.Unlock()
}

func (t *Target) allocTSIH() uint16 {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.nextTSIH
	t.nextTSIH++
	return n
}

// Received is one PDU received in full feature phase.
type Received struct {
	Raw  pdu.BHS
	PDU  pdu.PDU
	Data []byte
	At   time.Time
	// MaxCmdSN is the largest valid MaxCmdSN the target had advertised
	// when the PDU arrived.
	MaxCmdSN uint32
	// Dropped is set for a command Config.DropCommand discarded.
	Dropped bool
}

// Opcode returns the PDU's opcode.
func (r Received) Opcode() pdu.Opcode { return r.Raw.Opcode() }

// ITT returns the PDU's Initiator Task Tag.
func (r Received) ITT() uint32 { return r.Raw.ITT() }
