package blockcheck

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// asyncStatus reads the async leg's status from serve's control socket.
func asyncStatus(path string) (*mirror.AsyncStatus, error) {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("status\n")); err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(c)
	if err != nil {
		return nil, err
	}
	var st struct {
		Async *mirror.AsyncStatus `json:"async"`
	}
	if err := json.Unmarshal(raw, &st); err != nil || st.Async == nil {
		return nil, &json.UnsupportedValueError{Str: string(raw)}
	}
	return st.Async, nil
}

// TestAsyncLegPrefixRealTargets (issue 20 item 6): serve with the main LUN
// on tgtd and an asynchronous leg on istgt behind an emulated WAN link
// (20 ms RTT, 20 MB/s), under a write load from eight NBD clients above
// the link's rate, with --max-lag 1s,32MiB and the throttle policy. The
// lag read from the control socket never passes 1 s. serve is then killed
// (kill -9: the DR case, the primary site lost) and the remote LUN, read
// directly, must be the state of one instant of the history: a prefix
// (CheckPrefix), some acknowledged writes possibly missing, never a mix.
func TestAsyncLegPrefixRealTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("real targets skipped in -short")
	}
	requireRealTargets(t)
	const lun = 32 << 20
	const maxLag = time.Second
	const linkRate = 20 << 20
	srvA := targets.StartWith(t, targets.KindTgtd, targets.Options{}, targets.Target{LUNs: []targets.LUN{{Size: lun, BlockSize: BlockSize}}})
	srvB := targets.StartWith(t, targets.KindIstgt, targets.Options{}, targets.Target{LUNs: []targets.LUN{{Size: lun, BlockSize: BlockSize}}})
	px, err := faultproxy.New(srvB.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	px.SetLink(faultproxy.WAN(20*time.Millisecond, linkRate))

	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "control.sock")
	p := startProc(t, lunbridge(t), "serve", "--listen", "unix:"+sock, "--persistent", "--shared", "0",
		"--control-socket", ctl, "--mirror-async", iscsiURL(srvB, px.Addr()), "--mirror-async-init",
		"--max-lag", "1s,32MiB", "--on-lag", "throttle", srvA.URL(0, 0))
	defer p.kill9()
	if l, err := p.line(60 * time.Second); err != nil || !strings.HasPrefix(l, "nbd+unix://") {
		t.Fatalf("serve: %q %v", l, err)
	}
	for end := time.Now().Add(30 * time.Second); ; {
		st, err := asyncStatus(ctl)
		if err == nil && st.Mode == mirror.AsyncJournal {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("async leg never reached journal mode: %+v %v\n%s", st, err, p.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var lags []float64
	var last *mirror.AsyncStatus
	var killedAt time.Duration
	runFor := 10 * time.Second
	cfg := Config{
		Blocks: 2048, Clients: 8, MaxBlocks: 16, Duration: runFor, Seed: seed(),
		ReadPct: 5, FlushPct: 3, FUAPct: 5, OpTimeout: 10 * time.Second, Logf: t.Logf,
		Open: func(ctx context.Context, i int) (Target, error) {
			if i < 0 { // the final read: the remote LUN, directly
				return lunOpener(nil, srvB.Targets[0].Name, srvB.Portal, uint64(srvB.LUNNumber(0)))(ctx, 0)
			}
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return DialNBD(ctx, "unix", sock, "")
		},
	}
	var hist *History
	err = Run(context.Background(), cfg, func(ctx context.Context, h *History) {
		kill := time.NewTimer(runFor - 2*time.Second)
		defer kill.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kill.C:
				p.kill9()
				h.Crash()
				killedAt = h.Now()
				<-ctx.Done()
				return
			case <-tick.C:
				if st, err := asyncStatus(ctl); err == nil {
					lags = append(lags, st.LagSeconds)
					last = st
				}
			}
		}
	}, func(h *History) { hist = h })
	if err != nil {
		t.Fatal(err)
	}
	st := hist.Stats()
	var bytesAcked int64
	for _, o := range hist.Ops() {
		if o.Kind == Write && o.Result == OK && o.Complete < killedAt {
			bytesAcked += o.N * BlockSize
		}
	}
	sort.Float64s(lags)
	if len(lags) < 20 {
		t.Fatalf("only %d lag samples", len(lags))
	}
	pct := func(q float64) float64 { return lags[int(q*float64(len(lags)-1))] }
	rate := float64(bytesAcked) / killedAt.Seconds() / 1e6
	t.Logf("lag over %d samples: p50 %.3fs p99 %.3fs max %.3fs (bound %v); writes allowed %.1f MB/s through a %.1f MB/s link; last status %+v",
		len(lags), pct(0.5), pct(0.99), lags[len(lags)-1], maxLag, rate, float64(linkRate)/1e6, last)
	if lags[len(lags)-1] > maxLag.Seconds() {
		t.Errorf("lag reached %.3fs, bound %v", lags[len(lags)-1], maxLag)
	}
	if last == nil || last.ThrottledNs == 0 {
		t.Errorf("the load never met the throttle (offered load below the link?): %+v", last)
	}
	as, n, cut := CheckPrefix(hist)
	t.Logf("%d ops (%d writes); remote image: state at an instant in (%v, %v]; of %d acknowledged writes %d on it, %d missing (sent after the cut, lost with the primary)",
		st.Ops, st.Writes, cut.After, cut.Before, cut.Acked, cut.OnImage, cut.Missing)
	for _, a := range as {
		t.Errorf("remote image: %v", a)
	}
	if n > 0 {
		t.Fatalf("%d anomalies: the remote is not a prefix of the history", n)
	}
}
