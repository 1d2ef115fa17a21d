package main

import (
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/multipath"
	"github.com/lunbridge/lunbridge/multipath/mirror"
	"github.com/lunbridge/lunbridge/nbdbridge"
	"github.com/lunbridge/lunbridge/nvmetcp"
)

// What an instance publishes (`lunbridge status`, `lunbridge status NAME`).
// JSON names are snake_case; sizes and counters are plain numbers (bytes).

// instanceSummary is one line of `lunbridge status`.
type instanceSummary struct {
	Name    string   `json:"name"`
	Command string   `json:"command"` // serve, attach or mount
	PID     int      `json:"pid"`
	URLs    []string `json:"urls"` // main URL, --path URLs, --mirror URLs; secrets removed
	Size    int64    `json:"size"`
	// State: starting (the device is being opened), ok, degraded (a path
	// or mirror leg is down or resyncing) or recovering (I/O waits for a
	// session to come back or for any usable path).
	State string `json:"state"`
	// Exposed is where the device is: an NBD URI, /dev/nbdN or the file
	// in the FUSE mount.
	Exposed       string    `json:"exposed,omitempty"`
	ControlSocket string    `json:"control_socket,omitempty"`
	Started       time.Time `json:"started"`
	// Error: the instance's socket exists but gave no status (state
	// "unknown").
	Error string `json:"error,omitempty"`
}

// instanceDetail is `lunbridge status NAME --json`.
type instanceDetail struct {
	instanceSummary
	BlockSize int    `json:"block_size,omitempty"`
	ReadOnly  bool   `json:"read_only"`
	WWID      string `json:"wwid,omitempty"`
	Serial    string `json:"serial,omitempty"`
	// Sessions are every iSCSI session the instance holds: one for a
	// single path, one per path (multipath), per leg (mirror).
	Sessions     []sessionView  `json:"sessions"`
	Multipath    *multipathView `json:"multipath,omitempty"`
	NVMe         *nvmeView      `json:"nvme,omitempty"` // a single-path NVMe/TCP namespace
	Mirror       *mirrorView    `json:"mirror,omitempty"`
	NBD          *nbdView       `json:"nbd,omitempty"`
	KernelDevice string         `json:"kernel_device,omitempty"`
	Mount        *mountView     `json:"mount,omitempty"`
	IO           *ioView        `json:"io,omitempty"`
}

// sessionView is one iSCSI session and where it belongs.
type sessionView struct {
	Leg  string `json:"leg,omitempty"`  // mirror leg A or B
	Path *int   `json:"path,omitempty"` // multipath path index
	initiator.SessionInfo
}

// nvmeView is a single-path NVMe/TCP namespace's controller: where it
// is and its counters (reconnects, and write fences after them).
type nvmeView struct {
	Address string `json:"address"`
	SubNQN  string `json:"subsystem"`
	CntlID  uint16 `json:"cntlid"`
	NSID    uint32 `json:"nsid"`
	nvmetcp.Stats
}

// multipathView is multipath.Status with a snake_case identity.
type multipathView struct {
	*multipath.Status
	Identity identityView `json:"identity"` // shadows Status.Identity
}

type identityView struct {
	WWID      string `json:"wwid"`
	Serial    string `json:"serial"`
	Size      int64  `json:"size"`
	BlockSize int    `json:"block_size"`
}

// status is the multipath.Status the view was made of (decoded JSON
// carries the identity in the view only).
func (v *multipathView) status() multipath.Status {
	var st multipath.Status
	if v.Status != nil {
		st = *v.Status
	}
	st.Identity = blockdev.Identity{WWID: v.Identity.WWID, Serial: v.Identity.Serial, Size: v.Identity.Size, Block: v.Identity.BlockSize}
	return st
}

func viewMultipath(st multipath.Status) *multipathView {
	id := st.Identity
	return &multipathView{Status: &st, Identity: identityView{id.WWID, id.Serial, id.Size, id.Block}}
}

type nbdView struct {
	URI               string `json:"uri"`
	Socket            string `json:"socket,omitempty"`
	Address           string `json:"address,omitempty"`
	Export            string `json:"export"`
	Clients           int64  `json:"clients"`            // connected now
	ConnectionsTotal  uint64 `json:"connections_total"`  // accepted since start
	ProtocolErrors    uint64 `json:"protocol_errors"`    // clients dropped for protocol violations
	RequestsCompleted uint64 `json:"requests_completed"` // NBD requests of every kind
}

type mountView struct {
	MountPoint string `json:"mount_point"`
	File       string `json:"file"`
}

type ioView struct {
	Reads       int64 `json:"reads"`
	Writes      int64 `json:"writes"`
	ReadBytes   int64 `json:"read_bytes"`
	WriteBytes  int64 `json:"write_bytes"`
	Flushes     int64 `json:"flushes"`
	Trims       int64 `json:"trims"`
	WriteZeroes int64 `json:"write_zeroes"`
	Errors      int64 `json:"errors"`
}

// ---- what the running command tells its controlTarget ----

func (t *controlTarget) setURLs(urls []string) {
	red := make([]string, len(urls))
	for i, u := range urls {
		red[i] = redactedURL(expandDevice(u))
	}
	t.mu.Lock()
	t.info.URLs = red
	t.mu.Unlock()
}

// setDevice records the opened device and returns the counters its I/O
// goes to.
func (t *controlTarget) setDevice(dev blockdev.Device, readOnly bool) *ioCounters {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dev, t.ro = dev, readOnly
	switch d := dev.(type) {
	case *multipath.Device:
		t.mp = d
	case *mirror.Mirror:
		t.mirror = d
	}
	if t.io == nil {
		t.io = new(ioCounters)
	}
	return t.io
}

func (t *controlTarget) setAsync(a *mirror.Async) {
	t.mu.Lock()
	t.async = a
	t.mu.Unlock()
}

func (t *controlTarget) asyncLeg() *mirror.Async {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.async
}

func (t *controlTarget) setNBD(ep *serveEndpoint, srv *nbdbridge.Server) {
	t.mu.Lock()
	t.nbdEP, t.nbd = ep, srv
	t.mu.Unlock()
}

func (t *controlTarget) setKernel(dev string, srv *nbdbridge.Server) {
	t.mu.Lock()
	t.kernel, t.nbd = dev, srv
	t.mu.Unlock()
}

func (t *controlTarget) setMount(dir, file string) {
	t.mu.Lock()
	t.mount = &mountView{MountPoint: dir, File: file}
	t.mu.Unlock()
}

// ---- the snapshot ----

// detail builds the instance's status. The device's own snapshots (which
// take their own locks) are taken outside t.mu.
func (t *controlTarget) detail() *instanceDetail {
	t.mu.Lock()
	d := &instanceDetail{instanceSummary: t.info, ReadOnly: t.ro, KernelDevice: t.kernel}
	d.URLs = append([]string{}, t.info.URLs...)
	dev, mp, mr, ctr, srv, ep := t.dev, t.mp, t.mirror, t.io, t.nbd, t.nbdEP
	if t.mount != nil {
		m := *t.mount
		d.Mount = &m
	}
	t.mu.Unlock()
	d.Sessions = []sessionView{}
	if dev == nil && mp == nil && mr == nil {
		d.State = "starting"
		return d
	}
	if dev == nil { // a test's target with only mp or mirror set
		if mp != nil {
			dev = mp
		} else {
			dev = mr
		}
	}
	d.Size, d.BlockSize = dev.Size(), dev.BlockSize()
	if id, ok := dev.(blockdev.Identifier); ok {
		d.WWID, d.Serial = id.Identity().WWID, id.Identity().Serial
	}
	degraded, recovering := false, false
	addMultipath := func(leg string, st *multipath.Status) {
		for _, p := range st.Paths {
			switch p.State {
			case multipath.StateActive, multipath.StateStandby:
			default:
				degraded = true
			}
			if p.Session != nil {
				idx := p.Index
				d.Sessions = append(d.Sessions, sessionView{Leg: leg, Path: &idx, SessionInfo: *p.Session})
				recovering = recovering || p.Session.Recovering
			}
		}
		if st.Queued > 0 {
			recovering = true
		}
	}
	addLUN := func(leg string, l *initiator.LUN) {
		info := l.Session().Info()
		d.Sessions = append(d.Sessions, sessionView{Leg: leg, SessionInfo: info})
		recovering = recovering || info.Recovering
	}
	switch dv := dev.(type) {
	case *initiator.LUN:
		addLUN("", dv)
	case *nvmetcp.Namespace:
		c := dv.Controller()
		info := c.Info()
		d.NVMe = &nvmeView{Address: c.Config().Addr, SubNQN: info.SubNQN, CntlID: info.CntlID, NSID: dv.NSID(), Stats: c.Stats()}
	case *multipath.Device:
		d.Multipath = viewMultipath(dv.Status())
		addMultipath("", d.Multipath.Status)
	case *mirror.Mirror:
		d.Mirror = viewMirror(dv)
		switch d.Mirror.State {
		case "clean", "active":
		default:
			degraded = true
		}
		for _, l := range d.Mirror.Legs {
			if l.Paths != nil {
				addMultipath(l.Name, l.Paths.Status)
			} else if lun, ok := dv.LegDevice(l.Name).(*initiator.LUN); ok {
				addLUN(l.Name, lun)
			}
		}
	}
	switch {
	case recovering:
		d.State = "recovering"
	case degraded:
		d.State = "degraded"
	default:
		d.State = "ok"
	}
	if ep != nil {
		d.NBD = &nbdView{URI: ep.URI, Socket: ep.Socket, Address: ep.Address, Export: ep.Export}
		d.Exposed = ep.URI
	}
	if srv != nil && d.NBD != nil {
		st := srv.Stats()
		d.NBD.Clients, d.NBD.ConnectionsTotal, d.NBD.ProtocolErrors = st.ActiveConnections, st.Connections, st.ProtocolErrors
		for _, o := range []nbdbridge.OpStats{st.Read, st.Write, st.Flush, st.Trim, st.WriteZeroes, st.Cache, st.BlockStatus, st.Unknown} {
			d.NBD.RequestsCompleted += o.Requests
		}
	}
	if d.KernelDevice != "" {
		d.Exposed = d.KernelDevice
	}
	if d.Mount != nil {
		d.Exposed = d.Mount.File
	}
	if ctr != nil {
		d.IO = &ioView{
			Reads: ctr.reads.Load(), Writes: ctr.writes.Load(), ReadBytes: ctr.readBytes.Load(), WriteBytes: ctr.writeBytes.Load(),
			Flushes: ctr.flushes.Load(), Trims: ctr.trims.Load(), WriteZeroes: ctr.zeroes.Load(), Errors: ctr.errors.Load(),
		}
	}
	return d
}
