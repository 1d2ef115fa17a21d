package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/multipath"
	"github.com/lunbridge/lunbridge/multipath/mirror"
	"github.com/lunbridge/lunbridge/nbdbridge"
)

// The control socket of serve, attach and mount (--control-socket, read by
// `lunbridge status` and `lunbridge mirror status|fail|remove|add|split|rejoin`).
//
// Protocol: one request per connection. The client connects, writes one
// request line and may shut down its write side; the server answers with
// one JSON document and closes the connection.
//
//	""                  (nothing, or EOF, within controlRequestWait)
//	"status"            the status document (below)
//	"mirror fail LEG"   fail leg A or B (held out of automatic re-add)
//	"mirror remove LEG" close a failed leg's device (held out of re-add)
//	"mirror add LEG"    reopen and re-add a failed leg now, lift the hold
//	"mirror split LEG"  split the leg off at a write barrier (a frozen image)
//	"mirror rejoin LEG" reattach a split leg (incremental resync)
//	"mirror replace LEG URL [force]"  replace a failed leg by the LUN at URL
//	                    (full resync; mirrorreplace.go)
//
// A client that sends nothing still gets the status, after
// controlRequestWait: the first protocol (connect, read to EOF) works
// unchanged. A mirror command answers {"ok": true, "mirror": MIRROR} or
// {"error": "..."}.
//
// The status document is an object: a multipath device's status at the top
// level (multipath.Status, unchanged) when the command opened one LUN
// through multipath, and/or "mirror": MIRROR when it opened a mirror,
// and/or "async": mirror.AsyncStatus with --mirror-async (mode, lag in
// seconds and bytes, journal entries, consistent).
// MIRROR is mirror.Status whose legs also carry "paths": the leg's
// multipath.Status when the leg is a multipath device. "instance" is the
// instance's detail (instancestatus.go, `lunbridge status NAME --json`),
// for every command, multipath or not.

// controlRequestWait is how long the server waits for a request line
// before answering with the status.
const controlRequestWait = 200 * time.Millisecond

// controlStatus is the status document.
type controlStatus struct {
	*multipath.Status
	Mirror *mirrorView         `json:"mirror,omitempty"`
	Async  *mirror.AsyncStatus `json:"async,omitempty"` // --mirror-async
	// Instance is the whole picture (instancestatus.go), what `lunbridge
	// status` shows; the fields above stay for older clients.
	Instance *instanceDetail `json:"instance,omitempty"`
}

// mirrorView is a running mirror's status with its legs' paths.
type mirrorView struct {
	mirror.Status
	Legs  [2]mirrorLegView    `json:"legs"`
	Async *mirror.AsyncStatus `json:"async,omitempty"` // mirror status: the --mirror-async leg
}

type mirrorLegView struct {
	mirror.LegStatus
	Paths *multipathView `json:"paths,omitempty"`
}

// controlReply answers a mirror command.
type controlReply struct {
	OK     bool        `json:"ok,omitempty"`
	Error  string      `json:"error,omitempty"`
	Mirror *mirrorView `json:"mirror,omitempty"`
}

// controlTarget is what a running command publishes: its instance
// (instance.go) and, once it has opened it, the device.
type controlTarget struct {
	mp     *multipath.Device // guarded by mu once the socket runs
	mirror *mirror.Mirror    // guarded by mu once the socket runs
	async  *mirror.Async     // --mirror-async; guarded by mu once the socket runs

	mu     sync.Mutex
	claim  *instanceClaim // nil when no name could be claimed
	info   instanceSummary
	dev    blockdev.Device // as opened, before instrumentation
	io     *ioCounters
	nbd    *nbdbridge.Server
	nbdEP  *serveEndpoint
	kernel string // attach: /dev/nbdN
	mount  *mountView
	ro     bool
}

func viewMirror(m *mirror.Mirror) *mirrorView {
	v := &mirrorView{Status: m.Status()}
	for i, l := range v.Status.Legs {
		v.Legs[i].LegStatus = l
		if mp, ok := m.LegDevice(l.Name).(*multipath.Device); ok {
			v.Legs[i].Paths = viewMultipath(mp.Status())
		}
	}
	return v
}

func (t *controlTarget) devices() (*multipath.Device, *mirror.Mirror) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mp, t.mirror
}

func (t *controlTarget) status() controlStatus {
	var s controlStatus
	mp, mr := t.devices()
	if mp != nil {
		st := mp.Status()
		s.Status = &st
	}
	if mr != nil {
		s.Mirror = viewMirror(mr)
	}
	if as := t.asyncLeg(); as != nil {
		st := as.Status()
		s.Async = &st
	}
	s.Instance = t.detail()
	return s
}

// handle runs one request and returns the JSON answer.
func (t *controlTarget) handle(ctx context.Context, req string) any {
	f := strings.Fields(req)
	if len(f) == 0 || len(f) == 1 && f[0] == "status" {
		return t.status()
	}
	if f[0] != "mirror" || len(f) < 3 || len(f) > 3 && f[1] != "replace" {
		return controlReply{Error: fmt.Sprintf("unknown request %q: want status, mirror fail|remove|add|split|rejoin A|B, or mirror replace A|B URL [force]", req)}
	}
	_, m := t.devices()
	if m == nil {
		return controlReply{Error: "this process runs no mirror"}
	}
	var err error
	switch f[1] {
	case "fail":
		err = m.FailLeg(ctx, f[2])
	case "remove":
		err = m.RemoveLeg(ctx, f[2])
	case "add":
		err = m.AddLeg(ctx, f[2])
	case "split":
		err = m.Split(ctx, f[2])
	case "rejoin":
		err = m.Rejoin(ctx, f[2])
	case "replace":
		return t.replaceRequest(ctx, f[2:]) // mirrorreplace.go
	default:
		return controlReply{Error: fmt.Sprintf("unknown mirror command %q: want fail, remove, add, split, rejoin or replace", f[1])}
	}
	if err != nil {
		return controlReply{Error: err.Error(), Mirror: viewMirror(m)}
	}
	return controlReply{OK: true, Mirror: viewMirror(m)}
}

// serveControlOn listens on path and answers requests about t until ctx
// ends; the socket is removed then.
func serveControlOn(ctx context.Context, path string, t *controlTarget) error {
	ln, err := listenControl(path)
	if err != nil {
		return err
	}
	return serveControlLn(ctx, ln, path, t)
}

// listenControl listens on the Unix socket path, replacing a stale socket
// file but not one a live process answers on.
func listenControl(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, errors.New("control socket " + path + " is in use by another process")
		}
		os.Remove(path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return net.Listen("unix", path)
}

func serveControlLn(ctx context.Context, ln net.Listener, path string, t *controlTarget) error {
	defer os.Remove(path)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(controlRequestWait))
			line, _ := bufio.NewReader(io.LimitReader(c, 4096)).ReadString('\n')
			// A mirror command may take a reopen (up to the mirror's
			// probe timeout); the answer is written when it is done.
			c.SetDeadline(time.Now().Add(time.Minute))
			b, _ := json.MarshalIndent(t.handle(ctx, strings.TrimSpace(line)), "", "  ")
			c.Write(append(b, '\n'))
		}()
	}
}

// controlRequest sends req to the control socket at path and returns the
// answer.
func controlRequest(path, req string, limit time.Duration) ([]byte, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("no running lunbridge serve/attach/mount on %s: %w", path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(limit))
	if _, err := io.WriteString(conn, req+"\n"); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if uc, ok := conn.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return b, nil
}

var _ blockdev.Device = (*mirror.Mirror)(nil)
