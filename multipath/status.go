package multipath

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator"
)

// Status is a snapshot of a multipath Device, like `multipath -ll`.
type Status struct {
	Identity      blockdev.Identity `json:"identity"`
	ReadOnly      bool              `json:"read_only"`
	Policy        string            `json:"policy"`
	Failback      string            `json:"failback"`
	NoPathTimeout string            `json:"no_path_timeout"`
	CheckInterval string            `json:"check_interval"`
	Queued        int               `json:"queued"` // I/Os waiting for a usable path
	Failovers     int64             `json:"failovers"`
	// LastFailoverMs: from the failure of the active path to the first
	// I/O completed on another one.
	LastFailoverMs   int64        `json:"last_failover_ms"`
	FencesReinstated int64        `json:"fences_reinstated"` // failed nexuses proven dead by session reinstatement
	FencesReset      int64        `json:"fences_reset"`      // ... by LOGICAL UNIT RESET
	FencesKATO       int64        `json:"fences_keep_alive"` // NVMe/TCP: ... by the keep-alive timeout passing
	Paths            []PathStatus `json:"paths"`
}

// PathStatus is one path in Status.
type PathStatus struct {
	Index       int        `json:"index"`
	Portal      string     `json:"portal"`
	Target      string     `json:"target,omitempty"`
	TPGT        int        `json:"tpgt"`
	ISID        string     `json:"isid"`
	TSIH        uint16     `json:"tsih"`
	State       State      `json:"state"`
	ALUA        string     `json:"alua,omitempty"`
	InFlight    int64      `json:"in_flight"`
	IOs         int64      `json:"ios"`
	Bytes       int64      `json:"bytes"`
	Errors      int64      `json:"errors"`
	Failovers   int64      `json:"failovers"`
	UpSince     *time.Time `json:"up_since,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// Session is the path's iSCSI session (negotiated parameters,
	// connections) while the path is connected.
	Session *initiator.SessionInfo `json:"session,omitempty"`
}

// Status returns a JSON-able snapshot of the device and its paths.
func (d *Device) Status() Status {
	d.mu.Lock()
	st, sessions := d.statusLocked()
	d.mu.Unlock()
	// Session snapshots take the sessions' own locks: outside d.mu.
	for i, s := range sessions {
		if s != nil {
			info := s.Info()
			st.Paths[i].Session = &info
		}
	}
	return st
}

// statusLocked builds Status without the sessions' details and returns the
// connected paths' sessions (nil for the others), index for index.
func (d *Device) statusLocked() (Status, []*initiator.Session) {
	var sessions []*initiator.Session
	st := Status{
		Identity: d.ident, ReadOnly: d.readOnly, Policy: d.opts.Policy, Failback: d.opts.Failback,
		NoPathTimeout: fmtTimeout(d.opts.NoPathTimeout), CheckInterval: d.opts.CheckInterval.String(),
		Queued: d.queued, Failovers: d.failovers, LastFailoverMs: d.lastFO.Milliseconds(),
		FencesReinstated: d.fencesReinstate, FencesReset: d.fencesReset, FencesKATO: d.fencesKATO,
	}
	for _, p := range d.paths {
		ps := PathStatus{
			Index: p.idx, Portal: p.ep.Portal(), Target: p.target, TPGT: p.tpgt, ISID: p.isidString(),
			State: d.stateLocked(p), InFlight: p.inflight.Load(), IOs: p.ios.Load(), Bytes: p.bytes.Load(),
			Errors: p.errs.Load(), Failovers: p.failovers.Load(),
		}
		var sess *initiator.Session
		if p.nx != nil {
			if c, ok := p.nx.conn.(interface{ Session() *initiator.Session }); ok {
				sess = c.Session()
			}
			ps.TSIH = p.tsih
			t := p.upSince
			ps.UpSince = &t
			if p.hasALUA {
				ps.ALUA = p.alua.String()
			}
		}
		if p.held != "" {
			ps.LastError = p.held
		} else if p.lastErr != nil {
			ps.LastError = p.lastErr.Error()
			t := p.lastErrAt
			ps.LastErrorAt = &t
		}
		st.Paths = append(st.Paths, ps)
		sessions = append(sessions, sess)
	}
	return st, sessions
}

func fmtTimeout(t time.Duration) string {
	switch {
	case t < 0:
		return "forever"
	case t == FailAtOnce:
		return "0s"
	}
	return t.String()
}

// ServeControl serves Status as JSON on a Unix socket at path (one
// snapshot per connection, then close) until ctx ends or the device is
// closed. A stale socket file is replaced; the file is removed on return.
func (d *Device) ServeControl(ctx context.Context, path string) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return errors.New("multipath: control socket " + path + " is in use by another process")
		}
		os.Remove(path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	go func() {
		select {
		case <-ctx.Done():
		case <-d.ctx.Done():
		}
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || d.ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			b, _ := json.MarshalIndent(d.Status(), "", "  ")
			c.Write(append(b, '\n'))
		}()
	}
}
