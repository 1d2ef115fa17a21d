package blockcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// The mirror rows of scripts/bench/mirror.sh that need an emulated WAN
// link or a leg outage (issue 20, "Numbers to reach"). They run only with
// LUNBRIDGE_BENCH_OUT=FILE, which receives one row per line:
// name TAB unit TAB value TAB peer TAB peer value TAB note.

func benchOut(t *testing.T) *os.File {
	path := os.Getenv("LUNBRIDGE_BENCH_OUT")
	if path == "" {
		t.Skip("a bench: set LUNBRIDGE_BENCH_OUT=FILE (scripts/bench/mirror.sh does)")
	}
	requireRealTargets(t)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func benchRow(t *testing.T, f *os.File, name, unit string, v float64, peer string, pv float64, note string) {
	pvs := "-"
	if peer != "-" {
		pvs = fmt.Sprintf("%.3f", pv)
	}
	fmt.Fprintf(f, "%s\t%s\t%.3f\t%s\t%s\t%s\n", name, unit, v, peer, pvs, note)
	t.Logf("%s: %.3f %s (%s %s) %s", name, v, unit, peer, pvs, note)
}

func envInt(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil && v > 0 {
		return v
	}
	return def
}

// controlDoc reads serve's status document.
func controlDoc(path string, v any) error {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("status\n")); err != nil {
		return err
	}
	raw, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

// nbdLoad runs clients writing bs-byte blocks at random bs-aligned
// offsets of [0, span) until stop; it returns the bytes acknowledged
// (live: read it while running).
func nbdLoad(t *testing.T, sock string, clients int, bs int, span int64, stop <-chan struct{}, wg *sync.WaitGroup) *atomic.Int64 {
	var n atomic.Int64
	for i := 0; i < clients; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := DialNBD(ctx, "unix", sock, "")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			buf := make([]byte, bs)
			for {
				select {
				case <-stop:
					return
				default:
				}
				buf[0], buf[bs-1] = byte(rng.Uint32()), byte(rng.Uint32())
				off := rng.Int64N(span/int64(bs)) * int64(bs)
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				err := c.WriteAt(ctx, buf, off, false)
				cancel()
				if err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				n.Add(int64(bs))
			}
		}()
	}
	return &n
}

// TestBenchMirrorAsyncRPO: serve --mirror-async (main on tgtd, async leg
// on istgt behind a 20 ms RTT, 20 MB/s link; BENCH_ASYNC_RTT_MS and
// BENCH_ASYNC_MBPS change them) under eight clients of 64 KiB random writes
// for 15 s, --max-lag 2s,64MiB, throttle: the lag distribution and the
// write rate the throttle allowed.
func TestBenchMirrorAsyncRPO(t *testing.T) {
	out := benchOut(t)
	rtt := time.Duration(envInt("BENCH_ASYNC_RTT_MS", 20)) * time.Millisecond
	link := envInt("BENCH_ASYNC_MBPS", 20) * 1e6
	const lun, span = 128 << 20, 96 << 20
	const maxLag = 2 * time.Second
	srvA := targets.StartWith(t, targets.KindTgtd, targets.Options{}, targets.Target{LUNs: []targets.LUN{{Size: lun, BlockSize: BlockSize}}})
	srvB := targets.StartWith(t, targets.KindIstgt, targets.Options{}, targets.Target{LUNs: []targets.LUN{{Size: lun, BlockSize: BlockSize}}})
	px := newProxy(t, srvB.Portal)
	px.SetLink(faultproxy.WAN(rtt, link))
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "control.sock")
	p := startProc(t, lunbridge(t), "serve", "--listen", "unix:"+sock, "--persistent", "--shared", "0",
		"--control-socket", ctl, "--mirror-async", iscsiURL(srvB, px.Addr()), "--mirror-async-init",
		"--max-lag", "2s,64MiB", srvA.URL(0, 0))
	defer p.stop()
	if l, err := p.line(60 * time.Second); err != nil || !strings.HasPrefix(l, "nbd+unix://") {
		t.Fatalf("serve: %q %v", l, err)
	}
	var doc struct {
		Async *mirror.AsyncStatus `json:"async"`
	}
	for end := time.Now().Add(120 * time.Second); ; {
		if err := controlDoc(ctl, &doc); err == nil && doc.Async != nil && doc.Async.Mode == mirror.AsyncJournal {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("async leg not in journal mode after the initial copy: %+v\n%s", doc.Async, p.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	n := nbdLoad(t, sock, 8, 64<<10, span, stop, &wg)
	var lags []float64
	for time.Since(start) < 15*time.Second {
		if err := controlDoc(ctl, &doc); err == nil && doc.Async != nil {
			lags = append(lags, doc.Async.LagSeconds)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	el := time.Since(start)
	sort.Float64s(lags)
	if len(lags) == 0 {
		t.Fatal("no lag sample")
	}
	q := func(f float64) float64 { return lags[int(f*float64(len(lags)-1))] }
	note := fmt.Sprintf("%v RTT, %d MB/s link (faultproxy), --max-lag 2s,64MiB throttle, 8 clients x 64 KiB random writes, %d samples; host shared with other work", rtt, link/1e6, len(lags))
	benchRow(t, out, "async RPO lag p50", "s", q(0.5), "bound", maxLag.Seconds(), note)
	benchRow(t, out, "async RPO lag p99", "s", q(0.99), "bound", maxLag.Seconds(), note)
	benchRow(t, out, "async RPO lag max", "s", lags[len(lags)-1], "bound", maxLag.Seconds(), note)
	benchRow(t, out, "async: write rate the throttle allowed", "MB/s", float64(n.Load())/el.Seconds()/1e6, "link", float64(link)/1e6, note)
	if doc.Async != nil {
		benchRow(t, out, "async: link rate measured by the replay", "MB/s", doc.Async.RateBytes/1e6, "link", float64(link)/1e6, note)
	}
}

// TestBenchMirrorReadd: serve --mirror (leg A tgtd, leg B istgt behind a
// proxy) under four clients of 4 KiB random writes; leg B's link is cut
// for 10 s (connections reset, new ones refused), then healed. Reported:
// the time from the heal to both legs in sync, and the bytes the
// incremental resync copied against the bytes written during the outage.
func TestBenchMirrorReadd(t *testing.T) {
	out := benchOut(t)
	const lun, span = 256 << 20, 192 << 20
	srvA := targets.StartWith(t, targets.KindTgtd, targets.Options{}, targets.Target{LUNs: []targets.LUN{{Size: lun, BlockSize: BlockSize}}})
	srvB := targets.StartWith(t, targets.KindIstgt, targets.Options{}, targets.Target{LUNs: []targets.LUN{{Size: lun, BlockSize: BlockSize}}})
	px := newProxy(t, srvB.Portal)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := lunOpener(nil, srvA.Targets[0].Name, srvA.Portal, uint64(srvA.LUNNumber(0)))(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := lunOpener(nil, srvB.Targets[0].Name, srvB.Portal, uint64(srvB.LUNNumber(0)))(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mirror.Create(ctx, a.(*initiator.LUN), b.(*initiator.LUN), mirror.CreateOptions{AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	chunk := m.ChunkSize()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "control.sock")
	p := startProc(t, lunbridge(t), "serve", "--listen", "unix:"+sock, "--persistent", "--shared", "0",
		"--control-socket", ctl, "--readd-interval", "500ms", "--readd-max-interval", "1s",
		"--mirror", iscsiURL(srvB, px.Addr()), srvA.URL(0, 0))
	defer p.stop()
	if l, err := p.line(60 * time.Second); err != nil || !strings.HasPrefix(l, "nbd+unix://") {
		t.Fatalf("serve: %q %v", l, err)
	}
	var doc struct {
		Mirror *mirror.Status `json:"mirror"`
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	n := nbdLoad(t, sock, 4, 4096, span, stop, &wg)
	defer func() {
		close(stop)
		wg.Wait()
	}()
	time.Sleep(2 * time.Second)
	if err := controlDoc(ctl, &doc); err != nil || doc.Mirror == nil {
		t.Fatalf("status: %v", err)
	}
	resynced0 := doc.Mirror.BytesResynced
	px.RefuseNew(true)
	px.ResetAll()
	w0 := n.Load()
	time.Sleep(10 * time.Second)
	written := n.Load() - w0
	px.RefuseNew(false)
	healed := time.Now()
	var back time.Duration
	for {
		if err := controlDoc(ctl, &doc); err == nil && doc.Mirror != nil &&
			doc.Mirror.Legs[0].State == "in-sync" && doc.Mirror.Legs[1].State == "in-sync" && doc.Mirror.State != "resyncing" {
			back = time.Since(healed)
			break
		}
		if time.Since(healed) > 120*time.Second {
			t.Fatalf("leg B not back in sync 120 s after the heal: %+v", doc.Mirror)
		}
		time.Sleep(100 * time.Millisecond)
	}
	copied := doc.Mirror.BytesResynced - resynced0
	note := fmt.Sprintf("4 clients x 4 KiB random writes over %d MiB, %d MiB chunks, --readd-interval 500ms; leg B on istgt; host shared with other work", span>>20, chunk>>20)
	benchRow(t, out, "re-add after a 10 s outage: heal to in-sync", "s", back.Seconds(), "-", 0, note)
	benchRow(t, out, "re-add after a 10 s outage: bytes copied", "MB", float64(copied)/1e6, "written in outage", float64(written)/1e6, note+fmt.Sprintf("; full copy would be %d MB", lun/1000000))
	// The bar: in sync within 5 s plus the time to copy the
	// dirty chunks at the resync's own rate.
	if r := doc.Mirror.Resync; r != nil && r.MBPerSec > 0 {
		bar := 5 + float64(copied)/1e6/r.MBPerSec
		benchRow(t, out, "re-add after a 10 s outage: heal to in-sync vs 5 s + copy at the resync rate", "s", back.Seconds(),
			"5 s + copy", bar, note+fmt.Sprintf("; resync %.1f MB/s; within the bar when the first figure is not above the second", r.MBPerSec))
	}
}
