package vmlab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// benchResult is the part of `lunbridge bench --json` compared here.
type benchResult struct {
	RW       string  `json:"rw"`
	BS       int64   `json:"bs"`
	QD       int     `json:"qd"`
	IOs      int64   `json:"ios"`
	Errors   int64   `json:"errors"`
	IOPS     float64 `json:"iops"`
	MBps     float64 `json:"mb_per_s"`
	LatP50us float64 `json:"lat_p50_us"`
	LatP99us float64 `json:"lat_p99_us"`
}

// TestProtocolBench benches one RAM-backed disk in the VM exported by LIO
// over iSCSI and by nvmet over NVMe/TCP (scenario protobench), with the
// same lunbridge bench workloads run alternately on each, and logs the
// NVMe/TCP : iSCSI ratios. TCG and qemu's user networking make the
// absolute figures meaningless; the ratio compares the protocols (and
// lunbridge's two hosts) on equal ground. It asserts only that both run
// without errors. Opt-in beyond the VM lab: LUNBRIDGE_VMLAB_BENCH=1
// (scripts/bench/nvme-vs-iscsi.sh sets it). LUNBRIDGE_BENCH_TIME sets
// the seconds per run (default 8), LUNBRIDGE_BENCH_ROUNDS the
// alternations (default 2).
func TestProtocolBench(t *testing.T) {
	if os.Getenv("LUNBRIDGE_VMLAB_BENCH") != "1" {
		t.Skip("set LUNBRIDGE_VMLAB_BENCH=1 (scripts/bench/nvme-vs-iscsi.sh) to run the protocol bench")
	}
	bin := BuildStatic(t, "./cmd/lunbridge")
	vm := Boot(t, Options{Scenario: "protobench", Params: map[string]string{"bench.size_mb": "128"},
		Forward: []int{4420}, Timeout: 20 * time.Minute})
	if _, err := vm.WaitFor(MarkerReady, 150*time.Second); err != nil {
		t.Fatalf("vmlab: protobench not ready: %v\n%s", err, lastLines(vm.Output(), 40))
	}
	secs := os.Getenv("LUNBRIDGE_BENCH_TIME")
	if secs == "" {
		secs = "8"
	}
	rounds := 2
	if r := os.Getenv("LUNBRIDGE_BENCH_ROUNDS"); r != "" {
		fmt.Sscan(r, &rounds)
	}
	urls := map[string]string{
		"iscsi": "iscsi://" + vm.Portal() + "/iqn.2003-01.org.linux-iscsi.vmlab:bench/0",
		"nvme":  "nvme+tcp://" + vm.PortalFor(4420) + "/nqn.2026-12.org.lunbridge:bench/1",
	}
	workloads := [][]string{
		{"--rw", "randread", "--bs", "4k", "--qd", "1"},
		{"--rw", "randread", "--bs", "4k", "--qd", "32"},
		{"--rw", "randwrite", "--bs", "4k", "--qd", "32", "--yes"},
		{"--rw", "read", "--bs", "1m", "--qd", "8"},
		{"--rw", "write", "--bs", "1m", "--qd", "8", "--yes"},
	}
	type sum struct{ iops, mbps, p50, p99 float64 }
	totals := map[string][]sum{}
	for r := 0; r < rounds; r++ {
		for wi, w := range workloads {
			for _, proto := range []string{"iscsi", "nvme"} {
				args := append([]string{"bench", "--json", "--time", secs + "s", "--span", "96M"}, w...)
				args = append(args, urls[proto])
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				out, err := exec.CommandContext(ctx, bin, args...).Output()
				cancel()
				if err != nil {
					t.Fatalf("%s %v: %v\n%s", proto, w, err, out)
				}
				var res benchResult
				if err := json.Unmarshal(out, &res); err != nil {
					t.Fatalf("%s %v: %v: %s", proto, w, err, out)
				}
				if res.Errors != 0 || res.IOs == 0 {
					t.Fatalf("%s %v: %+v", proto, w, res)
				}
				if totals[proto] == nil {
					totals[proto] = make([]sum, len(workloads))
				}
				s := &totals[proto][wi]
				s.iops += res.IOPS / float64(rounds)
				s.mbps += res.MBps / float64(rounds)
				s.p50 += res.LatP50us / float64(rounds)
				s.p99 += res.LatP99us / float64(rounds)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-32s %12s %12s %8s %12s %12s %8s\n", "workload (mean of rounds)", "iSCSI IOPS", "NVMe IOPS", "ratio", "iSCSI p50us", "NVMe p50us", "ratio")
	for wi, w := range workloads {
		i, n := totals["iscsi"][wi], totals["nvme"][wi]
		fmt.Fprintf(&b, "%-32s %12.0f %12.0f %7.2fx %12.0f %12.0f %7.2fx\n", strings.Join(w[:6], " "),
			i.iops, n.iops, n.iops/i.iops, i.p50, n.p50, n.p50/i.p50)
	}
	t.Logf("LIO iSCSI vs nvmet NVMe/TCP, same RAM disk, %s s per run, %d rounds:%s", secs, rounds, b.String())
}
