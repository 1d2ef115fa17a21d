package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/nbdbridge"
)

// Instances (issue 21, item 3): every serve, attach and mount is an
// instance with a name unique on this host among the running ones, and a
// directory of its own under the run directory:
//
//	RUNDIR/NAME/lock          flock'ed for the life of the process; its pid
//	RUNDIR/NAME/control.sock  the control socket (control.go), or a symbolic
//	                          link to the one --control-socket names
//	RUNDIR/NAME/nbd.sock      serve's NBD socket when --listen is not given
//
// RUNDIR is $LUNBRIDGE_RUN_DIR, else /run/lunbridge for root, else (a
// systemd unit with RuntimeDirectory=lunbridge/NAME and no root) the parent
// of $RUNTIME_DIRECTORY, else $XDG_RUNTIME_DIR/lunbridge, else
// $TMPDIR/lunbridge-UID. The layout matches the shipped units
// (/run/lunbridge/%i/nbd.sock). `lunbridge status` lists RUNDIR/*/control.sock.
//
// NAME is --instance (LUNBRIDGE_INSTANCE) when given, else serve's
// --export-name, attach's nbdN, mount's mount point base name, a [device]
// name of the config file, or one derived from the URL (the target IQN's
// last part and the LUN: "demo-1"; a file's base name). When a live
// process holds that name, the next free of NAME-2, NAME-3 ... is taken.
// A name is held by the flock on its lock file, so a process that died
// (kill -9) frees its name at once; its leftover sockets are replaced.

const (
	instanceLockFile    = "lock"
	instanceControlFile = "control.sock"
	instanceNBDFile     = "nbd.sock"
)

// userRunDir is lunbridge's runtime directory for this user (also the
// parent of the ISID locks, isid.go).
func userRunDir() string {
	if os.Geteuid() == 0 {
		return "/run/lunbridge"
	}
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
		return filepath.Join(x, "lunbridge")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("lunbridge-%d", os.Getuid()))
}

// runDir is where the instance directories live.
func runDir() string {
	if d := os.Getenv("LUNBRIDGE_RUN_DIR"); d != "" {
		return d
	}
	if os.Geteuid() != 0 {
		// A unit's DynamicUser may write its RuntimeDirectory
		// (/run/lunbridge/NAME) but not /run/lunbridge itself.
		if rd, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); rd != "" && filepath.Base(filepath.Dir(rd)) == "lunbridge" {
			return filepath.Dir(rd)
		}
	}
	return userRunDir()
}

// instanceClaim is a held instance name.
type instanceClaim struct {
	name, dir string
	lock      *os.File
	once      sync.Once
}

// claimInstance takes the first free name of base, base-2, base-3 ... in
// dir: free means nobody holds the flock of dir/NAME/lock.
func claimInstance(dir, base string) (*instanceClaim, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for i, tries := 1, 0; i <= 1000 && tries < 2000; tries++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		if name == "isid" { // the ISID locks' directory
			i++
			continue
		}
		cl, retry, err := tryClaim(dir, name)
		switch {
		case err != nil:
			lastErr = err
			i++
		case retry:
			// The holder was leaving: try the same name again.
		case cl != nil:
			return cl, nil
		default:
			i++ // a live process holds it
		}
	}
	if lastErr == nil {
		lastErr = errors.New("every name is taken")
	}
	return nil, fmt.Errorf("no free instance name %s[-N] in %s: %w", base, dir, lastErr)
}

// tryClaim takes name, or reports it held (nil, false, nil), or asks for
// another try because the previous holder removed its lock file meanwhile.
func tryClaim(dir, name string) (*instanceClaim, bool, error) {
	idir := filepath.Join(dir, name)
	if err := os.Mkdir(idir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, false, err
	}
	path := filepath.Join(idir, instanceLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, true, nil // the directory went away between Mkdir and Open
	}
	if err != nil {
		return nil, false, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	// The previous holder unlinks its lock file on exit: the lock may be
	// on a file no longer at path.
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
		f.Close()
		return nil, true, nil
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	// Sockets of a dead holder: nobody answers on them any more.
	os.Remove(filepath.Join(idir, instanceControlFile))
	return &instanceClaim{name: name, dir: idir, lock: f}, false, nil
}

func (cl *instanceClaim) dirOrEmpty() string {
	if cl == nil {
		return ""
	}
	return cl.dir
}

// release frees the name: the lock file and (when empty) the directory go.
func (cl *instanceClaim) release() {
	cl.once.Do(func() {
		if fi, err := os.Lstat(filepath.Join(cl.dir, instanceControlFile)); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			os.Remove(filepath.Join(cl.dir, instanceControlFile))
		}
		os.Remove(filepath.Join(cl.dir, instanceLockFile))
		cl.lock.Close()
		os.Remove(cl.dir) // fails while a preserved socket (systemd) is in it
	})
}

// instanceBase is the name this process asks for (before -N suffixes).
func instanceBase(c *cli.Context) string {
	if v := flagOrConfig(c, "instance"); v != "" {
		return instanceName(v)
	}
	arg := c.Args().First()
	switch c.Command.Name {
	case "serve":
		if x := c.String("export-name"); x != "" {
			return instanceName(x)
		}
	case "attach":
		if n, err := nbdbridge.ParseDevice(c.Args().Get(1)); err == nil {
			return fmt.Sprintf("nbd%d", n)
		}
	case "mount":
		if b := filepath.Base(filepath.Clean(c.Args().Get(1))); b != "/" && b != "." && c.Args().Get(1) != "" {
			return instanceName(b)
		}
	}
	if deviceSection(arg) != nil {
		return instanceName(arg)
	}
	return instanceName(urlName(arg))
}

// urlName derives a name from a device URL: "demo-1" for
// iscsi://host/iqn.2026-11.org.lunbridge:demo/1, "disk" for
// file:///var/tmp/disk.img.
func urlName(raw string) string {
	if p, ok := strings.CutPrefix(raw, "file://"); ok {
		b := filepath.Base(p)
		return strings.TrimSuffix(b, filepath.Ext(b))
	}
	u, err := discovery.ParseURL(raw)
	if err != nil || u.Target == "" {
		return ""
	}
	t := u.Target
	if i := strings.LastIndexAny(t, ":"); i >= 0 && i < len(t)-1 {
		t = t[i+1:]
	} else if i := strings.LastIndex(t, "."); i >= 0 && i < len(t)-1 {
		t = t[i+1:]
	}
	if u.HasLUN {
		t = fmt.Sprintf("%s-%d", t, u.LUN)
	}
	return t
}

// instanceName makes s a safe directory name: letters, digits and ._-+@
// (others become _), no leading dot, at most 64 bytes; "lunbridge" when
// nothing is left.
func instanceName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("._-+@", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 64 {
			break
		}
	}
	out := strings.TrimLeft(b.String(), ".")
	if out == "" {
		return "lunbridge"
	}
	return out
}

// The process's instance: claimed once by the first caller (serve before
// it listens, else openMain), released when the command ends.
var instState struct {
	sync.Mutex
	done bool
	t    *controlTarget
}

// currentInstance claims this process's instance name, starts its control
// socket (unless --control-socket ”), and returns what the socket
// publishes. Failures are warnings: the command runs, unlisted.
func currentInstance(c *cli.Context) *controlTarget {
	instState.Lock()
	defer instState.Unlock()
	if instState.done {
		return instState.t
	}
	instState.done = true
	t := &controlTarget{}
	t.info = instanceSummary{Command: c.Command.Name, PID: os.Getpid(), Started: time.Now().UTC().Truncate(time.Second), State: "starting"}
	base := instanceBase(c)
	dir := runDir()
	cl, err := claimInstance(dir, base)
	if err != nil {
		logrus.WithError(err).Warnf("no instance directory: lunbridge status will not list this %s", c.Command.Name)
		t.info.Name = base
	} else {
		t.claim = cl
		t.info.Name = cl.name
		atExit = append(atExit, cl.release)
		if cl.name != base {
			logrus.Infof("instance name %s is taken by a running lunbridge: this one is %s", base, cl.name)
		}
	}
	path := c.String("control-socket")
	if !c.IsSet("control-socket") {
		path = ""
		if cl != nil {
			path = filepath.Join(cl.dir, instanceControlFile)
		}
	}
	if path != "" && serveControl(c.Context, path, t) {
		t.info.ControlSocket = path
		if own := filepath.Join(cl.dirOrEmpty(), instanceControlFile); cl != nil && path != own {
			// --control-socket elsewhere: a link in the instance
			// directory lets lunbridge status find it.
			if abs, err := filepath.Abs(path); err == nil {
				os.Symlink(abs, own)
			}
		}
	}
	instState.t = t
	return t
}

// defaultNBDSocket is serve's socket without --listen: in the instance
// directory, else (no directory could be made) RUNDIR/NAME.sock.
func defaultNBDSocket(name string) string {
	instState.Lock()
	t := instState.t
	instState.Unlock()
	if t != nil && t.claim != nil {
		return filepath.Join(t.claim.dir, instanceNBDFile)
	}
	if t != nil {
		name = t.info.Name
	}
	if name == "" {
		name = "lunbridge"
	}
	return filepath.Join(runDir(), instanceName(name)+".sock")
}
