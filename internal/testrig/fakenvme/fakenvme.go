// Package fakenvme is a scriptable in-process NVMe/TCP controller for
// tests: ICReq/ICResp with optional digests and data alignment, Fabrics
// Connect (admin and I/O queues), Property Get/Set, Identify, Set Features
// Number of Queues, Keep Alive, the discovery log page, and RAM-backed
// namespaces serving Read (C2HData), Write (in-capsule or R2T/H2CData),
// Flush, Write Zeroes and Dataset Management (deallocate). The real host
// (package nvmetcp) runs its normal code paths against it.
//
// Controller.SetFault lets a test make the next matching command
// misbehave: stall, answer with a wrong CID, send short data, a malformed
// PDU, a C2HTermReq, or close the connection.
//
// It imports only the standard library and the codec nvmetcp/pdu, never
// the host itself.
package fakenvme

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// DefaultNQN is the subsystem NQN when Config.NQN is empty.
const DefaultNQN = "nqn.2026-12.org.lunbridge:fake"

// NSConfig describes one namespace (NSID = index + 1).
type NSConfig struct {
	BlockSize int   // 512 or 4096
	Blocks    int64 // size in blocks
}

// Config of a Controller.
type Config struct {
	// Addr is where Listen listens (default 127.0.0.1:0).
	Addr       string
	NQN        string
	Namespaces []NSConfig
	// AllowDigests: grant the digests the host asks for.
	AllowDigests bool
	MaxH2CData   uint32 // default 16 KiB
	CPDA         uint8  // data alignment asked of the host
	// InlineData is the in-capsule data an I/O queue takes (IOCCSZ); 0:
	// 4 KiB, negative: none (every write goes through R2T).
	InlineData int
	MaxR2T     int   // bytes asked per R2T (default 32 KiB)
	C2HChunk   int   // bytes per C2HData (default 16 KiB)
	MaxQueues  int   // I/O queues granted (default 4)
	MDTS       uint8 // default 5 (128 KiB)
	NoWriteZ   bool  // clear ONCS Write Zeroes and DSM
	Success    bool  // end reads with C2HData SUCCESS instead of a CapsuleResp
	Discovery  []pdu.DiscoveryEntry
	// AbortStalled: an Abort of a stalled command completes it with
	// Command Abort Requested (else Abort answers "not aborted", as
	// Linux nvmet does).
	AbortStalled bool
	// ANA: report Asymmetric Namespace Access (CMIC bit 3): every
	// namespace is in ANA group 1, whose state is per port (AddPort,
	// SetANAState), as Linux nvmet's ports/N/ana_groups/1/ana_state.
	ANA bool
	// NoANAEvents: never complete Asynchronous Event Requests (a
	// controller that does not send ANA change notices).
	NoANAEvents bool
	// LateApply is how long after FaultCutLate's cut the write lands
	// (default 1 s).
	LateApply time.Duration
}

// Fault is a misbehaviour for one command.
type Fault int

const (
	FaultNone        Fault = iota
	FaultStall             // never answer
	FaultWrongCID          // answer with an unused CID
	FaultShortData         // reads: send half the data then a success response
	FaultBadPDU            // send a PDU with a bad HLEN
	FaultTermReq           // send a C2HTermReq and close
	FaultClose             // close the connection
	FaultRefuse            // answer Invalid Command Opcode
	FaultRefuseLinux       // answer SCT 1 SC 0x83, as Linux nvmet for an unsupported Write Zeroes/DSM
	// FaultCutLate: close the connection without answering; an
	// in-capsule Write still lands on the namespace Config.LateApply
	// later, as on a real target whose dying controller finishes the
	// backend I/O after the host lost the connection (a ghost write
	// unless the host waits). Other commands: as FaultClose.
	FaultCutLate
)

// Controller is the fake.
type Controller struct {
	cfg      Config
	ln       net.Listener
	lns      []net.Listener // ln, then AddPort's
	ana      []pdu.ANAState // per port, guarded by mu
	anaChg   uint64
	mu       sync.Mutex
	ns       [][]byte
	cc       uint32
	nextCntl uint16
	conns    map[net.Conn]int // the port each came in on
	fault    func(qid uint16, sqe pdu.SQE) Fault
	wg       sync.WaitGroup
	// queues by controller ID and QID, for Abort
	queues map[[2]uint16]*session

	// Stats.
	ANARefused, ANALogs, ANAEvents                                                       atomic.Int64 // I/O refused with an ANA status; ANA log reads; ANA change events sent
	LateWrites                                                                           atomic.Int64 // FaultCutLate writes landed
	Connects, KeepAlives, InCapsule, R2Ts, Reads, Writes, Flushes, Zeroes, Trims, Aborts atomic.Int64
	HostNQN                                                                              atomic.Value // string of the last Connect
	HostID                                                                               atomic.Value // [16]byte
	Digests                                                                              atomic.Int32 // bit 0 header, bit 1 data, of the last connection
}

// Listen starts a controller on cfg.Addr (default 127.0.0.1:0).
func Listen(cfg Config) (*Controller, error) {
	if cfg.NQN == "" {
		cfg.NQN = DefaultNQN
	}
	if cfg.MaxH2CData == 0 {
		cfg.MaxH2CData = 16 << 10
	}
	if cfg.InlineData == 0 {
		cfg.InlineData = 4096
	}
	if cfg.MaxR2T == 0 {
		cfg.MaxR2T = 32 << 10
	}
	if cfg.C2HChunk == 0 {
		cfg.C2HChunk = 16 << 10
	}
	if cfg.MaxQueues == 0 {
		cfg.MaxQueues = 4
	}
	if cfg.MDTS == 0 {
		cfg.MDTS = 5
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	c := &Controller{cfg: cfg, ln: ln, lns: []net.Listener{ln}, ana: []pdu.ANAState{pdu.ANAOptimized},
		conns: map[net.Conn]int{}, nextCntl: 1, queues: map[[2]uint16]*session{}}
	for _, n := range cfg.Namespaces {
		c.ns = append(c.ns, make([]byte, int64(n.BlockSize)*n.Blocks))
	}
	c.wg.Add(1)
	go c.accept(ln, 0)
	return c, nil
}

// AddPort opens another port of the same subsystem (same namespaces and
// data, its own ANA state, optimized at first) and returns its address
// and port number (Listen's port is 0).
func (c *Controller) AddPort() (string, int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, err
	}
	c.mu.Lock()
	c.lns = append(c.lns, ln)
	c.ana = append(c.ana, pdu.ANAOptimized)
	port := len(c.lns) - 1
	c.mu.Unlock()
	c.wg.Add(1)
	go c.accept(ln, port)
	return ln.Addr().String(), port, nil
}

// SetDiscovery replaces the discovery log entries (to name ports known
// only after Listen).
func (c *Controller) SetDiscovery(es []pdu.DiscoveryEntry) {
	c.mu.Lock()
	c.cfg.Discovery = es
	c.mu.Unlock()
}

// SetANAState sets ANA group 1's state on port.
//
// Like Linux nvmet, it completes an outstanding Asynchronous Event
// Request of every controller connected through port with an ANA change
// notice (when the host enabled it and Config.NoANAEvents is not set).
func (c *Controller) SetANAState(port int, st pdu.ANAState) {
	c.mu.Lock()
	c.ana[port] = st
	c.anaChg++
	var fire []*session
	var cids []uint16
	if !c.cfg.NoANAEvents {
		for k, s := range c.queues {
			if k[1] == 0 && s.port == port && s.aenANA && len(s.aers) > 0 {
				fire, cids = append(fire, s), append(cids, s.aers[0])
				s.aers = s.aers[1:]
			}
		}
	}
	c.mu.Unlock()
	for i, s := range fire {
		c.ANAEvents.Add(1)
		s.respond(cids[i], 0, 2|3<<8|uint64(pdu.LogANA)<<16)
	}
}

// ClosePort stops port's listener and drops its connections (a port
// removed from the subsystem).
func (c *Controller) ClosePort(port int) {
	c.mu.Lock()
	c.lns[port].Close()
	for conn, p := range c.conns {
		if p == port {
			conn.Close()
		}
	}
	c.mu.Unlock()
}

// Addr is host:port.
func (c *Controller) Addr() string { return c.ln.Addr().String() }

// NQN is the subsystem NQN.
func (c *Controller) NQN() string { return c.cfg.NQN }

// Data returns a copy of n bytes at off of namespace nsid's store.
func (c *Controller) Data(nsid int, off, n int64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.ns[nsid-1][off : off+n])
}

// ReplaceNamespace swaps namespace nsid for a new, zeroed one (another
// medium behind the same NSID).
func (c *Controller) ReplaceNamespace(nsid int, n NSConfig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg.Namespaces[nsid-1] = n
	c.ns[nsid-1] = make([]byte, int64(n.BlockSize)*n.Blocks)
}

// SetFault installs f, called for every command; nil clears it.
func (c *Controller) SetFault(f func(qid uint16, sqe pdu.SQE) Fault) {
	c.mu.Lock()
	c.fault = f
	c.mu.Unlock()
}

// DropConnections closes every connection (a controller-side reset).
func (c *Controller) DropConnections() {
	c.mu.Lock()
	for conn := range c.conns {
		conn.Close()
	}
	c.mu.Unlock()
}

// Close stops the listener and every connection and waits for them.
func (c *Controller) Close() error {
	c.mu.Lock()
	for _, ln := range c.lns {
		ln.Close()
	}
	c.mu.Unlock()
	c.DropConnections()
	c.wg.Wait()
	return nil
}

func (c *Controller) accept(ln net.Listener, port int) {
	defer c.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.conns[conn] = port
		c.mu.Unlock()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			s := &session{c: c, conn: conn, r: pdu.NewReader(conn), port: port}
			s.cond = sync.NewCond(&s.wmu)
			go s.writer()
			s.serve()
			conn.Close()
			s.wmu.Lock()
			s.closed = true
			s.cond.Broadcast()
			s.wmu.Unlock()
			c.mu.Lock()
			delete(c.conns, conn)
			c.mu.Unlock()
		}()
	}
}

type session struct {
	c       *Controller
	conn    net.Conn
	r       *pdu.Reader
	opts    pdu.Options
	qid     uint16
	cntl    uint16
	port    int
	aers    []uint16        // outstanding Asynchronous Event Requests, guarded by Controller.mu
	aenANA  bool            // the host enabled ANA change notices
	stalled map[uint16]bool // CIDs not answered (FaultStall), guarded by Controller.mu
	wmu     sync.Mutex
	cond    *sync.Cond
	out     [][]byte
	closed  bool
	writes  map[uint16]*pendingWrite
	ttag    uint16
}

type pendingWrite struct {
	sqe  pdu.SQE
	data []byte
	got  int
}

// writer sends queued PDUs, so the read side never blocks on the host.
func (s *session) writer() {
	for {
		s.wmu.Lock()
		for len(s.out) == 0 && !s.closed {
			s.cond.Wait()
		}
		if s.closed {
			s.wmu.Unlock()
			return
		}
		b := s.out[0]
		s.out = s.out[1:]
		s.wmu.Unlock()
		if _, err := s.conn.Write(b); err != nil {
			s.conn.Close()
			return
		}
	}
}

func (s *session) sendRaw(b []byte) {
	s.wmu.Lock()
	s.out = append(s.out, b)
	s.cond.Signal()
	s.wmu.Unlock()
}

func (s *session) send(p pdu.PDU, data []byte) {
	b := s.opts.AppendPDU(nil, p, len(data))
	b = append(b, data...)
	if s.opts.DataDigest && len(data) > 0 {
		b = pdu.AppendDataDigest(b, data)
	}
	s.sendRaw(b)
}

func (s *session) respond(cid uint16, status uint16, result uint64) {
	s.send(&pdu.CapsuleResp{CQE: pdu.CQE{CID: cid, SQID: s.qid, Result: result, Status: status}}, nil)
}

var errTerm = errors.New("terminated")

func (s *session) serve() {
	var h pdu.Header
	if err := s.r.ReadHeader(&h); err != nil {
		return
	}
	p, err := pdu.Parse(&h)
	req, ok := p.(*pdu.ICReq)
	if err != nil || !ok {
		return
	}
	resp := &pdu.ICResp{CPDA: s.c.cfg.CPDA, MaxH2CData: s.c.cfg.MaxH2CData,
		HDGST: req.HDGST && s.c.cfg.AllowDigests, DDGST: req.DDGST && s.c.cfg.AllowDigests}
	s.send(resp, nil)
	s.opts = pdu.Options{HeaderDigest: resp.HDGST, DataDigest: resp.DDGST, DataAlign: (int(req.HPDA) + 1) * 4}
	s.r.HeaderDigest, s.r.DataDigest = resp.HDGST, resp.DDGST
	s.r.MaxData = 1 << 21
	var dg int32
	if resp.HDGST {
		dg |= 1
	}
	if resp.DDGST {
		dg |= 2
	}
	s.c.Digests.Store(dg)
	s.writes = map[uint16]*pendingWrite{}
	for {
		if err := s.r.ReadHeader(&h); err != nil {
			return
		}
		p, err := pdu.Parse(&h)
		if err != nil {
			s.term(pdu.FESInvalidHeader)
			return
		}
		switch p := p.(type) {
		case *pdu.CapsuleCmd:
			var data []byte
			if h.DataLen > 0 {
				if a := (int(s.c.cfg.CPDA) + 1) * 4; int(h.PDO)%a != 0 {
					s.term(pdu.FESInvalidHeader)
					return
				}
				data = make([]byte, h.DataLen)
				if err := s.r.ReadData(&h, data); err != nil {
					return
				}
			}
			if err := s.command(p.SQE, data); err != nil {
				return
			}
		case *pdu.H2CData:
			w := s.writes[p.CCCID]
			if w == nil || int(p.Offset) != w.got || int(p.Offset)+int(p.Length) > len(w.data) || p.Length > s.c.cfg.MaxH2CData {
				s.term(pdu.FESDataOutOfRange)
				return
			}
			if err := s.r.ReadData(&h, w.data[p.Offset:int(p.Offset)+int(p.Length)]); err != nil {
				return
			}
			w.got += int(p.Length)
			if w.got == len(w.data) {
				delete(s.writes, p.CCCID)
				s.finishWrite(w.sqe, w.data)
			} else if w.got%s.c.cfg.MaxR2T == 0 {
				s.r2t(p.CCCID, w)
			}
		case *pdu.TermReq:
			return
		default:
			s.term(pdu.FESSequence)
			return
		}
	}
}

func (s *session) term(fes uint16) {
	s.sendRaw(pdu.AppendTermReq(nil, &pdu.TermReq{C2H: true, FES: fes}))
	// Let the writer drain, then end.
}

const (
	scSuccess   = 0
	scInvalidOp = 0x01
	scInvalidF  = 0x02
	scLBARange  = 0x80
)

func status(sc uint8) uint16 {
	if sc == 0 {
		return 0
	}
	return pdu.MakeStatus(0, sc, true)
}

func (s *session) command(sqe pdu.SQE, data []byte) error {
	c := s.c
	c.mu.Lock()
	f := c.fault
	c.mu.Unlock()
	if f != nil {
		switch f(s.qid, sqe) {
		case FaultStall:
			c.mu.Lock()
			if s.stalled == nil {
				s.stalled = map[uint16]bool{}
			}
			s.stalled[sqe.CID] = true
			c.mu.Unlock()
			return nil
		case FaultWrongCID:
			s.respond(sqe.CID+1000, 0, 0)
			return nil
		case FaultBadPDU:
			b := s.opts.AppendPDU(nil, &pdu.CapsuleResp{}, 0)
			b[2] = 99
			s.sendRaw(b)
			return nil
		case FaultTermReq:
			s.term(pdu.FESInvalidHeader)
			return nil
		case FaultClose:
			s.conn.Close()
			return errTerm
		case FaultCutLate:
			s.conn.Close()
			s.applyLate(sqe, data)
			return errTerm
		case FaultRefuse:
			s.respond(sqe.CID, status(scInvalidOp), 0)
			return nil
		case FaultRefuseLinux:
			s.respond(sqe.CID, pdu.MakeStatus(1, 0x83, true), 0)
			return nil
		case FaultShortData:
			if sqe.Opcode == pdu.IORead && s.qid > 0 {
				n := int(sqe.SGL.Length) / 2
				s.send(&pdu.C2HData{CCCID: sqe.CID, Length: uint32(n), Last: true}, make([]byte, n))
				s.respond(sqe.CID, 0, 0)
				return nil
			}
		}
	}
	if len(data) > 0 {
		if sqe.SGL.Type != pdu.SGLInCapsule || int(sqe.SGL.Length) != len(data) {
			s.respond(sqe.CID, pdu.MakeStatus(0, 0x0d, true), 0)
			return nil
		}
		if sqe.Opcode == pdu.IOWrite && s.qid > 0 {
			c.InCapsule.Add(1)
		}
	}
	if sqe.Opcode == pdu.OpFabrics {
		return s.fabrics(sqe, data)
	}
	if s.qid == 0 {
		return s.admin(sqe, data)
	}
	return s.io(sqe, data)
}

func (s *session) fabrics(sqe pdu.SQE, data []byte) error {
	c := s.c
	switch uint8(sqe.NSID) {
	case pdu.FabricsConnect:
		cd, err := pdu.ParseConnectData(data)
		if err != nil {
			s.respond(sqe.CID, pdu.MakeStatus(1, 0x82, true), 0)
			return nil
		}
		if cd.SubNQN != c.cfg.NQN && cd.SubNQN != pdu.DiscoveryNQN {
			s.respond(sqe.CID, pdu.MakeStatus(1, 0x82, true), 0)
			return nil
		}
		s.qid = uint16(sqe.CDW[0] >> 16)
		c.Connects.Add(1)
		c.HostNQN.Store(cd.HostNQN)
		c.HostID.Store(cd.HostID)
		cntl := cd.CntlID
		if s.qid == 0 {
			c.mu.Lock()
			cntl = c.nextCntl
			c.nextCntl++
			c.mu.Unlock()
		}
		s.cntl = cntl
		c.mu.Lock()
		c.queues[[2]uint16{cntl, s.qid}] = s
		c.mu.Unlock()
		s.respond(sqe.CID, 0, uint64(cntl))
	case pdu.FabricsPropertyGet:
		var v uint64
		c.mu.Lock()
		switch sqe.CDW[1] {
		case pdu.PropCAP:
			v = 127 | 1<<24 | 1<<37 // MQES 127, TO 500 ms, CSS NVM
		case pdu.PropVS:
			v = 0x10400
		case pdu.PropCC:
			v = uint64(c.cc)
		case pdu.PropCSTS:
			if c.cc&1 != 0 {
				v |= 1
			}
			if c.cc>>14&3 != 0 {
				v |= 2 << 2
			}
		}
		c.mu.Unlock()
		s.respond(sqe.CID, 0, v)
	case pdu.FabricsPropertySet:
		if sqe.CDW[1] == pdu.PropCC {
			c.mu.Lock()
			c.cc = sqe.CDW[2]
			c.mu.Unlock()
		}
		s.respond(sqe.CID, 0, 0)
	default:
		s.respond(sqe.CID, status(scInvalidOp), 0)
	}
	return nil
}

func (s *session) sendData(cid uint16, d []byte, success bool) {
	for off := 0; off < len(d); off += s.c.cfg.C2HChunk {
		end := min(len(d), off+s.c.cfg.C2HChunk)
		last := end == len(d)
		s.send(&pdu.C2HData{CCCID: cid, Offset: uint32(off), Length: uint32(end - off), Last: last,
			Success: last && success}, d[off:end])
	}
}

func (s *session) admin(sqe pdu.SQE, data []byte) error {
	c := s.c
	switch sqe.Opcode {
	case pdu.AdminIdentify:
		var d []byte
		switch sqe.CDW[0] & 0xff {
		case pdu.CNSController:
			oncs := uint16(pdu.ONCSDSM | pdu.ONCSWriteZeroes)
			if c.cfg.NoWriteZ {
				oncs = 0
			}
			inline := max(c.cfg.InlineData, 0)
			ci := &pdu.Controller{VID: 0x1d1d, Serial: "fake0001", Model: "lunbridge fakenvme",
				Firmware: "1.0", MDTS: c.cfg.MDTS, CntlID: 1, Version: 0x10400, MaxCmd: 128,
				NN: uint32(len(c.ns)), ONCS: oncs, VWC: 1, SGLS: 1 << 20, SubNQN: c.cfg.NQN,
				IOCCSZ: uint32(64+inline) / 16, IORCSZ: 1}
			if c.cfg.ANA {
				ci.CMIC, ci.OAES, ci.ANATT, ci.ANACAP, ci.ANAGRPMAX, ci.NANAGRPID = pdu.CMICANA, pdu.OAESANAChange, 10, 0x1f, 1, 1
				ci.CntlID = s.cntl
			}
			d = pdu.AppendController(nil, ci)
		case pdu.CNSNamespace:
			i := int(sqe.NSID) - 1
			if i < 0 || i >= len(c.ns) {
				s.respond(sqe.CID, status(0x0b), 0)
				return nil
			}
			c.mu.Lock()
			cfg := c.cfg.Namespaces[i]
			c.mu.Unlock()
			ns := pdu.Namespace{NSZE: uint64(cfg.Blocks), NCAP: uint64(cfg.Blocks), NLBAF: 1, DLFEAT: 1,
				Formats: []pdu.LBAFormat{{DataShift: 9}, {DataShift: 12}}}
			if cfg.BlockSize == 4096 {
				ns.FLBAS = 1
			}
			ns.NGUID[0], ns.NGUID[15] = 0xfa, byte(i+1)
			if c.cfg.ANA {
				ns.ANAGRPID, ns.NMIC = 1, 1
			}
			d = pdu.AppendNamespace(nil, &ns)
		default:
			s.respond(sqe.CID, status(scInvalidF), 0)
			return nil
		}
		s.sendData(sqe.CID, d[:min(len(d), int(sqe.SGL.Length))], false)
		s.respond(sqe.CID, 0, 0)
	case pdu.AdminAER:
		c.mu.Lock()
		s.aers = append(s.aers, sqe.CID)
		c.mu.Unlock()
	case pdu.AdminSetFeatures:
		if sqe.CDW[0]&0xff == pdu.FeatureAsyncEvent {
			c.mu.Lock()
			s.aenANA = sqe.CDW[1]&pdu.OAESANAChange != 0
			c.mu.Unlock()
			s.respond(sqe.CID, 0, 0)
			return nil
		}
		if sqe.CDW[0]&0xff != pdu.FeatureNumQueues {
			s.respond(sqe.CID, status(scInvalidF), 0)
			return nil
		}
		n := uint64(min(int(sqe.CDW[1]&0xffff)+1, c.cfg.MaxQueues) - 1)
		s.respond(sqe.CID, 0, n|n<<16)
	case pdu.AdminKeepAlive:
		c.KeepAlives.Add(1)
		s.respond(sqe.CID, 0, 0)
	case pdu.AdminAbort:
		// A stalled command is answered "Command Abort Requested"; any
		// other is left to finish (result bit 0: not aborted).
		c.Aborts.Add(1)
		sqid, cid := uint16(sqe.CDW[0]), uint16(sqe.CDW[0]>>16)
		c.mu.Lock()
		q := c.queues[[2]uint16{s.cntl, sqid}]
		hit := q != nil && q.stalled[cid]
		if hit {
			delete(q.stalled, cid)
		}
		abortOK := c.cfg.AbortStalled
		c.mu.Unlock()
		if hit && abortOK {
			q.respond(cid, pdu.MakeStatus(0, 0x07, false), 0)
			s.respond(sqe.CID, 0, 0)
		} else {
			s.respond(sqe.CID, 0, 1)
		}
	case pdu.AdminGetLogPage:
		if sqe.CDW[0]&0xff == pdu.LogANA && c.cfg.ANA {
			c.mu.Lock()
			g := pdu.ANAGroup{ID: 1, ChangeCount: c.anaChg, State: c.ana[s.port]}
			l := pdu.ANALog{ChangeCount: c.anaChg, Groups: []pdu.ANAGroup{g}}
			c.mu.Unlock()
			if sqe.CDW[0]>>8&1 == 0 { // not RGO: list the namespaces
				for i := range c.ns {
					l.Groups[0].NSIDs = append(l.Groups[0].NSIDs, uint32(i+1))
				}
			}
			b := pdu.AppendANALog(nil, &l)
			out := make([]byte, int((sqe.CDW[0]>>16|sqe.CDW[1]<<16)+1)*4)
			copy(out, b)
			c.ANALogs.Add(1)
			s.sendData(sqe.CID, out, false)
			s.respond(sqe.CID, 0, 0)
			return nil
		}
		if sqe.CDW[0]&0xff != pdu.LogDiscovery {
			s.respond(sqe.CID, status(scInvalidF), 0)
			return nil
		}
		c.mu.Lock()
		entries := c.cfg.Discovery
		c.mu.Unlock()
		var log []byte
		log = append(log, make([]byte, pdu.DiscoveryHeaderLen)...)
		le64(log[8:], uint64(len(entries)))
		le64(log[0:], 1)
		for i := range entries {
			log = pdu.AppendDiscoveryEntry(log, &entries[i])
		}
		off := uint64(sqe.CDW[2]) | uint64(sqe.CDW[3])<<32
		n := int((sqe.CDW[0]>>16|sqe.CDW[1]<<16)+1) * 4
		out := make([]byte, n)
		if off < uint64(len(log)) {
			copy(out, log[off:])
		}
		s.sendData(sqe.CID, out, false)
		s.respond(sqe.CID, 0, 0)
	default:
		s.respond(sqe.CID, status(scInvalidOp), 0)
	}
	return nil
}

func le64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}

func (s *session) lba(sqe pdu.SQE) (store []byte, off, n int64, ok bool) {
	i := int(sqe.NSID) - 1
	if i < 0 || i >= len(s.c.ns) {
		return nil, 0, 0, false
	}
	s.c.mu.Lock()
	bs := int64(s.c.cfg.Namespaces[i].BlockSize)
	store = s.c.ns[i]
	s.c.mu.Unlock()
	slba := int64(uint64(sqe.CDW[0]) | uint64(sqe.CDW[1])<<32)
	nlb := int64(sqe.CDW[2]&0xffff) + 1
	if slba < 0 || slba+nlb > int64(len(store))/bs {
		return store, 0, 0, false
	}
	return store, slba * bs, nlb * bs, true
}

func (s *session) io(sqe pdu.SQE, data []byte) error {
	c := s.c
	if c.cfg.ANA {
		c.mu.Lock()
		st := c.ana[s.port]
		c.mu.Unlock()
		if sc, bad := map[pdu.ANAState]uint8{pdu.ANAPersistentLoss: pdu.SCANAPersistentLoss,
			pdu.ANAInaccessible: pdu.SCANAInaccessible, pdu.ANAChange: pdu.SCANATransition}[st]; bad {
			c.ANARefused.Add(1)
			s.respond(sqe.CID, pdu.MakeStatus(3, sc, false), 0)
			return nil
		}
	}
	switch sqe.Opcode {
	case pdu.IORead:
		store, off, n, ok := s.lba(sqe)
		if !ok || int64(sqe.SGL.Length) != n {
			s.respond(sqe.CID, status(scLBARange), 0)
			return nil
		}
		c.Reads.Add(1)
		c.mu.Lock()
		d := bytes.Clone(store[off : off+n])
		c.mu.Unlock()
		s.sendData(sqe.CID, d, c.cfg.Success)
		if !c.cfg.Success {
			s.respond(sqe.CID, 0, 0)
		}
	case pdu.IOWrite:
		_, _, n, ok := s.lba(sqe)
		if !ok || int64(sqe.SGL.Length) != n {
			s.respond(sqe.CID, status(scLBARange), 0)
			return nil
		}
		if data != nil {
			s.finishWrite(sqe, data)
			return nil
		}
		if sqe.SGL.Type != pdu.SGLTransport {
			s.respond(sqe.CID, pdu.MakeStatus(0, 0x0d, true), 0)
			return nil
		}
		w := &pendingWrite{sqe: sqe, data: make([]byte, n)}
		s.writes[sqe.CID] = w
		s.r2t(sqe.CID, w)
	case pdu.IOFlush:
		c.Flushes.Add(1)
		s.respond(sqe.CID, 0, 0)
	case pdu.IOWriteZeroes:
		store, off, n, ok := s.lba(sqe)
		if !ok {
			s.respond(sqe.CID, status(scLBARange), 0)
			return nil
		}
		c.Zeroes.Add(1)
		c.mu.Lock()
		clear(store[off : off+n])
		c.mu.Unlock()
		s.respond(sqe.CID, 0, 0)
	case pdu.IODSM:
		if data == nil {
			w := &pendingWrite{sqe: sqe, data: make([]byte, sqe.SGL.Length)}
			s.writes[sqe.CID] = w
			s.r2t(sqe.CID, w)
			return nil
		}
		s.finishWrite(sqe, data)
	default:
		s.respond(sqe.CID, status(scInvalidOp), 0)
	}
	return nil
}

// applyLate lands an in-capsule write Config.LateApply from now.
func (s *session) applyLate(sqe pdu.SQE, data []byte) {
	c := s.c
	if sqe.Opcode != pdu.IOWrite || s.qid == 0 || data == nil {
		return
	}
	store, off, n, ok := s.lba(sqe)
	if !ok || int64(len(data)) != n {
		return
	}
	d := c.cfg.LateApply
	if d <= 0 {
		d = time.Second
	}
	c.wg.Add(1)
	time.AfterFunc(d, func() {
		defer c.wg.Done()
		c.mu.Lock()
		copy(store[off:off+n], data)
		c.mu.Unlock()
		c.LateWrites.Add(1)
	})
}

func (s *session) r2t(cid uint16, w *pendingWrite) {
	s.c.R2Ts.Add(1)
	s.ttag++
	n := min(len(w.data)-w.got, s.c.cfg.MaxR2T)
	s.send(&pdu.R2T{CCCID: cid, TTag: s.ttag, Offset: uint32(w.got), Length: uint32(n)}, nil)
}

func (s *session) finishWrite(sqe pdu.SQE, data []byte) {
	c := s.c
	switch sqe.Opcode {
	case pdu.IOWrite:
		store, off, n, ok := s.lba(sqe)
		if !ok || int64(len(data)) != n {
			s.respond(sqe.CID, status(scLBARange), 0)
			return
		}
		c.Writes.Add(1)
		c.mu.Lock()
		copy(store[off:off+n], data)
		c.mu.Unlock()
		s.respond(sqe.CID, 0, 0)
	case pdu.IODSM:
		i := int(sqe.NSID) - 1
		if i < 0 || i >= len(c.ns) || sqe.CDW[1]&4 == 0 {
			s.respond(sqe.CID, status(scInvalidF), 0)
			return
		}
		c.mu.Lock()
		bs := int64(c.cfg.Namespaces[i].BlockSize)
		store := c.ns[i]
		c.mu.Unlock()
		for _, r := range pdu.ParseDSMRanges(data)[:min(int(sqe.CDW[0]&0xff)+1, len(data)/16)] {
			off, n := int64(r.SLBA)*bs, int64(r.NLB)*bs
			if int64(r.SLBA) < 0 || off+n > int64(len(store)) {
				s.respond(sqe.CID, status(scLBARange), 0)
				return
			}
			c.mu.Lock()
			clear(store[off : off+n])
			c.mu.Unlock()
		}
		c.Trims.Add(1)
		s.respond(sqe.CID, 0, 0)
	}
}
