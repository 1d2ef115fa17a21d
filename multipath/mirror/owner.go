package mirror

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

// ErrOwned is returned by Assemble when another assembly owns the mirror.
var ErrOwned = errors.New("mirror: in use by another assembly")

// Owner is the assembly recorded in the legs' headers from Assemble (or
// Create) until a clean Close: md gets the same from an exclusive open,
// DRBD from its Primary role. A header written by an older lunbridge has
// no owner (all zero), which reads as "not active".
type Owner struct {
	Active    bool   `json:"active"`
	HostID    string `json:"host_id"` // /etc/machine-id, or "host:" + hostname
	Host      string `json:"host"`    // hostname, for messages
	BootID    string `json:"boot_id"`
	PID       int    `json:"pid"`
	ProcStart uint64 `json:"proc_start"` // /proc/PID/stat start time, clock ticks since boot
	Since     int64  `json:"since"`      // assembly time, ns since the epoch
	Assembly  uint64 `json:"assembly"`   // random id of this assembly
}

func (o Owner) String() string {
	return fmt.Sprintf("host %s (machine-id %s) pid %d since %s (assembly %016x)", o.Host, o.HostID, o.PID, fmtTime(o.Since), o.Assembly)
}

// hostEnv is what the owner check asks of the host; tests replace it.
type hostEnv struct {
	machineID func() string
	hostname  func() string
	bootID    func() string
	pid       func() int
	// procStart is the start time of process pid (clock ticks since
	// boot); ok false when no such process exists.
	procStart func(pid int) (start uint64, ok bool)
	// exited, when set, hears that the process with pid died (tests:
	// Mirror.halt simulates process death).
	exited func(pid int)
}

var sysEnv = &hostEnv{
	machineID: func() string {
		for _, p := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
			if b, err := os.ReadFile(p); err == nil {
				if s := strings.TrimSpace(string(b)); s != "" {
					return s
				}
			}
		}
		h, _ := os.Hostname()
		return "host:" + h
	},
	hostname: func() string { h, _ := os.Hostname(); return h },
	bootID: func() string {
		b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
		return strings.TrimSpace(string(b))
	},
	pid:       os.Getpid,
	procStart: procStart,
}

// procStart reads field 22 (starttime) of /proc/PID/stat. A process that
// exists but whose stat cannot be parsed reports start 0 (alive, start
// unknown).
func procStart(pid int) (uint64, bool) {
	if pid <= 0 {
		return 0, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if _, serr := os.Stat("/proc/" + strconv.Itoa(pid)); serr == nil {
			return 0, true
		}
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, true
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return 0, true
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, true
	}
	return v, true
}

func (e *hostEnv) newOwner() Owner {
	pid := e.pid()
	st, _ := e.procStart(pid)
	return Owner{
		Active: true, HostID: e.machineID(), Host: e.hostname(), BootID: e.bootID(),
		PID: pid, ProcStart: st, Since: time.Now().UnixNano(), Assembly: randID(),
	}
}

// ownerState is what the host can tell about a recorded owner.
type ownerState int

const (
	ownerForeign ownerState = iota // another host (or unknown): cannot tell
	ownerAlive                     // provably running on this host
	ownerDead                      // this host, and its process or boot is gone
)

func (e *hostEnv) state(o Owner) ownerState {
	if o.HostID == "" || o.HostID != e.machineID() {
		return ownerForeign
	}
	if o.BootID == "" || o.BootID != e.bootID() {
		return ownerDead // rebooted since
	}
	st, ok := e.procStart(o.PID)
	if !ok || (o.ProcStart != 0 && st != 0 && st != o.ProcStart) {
		return ownerDead // no such process, or the pid was reused
	}
	return ownerAlive
}

// activeOwners returns the owner records of the legs' headers that still
// stand. A stale leg's record is older than the other leg's header: it is
// ignored when the other leg recorded dropping it, and, for two legs of
// the same generation, only the newer header (more events) counts.
func activeOwners(hs [2]*header) []Owner {
	var out []Owner
	add := func(o Owner) {
		for _, p := range out {
			if p.Assembly == o.Assembly {
				return
			}
		}
		out = append(out, o)
	}
	if hs[0] != nil && hs[1] != nil && hs[0].Gen == hs[1].Gen && hs[0].GenID == hs[1].GenID {
		h := hs[0]
		if hs[1].Events > h.Events {
			h = hs[1]
		}
		if h.Owner.Active {
			add(h.Owner)
		}
		return out
	}
	for i, h := range hs {
		if h == nil || !h.Owner.Active {
			continue
		}
		if o := hs[1-i]; o != nil && o.DroppedGen == h.Gen && o.DroppedGenID == h.GenID {
			continue
		}
		add(h.Owner)
	}
	return out
}

// checkOwners decides whether this assembly may take the mirror: a live
// owner on this host is never taken over, a dead one on this host is (the
// assembly then runs the crash resync), one on another host only with
// force. It returns the assembly id of the owner taken over (0: none),
// whose persistent reservation the new owner may preempt.
func checkOwners(hs [2]*header, env *hostEnv, force bool, warn func(string)) (uint64, error) {
	var took uint64
	for _, o := range activeOwners(hs) {
		switch env.state(o) {
		case ownerAlive:
			if force {
				return 0, fmt.Errorf("%w: %s, which is running on this host: --force refused; stop that process first", ErrOwned, o)
			}
			return 0, fmt.Errorf("%w: %s, which is running on this host; stop that process first", ErrOwned, o)
		case ownerDead:
			warn(fmt.Sprintf("mirror: taking over from %s, which is gone (crashed or rebooted): crash recovery", o))
			took = o.Assembly
		default:
			if !force {
				return 0, fmt.Errorf("%w: %s; if that assembly is dead, pass --force (Force) to take over", ErrOwned, o)
			}
			warn(fmt.Sprintf("mirror: forced takeover from %s on another host", o))
			took = o.Assembly
		}
	}
	return took, nil
}

// reserveLegs fences the live legs that support persistent reservations
// (blockdev.Reserver): registers the assembly's key and takes Write
// Exclusive – Registrants Only, preempting the reservation of the owner
// taken over (preempt, 0 none). A leg without support is logged and left
// unfenced; any other failure refuses the assembly.
func (m *Mirror) reserveLegs(ctx context.Context, preempt uint64) error {
	if !m.opts.Reserve {
		return nil
	}
	for i, l := range m.legs {
		if l.dev == nil || !l.live {
			continue
		}
		if err := m.reserveLeg(ctx, i, preempt); err != nil {
			m.releaseLegs(ctx)
			return err
		}
	}
	return nil
}

// reserveLeg fences leg i (see reserveLegs); a leg brought back by
// Reattach needs it too when its session is a new I_T nexus.
func (m *Mirror) reserveLeg(ctx context.Context, i int, preempt uint64) error {
	if !m.opts.Reserve {
		return nil
	}
	key := m.owner.Assembly
	r, ok := m.legs[i].dev.(blockdev.Reserver)
	if !ok {
		// A file or another device with no initiators to fence.
		m.log.Infof("mirror: leg %s cannot hold a persistent reservation", legName(i))
		return nil
	}
	err := r.Register(ctx, key)
	if err == nil {
		err = r.Reserve(ctx, key, preempt)
	}
	switch {
	case err == nil:
		m.reserved[i] = true
		return nil
	case errors.Is(err, blockdev.ErrNotSupported):
		m.log.WithError(err).Warnf("mirror: leg %s has no persistent reservations: other initiators are not fenced off it", legName(i))
		r.Release(ctx, key)
		return nil
	default:
		r.Release(ctx, key)
		return fmt.Errorf("%w: leg %s: persistent reservation (Write Exclusive – Registrants Only, key %016x): %w", ErrOwned, legName(i), key, err)
	}
}

// releaseLegs releases the reservations reserveLegs took.
func (m *Mirror) releaseLegs(ctx context.Context) {
	for i, l := range m.legs {
		if !m.reserved[i] || l.dev == nil {
			continue
		}
		m.reserved[i] = false
		if err := l.dev.(blockdev.Reserver).Release(ctx, m.owner.Assembly); err != nil {
			m.log.WithError(err).Warnf("mirror: leg %s: releasing the persistent reservation", legName(i))
		}
	}
}

// reserveReturning registers the owner's key on a leg device coming back
// (Reattach, automatic re-add) and takes the reservation, as reserveLeg
// does at assembly. It reports whether d now holds it; a device without
// persistent reservations is used unfenced, with a warning.
func (m *Mirror) reserveReturning(ctx context.Context, d blockdev.Device) (bool, error) {
	if !m.opts.Reserve {
		return false, nil
	}
	r, ok := d.(blockdev.Reserver)
	if !ok {
		return false, nil
	}
	key := m.owner.Assembly
	err := r.Register(ctx, key)
	if err == nil {
		// The reservation may still be held with our own key by the
		// leg's earlier session: a target such as tgtd keeps the holder
		// per I_T nexus past a logout, and the returning session is a
		// new nexus. Taking it over from our own key is no takeover;
		// a holder with another key is still a conflict.
		err = r.Reserve(ctx, key, key)
		if err == nil {
			// A takeover clears every registration (initiator.LUN.Reserve
			// uses CLEAR): register again on every path of a multipath leg.
			err = r.Register(ctx, key)
		}
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, blockdev.ErrNotSupported):
		m.log.WithError(err).Warn("mirror: the returning leg has no persistent reservations: other initiators are not fenced off it")
		r.Release(ctx, key)
		return false, nil
	default:
		r.Release(ctx, key)
		return false, fmt.Errorf("%w: returning leg: persistent reservation (Write Exclusive – Registrants Only, key %016x): %w", ErrOwned, key, err)
	}
}
