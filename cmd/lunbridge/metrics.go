package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/multipath/mirror"
	"github.com/lunbridge/lunbridge/nbdbridge"
)

// Metrics (Prometheus, served by --metrics-listen on serve, attach and
// mount). Names are part of the documented interface (docs/cli.md,
// "Metrics").
//
// Device metrics carry the label "device" (the redacted URL or file path
// the command opened) and, per operation, "op" (read, write, flush, trim,
// write_zeroes, extents).
type metricSet struct {
	reg       *prometheus.Registry
	commands  *prometheus.CounterVec
	errors    *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	inflight  *prometheus.GaugeVec
	sizeBytes *prometheus.GaugeVec

	mu       sync.Mutex
	sessions map[string]*initiator.Session // device label → session (reconnects, recovering)
	nbd      map[string]*nbdbridge.Server  // export label → NBD server
	mirrors  map[string]*mirror.Mirror     // device label → mirror
	asyncs   map[string]*mirror.Async      // device label → async leg
}

func newMetricSet() *metricSet {
	m := &metricSet{
		reg: prometheus.NewRegistry(),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lunbridge_device_commands_total",
			Help: "Block device operations completed (failed ones included), by device and operation.",
		}, []string{"device", "op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lunbridge_device_errors_total",
			Help: "Block device operations that returned an error, by device and operation.",
		}, []string{"device", "op"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lunbridge_device_bytes_total",
			Help: "Payload bytes moved by successful operations (read, write; trim and write_zeroes count the range).",
		}, []string{"device", "op"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lunbridge_device_latency_seconds",
			Help:    "Block device operation latency, by device and operation.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18), // 50 µs .. ~6.5 s
		}, []string{"device", "op"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lunbridge_device_inflight",
			Help: "Block device operations in progress.",
		}, []string{"device"}),
		sizeBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lunbridge_device_size_bytes",
			Help: "Size of the device in bytes.",
		}, []string{"device"}),
		sessions: map[string]*initiator.Session{},
		nbd:      map[string]*nbdbridge.Server{},
		mirrors:  map[string]*mirror.Mirror{},
		asyncs:   map[string]*mirror.Async{},
	}
	m.reg.MustRegister(m.commands, m.errors, m.bytes, m.latency, m.inflight, m.sizeBytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		sessionCollector{m}, nbdCollector{m}, mirrorCollector{m}, asyncCollector{m})
	return m
}

// metrics is the process-wide set; nil until startMetrics runs with a
// listen address. instrumentDevice and the watch functions are no-ops then.
var (
	metricsMu sync.Mutex
	metrics   *metricSet
)

func currentMetrics() *metricSet {
	metricsMu.Lock()
	defer metricsMu.Unlock()
	return metrics
}

// metricsFlag is the global flag; its value is read by startMetrics.
func metricsFlag() cli.Flag {
	return &cli.StringFlag{
		Name:    "metrics-listen",
		Usage:   "serve Prometheus metrics on `ADDR` (e.g. 127.0.0.1:9420) at /metrics (serve, attach, mount); no authentication",
		EnvVars: []string{"LUNBRIDGE_METRICS_LISTEN"},
	}
}

// startMetrics starts the /metrics HTTP endpoint when --metrics-listen is
// set and returns its stop function (a no-op when the flag is empty). Call
// it from long-running commands before opening devices; stop it on exit.
// A listen address that is not loopback gets a warning: the endpoint has no
// authentication.
func startMetrics(c *cli.Context) (func(), error) {
	addr := c.String("metrics-listen")
	if addr == "" {
		return func() {}, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageErrorf("--metrics-listen %q: want HOST:PORT, e.g. 127.0.0.1:9420", addr)
	}
	if !isLoopbackHost(host) {
		logrus.Warnf("--metrics-listen %s is reachable from other machines and has no authentication; prefer 127.0.0.1:PORT", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageErrorf("--metrics-listen: %v", err)
	}
	m := newMetricSet()
	metricsMu.Lock()
	metrics = m
	metricsMu.Unlock()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "lunbridge: metrics at /metrics")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logrus.Warnf("metrics endpoint %s: %v", addr, err)
		}
	}()
	logrus.Infof("metrics on http://%s/metrics", ln.Addr())
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			<-done
			metricsMu.Lock()
			if metrics == m {
				metrics = nil
			}
			metricsMu.Unlock()
		})
	}, nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// instrumentDevice wraps dev with metrics under the label device (use the
// redacted URL) and, when ctr is not nil, counts its I/O in ctr (`lunbridge
// status NAME`). It returns dev unchanged when metrics are off and ctr is
// nil. When dev is an iSCSI LUN its session's reconnects are exported too.
func instrumentDevice(dev blockdev.Device, device string, ctr *ioCounters) blockdev.Device {
	m := currentMetrics()
	if m == nil && ctr == nil {
		return dev
	}
	if m != nil {
		if l, ok := dev.(*initiator.LUN); ok {
			m.watchSession(device, l.Session())
		}
		m.sizeBytes.WithLabelValues(device).Set(float64(dev.Size()))
	}
	return instrument(dev, m, device, ctr)
}

// ioCounters count a device's operations for the status of the instance
// (always on, unlike the metrics: a few atomic adds per I/O).
type ioCounters struct {
	reads, writes, readBytes, writeBytes atomic.Int64
	flushes, trims, zeroes, errors       atomic.Int64
}

func (c *ioCounters) count(op string, n int64, err error) {
	if err != nil {
		c.errors.Add(1)
	}
	switch op {
	case "read":
		c.reads.Add(1)
		if err == nil {
			c.readBytes.Add(n)
		}
	case "write":
		c.writes.Add(1)
		if err == nil {
			c.writeBytes.Add(n)
		}
	case "flush":
		c.flushes.Add(1)
	case "trim":
		c.trims.Add(1)
	case "write_zeroes":
		c.zeroes.Add(1)
	}
}

// watchSession exports a session's recovery counters under the label
// device. No-op when metrics are off.
func watchSession(device string, s *initiator.Session) {
	if m := currentMetrics(); m != nil {
		m.watchSession(device, s)
	}
}

// watchNBD exports an NBD server's counters (nbdbridge.Server.Stats) under
// the label export. No-op when metrics are off.
func watchNBD(export string, s *nbdbridge.Server) {
	if m := currentMetrics(); m != nil {
		m.mu.Lock()
		m.nbd[export] = s
		m.mu.Unlock()
	}
}

// watchMirror exports a mirror's state (mirrorCollector) under the label
// device. No-op when metrics are off.
func watchMirror(device string, mr *mirror.Mirror) {
	if m := currentMetrics(); m != nil {
		m.mu.Lock()
		m.mirrors[device] = mr
		m.mu.Unlock()
	}
}

func (m *metricSet) watchSession(device string, s *initiator.Session) {
	m.mu.Lock()
	m.sessions[device] = s
	m.mu.Unlock()
}

// ---- collectors reading library counters at scrape time ----

var (
	descReconnects = prometheus.NewDesc("lunbridge_session_reconnects_total",
		"Successful iSCSI session recoveries (re-logins after a lost connection).", []string{"device"}, nil)
	descConnRecoveries = prometheus.NewDesc("lunbridge_session_conn_recoveries_total",
		"Connections recovered inside the iSCSI session at ErrorRecoveryLevel 2 (same session, tasks reassigned).", []string{"device"}, nil)
	descRecovering = prometheus.NewDesc("lunbridge_session_recovering",
		"1 while the iSCSI session is recovering (I/O waits), else 0.", []string{"device"}, nil)
	descLastRecovery = prometheus.NewDesc("lunbridge_session_last_recovery_seconds",
		"Duration of the last session recovery (connection loss to resumed I/O).", []string{"device"}, nil)
	descNBDRequests = prometheus.NewDesc("lunbridge_nbd_requests_total",
		"NBD requests completed, by export and command.", []string{"export", "op"}, nil)
	descNBDErrors = prometheus.NewDesc("lunbridge_nbd_errors_total",
		"NBD requests answered with an error, by export and command.", []string{"export", "op"}, nil)
	descNBDBytes = prometheus.NewDesc("lunbridge_nbd_bytes_total",
		"NBD payload bytes (read and write), by export and command.", []string{"export", "op"}, nil)
	descNBDLatency = prometheus.NewDesc("lunbridge_nbd_latency_seconds_total",
		"Sum of NBD request latencies, by export and command (divide by requests for the mean).", []string{"export", "op"}, nil)
	descNBDConns = prometheus.NewDesc("lunbridge_nbd_connections_total",
		"NBD client connections accepted.", []string{"export"}, nil)
	descNBDActive = prometheus.NewDesc("lunbridge_nbd_active_connections",
		"NBD client connections open now.", []string{"export"}, nil)
	descNBDProto = prometheus.NewDesc("lunbridge_nbd_protocol_errors_total",
		"NBD client connections dropped for protocol violations.", []string{"export"}, nil)
)

type sessionCollector struct{ m *metricSet }

func (c sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReconnects
	ch <- descConnRecoveries
	ch <- descRecovering
	ch <- descLastRecovery
}

func (c sessionCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for dev, s := range c.m.sessions {
		r := s.Recovery()
		rec := 0.0
		if r.Recovering {
			rec = 1
		}
		ch <- prometheus.MustNewConstMetric(descReconnects, prometheus.CounterValue, float64(r.Reconnects), dev)
		ch <- prometheus.MustNewConstMetric(descConnRecoveries, prometheus.CounterValue, float64(r.ConnRecoveries), dev)
		ch <- prometheus.MustNewConstMetric(descRecovering, prometheus.GaugeValue, rec, dev)
		ch <- prometheus.MustNewConstMetric(descLastRecovery, prometheus.GaugeValue, r.LastDuration.Seconds(), dev)
	}
}

type nbdCollector struct{ m *metricSet }

func (c nbdCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNBDRequests, descNBDErrors, descNBDBytes, descNBDLatency, descNBDConns, descNBDActive, descNBDProto} {
		ch <- d
	}
}

func (c nbdCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for exp, s := range c.m.nbd {
		st := s.Stats()
		for _, o := range []struct {
			op string
			s  nbdbridge.OpStats
		}{{"read", st.Read}, {"write", st.Write}, {"flush", st.Flush}, {"trim", st.Trim}, {"write_zeroes", st.WriteZeroes},
			{"cache", st.Cache}, {"block_status", st.BlockStatus}, {"unknown", st.Unknown}} {
			ch <- prometheus.MustNewConstMetric(descNBDRequests, prometheus.CounterValue, float64(o.s.Requests), exp, o.op)
			ch <- prometheus.MustNewConstMetric(descNBDErrors, prometheus.CounterValue, float64(o.s.Errors), exp, o.op)
			ch <- prometheus.MustNewConstMetric(descNBDBytes, prometheus.CounterValue, float64(o.s.Bytes), exp, o.op)
			ch <- prometheus.MustNewConstMetric(descNBDLatency, prometheus.CounterValue, o.s.Latency.Seconds(), exp, o.op)
		}
		ch <- prometheus.MustNewConstMetric(descNBDConns, prometheus.CounterValue, float64(st.Connections), exp)
		ch <- prometheus.MustNewConstMetric(descNBDActive, prometheus.GaugeValue, float64(st.ActiveConnections), exp)
		ch <- prometheus.MustNewConstMetric(descNBDProto, prometheus.CounterValue, float64(st.ProtocolErrors), exp)
	}
}

var (
	descMirrorLegState = prometheus.NewDesc("lunbridge_mirror_leg_state",
		"1 for the state a mirror leg is in (in-sync, resyncing, stale, failed, missing, removed), 0 for the others.", []string{"device", "leg", "state"}, nil)
	descMirrorDegraded = prometheus.NewDesc("lunbridge_mirror_degraded",
		"1 while the mirror lacks an in-sync leg (failed, missing, removed or resyncing), else 0.", []string{"device"}, nil)
	descMirrorDirty = prometheus.NewDesc("lunbridge_mirror_dirty_chunks",
		"Chunks marked dirty in the mirror's write-intent bitmap.", []string{"device"}, nil)
	descMirrorChunk = prometheus.NewDesc("lunbridge_mirror_chunk_bytes",
		"The mirror's bitmap chunk size.", []string{"device"}, nil)
	descMirrorResyncDone = prometheus.NewDesc("lunbridge_mirror_resync_done_bytes",
		"Bytes of the current (or last) resync copied so far (chunks done times chunk size).", []string{"device"}, nil)
	descMirrorResyncTotal = prometheus.NewDesc("lunbridge_mirror_resync_total_bytes",
		"Bytes the current (or last) resync has to copy (chunks times chunk size).", []string{"device"}, nil)
	descMirrorResyncing = prometheus.NewDesc("lunbridge_mirror_resyncing",
		"1 while a resync runs, else 0.", []string{"device"}, nil)
	descMirrorResynced = prometheus.NewDesc("lunbridge_mirror_resynced_bytes_total",
		"Bytes copied by every resync since the mirror was assembled.", []string{"device"}, nil)
	descMirrorReadds = prometheus.NewDesc("lunbridge_mirror_leg_readds_total",
		"Times a leg was re-added (automatically or by mirror add) since assembly.", []string{"device", "leg"}, nil)
)

// mirrorLegStates are the values of lunbridge_mirror_leg_state's label.
var mirrorLegStates = []string{"in-sync", "resyncing", "stale", "failed", "missing", "removed", "split"}

type mirrorCollector struct{ m *metricSet }

func (c mirrorCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMirrorLegState, descMirrorDegraded, descMirrorDirty, descMirrorChunk,
		descMirrorResyncDone, descMirrorResyncTotal, descMirrorResyncing, descMirrorResynced, descMirrorReadds} {
		ch <- d
	}
}

func (c mirrorCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	b01 := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for dev, mr := range c.m.mirrors {
		st := mr.Status()
		degraded := false
		for _, l := range st.Legs {
			for _, s := range mirrorLegStates {
				ch <- prometheus.MustNewConstMetric(descMirrorLegState, prometheus.GaugeValue, b01(l.State == s), dev, l.Name, s)
			}
			ch <- prometheus.MustNewConstMetric(descMirrorReadds, prometheus.CounterValue, float64(l.ReAdds), dev, l.Name)
			degraded = degraded || l.State != "in-sync"
		}
		ch <- prometheus.MustNewConstMetric(descMirrorDegraded, prometheus.GaugeValue, b01(degraded), dev)
		ch <- prometheus.MustNewConstMetric(descMirrorDirty, prometheus.GaugeValue, float64(st.DirtyChunks), dev)
		ch <- prometheus.MustNewConstMetric(descMirrorChunk, prometheus.GaugeValue, float64(st.ChunkSize), dev)
		var done, total float64
		if r := st.Resync; r != nil {
			done, total = float64(r.DoneChunks*st.ChunkSize), float64(r.TotalChunks*st.ChunkSize)
		}
		ch <- prometheus.MustNewConstMetric(descMirrorResyncDone, prometheus.GaugeValue, done, dev)
		ch <- prometheus.MustNewConstMetric(descMirrorResyncTotal, prometheus.GaugeValue, total, dev)
		ch <- prometheus.MustNewConstMetric(descMirrorResyncing, prometheus.GaugeValue, b01(st.State == "resyncing"), dev)
		ch <- prometheus.MustNewConstMetric(descMirrorResynced, prometheus.CounterValue, float64(st.BytesResynced), dev)
	}
}

// ---- the device decorator ----

// instrumented records every operation of the device it wraps. It
// implements every optional blockdev interface; instrument exposes only
// the ones the wrapped device has.
type instrumented struct {
	dev  blockdev.Device
	m    *metricSet // nil: metrics off
	name string
	ctr  *ioCounters // nil: not counted
}

func (d *instrumented) observe(op string, n int64, start time.Time, err error) {
	if d.ctr != nil {
		d.ctr.count(op, n, err)
	}
	if d.m == nil {
		return
	}
	d.m.commands.WithLabelValues(d.name, op).Inc()
	d.m.latency.WithLabelValues(d.name, op).Observe(time.Since(start).Seconds())
	if err != nil {
		d.m.errors.WithLabelValues(d.name, op).Inc()
	} else if n > 0 {
		d.m.bytes.WithLabelValues(d.name, op).Add(float64(n))
	}
}

func (d *instrumented) begin() time.Time {
	if d.m == nil {
		return time.Time{}
	}
	d.m.inflight.WithLabelValues(d.name).Inc()
	return time.Now()
}

func (d *instrumented) end(op string, n int64, start time.Time, err error) {
	if d.m != nil {
		d.m.inflight.WithLabelValues(d.name).Dec()
	}
	d.observe(op, n, start, err)
}

func (d *instrumented) Size() int64    { return d.dev.Size() }
func (d *instrumented) BlockSize() int { return d.dev.BlockSize() }
func (d *instrumented) Close() error   { return d.dev.Close() }

func (d *instrumented) ReadAt(ctx context.Context, p []byte, off int64) error {
	t := d.begin()
	err := d.dev.ReadAt(ctx, p, off)
	d.end("read", int64(len(p)), t, err)
	return err
}

func (d *instrumented) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	t := d.begin()
	err := d.dev.WriteAt(ctx, p, off, fua)
	d.end("write", int64(len(p)), t, err)
	return err
}

func (d *instrumented) StartReadAt(p []byte, off int64, done func(error)) {
	t := d.begin()
	d.dev.(blockdev.AsyncIO).StartReadAt(p, off, func(err error) {
		d.end("read", int64(len(p)), t, err)
		done(err)
	})
}

func (d *instrumented) StartWriteAt(p []byte, off int64, fua bool, done func(error)) {
	t := d.begin()
	d.dev.(blockdev.AsyncIO).StartWriteAt(p, off, fua, func(err error) {
		d.end("write", int64(len(p)), t, err)
		done(err)
	})
}

func (d *instrumented) Flush(ctx context.Context) error {
	t := d.begin()
	err := d.dev.Flush(ctx)
	d.end("flush", 0, t, err)
	return err
}

func (d *instrumented) ReadOnly() bool { return d.dev.(blockdev.ReadOnlyer).ReadOnly() }

func (d *instrumented) Trim(ctx context.Context, off, n int64) error {
	t := d.begin()
	err := d.dev.(blockdev.Trimmer).Trim(ctx, off, n)
	d.end("trim", n, t, err)
	return err
}

func (d *instrumented) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	t := d.begin()
	err := d.dev.(blockdev.Zeroer).WriteZeroes(ctx, off, n, mayTrim)
	d.end("write_zeroes", n, t, err)
	return err
}

func (d *instrumented) Extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error) {
	t := d.begin()
	ex, err := d.dev.(blockdev.Extenter).Extents(ctx, off, n)
	d.end("extents", 0, t, err)
	return ex, err
}

func (d *instrumented) Identity() blockdev.Identity { return d.dev.(blockdev.Identifier).Identity() }

// Unwrap returns the wrapped device.
func (d *instrumented) Unwrap() blockdev.Device { return d.dev }

// instrument wraps dev so that the result implements exactly the optional
// interfaces (ReadOnlyer, Trimmer, Zeroer, Extenter, Identifier) dev
// implements: callers probe them with type assertions, and a wrapper that
// claimed Trim for a device without it would turn "not supported" into
// errors.
func instrument(dev blockdev.Device, m *metricSet, name string, ctr *ioCounters) blockdev.Device {
	w := &instrumented{dev: dev, m: m, name: name, ctr: ctr}
	var mask int
	if _, ok := dev.(blockdev.ReadOnlyer); ok {
		mask |= 1
	}
	if _, ok := dev.(blockdev.Trimmer); ok {
		mask |= 2
	}
	if _, ok := dev.(blockdev.Zeroer); ok {
		mask |= 4
	}
	if _, ok := dev.(blockdev.Extenter); ok {
		mask |= 8
	}
	if _, ok := dev.(blockdev.Identifier); ok {
		mask |= 16
	}
	type (
		A = blockdev.AsyncIO
		D = blockdev.Device
		R = blockdev.ReadOnlyer
		T = blockdev.Trimmer
		Z = blockdev.Zeroer
		E = blockdev.Extenter
		I = blockdev.Identifier
	)
	if _, ok := dev.(blockdev.AsyncIO); ok && mask == 31 {
		// A LUN: every capability, and the non-blocking path the NBD
		// server and bench use (other devices do not have it).
		return struct {
			D
			R
			T
			Z
			E
			I
			A
		}{w, w, w, w, w, w, w}
	}
	if _, ok := dev.(blockdev.AsyncIO); ok && mask == 6 {
		// A mirror: Trim, WriteZeroes and the non-blocking path.
		return struct {
			D
			T
			Z
			A
		}{w, w, w, w}
	}
	switch mask {
	case 0:
		return struct{ D }{w}
	case 1:
		return struct {
			D
			R
		}{w, w}
	case 2:
		return struct {
			D
			T
		}{w, w}
	case 3:
		return struct {
			D
			R
			T
		}{w, w, w}
	case 4:
		return struct {
			D
			Z
		}{w, w}
	case 5:
		return struct {
			D
			R
			Z
		}{w, w, w}
	case 6:
		return struct {
			D
			T
			Z
		}{w, w, w}
	case 7:
		return struct {
			D
			R
			T
			Z
		}{w, w, w, w}
	case 8:
		return struct {
			D
			E
		}{w, w}
	case 9:
		return struct {
			D
			R
			E
		}{w, w, w}
	case 10:
		return struct {
			D
			T
			E
		}{w, w, w}
	case 11:
		return struct {
			D
			R
			T
			E
		}{w, w, w, w}
	case 12:
		return struct {
			D
			Z
			E
		}{w, w, w}
	case 13:
		return struct {
			D
			R
			Z
			E
		}{w, w, w, w}
	case 14:
		return struct {
			D
			T
			Z
			E
		}{w, w, w, w}
	case 15:
		return struct {
			D
			R
			T
			Z
			E
		}{w, w, w, w, w}
	case 16:
		return struct {
			D
			I
		}{w, w}
	case 17:
		return struct {
			D
			R
			I
		}{w, w, w}
	case 18:
		return struct {
			D
			T
			I
		}{w, w, w}
	case 19:
		return struct {
			D
			R
			T
			I
		}{w, w, w, w}
	case 20:
		return struct {
			D
			Z
			I
		}{w, w, w}
	case 21:
		return struct {
			D
			R
			Z
			I
		}{w, w, w, w}
	case 22:
		return struct {
			D
			T
			Z
			I
		}{w, w, w, w}
	case 23:
		return struct {
			D
			R
			T
			Z
			I
		}{w, w, w, w, w}
	case 24:
		return struct {
			D
			E
			I
		}{w, w, w}
	case 25:
		return struct {
			D
			R
			E
			I
		}{w, w, w, w}
	case 26:
		return struct {
			D
			T
			E
			I
		}{w, w, w, w}
	case 27:
		return struct {
			D
			R
			T
			E
			I
		}{w, w, w, w, w}
	case 28:
		return struct {
			D
			Z
			E
			I
		}{w, w, w, w}
	case 29:
		return struct {
			D
			R
			Z
			E
			I
		}{w, w, w, w, w}
	case 30:
		return struct {
			D
			T
			Z
			E
			I
		}{w, w, w, w, w}
	default:
		return struct {
			D
			R
			T
			Z
			E
			I
		}{w, w, w, w, w, w}
	}
}
