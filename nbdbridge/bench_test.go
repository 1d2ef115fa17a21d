package nbdbridge

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// TestFioCompareNbdkit measures fio's nbd engine against this server on a
// Mem device and against `nbdkit memory` in one run (the ratio shows the
// server's own overhead). Opt-in: NBD_BENCH=1.
func TestFioCompareNbdkit(t *testing.T) {
	if os.Getenv("NBD_BENCH") == "" {
		t.Skip("set NBD_BENCH=1 to run the fio comparison")
	}
	requireTools(t, "fio", "nbdkit")
	const size = 1 << 30
	ts := startServer(t, blockdevtest.NewMem(size, 512), DefaultOptions())
	ksock := filepath.Join(t.TempDir(), "k.sock")
	kit := exec.Command("nbdkit", "-f", "-U", ksock, "memory", fmt.Sprint(size))
	if err := kit.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { kit.Process.Kill(); kit.Wait() }()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(ksock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	type job struct{ name, rw, bs, qd string }
	jobs := []job{{"4k-randread-qd32", "randread", "4k", "32"}, {"1M-seqread-qd8", "read", "1M", "8"}}
	for _, j := range jobs {
		var res [2]float64
		for i, uri := range []string{ts.uri, "nbd+unix:///?socket=" + ksock} {
			out := run(t, 60*time.Second, "fio", "--name="+j.name, "--ioengine=nbd", "--uri="+uri, "--rw="+j.rw,
				"--bs="+j.bs, "--iodepth="+j.qd, "--size=1g", "--runtime=5", "--time_based", "--output-format=json")
			var r struct {
				Jobs []struct {
					Read struct {
						IOPS float64 `json:"iops"`
						BW   float64 `json:"bw_bytes"`
					} `json:"read"`
				} `json:"jobs"`
			}
			if k := indexByte(out, '{'); k > 0 {
				out = out[k:] // fio prints "connected to NBD server" first
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Jobs) == 0 {
				t.Fatalf("fio json: %v", err)
			}
			if j.bs == "4k" {
				res[i] = r.Jobs[0].Read.IOPS
			} else {
				res[i] = r.Jobs[0].Read.BW / (1 << 30)
			}
		}
		unit := "IOPS"
		if j.bs != "4k" {
			unit = "GiB/s"
		}
		t.Logf("%s: lunbridge %.3g %s, nbdkit memory %.3g %s, ratio %.2f", j.name, res[0], unit, res[1], unit, res[0]/res[1])
	}
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}
