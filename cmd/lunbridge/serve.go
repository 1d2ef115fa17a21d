package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/nbdbridge"
)

func init() {
	register(catExpose, &cli.Command{
		Name:      "serve",
		Usage:     "export a LUN (or image) as an NBD server",
		ArgsUsage: "URL",
		UsageText: "lunbridge serve URL [--listen unix:/path.sock | tcp:127.0.0.1:10809] [--export-name N] [--read-only] [--persistent] [--shared N] [--pid-file F] [--json]",
		Description: `Serves the device behind URL over NBD (fixed newstyle, structured replies,
base:allocation) until SIGINT/SIGTERM; then answers the requests in flight,
flushes the device and exits 0.

Without --listen the socket is RUNDIR/NAME/nbd.sock, NAME being this
instance's name (see lunbridge status: --instance, --export-name, or the
target and LUN; a second serve of another LUN, or with another --instance,
gets its own NAME-2 ... and socket). Once listening, the NBD URI is printed
on stdout (--json: one JSON object) so scripts can read it. NBD has no authentication:
prefer Unix sockets. The socket is made 0600 (the user's alone) and a
directory serve creates for it 0700; every TCP listener, loopback included
(any local user can connect), logs a warning.

When the kernel is the client (nbd-client, or a /dev/nbdN connected to this
socket some other way), give --kernel-client: serve then protects itself
against memory-reclaim deadlocks as attach does (PR_SET_IO_FLUSHER on every
thread, mlockall; a warning when not permitted).

A restarted serve logs in with the same iSCSI ISID, which ends the old
process's session; a second serve of the same LUN on this host is refused
unless it is given its own --instance NAME (a global flag).

Without --persistent the server exits after the first client disconnects (like
qemu-nbd without -t). --shared N accepts up to N clients at once (default 1);
extra clients are refused with a policy error.

Examples:
   lunbridge serve iscsi://127.0.0.1:3260/iqn.2026-11.org.lunbridge:demo/1
   lunbridge serve --listen unix:/tmp/lun.sock --read-only file:///var/tmp/disk.img
   nbdinfo 'nbd+unix:///?socket=/tmp/lun.sock'
   lunbridge serve --listen tcp:127.0.0.1:10809 --export-name lun1 --persistent iscsi://127.0.0.1:3260/iqn.2026-11.org.lunbridge:demo/1
   qemu-img convert -O qcow2 nbd://127.0.0.1:10809/lun1 backup.qcow2`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Aliases: []string{"l"}, Usage: "unix:/path.sock or tcp:HOST:PORT (default: unix:RUNDIR/NAME/nbd.sock, RUNDIR being /run/lunbridge for root, see lunbridge status)"},
			&cli.StringFlag{Name: "export-name", Aliases: []string{"x"}, Usage: "export name (clients may also ask for the default export \"\")"},
			&cli.StringFlag{Name: "description", Usage: "export description shown by nbdinfo"},
			&cli.BoolFlag{Name: "read-only", Aliases: []string{"r"}, Usage: "refuse writes"},
			&cli.BoolFlag{Name: "persistent", Aliases: []string{"t"}, Usage: "keep serving after the last client disconnects"},
			&cli.IntFlag{Name: "shared", Aliases: []string{"e"}, Value: 1, Usage: "maximum simultaneous clients (0: unlimited)"},
			&cli.StringFlag{Name: "pid-file", Usage: "write the process id here once listening"},
			&cli.BoolFlag{Name: "json", Usage: "print the listening address as JSON"},
			&cli.BoolFlag{Name: "multi-conn", Value: true, Usage: "advertise NBD_FLAG_CAN_MULTI_CONN (all clients share one session, so a flush covers them all)"},
			&cli.BoolFlag{Name: "kernel-client", Usage: "the kernel's NBD client will use this export: set PR_SET_IO_FLUSHER and mlockall, as attach does"},
			&cli.StringFlag{Name: "max-request", Value: "32M", Usage: "largest READ/WRITE payload advertised, `SIZE` from 4k to 256M (e.g. 1M, 32MiB, 33554432)"},
		}, deviceFlags()...),
		Action: serveAction,
	})
}

// maxMaxRequest bounds --max-request: one request's payload is allocated
// whole (nbdbridge), so a client must not make us allocate more.
const maxMaxRequest = 256 << 20

// serveEndpoint is what --json prints.
type serveEndpoint struct {
	URI     string `json:"uri"`
	Socket  string `json:"socket,omitempty"`
	Address string `json:"address,omitempty"`
	Export  string `json:"export"`
	Size    int64  `json:"size"`
	PID     int    `json:"pid"`
}

func serveAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("serve: want exactly one URL, got %d arguments", c.NArg())
	}
	if c.Int("shared") < 0 {
		return usageErrorf("serve: --shared must be >= 0")
	}
	maxReq, err := parseSize(c.String("max-request"))
	if err != nil {
		return usageErrorf("serve: --max-request: %v", err)
	}
	if maxReq < 4<<10 || maxReq > maxMaxRequest {
		return usageErrorf("serve: --max-request %s: want 4k to 256M", c.String("max-request"))
	}
	name := c.String("export-name")
	log := logrus.WithFields(logrus.Fields{"cmd": "serve", "export": name})
	// The instance name (and with it the default socket) first.
	inst := currentInstance(c)
	l, ep, cleanup, err := serveListener(c.String("listen"), name, log)
	if err != nil {
		return err
	}
	defer cleanup()
	if c.Bool("kernel-client") {
		if err := nbdbridge.ReclaimSafe(); err != nil {
			log.WithError(err).Warn("not protected against memory-reclaim deadlocks (a file system or swap on the kernel's NBD device can hang under memory pressure)")
		} else {
			log.Info("io_flusher set on every thread and memory locked (mlockall)")
		}
	}
	dev, err := openMain(c, c.Args().First(), c.Bool("read-only"))
	if err != nil {
		l.Close()
		return err
	}
	ep.Export, ep.Size, ep.PID = name, dev.Size(), os.Getpid()
	opts := nbdbridge.Options{
		ExportName:  name,
		Description: c.String("description"),
		ReadOnly:    c.Bool("read-only"),
		MaxRequest:  int(maxReq),
		// Like qemu-nbd: advertise multi-conn only when more than one
		// connection is allowed, else nbdcopy/nbdfuse open 4 connections
		// and all but the first are refused.
		MultiConn:      c.Bool("multi-conn") && (c.Int("shared") != 1 || c.IsSet("multi-conn")),
		MaxConnections: c.Int("shared"),
		OneShot:        !c.Bool("persistent"),
		Logger:         log,
	}
	srv := nbdbridge.NewServer(dev, opts)
	watchNBD(opts.ExportName, srv)
	inst.setNBD(ep, srv)
	if pf := c.String("pid-file"); pf != "" {
		if err := os.WriteFile(pf, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			l.Close()
			dev.Close()
			return fmt.Errorf("serve: --pid-file: %w", err)
		}
		defer os.Remove(pf)
	}
	if c.Bool("json") {
		b, _ := json.Marshal(ep)
		fmt.Fprintln(c.App.Writer, string(b))
	} else {
		fmt.Fprintln(c.App.Writer, ep.URI)
	}
	log.Infof("instance %s: serving %s (lunbridge status %s)", inst.info.Name, ep.URI, inst.info.Name)
	notifyReady(log, "serving "+ep.URI)
	serveErr := srv.Serve(c.Context, l)
	notifyStopping(log, "flushing and closing the device")
	return closeServed(dev, serveErr, log)
}

// closeServed flushes and closes the device after serving.
func closeServed(dev blockdev.Device, serveErr error, log *logrus.Entry) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ferr := dev.Flush(ctx)
	cerr := dev.Close()
	if serveErr != nil {
		return serveErr
	}
	if ferr != nil && !errors.Is(ferr, blockdev.ErrReadOnly) {
		return fmt.Errorf("flush on exit: %w", ferr)
	}
	return cerr
}

// serveListen opens the listener named by --listen and returns the URI to
// print plus a cleanup that removes a Unix socket.
func serveListen(spec, name string, log *logrus.Entry) (net.Listener, *serveEndpoint, func(), error) {
	nop := func() {}
	switch {
	case spec == "" || strings.HasPrefix(spec, "unix:") || strings.HasPrefix(spec, "/"):
		path := strings.TrimPrefix(spec, "unix:")
		if path == "" {
			path = defaultNBDSocket(name) // instance.go
		}
		// Directories lunbridge creates are the user's alone (0700).
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, nil, nop, fmt.Errorf("serve: %w", err)
		}
		if _, err := os.Stat(path); err == nil {
			// A socket left by a dead server is removed; a live one is not.
			if nc, err := net.DialTimeout("unix", path, time.Second); err == nil {
				nc.Close()
				return nil, nil, nop, fmt.Errorf("serve: %s: another server is listening there", path)
			}
			os.Remove(path)
		}
		l, err := listenUnixPrivate(path)
		if err != nil {
			return nil, nil, nop, fmt.Errorf("serve: %w", err)
		}
		u := url.URL{Scheme: "nbd+unix", Path: "/" + name, RawQuery: "socket=" + path}
		return l, &serveEndpoint{URI: u.String(), Socket: path}, func() { os.Remove(path) }, nil
	case strings.HasPrefix(spec, "tcp:"):
		addr := strings.TrimPrefix(spec, "tcp:")
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, nil, nop, usageErrorf("serve: --listen %q: %v", spec, err)
		}
		if host == "" {
			return nil, nil, nop, usageErrorf("serve: --listen %q: name the address (tcp:127.0.0.1:PORT); NBD has no authentication", spec)
		}
		// Loopback too: every local user, and every container sharing the
		// network namespace, can connect.
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			log.Warnf("listening on %s: NBD has no authentication; anyone who can reach it can read and write the LUN", addr)
		} else {
			log.Warnf("listening on %s: NBD has no authentication; every local user (and container sharing this network namespace) can read and write the LUN; a Unix socket (the default) is the user's alone", addr)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, nop, fmt.Errorf("serve: %w", err)
		}
		a := l.Addr().String()
		return l, &serveEndpoint{URI: "nbd://" + a + "/" + name, Address: a}, nop, nil
	default:
		return nil, nil, nop, usageErrorf("serve: --listen %q: want unix:/path.sock or tcp:HOST:PORT", spec)
	}
}

// listenUnixPrivate listens on a Unix socket at path that only this user
// can connect to (0600), with no moment in which anyone else could: the
// socket is bound in a fresh 0700 directory next to path, made 0600, and
// only then renamed into place. (Chmod after Listen would leave a window
// in which another user's connection can queue in the backlog.)
func listenUnixPrivate(path string) (net.Listener, error) {
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".lb")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	l, err := net.Listen("unix", bound)
	if err != nil {
		return nil, err
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(bound, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	if err := os.Rename(bound, path); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
