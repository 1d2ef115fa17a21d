package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator"
)

// Stable ISIDs (review #15).
//
// A session is named by (initiator name, ISID, target name, portal group).
// A login with the name of a live session reinstates it: the target ends the
// old session and its tasks before the new one runs (RFC 7143 6.3.5). The
// commands that own a LUN for a long time and write to it (serve, attach,
// mount, push) therefore log in with an ISID derived from initiator name,
// target, portal, LUN and --instance: a restarted process, or a systemd
// restart after a crash, ends its predecessor's session, and with it any
// write of the dead process still queued in the target, instead of running
// beside it. Short-lived and read-only commands (info, ls, pull, verify,
// bench, mirror ...) keep random ISIDs, so a backup never ends the session
// of the server it reads beside.
//
// Two owners of the same LUN in the same moment would end each other's
// sessions in turn. On one host a lock file per ISID refuses the second one
// with a message naming the first; a second owner on purpose takes another
// --instance name (its own ISID), and --isid sets one explicitly.

// stableISIDCommands own a LUN: their sessions get stable ISIDs.
var stableISIDCommands = map[string]bool{"serve": true, "attach": true, "mount": true, "push": true}

var isidState struct {
	sync.Mutex
	explicitUsed bool
	locks        map[[6]byte]*os.File // held for the life of the process
}

// isidFor chooses the ISID of a session to u: --isid, else a stable one for
// the commands that own a LUN, else zero (random).
func isidFor(c *cli.Context, u *discovery.URL, initiatorName string) ([6]byte, error) {
	var zero [6]byte
	if v := flagOrConfig(c, "isid"); v != "" {
		if strings.EqualFold(v, "random") {
			return zero, nil
		}
		id, err := parseISID(v)
		if err != nil {
			return zero, usageErrorf("--isid %q: %v", v, err)
		}
		isidState.Lock()
		defer isidState.Unlock()
		if isidState.explicitUsed {
			return zero, usageErrorf("--isid names one session, but this command opens several (--path or --mirror): use --instance NAME to give them all other ISIDs")
		}
		isidState.explicitUsed = true
		return id, nil
	}
	if c.Command == nil || !stableISIDCommands[c.Command.Name] || !u.HasLUN || u.Target == "" {
		return zero, nil
	}
	instance := flagOrConfig(c, "instance")
	id := initiator.StableISID(initiatorName, u.Target, u.Portal, u.LUN, instance)
	if err := lockISID(id, u, instance); err != nil {
		return zero, err
	}
	return id, nil
}

// parseISID reads 12 hex digits (separators '-', ':' and '.' allowed).
func parseISID(v string) ([6]byte, error) {
	var id [6]byte
	s := strings.NewReplacer("-", "", ":", "", ".", "", "0x", "").Replace(strings.ToLower(v))
	if len(s) != 12 {
		return id, errors.New("want 12 hex digits (6 bytes), e.g. 80a1b2c3d4e5, or random")
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, errors.New("want 12 hex digits (6 bytes), e.g. 80a1b2c3d4e5, or random")
	}
	if id == ([6]byte{}) {
		return id, errors.New("the ISID must not be zero")
	}
	if id[0]>>6 == 3 {
		return id, errors.New("type 11b (first digit c-f) is reserved by RFC 7143")
	}
	return id, nil
}

// isidLockWait is how long a lock held by another process is waited for.
var isidLockWait = 5 * time.Second

// isidLockDir is where the per-ISID lock files live.
func isidLockDir() string {
	if d := os.Getenv("LUNBRIDGE_ISID_LOCK_DIR"); d != "" { // tests
		return d
	}
	if d := os.Getenv("LUNBRIDGE_RUN_DIR"); d != "" {
		return filepath.Join(d, "isid")
	}
	// Not runDir: a unit's DynamicUser cannot write /run/lunbridge/isid;
	// its locks stay in its own (private) temporary directory as before.
	return filepath.Join(userRunDir(), "isid") // instance.go
}

// lockISID takes the host-wide lock on id for the life of the process. A
// lock held by another live process is an error naming it; a lock that
// cannot be taken for other reasons (no writable directory) is a warning.
func lockISID(id [6]byte, u *discovery.URL, instance string) error {
	isidState.Lock()
	defer isidState.Unlock()
	if _, ok := isidState.locks[id]; ok {
		return nil // this process opens it again (a re-open, or the same path twice)
	}
	dir := isidLockDir()
	warn := func(err error) error {
		logrus.Warnf("cannot lock ISID %x in %s (%v): a second lunbridge on the same LUN would not be refused", id, dir, err)
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return warn(err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%x.lock", id))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return warn(err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	// An owner that is exiting (umount, SIGTERM, a restart right after
	// kill -9) releases the lock in a moment: wait for it a little.
	for deadline := time.Now().Add(isidLockWait); errors.Is(err, unix.EWOULDBLOCK) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		owner, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			who := strings.TrimSpace(string(owner))
			if who == "" {
				who = "another process"
			}
			inst := ""
			if instance != "" {
				inst = fmt.Sprintf(" under --instance %q", instance)
			}
			return withCode(ExitFailure, fmt.Errorf("%s: already in use by this host's %s%s (iSCSI session ISID %x): a second session with that ISID would end the first one's. Stop it first, or run this one with --instance NAME (its own session)",
				u, who, inst, id))
		}
		return warn(err)
	}
	f.Truncate(0)
	fmt.Fprintf(f, "lunbridge pid %d (%s)\n", os.Getpid(), strings.Join(redactedArgs(), " "))
	if isidState.locks == nil {
		isidState.locks = map[[6]byte]*os.File{}
	}
	isidState.locks[id] = f
	return nil
}

// redactedArgs is the command line with URL secrets removed, for the lock
// file's owner line.
func redactedArgs() []string {
	out := []string{filepath.Base(os.Args[0])}
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "iscsi://") {
			a = redactedURL(a)
		}
		out = append(out, a)
	}
	return out
}
