package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/fusefs"
)

// mountReadyEnv names the fd on which a --daemon child reports to its
// parent: "ok FILE" once mounted, or "error MESSAGE".
const mountReadyEnv = "LUNBRIDGE_MOUNT_READY_FD"

func init() {
	register(catExpose, &cli.Command{
		Name:      "mount",
		Usage:     "expose a LUN (or image) as a file in a FUSE mount",
		ArgsUsage: "URL MOUNTPOINT",
		UsageText: "lunbridge mount URL MOUNTPOINT [--name disk.img] [--read-only] [--mode 0600] [--group G] [--allow-other] [--cache] [--foreground|--daemon] [--pid-file F]",
		Description: `Mounts a FUSE file system on MOUNTPOINT holding one file, MOUNTPOINT/disk.img,
whose content is the device behind URL: reads and writes at any offset go to
the LUN (unaligned edges as read-modify-write), fsync flushes it, fallocate
--punch-hole unmaps, SEEK_DATA/SEEK_HOLE show its allocation. Loop devices,
qemu-img, fio and dd all work on the file. The file's size is fixed: writes
past the end fail with ENOSPC, truncation with EPERM (use dd conv=notrunc).

The file is the mounting user's alone (mode 0600): it holds the whole disk.
To share it, give --group and --mode (0660 by default with --group), and
--allow-other so that other users can reach the mount at all.

By default the kernel page cache is bypassed (direct I/O, 1 MiB parallel
requests, every read sees the LUN); --cache turns the page cache on, which
helps programs doing small buffered reads but holds data twice under a loop
device and hides changes others make to the LUN.

The command stays in the foreground and prints the file's path once mounted;
--daemon detaches into the background instead and exits 0 once the mount is
ready (non-zero, with the reason, if it failed). SIGINT/SIGTERM or
"lunbridge umount MOUNTPOINT" flush the LUN, unmount and close it. A stale
mount left by a killed lunbridge ("Transport endpoint is not connected") is
cleared at start. lunbridge status lists the mount under the mount point's
name (or its --instance name): lunbridge status lun. Root mounts directly; other users need fusermount3 (and
user_allow_other in /etc/fuse.conf for --allow-other).

Examples:
   lunbridge mount iscsi://127.0.0.1:3260/iqn.2026-11.org.lunbridge:demo/1 /mnt/lun &
   losetup -f --show --direct-io=on /mnt/lun/disk.img
   lunbridge mount --daemon --pid-file /run/lun1.pid iscsi://10.0.2.2/iqn.2026-11.org.lunbridge:demo/1 /mnt/lun
   qemu-img convert -O qcow2 /mnt/lun/disk.img backup.qcow2
   lunbridge umount /mnt/lun`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "name", Value: fusefs.DefaultName, Usage: "name of the file inside MOUNTPOINT"},
			&cli.BoolFlag{Name: "read-only", Aliases: []string{"r"}, Usage: "expose the file read-only (write bits dropped, writes fail with EROFS)"},
			&cli.StringFlag{Name: "mode", Usage: "the file's permission bits, octal (default 0600, or 0660 with --group): it is a whole disk"},
			&cli.StringFlag{Name: "group", Usage: "the file's group, a name or number (default: the user's)"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users reach the mount; the file's --mode and --group still decide who may open it"},
			&cli.BoolFlag{Name: "cache", Usage: "use the kernel page cache instead of direct I/O"},
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay in the foreground (the default)"},
			&cli.BoolFlag{Name: "daemon", Aliases: []string{"d"}, Usage: "detach into the background once mounted"},
			&cli.StringFlag{Name: "pid-file", Usage: "write the serving process's id here once mounted (removed on exit)"},
		}, deviceFlags()...),
		Action: mountAction,
	})
	register(catExpose, &cli.Command{
		Name:      "umount",
		Aliases:   []string{"unmount"},
		Usage:     "flush and unmount a lunbridge FUSE mount",
		ArgsUsage: "MOUNTPOINT",
		UsageText: "lunbridge umount MOUNTPOINT [--lazy] [--pid-file F [--wait D]]",
		Description: `Fsyncs the file in MOUNTPOINT (the serving lunbridge flushes the LUN) and
unmounts it; the serving lunbridge mount then flushes again, closes the LUN
and exits. A busy mount (open file, attached loop device) is refused unless
--lazy, which detaches it now and lets the server finish when the last user
is gone. A stale mount is cleared. With --pid-file (the one given to mount)
the command waits until the serving process has exited.

Examples:
   lunbridge umount /mnt/lun
   lunbridge umount --pid-file /run/lun1.pid /mnt/lun`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "lazy", Aliases: []string{"l"}, Usage: "detach even if busy (umount -l)"},
			&cli.StringFlag{Name: "pid-file", Usage: "wait until the process named in this file has exited"},
			&cli.DurationFlag{Name: "wait", Value: time.Minute, Usage: "how long to wait for that process"},
		},
		Action: umountAction,
	})
}

func mountAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf("mount: want URL and MOUNTPOINT, got %d arguments", c.NArg())
	}
	if c.Bool("daemon") && c.Bool("foreground") {
		return usageErrorf("mount: --daemon and --foreground exclude each other")
	}
	url, dir := c.Args().Get(0), c.Args().Get(1)
	if _, err := blockdevURL(url); err != nil {
		return err
	}
	name := c.String("name")
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return usageErrorf("mount: --name %q is not a file name", name)
	}
	mode, gid, err := mountMode(c)
	if err != nil {
		return err
	}
	ready := daemonChild()
	if c.Bool("daemon") && ready == nil {
		return mountDaemon(c)
	}
	err = mountServe(c, url, dir, mode, gid, ready)
	if ready != nil && err != nil {
		fmt.Fprintf(ready, "error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		ready.Close()
	}
	return err
}

// mountMode parses --mode and --group: 0600 by default, 0660 when only
// --group is given.
func mountMode(c *cli.Context) (os.FileMode, *uint32, error) {
	var gid *uint32
	if g := c.String("group"); g != "" {
		id, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			grp, lerr := user.LookupGroup(g)
			if lerr != nil {
				return 0, nil, usageErrorf("mount: --group %q: %v", g, lerr)
			}
			if id, err = strconv.ParseUint(grp.Gid, 10, 32); err != nil {
				return 0, nil, usageErrorf("mount: --group %q: gid %q", g, grp.Gid)
			}
		}
		v := uint32(id)
		gid = &v
	}
	mode := os.FileMode(0o600)
	if gid != nil {
		mode = 0o660
	}
	if m := c.String("mode"); m != "" {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v == 0 || v&^0o777 != 0 {
			return 0, nil, usageErrorf("mount: --mode %q: want octal permission bits such as 0600 or 0640", m)
		}
		mode = os.FileMode(v)
	}
	return mode, gid, nil
}

// blockdevURL checks the URL's scheme before anything slow happens.
func blockdevURL(url string) (string, error) {
	if strings.HasPrefix(url, "iscsi://") || strings.HasPrefix(url, "file://") || strings.HasPrefix(url, nvmeScheme) {
		return url, nil
	}
	return "", usageErrorf("%q is not a device URL: want iscsi://[user[%%secret]@]host[:port]/target-iqn/lun, nvme+tcp://host[:port]/subsystem-nqn/nsid or file:///path", url)
}

// daemonChild returns the readiness pipe when this process is the
// background child of `mount --daemon`, else nil.
func daemonChild() *os.File { return daemonReadyPipe(mountReadyEnv) }

// mountServe mounts, reports readiness, serves until unmounted or
// signalled, then flushes and closes the device.
func mountServe(c *cli.Context, url, dir string, mode os.FileMode, gid *uint32, ready *os.File) error {
	log := logrus.WithFields(logrus.Fields{"cmd": "mount", "dir": dir})
	// Clear first: stat on a stale mountpoint fails with ENOTCONN.
	if err := fusefs.ClearStale(dir); err != nil {
		return err
	}
	if st, err := os.Stat(dir); err != nil {
		return fmt.Errorf("mount: %w", err)
	} else if !st.IsDir() {
		return usageErrorf("mount: %s is not a directory", dir)
	}
	readOnly := c.Bool("read-only")
	dev, err := openMain(c, url, readOnly)
	if err != nil {
		return err
	}
	mp, err := fusefs.Mount(dir, dev, fusefs.Options{
		Name:       c.String("name"),
		ReadOnly:   readOnly,
		Cache:      c.Bool("cache"),
		AllowOther: c.Bool("allow-other"),
		Mode:       mode,
		GID:        gid,
		Logger:     log,
	})
	if err != nil {
		dev.Close()
		return err
	}
	if pf := c.String("pid-file"); pf != "" {
		if err := os.WriteFile(pf, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			mp.Unmount()
			dev.Close()
			return fmt.Errorf("mount: --pid-file: %w", err)
		}
		defer os.Remove(pf)
	}
	if ready != nil {
		fmt.Fprintf(ready, "ok %s\n", mp.File())
		ready.Close()
	} else {
		fmt.Fprintln(c.App.Writer, mp.File())
	}
	currentInstance(c).setMount(mp.Dir(), mp.File())
	log.Info("mounted")
	notifyReady(log, "serving "+mp.File())

	waited := make(chan struct{})
	go func() { mp.Wait(); close(waited) }()
	select {
	case <-waited:
		log.Info("unmounted from outside")
	case <-c.Context.Done():
		log.Info("signal: flushing and unmounting")
		if err := mp.Unmount(); err != nil {
			log.WithError(err).Error("unmount refused (busy); detached lazily, serving until the last user is gone")
			if derr := unix.Unmount(mp.Dir(), unix.MNT_DETACH); derr != nil {
				log.WithError(derr).Error("lazy unmount failed")
			}
		}
		<-waited
	}
	notifyStopping(log, "flushing and closing the device")
	return flushAndClose(dev, mp, log)
}

// flushAndClose ends a mount's life: a last flush, then Close.
func flushAndClose(dev blockdev.Device, mp *fusefs.MountPoint, log *logrus.Entry) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ferr := mp.Flush(ctx)
	cerr := dev.Close()
	if ferr != nil && !errors.Is(ferr, blockdev.ErrReadOnly) {
		return fmt.Errorf("mount: flush on exit: %w", ferr)
	}
	if cerr != nil {
		return fmt.Errorf("mount: close device: %w", cerr)
	}
	log.Info("device flushed and closed")
	return nil
}

// mountDaemon re-executes this command detached (daemon.go) and waits
// until the child reports the mount ready or failed.
func mountDaemon(c *cli.Context) error {
	file, err := startDaemon(c, "mount --daemon", mountReadyEnv, func(a string) bool { return boolFlagArg(a, "daemon", "d") })
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, file)
	return nil
}

func umountAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("umount: want MOUNTPOINT")
	}
	dir := c.Args().First()
	pid := 0
	if pf := c.String("pid-file"); pf != "" {
		b, err := os.ReadFile(pf)
		if err != nil {
			return fmt.Errorf("umount: --pid-file: %w", err)
		}
		if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil || pid <= 0 {
			return fmt.Errorf("umount: --pid-file %s: no process id in it", pf)
		}
	}
	if err := fusefs.Unmount(dir, c.Bool("lazy")); err != nil {
		return err
	}
	if pid == 0 {
		return nil
	}
	deadline := time.Now().Add(c.Duration("wait"))
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("umount: %s unmounted, but process %d is still running after %v", filepath.Clean(dir), pid, c.Duration("wait"))
		}
		select {
		case <-c.Context.Done():
			return c.Context.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// processAlive reports whether pid runs; a zombie (exited, not yet reaped
// by its new parent) counts as gone.
func processAlive(pid int) bool {
	if unix.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z' && b[i+2] != 'X'
	}
	return true
}
