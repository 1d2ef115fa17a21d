package main

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/nbdbridge"
)

func init() {
	register(catExpose, &cli.Command{
		Name:      "attach",
		Usage:     "bind a LUN (or image) to a kernel /dev/nbdN",
		ArgsUsage: "URL /dev/nbdN",
		UsageText: "lunbridge attach URL /dev/nbdN [--nbd-connections N] [--reconnect] [--io-timeout D] [--dead-conn-timeout D] [--read-only]",
		Description: `Binds the device behind URL to /dev/nbdN through the kernel's nbd driver
(generic netlink; the NBD_* ioctls when the netlink family is missing). Each
connection is a socketpair served by this process, so no NBD handshake and no
network socket is involved. Needs root and the nbd module (modprobe nbd).

The command stays in the foreground serving the device and prints /dev/nbdN
once it is bound. It ends when the device is detached (lunbridge detach, or
nbd-client -d), or on SIGINT/SIGTERM, which detaches the device first.

The process marks itself PR_SET_IO_FLUSHER and locks its memory (mlockall),
as nbd-client and iscsid do, so that it cannot deadlock when the kernel
reclaims memory by writing to the device it serves; without CAP_SYS_RESOURCE
or CAP_IPC_LOCK it warns and runs unprotected.

If this process dies (kill -9, crash), the kernel keeps /dev/nbdN and queues
its I/O for --dead-conn-timeout; run attach again with --reconnect to hand the
same device fresh connections (netlink only).

lunbridge status lists the running attach as nbdN (or its --instance name)
and shows its sessions, paths and I/O: lunbridge status nbd0.

The global --timeout is the iSCSI connect/login timeout; --io-timeout is the
kernel's per-request timeout.

Examples:
   modprobe nbd
   lunbridge attach iscsi://127.0.0.1:3260/iqn.2026-11.org.lunbridge:demo/1 /dev/nbd0 &
   mkfs.ext4 /dev/nbd0 && mount /dev/nbd0 /mnt
   umount /mnt && lunbridge detach /dev/nbd0
   lunbridge attach --nbd-connections 4 --dead-conn-timeout 2m iscsi://10.0.2.2:3260/iqn.2026-11.org.lunbridge:demo/1 /dev/nbd1
   lunbridge attach --reconnect iscsi://10.0.2.2:3260/iqn.2026-11.org.lunbridge:demo/1 /dev/nbd1`,
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "nbd-connections", Aliases: []string{"C"}, Value: 1, Usage: "NBD sockets handed to the kernel (one per hardware queue)"},
			&cli.BoolFlag{Name: "reconnect", Usage: "give fresh connections to a /dev/nbdN whose server died (NBD_CMD_RECONFIGURE)"},
			&cli.DurationFlag{Name: "io-timeout", Value: 0, Usage: "kernel per-request timeout (0: kernel default)"},
			&cli.DurationFlag{Name: "dead-conn-timeout", Value: 60 * time.Second, Usage: "how long the kernel queues I/O waiting for --reconnect after this process dies"},
			&cli.BoolFlag{Name: "read-only", Aliases: []string{"r"}, Usage: "attach read-only"},
			&cli.BoolFlag{Name: "ioctl", Usage: "use the NBD_* ioctls even when the netlink family exists"},
		}, deviceFlags()...),
		Action: attachAction,
	})
	register(catExpose, &cli.Command{
		Name:      "detach",
		Usage:     "disconnect a kernel /dev/nbdN",
		ArgsUsage: "/dev/nbdN",
		UsageText: "lunbridge detach /dev/nbdN",
		Description: `Disconnects /dev/nbdN (netlink NBD_CMD_DISCONNECT, else the NBD_DISCONNECT
ioctl). The kernel sends NBD_CMD_DISC to the serving lunbridge attach, which
flushes the LUN and exits. Unmount first.

Examples:
   umount /mnt && lunbridge detach /dev/nbd0`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("detach: want /dev/nbdN")
			}
			idx, err := nbdbridge.ParseDevice(c.Args().First())
			if err != nil {
				return withCode(ExitUsage, err)
			}
			return nbdbridge.Detach(idx)
		},
	})
}

func attachAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf("attach: want URL and /dev/nbdN, got %d arguments", c.NArg())
	}
	idx, err := nbdbridge.ParseDevice(c.Args().Get(1))
	if err != nil {
		return withCode(ExitUsage, err)
	}
	if c.Int("nbd-connections") < 1 {
		return usageErrorf("attach: --nbd-connections must be >= 1")
	}
	log := logrus.WithFields(logrus.Fields{"cmd": "attach", "nbd": idx})
	// This process will serve the kernel's write-back to /dev/nbdN, memory
	// reclaim included: it must not need reclaim itself to make progress.
	// A failure (no CAP_SYS_RESOURCE or CAP_IPC_LOCK, a finite
	// RLIMIT_MEMLOCK) is a warning: the device works, with the risk of a
	// deadlock under memory pressure, as with any nbd server without them.
	if err := nbdbridge.ReclaimSafe(); err != nil {
		log.WithError(err).Warn("not protected against memory-reclaim deadlocks (a file system or swap on the device can hang under memory pressure)")
	} else {
		log.Info("io_flusher set on every thread and memory locked (mlockall)")
	}
	dev, err := openMain(c, c.Args().First(), c.Bool("read-only"))
	if err != nil {
		return err
	}
	opts := nbdbridge.DefaultOptions()
	opts.ReadOnly = c.Bool("read-only")
	opts.Logger = log
	srv := nbdbridge.NewServer(dev, opts)
	watchNBD(opts.ExportName, srv)
	setupCtx, cancel := context.WithTimeout(c.Context, 30*time.Second)
	a, err := srv.Attach(setupCtx, idx, nbdbridge.AttachOptions{
		Connections:     c.Int("nbd-connections"),
		Timeout:         c.Duration("io-timeout"),
		DeadConnTimeout: c.Duration("dead-conn-timeout"),
		Reconnect:       c.Bool("reconnect"),
		Backend:         redactedURL(c.Args().First()), // never a secret in /sys/block/nbdN/backend
		Ioctl:           c.Bool("ioctl"),
	})
	cancel()
	if err != nil {
		dev.Close()
		return err
	}
	currentInstance(c).setKernel(fmt.Sprintf("/dev/nbd%d", a.Index), srv)
	fmt.Fprintf(c.App.Writer, "/dev/nbd%d\n", a.Index)
	log.Info("attached")
	notifyReady(log, fmt.Sprintf("serving %s as /dev/nbd%d", redactedURL(c.Args().First()), a.Index))
	waited := make(chan error, 1)
	go func() { waited <- a.Wait() }()
	var werr error
	select {
	case werr = <-waited:
		log.Info("the kernel disconnected the device")
	case <-c.Context.Done():
		log.Info("signal: detaching")
		werr = a.Detach(30 * time.Second)
	}
	notifyStopping(log, "flushing and closing the device")
	return closeServed(dev, werr, log)
}
