package main

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/filedev"
	"github.com/lunbridge/lunbridge/multipath"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// openDevice opens one device URL: an iscsi:// URL (a LUN on a target), an
// nvme+tcp:// URL (a namespace of an NVMe/TCP subsystem) or a file:// URL (a local image, useful for tests and restores).
func openDevice(c *cli.Context, url string, readOnly bool) (blockdev.Device, error) {
	switch {
	case strings.HasPrefix(url, "file://"):
		return filedev.Open(strings.TrimPrefix(url, "file://"), 512, readOnly)
	case strings.HasPrefix(url, "iscsi://"):
		return openISCSI(c, url, readOnly)
	case strings.HasPrefix(url, "nvme+tcp://"):
		return openNVMe(c, url, readOnly)
	default:
		return nil, usageErrorf("%q is not a device URL: want iscsi://[user[%%secret]@]host[:port]/target-iqn/lun, nvme+tcp://host[:port]/subsystem-nqn/nsid, file:///path, or the name of a [device] in the config file", url)
	}
}

// openISCSI is set by iscsi.go, openNVMe by nvme.go.
var openISCSI, openNVMe func(c *cli.Context, url string, readOnly bool) (blockdev.Device, error)

// deviceFlags are the flags of every command that opens "the" device
// (serve, attach, mount, pull, push, verify, bench): more paths to the same
// LUN, a mirror leg, and the multipath tuning.
func deviceFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringSliceFlag{Name: "path", Usage: "another `URL` reaching the same LUN (repeat for more paths): multipath with failover/load balancing"},
		&cli.StringSliceFlag{Name: "mirror", Usage: "mirror onto the LUN at `URL` (RAID-1 across two targets; repeat for more paths to that LUN). Create the mirror first: lunbridge mirror create"},
		&cli.StringFlag{Name: "prefer", Usage: "with --mirror, only on split brain (both legs written without each other): keep leg A (the main URL) or B (the --mirror URL) and fully resync the other. Ignored otherwise; refused for a stale leg"},
		&cli.StringFlag{Name: "resync-rate", Usage: "with --mirror: limit background resync to `RATE` bytes/s (e.g. 100M)"},
		&cli.DurationFlag{Name: "readd-interval", Value: mirror.DefaultProbeInterval, Usage: "with --mirror (serve, attach, mount): reopen a failed leg after `DURATION`, doubling up to --readd-max-interval, and re-add it (incremental resync) when it is the same LUN; 0: never"},
		&cli.DurationFlag{Name: "readd-max-interval", Value: mirror.DefaultProbeMaxInterval, Usage: "with --mirror: longest wait between two attempts to reopen a failed leg"},
		ownerForceFlag(),
		reserveFlag(),
	}, append(asyncFlags(), multipathFlags()...)...)
}

// withoutFlag drops the flag called name (a command that gives it another
// meaning, like pull's --force).
func withoutFlag(flags []cli.Flag, name string) []cli.Flag {
	var out []cli.Flag
	for _, f := range flags {
		if len(f.Names()) > 0 && f.Names()[0] == name {
			continue
		}
		out = append(out, f)
	}
	return out
}

// longRunning commands publish the multipath control socket and metrics.
func longRunning(c *cli.Context) bool {
	switch c.Command.Name {
	case "serve", "attach", "mount":
		return true
	}
	return false
}

// openMain opens the device a command works on: url plus --path URLs (a
// multipath device when there is more than one), optionally mirrored onto
// --mirror URLs, instrumented for --metrics-listen.
func openMain(c *cli.Context, url string, readOnly bool) (blockdev.Device, error) {
	var inst *controlTarget
	if longRunning(c) {
		inst = currentInstance(c) // instance.go: its name, control socket
	}
	url, err := applyDevice(c, url) // a [device "name"] of the config file
	if err != nil {
		return nil, err
	}
	if err := checkDeviceFlags(c); err != nil {
		return nil, err
	}
	if c.String("mirror-async") != "" && (readOnly || !longRunning(c)) {
		return nil, usageErrorf("--mirror-async is for serve, attach and mount (writing through the primary); read the async leg's LUN directly instead")
	}
	if longRunning(c) && currentMetrics() == nil {
		stop, err := startMetrics(c)
		if err != nil {
			return nil, err
		}
		atExit = append(atExit, stop)
	}
	legA := append([]string{url}, c.StringSlice("path")...)
	legB := c.StringSlice("mirror")
	if inst != nil {
		inst.setURLs(append(append([]string(nil), legA...), legB...))
	}
	var dev blockdev.Device
	if len(legB) == 0 {
		dev, err = openLeg(c, legA, readOnly)
	} else {
		if readOnly && c.Command.Name != "pull" && c.Command.Name != "verify" && c.Command.Name != "bench" {
			return nil, usageErrorf("--mirror cannot be combined with --read-only yet")
		}
		var rate int64
		if s := c.String("resync-rate"); s != "" {
			if rate, err = parseSize(s); err != nil {
				return nil, usageErrorf("--resync-rate: %v", err)
			}
		}
		// Legs must fail fast so the mirror degrades instead of stalling
		// every write for the default 120 s replacement timeout.
		if !c.IsSet("replacement-timeout") {
			legReplacementTimeout.Store(int64(5 * time.Second))
			defer legReplacementTimeout.Store(0)
		}
		flags := MirrorFlags{ReadOnly: readOnly, Prefer: c.String("prefer"), ResyncRate: rate, Force: c.Bool("force"), Reserve: c.Bool("reserve")}
		if longRunning(c) && c.Duration("readd-interval") > 0 {
			flags.Readd = true
			flags.ProbeInterval, flags.ProbeMaxInterval = c.Duration("readd-interval"), c.Duration("readd-max-interval")
		}
		dev, err = openMirrorLegs(c, legA, legB, flags)
	}
	if err != nil {
		return nil, err
	}
	var async *mirror.Async
	if u := c.String("mirror-async"); u != "" {
		if async, err = openAsyncLeg(c, dev, u); err != nil {
			dev.Close()
			return nil, err
		}
		watchAsync(redactedURL(url), async)
	}
	if d, ok := dev.(*mirror.Mirror); ok && inst != nil {
		watchMirror(redactedURL(url), d)
	}
	var ctr *ioCounters
	if inst != nil {
		ctr = inst.setDevice(dev, readOnly) // the primary: sessions, paths, legs
		inst.setAsync(async)
	}
	if async != nil {
		dev = async
	}
	return instrumentDevice(dev, redactedURL(url), ctr), nil
}

// openLeg opens one LUN through one URL, or through several as multipath.
func openLeg(c *cli.Context, urls []string, readOnly bool) (blockdev.Device, error) {
	if len(urls) == 1 {
		return openDevice(c, urls[0], readOnly)
	}
	nvme := 0
	for _, u := range urls {
		switch {
		case strings.HasPrefix(u, nvmeScheme):
			nvme++
		case !strings.HasPrefix(u, "iscsi://"):
			return nil, usageErrorf("multipath needs iscsi:// or nvme+tcp:// URLs, not %q", u)
		}
	}
	if nvme > 0 && nvme < len(urls) {
		return nil, usageErrorf("multipath over one protocol: %d of the %d URLs are nvme+tcp:// (a mirror may mix protocols: --mirror)", nvme, len(urls))
	}
	open := openMultipath
	if nvme > 0 {
		open = openNVMeMultipath
	}
	d, err := open(c, urls)
	if err != nil {
		return nil, err
	}
	logrusInfo("multipath: %s", describePaths(d))
	return d, nil
}

// legReplacementTimeout, when set (nanoseconds), overrides the replacement
// timeout of the sessions being opened (mirror legs, also when a leg is
// reopened for automatic re-add).
var legReplacementTimeout atomic.Int64

func legTimeout() time.Duration { return time.Duration(legReplacementTimeout.Load()) }

// openMirrorLegs assembles a mirror whose legs may each be multipath: leg A
// is the main URL plus --path URLs, leg B the --mirror URLs.
//
// Read-only users (pull, verify, bench without --write) do not assemble:
// they read an in-sync leg through mirror.OpenReadOnly, which writes no
// metadata and may run beside the mirror's owner (a running serve).
func openMirrorLegs(c *cli.Context, a, b []string, opts MirrorFlags) (blockdev.Device, error) {
	if opts.ReadOnly {
		da, db, err := openLegPaths(c, a, b, true, true)
		if err != nil {
			return nil, err
		}
		r, err := mirror.OpenReadOnly(c.Context, da, db, mirror.AssembleOptions{
			Options: mirror.Options{Logger: mirrorLogger()},
			Prefer:  opts.Prefer,
		})
		if err != nil {
			for _, d := range []blockdev.Device{da, db} {
				if d != nil {
					d.Close()
				}
			}
			return nil, err
		}
		return r, nil
	}
	m, err := assembleMirrorPaths(c, a, b, opts)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// checkDeviceFlags refuses bad values of the device flags as usage errors
// before anything connects.
func checkDeviceFlags(c *cli.Context) error {
	if err := (multipath.Options{Policy: c.String("policy")}).Validate(); err != nil {
		return usageErrorf("--policy: %s", strings.TrimPrefix(err.Error(), "multipath: "))
	}
	if err := (multipath.Options{Failback: c.String("failback")}).Validate(); err != nil {
		return usageErrorf("--failback: %s", strings.TrimPrefix(err.Error(), "multipath: "))
	}
	if _, err := parseNoPathTimeout(c.String("no-path-timeout")); err != nil {
		return usageErrorf("--no-path-timeout: %v", err)
	}
	if c.IsSet("check-interval") && c.Duration("check-interval") <= 0 {
		return usageErrorf("--check-interval %v: want a positive duration", c.Duration("check-interval"))
	}
	switch strings.ToUpper(c.String("prefer")) {
	case "", "A", "B":
	default:
		return usageErrorf("--prefer %q: want A (the main URL's leg) or B (the --mirror leg)", c.String("prefer"))
	}
	if s := c.String("resync-rate"); s != "" {
		if _, err := parseSize(s); err != nil {
			return usageErrorf("--resync-rate: %v", err)
		}
	}
	return checkAsyncFlags(c)
}
