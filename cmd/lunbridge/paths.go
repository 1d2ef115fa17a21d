package main

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/multipath"
	"github.com/lunbridge/lunbridge/nvmetcp"
)

// multipathFlags are the flags of every command that accepts several URLs
// for one LUN (serve, attach, mount, pull, push, bench).
func multipathFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "policy", Value: multipath.PolicyFailover, Usage: "path selector with several URLs: failover, round-robin, queue-length or service-time"},
		&cli.StringFlag{Name: "failback", Value: "immediate", Usage: "return to the preferred path: immediate, manual, followover or a number of seconds"},
		&cli.StringFlag{Name: "no-path-timeout", Value: "30s", Usage: "queue I/O at most `DURATION` while no path is usable (0: fail at once; -1: forever)"},
		&cli.DurationFlag{Name: "check-interval", Value: 5 * time.Second, Usage: "test every path (TEST UNIT READY + NOP) each `DURATION`"},
		&cli.StringFlag{Name: "control-socket", Usage: "answer lunbridge status and lunbridge mirror fail|remove|add|split|rejoin on this Unix socket `PATH` (default: RUNDIR/NAME/control.sock, see lunbridge status; empty: none)", TakesFile: true},
	}
}

// parseNoPathTimeout maps the flag to multipath.Options.NoPathTimeout.
func parseNoPathTimeout(s string) (time.Duration, error) {
	switch s {
	case "0", "0s":
		return multipath.FailAtOnce, nil
	case "-1", "forever":
		return -1, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, usageErrorf("--no-path-timeout %q: want a duration, 0 or -1", s)
	}
	if d == 0 {
		return multipath.FailAtOnce, nil
	}
	return d, nil
}

// multipathOptions are the multipath flags as Options.
func multipathOptions(c *cli.Context, log *logrus.Entry) (multipath.Options, error) {
	npt, err := parseNoPathTimeout(c.String("no-path-timeout"))
	if err != nil {
		return multipath.Options{}, err
	}
	if lt := legTimeout(); lt > 0 && !c.IsSet("no-path-timeout") {
		// A mirror leg whose paths are all gone must fail its I/O soon,
		// so the mirror degrades instead of stalling every write.
		npt = lt
	}
	return multipath.Options{
		Policy:        c.String("policy"),
		Failback:      c.String("failback"),
		NoPathTimeout: npt,
		CheckInterval: c.Duration("check-interval"),
		Logger:        log,
	}, nil
}

// openMultipath opens one LUN through several iscsi:// URLs (one session
// per URL, grouped by LUN identity). All URLs must name the same LUN
// number. With one URL it still returns a multipath Device (so the checker,
// reinstatement and status work for a single path too).
func openMultipath(c *cli.Context, urls []string) (*multipath.Device, error) {
	if len(urls) == 0 {
		return nil, usageErrorf("no URL")
	}
	var cfgs []initiator.Config
	var lun uint64
	for i, raw := range urls {
		u, err := discovery.ParseURL(raw)
		if err != nil {
			return nil, err
		}
		if u.Target == "" || !u.HasLUN {
			return nil, usageErrorf("%s names no LUN: want iscsi://host[:port]/target-iqn/lun", u)
		}
		if i == 0 {
			lun = u.LUN
		} else if u.LUN != lun {
			return nil, usageErrorf("%s: LUN %d differs from LUN %d of the first URL (all URLs are paths to one LUN)", u, u.LUN, lun)
		}
		cfg, err := sessionConfig(c, u)
		if err != nil {
			return nil, err
		}
		cfgs = append(cfgs, cfg)
	}
	opts, err := multipathOptions(c, logrus.NewEntry(logrus.StandardLogger()).WithField("lun", lun))
	if err != nil {
		return nil, err
	}
	d, err := multipath.Open(c.Context, cfgs, lun, opts)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// openNVMeMultipath opens one namespace through several nvme+tcp:// URLs
// (one association per portal, all naming the same subsystem and NSID),
// ANA-aware: see multipath.OpenNVMe.
func openNVMeMultipath(c *cli.Context, urls []string) (*multipath.Device, error) {
	var cfgs []nvmetcp.Config
	var first *nvmeURL
	for _, raw := range urls {
		u, err := parseNVMeURL(expandDevice(raw))
		if err != nil {
			return nil, err
		}
		if u.SubNQN == "" {
			return nil, usageErrorf("%s names no subsystem: want nvme+tcp://host[:port]/subsystem-nqn/nsid", u)
		}
		if !u.HasNS {
			u.NSID, u.HasNS = 1, true
		}
		if first == nil {
			first = u
		} else if u.SubNQN != first.SubNQN || u.NSID != first.NSID {
			return nil, usageErrorf("%s: namespace %d of %s differs from the first URL's %d of %s (all URLs are paths to one namespace)",
				u, u.NSID, u.SubNQN, first.NSID, first.SubNQN)
		}
		cfg, err := nvmeConfig(c, u)
		if err != nil {
			return nil, err
		}
		cfgs = append(cfgs, cfg)
	}
	opts, err := multipathOptions(c, logrus.NewEntry(logrus.StandardLogger()).WithField("nsid", first.NSID))
	if err != nil {
		return nil, err
	}
	ctx := c.Context
	if t := c.Duration("timeout"); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	return multipath.OpenNVMe(ctx, cfgs, first.NSID, opts)
}

// serveControl publishes t (status, mirror commands: control.go) on the
// Unix socket path until ctx ends, and reports whether it listens. Errors
// are logged, not fatal.
func serveControl(ctx context.Context, path string, t *controlTarget) bool {
	// Listen before the command reports that it is up, so `lunbridge
	// status` works as soon as it has.
	ln, err := listenControl(path)
	if err != nil {
		logrus.WithError(err).Warnf("control socket %s", path)
		return false
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := serveControlLn(ctx, ln, path, t); err != nil {
			logrus.WithError(err).Warnf("control socket %s", path)
		}
	}()
	// When the command ends, stop answering and remove the socket.
	atExit = append(atExit, func() {
		cancel()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	})
	return true
}

var _ blockdev.Device = (*multipath.Device)(nil)

// describePaths is a one-line summary for logs.
func describePaths(d *multipath.Device) string {
	st := d.Status()
	s := fmt.Sprintf("%s over %d paths:", st.Policy, len(st.Paths))
	for _, p := range st.Paths {
		s += fmt.Sprintf(" %s=%s", p.Portal, p.State)
	}
	return s
}
