package nbdbridge

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"context"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/testenv"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

func TestNbdinfo(t *testing.T) {
	requireTools(t, "nbdinfo")
	dev := blockdevtest.NewMem(64<<20, 512)
	ctx := context.Background()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	if err := dev.WriteAt(ctx, buf, 8<<20, false); err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.ExportName = "lun1"
	opts.Description = "test LUN"
	ts := startServer(t, dev, opts)
	out := run(t, 20*time.Second, "nbdinfo", ts.uri)
	t.Log(out)
	for _, want := range []string{
		"export=\"lun1\"", "description: test LUN", "export-size: 67108864",
		"can_multi_conn: true", "can_trim: true", "can_zero: true", "can_fua: true", "can_flush: true",
		"can_df: true", "can_cache: true", "is_read_only: false",
		"block_size_minimum: 512", "block_size_preferred: 65536", "block_size_maximum: 33554432",
		"base:allocation",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("nbdinfo output lacks %q", want)
		}
	}
	m := run(t, 20*time.Second, "nbdinfo", "--map", ts.uri)
	t.Log(m)
	want := []string{
		"0     8388608    3  hole,zero",
		"8388608     1048576    0  data",
		"9437184    57671680    3  hole,zero",
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(strings.Fields(m), " "), strings.Join(strings.Fields(w), " ")) {
			t.Errorf("nbdinfo --map lacks %q", w)
		}
	}
}

// fillPattern writes a recognisable pattern into dev over [off, off+n) in
// 64 KiB runs with every other run left as a hole.
func fillPattern(t testing.TB, dev interface {
	WriteAt(context.Context, []byte, int64, bool) error
}, off, n int64) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for p := off; p < off+n; p += int64(2 * len(buf)) {
		for i := range buf {
			buf[i] = byte(p>>16) ^ byte(i*7)
		}
		if err := dev.WriteAt(context.Background(), buf, p, false); err != nil {
			t.Fatal(err)
		}
	}
}

func deviceBytes(t testing.TB, dev interface {
	Size() int64
	ReadAt(context.Context, []byte, int64) error
}) []byte {
	t.Helper()
	b := make([]byte, dev.Size())
	if err := dev.ReadAt(context.Background(), b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCopyOut(t *testing.T) {
	requireTools(t, "nbdcopy", "qemu-img")
	dev := blockdevtest.NewMem(32<<20, 512)
	fillPattern(t, dev, 1<<20, 20<<20)
	want := deviceBytes(t, dev)
	ts := startServer(t, dev, DefaultOptions())
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"nbdcopy", []string{"nbdcopy", ts.uri, dir + "/a.raw"}},
		{"nbdcopy-4conn", []string{"nbdcopy", "--connections", "4", "--requests", "16", ts.uri, dir + "/b.raw"}},
		{"qemu-img", []string{"qemu-img", "convert", "-f", "raw", "-O", "raw", ts.uri, dir + "/c.raw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run(t, 60*time.Second, tc.args[0], tc.args[1:]...)
			got, err := os.ReadFile(tc.args[len(tc.args)-1])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("copy differs from the device")
			}
		})
	}
	st := ts.Stats()
	if st.BlockStatus.Requests == 0 {
		t.Errorf("no BLOCK_STATUS seen: sparse copy not exercised (%+v)", st)
	}
	if st.Read.Bytes >= 3*uint64(len(want)) {
		t.Errorf("read %d bytes for 3 copies of %d: holes were read", st.Read.Bytes, len(want))
	}
}

func TestWritesLand(t *testing.T) {
	requireTools(t, "qemu-io", "nbdcopy")
	dev := blockdevtest.NewMem(16<<20, 512)
	ts := startServer(t, dev, DefaultOptions())
	run(t, 30*time.Second, "qemu-io", "-f", "raw", "-c", "write -P 0xab 1M 2M", "-c", "write -z 4M 1M",
		"-c", "write -P 0xcd -f 8M 64k", "-c", "flush", "-c", "discard 8M 4k", ts.uri)
	got := deviceBytes(t, dev)
	check := func(off, n int, v byte) {
		t.Helper()
		for i := off; i < off+n; i++ {
			if got[i] != v {
				t.Fatalf("byte %d = %#x, want %#x", i, got[i], v)
			}
		}
	}
	check(1<<20, 2<<20, 0xab)
	check(4<<20, 1<<20, 0)
	check(8<<20, 4096, 0) // trimmed: Mem reads holes as zeroes
	check(8<<20+4096, 60<<10, 0xcd)
	// nbdcopy a file into the export (writes + zeroes).
	src := filepath.Join(t.TempDir(), "src.raw")
	img := make([]byte, 16<<20)
	for i := 0; i < len(img); i += 4096 {
		if (i/4096)%3 != 0 {
			img[i] = byte(i >> 12)
			img[i+100] = 0x5a
		}
	}
	if err := os.WriteFile(src, img, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, 30*time.Second, "nbdcopy", src, ts.uri)
	if !bytes.Equal(deviceBytes(t, dev), img) {
		t.Fatal("device differs from the file copied in")
	}
	if dev.Flushes.Load() == 0 {
		t.Error("no flush reached the device")
	}
}

func TestFioVerify(t *testing.T) {
	requireTools(t, "fio")
	testenv.Short(t)
	dev := blockdevtest.NewMem(64<<20, 512)
	ts := startServer(t, dev, DefaultOptions())
	out := run(t, 60*time.Second, "fio", "--name=v", "--ioengine=nbd", "--uri="+ts.uri, "--rw=randrw",
		"--bs=4k", "--bsrange=4k-256k", "--iodepth=16", "--size=32m", "--verify=crc32c", "--do_verify=1",
		"--verify_fatal=1", "--verify_state_save=0", "--runtime=5", "--time_based=0", "--output-format=terse")
	t.Log(strings.SplitN(out, ";", 8)[:7])
	if ts.Stats().Write.Requests == 0 || ts.Stats().Read.Requests == 0 {
		t.Fatalf("fio did no I/O: %+v", ts.Stats())
	}
}

func TestTwoClientsShared(t *testing.T) {
	requireTools(t, "qemu-io")
	dev := blockdevtest.NewMem(8<<20, 512)
	ts := startServer(t, dev, DefaultOptions())
	errs := make(chan error, 2)
	for i, pat := range []string{"0x11", "0x22"} {
		go func() {
			cmd := exec.Command("qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -P %s %dM 1M", pat, i*2), "-c", "flush", ts.uri)
			out, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%v: %s", err, out)
			}
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	got := deviceBytes(t, dev)
	if got[0] != 0x11 || got[1<<20-1] != 0x11 || got[2<<20] != 0x22 || got[3<<20-1] != 0x22 {
		t.Fatal("writes of the two clients did not land")
	}
	if c := ts.Stats().Connections; c < 2 {
		t.Fatalf("connections = %d", c)
	}
}

func TestReadOnlyExport(t *testing.T) {
	requireTools(t, "nbdinfo", "qemu-io")
	dev := blockdevtest.NewMem(8<<20, 4096)
	opts := DefaultOptions()
	opts.ReadOnly = true
	ts := startServer(t, dev, opts)
	out := run(t, 20*time.Second, "nbdinfo", ts.uri)
	for _, w := range []string{"is_read_only: true", "block_size_minimum: 4096", "can_trim: false"} {
		if !strings.Contains(out, w) {
			t.Errorf("nbdinfo lacks %q:\n%s", w, out)
		}
	}
	cmd := exec.Command("qemu-io", "-f", "raw", "-c", "write 0 4k", ts.uri)
	if b, err := cmd.CombinedOutput(); err == nil && !strings.Contains(string(b), "ermission") && !strings.Contains(string(b), "read-only") && !strings.Contains(string(b), "read only") {
		t.Fatalf("write to a read-only export succeeded: %s", b)
	}
	if got := deviceBytes(t, dev); !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("read-only device was modified")
	}
}
