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
	npt, err := parseNoPathTimeout(c.String("no-path-timeout"))
	if err != nil {
		return nil, err
	}
	if lt := legTimeout(); lt > 0 && !c.IsSet("no-path-timeout") {
		// A mirror leg whose paths are all gone must fail its I/O soon,
		// so the mirror degrades instead of stalling every write.
		npt = lt
	}
	opts := multipath.Options{
		Policy:        c.String("policy"),
		Failback:      c.String("failback"),
		NoPathTimeout: npt,
		CheckInterval: c.Duration("check-interval"),
		Logger:        logrus.NewEntry(logrus.StandardLogger()).WithField("lun", lun),
	}
	d, err := multipath.Open(c.Context, cfgs, lun, opts)
	if err != nil {
		return nil, err
	}
	return d, nil
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
