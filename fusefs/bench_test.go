package fusefs_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
	"github.com/lunbridge/lunbridge/fusefs"
	"github.com/lunbridge/lunbridge/fusefs/fusefstest"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// TestBenchFio measures fio through the FUSE file over a Mem device, and
// through nbdfuse over `nbdkit memory` for comparison. It reports, asserts
// nothing, and runs only with LUNBRIDGE_BENCH=1 (about 40 s):
//
//	LUNBRIDGE_BENCH=1 go test -run TestBenchFio -v ./fusefs/
func TestBenchFio(t *testing.T) {
	if os.Getenv("LUNBRIDGE_BENCH") != "1" {
		t.Skip("set LUNBRIDGE_BENCH=1 to run the fio comparison")
	}
	fio := testenv.RequireTool(t, "fio")
	const size = 1 << 30
	runtime := os.Getenv("LUNBRIDGE_BENCH_RUNTIME")
	if runtime == "" {
		runtime = "5"
	}
	jobs := []struct{ name, rw, bs, qd string }{
		{"seq-write 1M QD8", "write", "1m", "8"},
		{"seq-read 1M QD8", "read", "1m", "8"},
		{"rand-read 4k QD32", "randread", "4k", "32"},
		{"rand-write 4k QD32", "randwrite", "4k", "32"},
	}
	bench := func(label, file string) {
		for _, j := range jobs {
			out, err := exec.Command(fio, "--name=b", "--filename="+file, "--direct=1", "--ioengine=libaio",
				"--rw="+j.rw, "--bs="+j.bs, "--iodepth="+j.qd, "--size="+strconv.Itoa(size),
				"--runtime="+runtime, "--time_based", "--ramp_time=1", "--output-format=json").Output()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", label, j.name, err, out)
			}
			var r struct {
				Jobs []struct {
					Read, Write struct {
						BW   float64 `json:"bw_bytes"`
						IOPS float64 `json:"iops"`
					}
				}
			}
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("fio json: %v", err)
			}
			rd, wr := r.Jobs[0].Read, r.Jobs[0].Write
			t.Logf("%-10s %-20s %8.0f MiB/s %9.0f IOPS", label, j.name, (rd.BW+wr.BW)/(1<<20), rd.IOPS+wr.IOPS)
		}
	}

	m := blockdevtest.NewMem(size, 512)
	mp := fusefstest.Mount(t, m, fusefs.Options{})
	bench("lunbridge", mp.File())

	nbdkit := testenv.RequireTool(t, "nbdkit")
	nbdfuse := testenv.RequireTool(t, "nbdfuse")
	tmp := t.TempDir()
	sock := filepath.Join(tmp, "nbd.sock")
	srv := exec.Command(nbdkit, "-f", "-U", sock, "memory", strconv.Itoa(size))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	dir := filepath.Join(tmp, "mnt")
	os.Mkdir(dir, 0o755)
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 100 {
			t.Fatal("nbdkit did not create its socket")
		}
		time.Sleep(50 * time.Millisecond)
	}
	fuse := exec.Command(nbdfuse, dir, fmt.Sprintf("nbd+unix:///?socket=%s", sock))
	if err := fuse.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("fusermount3", "-u", dir).Run()
		fusefstest.Umount(t, dir)
		fuse.Process.Kill()
		fuse.Wait()
	})
	file := filepath.Join(dir, "nbd")
	for i := 0; ; i++ {
		if st, err := os.Stat(file); err == nil && st.Size() == size {
			break
		}
		if i > 100 {
			t.Fatal("nbdfuse did not mount")
		}
		time.Sleep(50 * time.Millisecond)
	}
	bench("nbdfuse", file)
}
