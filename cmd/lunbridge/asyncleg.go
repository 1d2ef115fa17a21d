package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// The asynchronous disaster-recovery leg of serve, attach and mount
// (--mirror-async; mirror.Async in the library).

func asyncFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "mirror-async", Usage: "replicate asynchronously to the LUN at `URL` (a disaster-recovery copy, e.g. at a remote site): writes are acknowledged once the main LUN (and a --mirror leg) has them, and sent to URL in order from a bounded journal, so URL always holds a crash-consistent image of a past instant. A flush does not wait for URL; it is replayed there in order. Example: lunbridge serve --mirror-async iscsi://dr-site/iqn.b/0 --max-lag 5s,64MiB iscsi://san1/iqn.a/0 (the first time add --mirror-async-init). With --mirror too, the three legs are main + --mirror (synchronous) + URL"},
		&cli.BoolFlag{Name: "mirror-async-init", Usage: "with --mirror-async: make URL the async leg of this device, copying everything to it (its content and its last megabytes are overwritten); needed the first time, or to take over another primary's async leg"},
		&cli.StringFlag{Name: "max-lag", Value: "5s,64MiB", Usage: "with --mirror-async: the recovery point bound `DURATION,SIZE`: the oldest write the async leg lacks is at most DURATION old and the journal holds at most SIZE bytes (e.g. 2s,32MiB)"},
		&cli.StringFlag{Name: "on-lag", Value: mirror.OnLagThrottle, Usage: "with --mirror-async: what happens at the --max-lag bound, `POLICY` throttle (new writes wait: the bound holds, the application slows to the link's rate) or pull-ahead (writes never wait: the async leg is marked inconsistent and resynced from a bitmap, consistent again when it has caught up)"},
	}
}

// parseMaxLag parses --max-lag: "DURATION,SIZE", "DURATION" or ",SIZE".
func parseMaxLag(s string) (time.Duration, int64, error) {
	ds, ss, _ := strings.Cut(s, ",")
	var d time.Duration
	var n int64
	var err error
	if ds = strings.TrimSpace(ds); ds != "" {
		if d, err = time.ParseDuration(ds); err != nil {
			return 0, 0, err
		}
		if d <= 0 {
			return 0, 0, usageErrorf("duration %v: want a positive duration", d)
		}
	}
	if ss = strings.TrimSpace(ss); ss != "" {
		if n, err = parseSize(ss); err != nil {
			return 0, 0, err
		}
		if n < 1<<20 {
			return 0, 0, usageErrorf("size %s: want at least 1MiB", ss)
		}
	}
	if d == 0 && n == 0 {
		return 0, 0, usageErrorf("%q: want DURATION,SIZE, e.g. 5s,64MiB", s)
	}
	return d, n, nil
}

// checkAsyncFlags refuses bad --mirror-async values before any login.
func checkAsyncFlags(c *cli.Context) error {
	if _, _, err := parseMaxLag(c.String("max-lag")); err != nil {
		return usageErrorf("--max-lag %s: %v", c.String("max-lag"), err)
	}
	switch c.String("on-lag") {
	case mirror.OnLagThrottle, mirror.OnLagPullAhead:
	default:
		return usageErrorf("--on-lag %q: want throttle or pull-ahead", c.String("on-lag"))
	}
	if c.String("mirror-async") == "" {
		for _, f := range []string{"mirror-async-init", "max-lag", "on-lag"} {
			if c.IsSet(f) {
				return usageErrorf("--%s needs --mirror-async URL", f)
			}
		}
	}
	return nil
}

// openAsyncLeg opens the remote at url and attaches it as primary's
// asynchronous leg. A failed remote is reopened through url in the
// background.
func openAsyncLeg(c *cli.Context, primary blockdev.Device, url string) (*mirror.Async, error) {
	lag, size, _ := parseMaxLag(c.String("max-lag"))
	var rate int64
	if s := c.String("resync-rate"); s != "" {
		rate, _ = parseSize(s)
	}
	// The remote fails fast, like a mirror leg: a lost link drops it to
	// bitmap mode instead of stalling the journal for 120 s.
	if !c.IsSet("replacement-timeout") {
		legReplacementTimeout.Store(int64(5 * time.Second))
		defer legReplacementTimeout.Store(0)
	}
	lt := legTimeout()
	remote, err := openLeg(c, []string{url}, false)
	if err != nil {
		return nil, err
	}
	o := mirror.AsyncOptions{MaxLag: lag, MaxLagBytes: size, OnLag: c.String("on-lag"), ResyncRate: rate,
		Init: c.Bool("mirror-async-init"), Logger: mirrorLogger().WithField("leg", "async")}
	if c.Duration("readd-interval") > 0 {
		o.ProbeInterval, o.ProbeMaxInterval = c.Duration("readd-interval"), c.Duration("readd-max-interval")
		o.Reopen = func(ctx context.Context) (blockdev.Device, error) {
			cc := *c
			cc.Context = ctx
			reopenMu.Lock()
			defer reopenMu.Unlock()
			if lt > 0 {
				legReplacementTimeout.Store(int64(lt))
				defer legReplacementTimeout.Store(0)
			}
			return openLeg(&cc, []string{url}, false)
		}
	}
	a, err := mirror.OpenAsync(c.Context, primary, remote, o)
	if err != nil {
		remote.Close()
		return nil, err
	}
	st := a.Status()
	logrusInfo("mirror: asynchronous leg %s: %s, max lag %v and %s, on lag %s", redactedURL(url), st.Mode, lag, formatBytes(st.MaxBytes), st.OnLag)
	return a, nil
}

// watchAsync exports an async leg's lag (asyncCollector). No-op when
// metrics are off.
func watchAsync(device string, a *mirror.Async) {
	if m := currentMetrics(); m != nil {
		m.mu.Lock()
		m.asyncs[device] = a
		m.mu.Unlock()
	}
}

var (
	descAsyncLagSeconds = prometheus.NewDesc("lunbridge_mirror_async_lag_seconds",
		"Age of the oldest acknowledged write the asynchronous leg lacks (journal mode), or time since it stopped being a current consistent image (pull-ahead, resync, failed).", []string{"device"}, nil)
	descAsyncLagBytes = prometheus.NewDesc("lunbridge_mirror_async_lag_bytes",
		"Bytes the asynchronous leg lacks: journal bytes, or marked chunks times the chunk size.", []string{"device"}, nil)
	descAsyncJournal = prometheus.NewDesc("lunbridge_mirror_async_journal_entries",
		"Entries in the asynchronous leg's journal.", []string{"device"}, nil)
	descAsyncConsistent = prometheus.NewDesc("lunbridge_mirror_async_consistent",
		"1 while the asynchronous leg holds a crash-consistent image (a prefix of the acknowledged writes), else 0.", []string{"device"}, nil)
	descAsyncMode = prometheus.NewDesc("lunbridge_mirror_async_mode",
		"1 for the mode the asynchronous leg is in (journal, pull-ahead, resync, failed), 0 for the others.", []string{"device", "mode"}, nil)
	descAsyncThrottled = prometheus.NewDesc("lunbridge_mirror_async_throttled_seconds_total",
		"Time writes waited for the asynchronous leg's lag bound (--on-lag throttle).", []string{"device"}, nil)
)

var asyncModes = []string{mirror.AsyncJournal, mirror.AsyncPullAhead, mirror.AsyncResync, mirror.AsyncFailed}

type asyncCollector struct{ m *metricSet }

func (c asyncCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAsyncLagSeconds, descAsyncLagBytes, descAsyncJournal, descAsyncConsistent, descAsyncMode, descAsyncThrottled} {
		ch <- d
	}
}

func (c asyncCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for dev, a := range c.m.asyncs {
		st := a.Status()
		g := func(d *prometheus.Desc, v float64, l ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{dev}, l...)...)
		}
		g(descAsyncLagSeconds, st.LagSeconds)
		g(descAsyncLagBytes, float64(st.LagBytes))
		g(descAsyncJournal, float64(st.JournalEntries))
		g(descAsyncConsistent, map[bool]float64{true: 1}[st.Consistent])
		for _, m := range asyncModes {
			g(descAsyncMode, map[bool]float64{true: 1}[st.Mode == m], m)
		}
		ch <- prometheus.MustNewConstMetric(descAsyncThrottled, prometheus.CounterValue, float64(st.ThrottledNs)/1e9, dev)
	}
}

// printAsync prints the async leg's line of `lunbridge mirror status`.
func printAsync(w io.Writer, s *mirror.AsyncStatus) error {
	cons := "consistent"
	if !s.Consistent {
		cons = "INCONSISTENT (not usable as a disaster-recovery image until it has caught up)"
	}
	asOf := "-"
	if !s.AsOf.IsZero() {
		asOf = s.AsOf.UTC().Format(time.RFC3339Nano)
	}
	_, err := fmt.Fprintf(w, "async leg %s mode=%s %s lag=%.3fs/%s journal=%d entries dirty=%d chunks max-lag=%gs,%s on-lag=%s link=%.1f MB/s as-of=%s epoch=%d seq=%d re-adds=%d%s\n",
		s.UUID, s.Mode, cons, s.LagSeconds, formatBytes(s.LagBytes), s.JournalEntries, s.DirtyChunks,
		s.MaxLag, formatBytes(s.MaxBytes), s.OnLag, s.RateBytes/1e6, asOf, s.Epoch, s.Sequence, s.ReAdds,
		map[bool]string{true: " last error: " + s.Error}[s.Error != ""])
	return err
}

// asyncStatusOffline is `lunbridge mirror status --async URL`: what the
// async leg's own metadata says, read without writing.
func asyncStatusOffline(c *cli.Context, url string) error {
	if c.NArg() != 0 {
		return usageErrorf("mirror status --async URL takes no other URL")
	}
	d, err := openDevice(c, url, true)
	if err != nil {
		return err
	}
	defer d.Close()
	info, err := mirror.InspectAsync(c.Context, d)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, info)
	}
	state := "CONSISTENT: a crash-consistent image of the primary"
	if !info.Consistent {
		state = "INCONSISTENT: a resync was copying chunks to it; not usable as a disaster-recovery image"
	}
	fmt.Printf("    Async leg : %s\n", info.Leg)
	fmt.Printf("        State : %s\n", state)
	if info.Consistent && info.AsOf > 0 {
		fmt.Printf("        As of : %s (write %d of epoch %d; later writes may be on it too)\n", time.Unix(0, info.AsOf).UTC().Format(time.RFC3339Nano), info.Sequence, info.Epoch)
	}
	fmt.Printf("         Size : %s (%d bytes of data from offset 0)\n", formatBytes(info.Exported), info.Exported)
	fmt.Printf(" Last updated : %s\n", time.Unix(0, info.Updated).UTC().Format(time.RFC3339))
	fmt.Printf("Closed clean  : %v (%d chunks to copy at the next start)\n", info.Clean, info.Dirty)
	if info.Primary != "" {
		fmt.Printf("      Primary : %s\n", info.Primary)
	}
	return nil
}
