package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/fusefs/fusefstest"

	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

// serveExport starts `lunbridge serve URL --listen unix:SOCK` with extra
// flags and returns the NBD URI it prints. The server is stopped (SIGTERM)
// in t.Cleanup; stopServe checks its clean exit.
func serveExport(t *testing.T, url string, extra ...string) (uri string, p *proc) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	args := append([]string{"serve", "--listen", "unix:" + sock}, extra...)
	p = start(t, lbPath, append(args, url)...)
	uri = strings.TrimSpace(p.line(t, 30*time.Second))
	if !strings.HasPrefix(uri, "nbd+unix://") || !strings.Contains(uri, sock) {
		t.Fatalf("serve printed %q; want an nbd+unix:// URI naming %s", uri, sock)
	}
	return uri, p
}

func stopServe(t *testing.T, p *proc) {
	t.Helper()
	if code := p.stop(t, 30*time.Second); code != 0 {
		t.Errorf("serve exited %d after SIGTERM\nstderr:\n%s", code, p.stderr.String())
	}
}

// nbdInfo is the part of `nbdinfo --json` the tests read.
type nbdInfo struct {
	Exports []struct {
		Name       string   `json:"export-name"`
		Size       int64    `json:"export-size"`
		Min        int64    `json:"block_size_minimum"`
		Preferred  int64    `json:"block_size_preferred"`
		Max        int64    `json:"block_size_maximum"`
		ReadOnly   bool     `json:"is_read_only"`
		CanFlush   bool     `json:"can_flush"`
		CanTrim    bool     `json:"can_trim"`
		MultiConn  bool     `json:"can_multi_conn"`
		Contexts   []string `json:"contexts"`
		Structured bool     `json:"structured_replies"` // absent in some versions
	} `json:"exports"`
}

func getInfo(t *testing.T, uri string) nbdInfo {
	t.Helper()
	r := runOK(t, 30*time.Second, tool(t, "nbdinfo"), "--json", uri)
	var info nbdInfo
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo --json: %v\n%s", err, r.stdout)
	}
	return info
}

// extent is one line of `nbdinfo --map`.
type extent struct {
	off, n int64
	typ    int
	desc   string
}

func nbdMap(t *testing.T, uri string) []extent {
	t.Helper()
	r := runOK(t, 30*time.Second, tool(t, "nbdinfo"), "--map", uri)
	var out []extent
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			t.Fatalf("nbdinfo --map line %q", line)
		}
		off, _ := strconv.ParseInt(f[0], 10, 64)
		n, _ := strconv.ParseInt(f[1], 10, 64)
		typ, _ := strconv.Atoi(f[2])
		out = append(out, extent{off, n, typ, strings.Join(f[3:], " ")})
	}
	return out
}

// nbdfuseMount mounts an NBD export with nbdfuse (one connection) and
// returns the file; unmounted in t.Cleanup.
func nbdfuseMount(t *testing.T, uri string, extra ...string) string {
	t.Helper()
	nbdfuse := tool(t, "nbdfuse")
	dir := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "nbdfuse.pid")
	args := append([]string{"-C", "1", "-P", pidFile}, extra...)
	p := start(t, nbdfuse, append(args, filepath.Join(dir, "disk.img"), uri)...)
	t.Cleanup(func() {
		if p.exited() {
			return
		}
		if err := unix.Unmount(dir, 0); err != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
		p.wait(t, 15*time.Second)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(pidFile); err == nil {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("nbdfuse did not become ready (exited %v)\nstderr:\n%s", p.exited(), p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return filepath.Join(dir, "disk.img")
}

// serveLUN is the content of the LUN the serve tests use: random data in
// [0,8M) and [128M,136M), holes elsewhere.
func serveLUN(t *testing.T, srv *targets.Server) {
	b := srv.BackingFile(0, 0)
	fillRandom(t, b, 0, 8*mib, 70)
	fillRandom(t, b, 128*mib, 8*mib, 71)
}

// TestServe exports a real LUN with `lunbridge serve` and drives it with
// libnbd and qemu tools, fio and an ext4 file system over nbdfuse.
func TestServe(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		const size = 256 * mib
		srv := startTarget(t, kind, targets.LUN{Size: size, Thin: kind == targets.KindTgtd})
		serveLUN(t, srv)
		backing := srv.BackingFile(0, 0)
		uri, p := serveExport(t, srv.URL(0, 0), "--persistent", "--shared", "4")

		t.Run("Info", func(t *testing.T) {
			e := getInfo(t, uri).Exports[0]
			if e.Size != size || e.Min != 512 || e.Preferred < 4096 || e.Max < 64*kib || e.Max%512 != 0 || e.ReadOnly || !e.CanFlush {
				t.Errorf("nbdinfo: %+v", e)
			}
			if !strings.Contains(strings.Join(e.Contexts, " "), "base:allocation") {
				t.Errorf("no base:allocation context: %v", e.Contexts)
			}
			if kind == targets.KindTgtd && !e.CanTrim {
				t.Errorf("thin tgtd LUN exported without trim: %+v", e)
			}
			t.Logf("nbdinfo: %+v", e)
		})
		t.Run("Map", func(t *testing.T) {
			m := nbdMap(t, uri)
			var end int64
			for _, e := range m {
				if e.off != end {
					t.Fatalf("map not contiguous at %d: %v", end, m)
				}
				end += e.n
			}
			if end != size {
				t.Fatalf("map covers %d bytes, want %d: %v", end, int64(size), m)
			}
			isHole := func(off int64) bool {
				for _, e := range m {
					if off >= e.off && off < e.off+e.n {
						return e.typ&1 != 0
					}
				}
				return false
			}
			for _, off := range []int64{0, 8*mib - 1, 128 * mib, 136*mib - 1} {
				if isHole(off) {
					t.Errorf("offset %d (data) mapped as a hole: %v", off, m)
				}
			}
			if kind == targets.KindTgtd {
				for _, off := range []int64{16 * mib, 64 * mib, 127 * mib, 200 * mib, size - 1} {
					if !isHole(off) {
						t.Errorf("offset %d (hole of a thin LUN) mapped as data: %v", off, m)
					}
				}
			}
			t.Logf("nbdinfo --map: %v", m)
		})
		t.Run("Copy", func(t *testing.T) {
			dir := scratch(t)
			nc := filepath.Join(dir, "nbdcopy.img")
			makeFile(t, nc, 0)
			r := runOK(t, time.Minute, tool(t, "nbdcopy"), uri, nc)
			sameFiles(t, nc, backing)
			qi := filepath.Join(dir, "qemu.img")
			q := runOK(t, time.Minute, tool(t, "qemu-img"), "convert", "-f", "raw", "-O", "raw", uri, qi)
			sameFiles(t, qi, backing)
			if kind == targets.KindTgtd && allocated(t, qi) > 32*mib {
				t.Errorf("qemu-img output allocates %d bytes: holes of the thin LUN not seen", allocated(t, qi))
			}
			t.Logf("nbdcopy %v, qemu-img convert %v; qemu-img output allocates %d bytes", r.dur.Round(time.Millisecond), q.dur.Round(time.Millisecond), allocated(t, qi))
		})
		t.Run("QemuIOWrite", func(t *testing.T) {
			qio := tool(t, "qemu-io")
			runOK(t, time.Minute, qio, "-f", "raw", "-c", "write -P 0xab 3M 192k", "-c", "write -P 0xcd 100000256 512", "-c", "flush", uri)
			if got := readAt(t, backing, 3*mib, 192*kib); !bytes.Equal(got, bytes.Repeat([]byte{0xab}, 192*kib)) {
				t.Errorf("qemu-io write at 3M did not land in the backing file")
			}
			if got := readAt(t, backing, 100000256, 512); !bytes.Equal(got, bytes.Repeat([]byte{0xcd}, 512)) {
				t.Errorf("qemu-io write at 100000256 did not land in the backing file")
			}
			r := runOK(t, time.Minute, qio, "-f", "raw", "-r", "-c", "read -P 0xab 3M 192k", uri)
			if strings.Contains(r.stdout, "Pattern verification failed") {
				t.Errorf("qemu-io read back: %s", r.stdout)
			}
		})
		t.Run("FioVerify", func(t *testing.T) {
			fio := tool(t, "fio")
			r := runOK(t, 2*time.Minute, fio, "--name=randrw", "--ioengine=nbd", "--uri="+uri,
				"--rw=randrw", "--bs=4k", "--iodepth=16", "--offset=160M", "--size=32M", "--io_size=48M",
				"--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--random_generator=tausworthe64")
			if strings.Contains(r.stdout, "verify:") && strings.Contains(r.stdout, "bad") {
				t.Errorf("fio reported verify failures:\n%s", r.stdout)
			}
			t.Logf("fio: %s", firstLines(grepLines(r.stdout, "IOPS"), 2))
		})
		t.Run("NbdfuseExt4", func(t *testing.T) {
			needTools(t, "mkfs.ext4", "e2fsck", "losetup", "cp")
			file := nbdfuseMount(t, uri)
			if fileSize(t, file) != size {
				t.Fatalf("nbdfuse file is %d bytes", fileSize(t, file))
			}
			runOK(t, time.Minute, "mkfs.ext4", "-q", "-F", file)
			loop := fusefstest.Losetup(t, file)
			mnt := fusefstest.MountFS(t, loop, "-t", "ext4")
			tree := makeTree(t, 8*mib, 80)
			runOK(t, time.Minute, "cp", "-a", tree, mnt)
			runOK(t, time.Minute, "sync")
			fusefstest.Umount(t, mnt)
			fusefstest.DetachLoop(t, loop)
			fsck(t, file)
			fsck(t, backing) // what reached the target is a clean file system too
			runOK(t, time.Minute, "sync")
		})
		stopServe(t, p)
	})
}

// TestServeShared: two clients at once on --shared 2; a third is refused
// until one leaves.
func TestServeShared(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		const size = 64 * mib
		srv := startTarget(t, kind, targets.LUN{Size: size})
		backing := srv.BackingFile(0, 0)
		fillRandom(t, backing, 0, size, 75)
		uri, p := serveExport(t, srv.URL(0, 0), "--persistent", "--shared", "2")
		a := nbdfuseMount(t, uri, "-r")
		b := nbdfuseMount(t, uri, "-r")
		want := readAt(t, backing, 0, size)
		for _, f := range []string{a, b} {
			if !bytes.Equal(readAt(t, f, 0, size), want) {
				t.Errorf("%s: content differs from the backing file", f)
			}
		}
		if r := run(t, 30*time.Second, tool(t, "nbdinfo"), uri); r.code == 0 {
			t.Errorf("third client accepted on --shared 2:\n%s", r.stdout)
		} else {
			t.Logf("third client refused: %s", strings.TrimSpace(r.stderr))
		}
		// Both clients still work after the refusal.
		for _, f := range []string{a, b} {
			if !bytes.Equal(readAt(t, f, size-mib, mib), want[size-mib:]) {
				t.Errorf("%s: content differs after a third client was refused", f)
			}
		}
		stopServe(t, p)
	})
}

// TestServeReadOnly: a read-only LUN gives a read-only export.
func TestServeReadOnly(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		const size = 64 * mib
		srv := startTarget(t, kind, targets.LUN{Size: size, ReadOnly: true})
		backing := srv.BackingFile(0, 0)
		fillRandom(t, backing, 0, 4*mib, 76)
		before := sha256File(t, backing)
		uri, p := serveExport(t, srv.URL(0, 0), "--persistent", "--shared", "4")
		if e := getInfo(t, uri).Exports[0]; !e.ReadOnly || e.Size != size {
			t.Errorf("export of a read-only LUN: %+v", e)
		}
		r := run(t, time.Minute, tool(t, "qemu-io"), "-f", "raw", "-c", "write -P 0x11 0 64k", uri)
		if msg := strings.ToLower(r.stdout + r.stderr); r.code == 0 || !(strings.Contains(msg, "permission denied") || strings.Contains(msg, "read-only")) {
			t.Errorf("qemu-io write to a read-only export: %s", r)
		}
		out := filepath.Join(scratch(t), "copy.img")
		makeFile(t, out, 0)
		runOK(t, time.Minute, tool(t, "nbdcopy"), uri, out)
		sameFiles(t, out, backing)
		if sha256File(t, backing) != before {
			t.Errorf("backing file of the read-only LUN changed")
		}
		t.Logf("qemu-io write: %s", strings.TrimSpace(r.stdout+r.stderr))
		stopServe(t, p)
	})
}

// TestServeDefaultsNbdcopy: `lunbridge serve URL` with its defaults and
// nbdcopy with its defaults, as the serve help suggests. With the default
// --shared 1 the export must not advertise NBD_FLAG_CAN_MULTI_CONN (nbdcopy
// would open 4 connections and 3 would get NBD_REP_ERR_POLICY): the copy
// must work over the one connection nbdcopy then opens.
func TestServeDefaultsNbdcopy(t *testing.T) {
	const size = 64 * mib
	srv := startTarget(t, targets.KindTgtd, targets.LUN{Size: size})
	backing := srv.BackingFile(0, 0)
	fillRandom(t, backing, 0, size, 77)
	uri, p := serveExport(t, srv.URL(0, 0), "--persistent")
	e := getInfo(t, uri).Exports[0]
	if e.MultiConn {
		t.Errorf("serve with --shared 1 advertises can_multi_conn")
	}
	out := filepath.Join(scratch(t), "copy.img")
	makeFile(t, out, 0)
	r := run(t, time.Minute, tool(t, "nbdcopy"), uri, out)
	if r.code != 0 {
		t.Fatalf("nbdcopy (default --connections) from `lunbridge serve` (default --shared 1, can_multi_conn=%v): %s", e.MultiConn, r)
	}
	sameFiles(t, out, backing)
	stopServe(t, p)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, " | ")
}
