package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/bits"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
)

func init() {
	register(catTest, &cli.Command{
		Name:      "bench",
		Usage:     "measure IOPS, throughput and latency of a LUN (like iscsi-perf)",
		UsageText: "lunbridge bench [--rw randread|read|randwrite|write] [--bs 4k] [--qd 32] [--time 10s] [--json] URL",
		Description: `Runs a timed workload with --qd commands in flight and prints IOPS, MB/s and
latency percentiles. Write workloads overwrite the LUN's data and need --yes.

Examples:
   lunbridge bench --rw randread --bs 4k --qd 32 --time 10s iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1
   lunbridge bench --rw read --bs 1M --qd 8 --json iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1
   lunbridge bench --rw randwrite --yes --bs 4k --qd 32 iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "rw", Value: "randread", Usage: "randread|read|randwrite|write"},
			&cli.StringFlag{Name: "bs", Value: "4k", Usage: "I/O size (a multiple of the LUN's block size)"},
			&cli.IntFlag{Name: "qd", Value: 32, Usage: "commands in flight"},
			&cli.DurationFlag{Name: "time", Value: 10 * time.Second, Usage: "how long to run"},
			&cli.StringFlag{Name: "span", Usage: "limit I/O to the first SIZE bytes of the LUN (default: all)"},
			&cli.BoolFlag{Name: "yes", Usage: "allow write workloads (they destroy the LUN's data)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		}, deviceFlags()...),
		Action: benchAction,
	})
}

// benchResult is the JSON schema of `lunbridge bench --json`.
type benchResult struct {
	RW        string  `json:"rw"`
	BlockSize int64   `json:"bs"`
	QD        int     `json:"qd"`
	Seconds   float64 `json:"seconds"`
	IOs       int64   `json:"ios"`
	Errors    int64   `json:"errors"`
	IOPS      float64 `json:"iops"`
	MBps      float64 `json:"mb_per_s"`
	LatP50us  float64 `json:"lat_p50_us"`
	LatP90us  float64 `json:"lat_p90_us"`
	LatP99us  float64 `json:"lat_p99_us"`
	LatP999us float64 `json:"lat_p999_us"`
	LatMaxUs  float64 `json:"lat_max_us"`
}

func benchAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("bench takes one URL (see lunbridge bench --help)")
	}
	rw := c.String("rw")
	write := rw == "randwrite" || rw == "write"
	random := rw == "randread" || rw == "randwrite"
	if !write && rw != "randread" && rw != "read" {
		return usageErrorf("--rw must be randread, read, randwrite or write")
	}
	if write && !c.Bool("yes") {
		return usageErrorf("--rw %s overwrites the LUN's data; add --yes to confirm", rw)
	}
	bs, err := parseSize(c.String("bs"))
	if err != nil || bs <= 0 || bs > 64<<20 {
		return usageErrorf("--bs: %q is not a size from 1 byte to 64M", c.String("bs"))
	}
	qd := c.Int("qd")
	if qd < 1 || qd > 1024 {
		return usageErrorf("--qd must be from 1 to 1024")
	}
	dev, err := openMain(c, c.Args().First(), !write)
	if err != nil {
		return err
	}
	defer dev.Close()
	if bs%int64(dev.BlockSize()) != 0 {
		return usageErrorf("--bs %d is not a multiple of the LUN's block size %d", bs, dev.BlockSize())
	}
	span := dev.Size()
	if s := c.String("span"); s != "" {
		if span, err = parseSize(s); err != nil || span <= 0 {
			return usageErrorf("--span: %v", err)
		}
		span = min(span, dev.Size())
	}
	slots := span / bs
	if slots == 0 {
		return usageErrorf("the LUN (%d bytes) is smaller than one I/O of %d bytes", span, bs)
	}
	res := runBench(c.Context, dev, rw, write, random, bs, qd, slots, c.Duration("time"))
	if res.Errors > 0 && res.IOs == 0 {
		return fmt.Errorf("bench: every I/O failed: %w", benchErr.Load().(error))
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, res)
	}
	fmt.Printf("%s bs=%s qd=%d: %.0f IOPS, %.1f MB/s, latency p50 %.0fus p90 %.0fus p99 %.0fus p99.9 %.0fus max %.0fus (%d I/Os, %d errors, %.1fs)\n",
		rw, formatBytes(bs), qd, res.IOPS, res.MBps, res.LatP50us, res.LatP90us, res.LatP99us, res.LatP999us, res.LatMaxUs, res.IOs, res.Errors, res.Seconds)
	if res.Errors > 0 {
		return fmt.Errorf("bench: %d I/Os failed, first: %v", res.Errors, benchErr.Load())
	}
	return nil
}

var benchErr atomic.Value

func runBench(ctx context.Context, dev blockdev.Device, rw string, write, random bool, bs int64, qd int, slots int64, d time.Duration) benchResult {
	// Stop issuing at the deadline but let the I/O in flight finish: a
	// cancelled context would abort every one of them on the target.
	deadline := time.Now().Add(d)
	var next atomic.Int64 // sequential position, in slots
	var ios, errs atomic.Int64
	hists := make([]latHist, qd)
	start := time.Now()
	// The workers share one buffer: its content is thrown away (reads) or
	// arbitrary (writes), so RSS measures the initiator, not qd private
	// copies of the I/O size. One buffer also keeps the destination of the
	// socket copy cache-resident, as iscsi-perf's (libiscsi reads data it
	// was given no buffer for into one recycled allocation): with four
	// 1 MiB buffers, more than this host's 2 MiB L2, the kernel's copy to
	// user memory cost twice as much per byte (perf: _copy_to_iter).
	bufs := make([][]byte, 1)
	for i := range bufs {
		bufs[i] = make([]byte, bs)
		if write {
			rand.Read(bufs[i])
		}
	}
	if a, ok := dev.(blockdev.AsyncIO); ok {
		runBenchAsync(ctx, a, bufs[0], write, random, bs, slots, deadline, hists, &next, &ios, &errs)
	} else {
		runBenchSync(ctx, dev, bufs[0], write, random, bs, slots, deadline, hists, &next, &ios, &errs)
	}
	el := time.Since(start).Seconds()
	var all latHist
	for i := range hists {
		all.merge(&hists[i])
	}
	n := ios.Load()
	return benchResult{
		RW: rw, BlockSize: bs, QD: qd, Seconds: el, IOs: n, Errors: errs.Load(),
		IOPS: float64(n) / el, MBps: float64(n) * float64(bs) / el / 1e6,
		LatP50us: all.quantile(0.5), LatP90us: all.quantile(0.9), LatP99us: all.quantile(0.99),
		LatP999us: all.quantile(0.999), LatMaxUs: float64(all.max) / 1e3,
	}
}

// runBenchAsync keeps len(hists) I/Os in flight through the device's
// non-blocking path, as iscsi-perf does with libiscsi's callbacks: each
// completion records its latency and starts the next I/O of its slot, on
// the goroutine that completed it. No goroutine waits per I/O.
func runBenchAsync(ctx context.Context, dev blockdev.AsyncIO, buf []byte, write, random bool, bs, slots int64, deadline time.Time,
	hists []latHist, next, ios, errs *atomic.Int64) {
	var wg sync.WaitGroup
	for w := range hists {
		wg.Add(1)
		h := &hists[w]
		rng := mrand.New(mrand.NewPCG(uint64(w)+1, uint64(w+1)*7+1))
		var issue func(now time.Time)
		var t0 time.Time
		done := func(err error) {
			// One clock read per I/O: its latency, the deadline, and the
			// next I/O's start.
			now := time.Now()
			if err != nil {
				errs.Add(1)
				benchErr.CompareAndSwap(nil, err)
			} else {
				h.add(now.Sub(t0))
				ios.Add(1)
			}
			if now.After(deadline) || ctx.Err() != nil {
				wg.Done()
				return
			}
			if err != nil {
				go issue(time.Now()) // no recursion through an error reported at once
				return
			}
			issue(now)
		}
		issue = func(now time.Time) {
			var slot int64
			if random {
				slot = rng.Int64N(slots)
			} else {
				slot = (next.Add(1) - 1) % slots
			}
			t0 = now
			if write {
				dev.StartWriteAt(buf, slot*bs, false, done)
			} else {
				dev.StartReadAt(buf, slot*bs, done)
			}
		}
		issue(time.Now())
	}
	wg.Wait()
}

func runBenchSync(ctx context.Context, dev blockdev.Device, buf []byte, write, random bool, bs, slots int64, deadline time.Time,
	hists []latHist, next, ios, errs *atomic.Int64) {
	var wg sync.WaitGroup
	for w := range hists {
		wg.Add(1)
		go func(h *latHist, seed uint64) {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(seed, seed*7+1))
			for ctx.Err() == nil && time.Now().Before(deadline) {
				var slot int64
				if random {
					slot = rng.Int64N(slots)
				} else {
					slot = (next.Add(1) - 1) % slots
				}
				t0 := time.Now()
				var err error
				if write {
					err = dev.WriteAt(ctx, buf, slot*bs, false)
				} else {
					err = dev.ReadAt(ctx, buf, slot*bs)
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					errs.Add(1)
					benchErr.CompareAndSwap(nil, err)
					continue
				}
				h.add(time.Since(t0))
				ios.Add(1)
			}
		}(&hists[w], uint64(w)+1)
	}
	wg.Wait()
}

// latHist is a log-linear latency histogram in nanoseconds: 16 linear
// sub-buckets per power of two (about 6% resolution).
type latHist struct {
	b   [64 * 16]int64
	n   int64
	max int64
}

func bucketOf(ns int64) int {
	if ns < 16 {
		return int(ns)
	}
	e := bits.Len64(uint64(ns)) - 5 // ns >> e is in [16, 32)
	return (e+1)*16 + int(ns>>e) - 16
}

func bucketValue(i int) float64 {
	if i < 16 {
		return float64(i)
	}
	e := i/16 - 1
	return float64(int64(16+i%16)<<e) * 1.03
}

func (h *latHist) add(d time.Duration) {
	ns := int64(d)
	h.b[bucketOf(ns)]++
	h.n++
	h.max = max(h.max, ns)
}

func (h *latHist) merge(o *latHist) {
	for i := range h.b {
		h.b[i] += o.b[i]
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile in microseconds.
func (h *latHist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	want := int64(q * float64(h.n))
	var seen int64
	for i, c := range h.b {
		seen += c
		if seen > want {
			return bucketValue(i) / 1e3
		}
	}
	return float64(h.max) / 1e3
}
