package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/fusefs/fusefstest"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

// TestMountFileSuite runs the FUSE file suite on a real LUN opened in
// process (thin on tgtd, so punch-hole becomes UNMAP there).
func TestMountFileSuite(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		srv := startTarget(t, kind, targets.LUN{Size: 64 * mib, Thin: kind == targets.KindTgtd})
		fusefstest.RunFileSuite(t, openLUN(t, srv, 0, 0))
	})
}

// TestMountReadOnlySuite runs the read-only suite on a read-only LUN.
func TestMountReadOnlySuite(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		srv := startTarget(t, kind, targets.LUN{Size: 32 * mib, ReadOnly: true})
		fillRandom(t, srv.BackingFile(0, 0), 0, 8*mib, 90)
		l := openLUN(t, srv, 0, 0)
		if !l.ReadOnly() {
			t.Fatalf("read-only LUN opened writable")
		}
		fusefstest.RunReadOnlySuite(t, l)
	})
}

// lbMount runs `lunbridge mount --daemon --pid-file F URL DIR` and returns
// the file it prints and the pid file. t.Cleanup unmounts (lazily if
// needed) and makes sure the serving process is gone.
func lbMount(t *testing.T, url, dir string, extra ...string) (file, pidFile string) {
	t.Helper()
	fusefstest.RequireFUSE(t)
	pidFile = filepath.Join(t.TempDir(), "mount.pid")
	args := append([]string{"mount", "--daemon", "--pid-file", pidFile}, extra...)
	r := lbOK(t, time.Minute, append(args, url, dir)...)
	file = strings.TrimSpace(r.stdout)
	if file != filepath.Join(dir, "disk.img") {
		t.Errorf("mount printed %q, want %s", file, filepath.Join(dir, "disk.img"))
	}
	pid := readPid(t, pidFile)
	t.Cleanup(func() {
		if !pidAlive(pid) {
			unix.Unmount(dir, unix.MNT_DETACH) // stale mount of a killed process
			return
		}
		if r := lb(t, time.Minute, "umount", "--lazy", "--pid-file", pidFile, "--wait", "20s", dir); r.code != 0 {
			t.Errorf("cleanup: lunbridge umount: %s", r)
		}
		if pidAlive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return file, pidFile
}

func readPid(t testing.TB, pidFile string) int {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		t.Fatalf("pid file %q", b)
	}
	return pid
}

func pidAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	// A zombie (not reaped: the daemon is not our child) counts as gone.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) < 3 || f[2] != "Z"
}

// isMounted reports whether dir is a mount point.
func isMounted(t testing.TB, dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// docTree copies regular files and symlinks of /usr/share/doc, in name
// order, until about limit bytes, into a fresh directory.
func docTree(t *testing.T, limit int64) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "doc")
	var total int64
	stop := errors.New("stop")
	err := filepath.WalkDir("/usr/share/doc", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel("/usr/share/doc", path)
		dst := filepath.Join(root, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err == nil {
				os.Symlink(target, dst)
			}
		case d.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				return err
			}
			total += int64(len(b))
			if total >= limit {
				return stop
			}
		}
		return nil
	})
	if err != nil && err != stop {
		t.Fatal(err)
	}
	if total < limit/4 {
		t.Fatalf("only %d bytes found under /usr/share/doc", total)
	}
	return root
}

// treeSums maps every entry under root to a checksum (files), a link
// target (symlinks) or "dir".
func treeSums(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		switch {
		case d.IsDir():
			out[rel] = "dir"
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(path)
			if err != nil {
				return err
			}
			out[rel] = "-> " + l
		default:
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			out[rel] = hex.EncodeToString(h[:])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func compareSums(t *testing.T, got, want map[string]string) {
	t.Helper()
	var bad []string
	for k, v := range want {
		if got[k] != v {
			bad = append(bad, k+": "+got[k]+" != "+v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			bad = append(bad, k+": unexpected")
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("%d of %d entries differ, e.g. %v", len(bad), len(want), bad[:min(5, len(bad))])
	}
}

// TestMountEndToEnd: as a user would, through the binary.
func TestMountEndToEnd(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		needTools(t, "mkfs.ext4", "e2fsck", "losetup", "cp", "sync")
		const size = 256 * mib
		srv := startTarget(t, kind, targets.LUN{Size: size})
		dir := t.TempDir()
		file, pidFile := lbMount(t, srv.URL(0, 0), dir)
		pid := readPid(t, pidFile)
		if st, err := os.Stat(file); err != nil || st.Size() != size {
			t.Fatalf("stat %s: %v %v", file, st, err)
		}
		runOK(t, 2*time.Minute, "mkfs.ext4", "-q", "-F", file)
		tree := docTree(t, 20*mib)
		want := treeSums(t, tree)
		loop := fusefstest.Losetup(t, file, "--direct-io=on")
		mnt := fusefstest.MountFS(t, loop, "-t", "ext4")
		cp := runOK(t, 2*time.Minute, "cp", "-a", tree, mnt)
		runOK(t, time.Minute, "sync")
		fusefstest.Umount(t, mnt)
		fusefstest.DetachLoop(t, loop)
		fsck(t, file)

		lbOK(t, time.Minute, "umount", "--pid-file", pidFile, dir)
		if isMounted(t, dir) {
			t.Errorf("%s still mounted after lunbridge umount", dir)
		}
		if pidAlive(pid) {
			t.Errorf("mount process %d still alive after lunbridge umount --pid-file", pid)
		}
		if _, err := os.Stat(pidFile); err == nil {
			t.Errorf("pid file left behind")
		}

		img := filepath.Join(scratch(t), "pulled.img")
		lbOK(t, 2*time.Minute, "pull", srv.URL(0, 0), img)
		sameFiles(t, img, srv.BackingFile(0, 0))
		fsck(t, img)
		rloop := fusefstest.Losetup(t, img, "-r")
		rmnt := fusefstest.MountFS(t, rloop, "-t", "ext4", "-o", "ro")
		compareSums(t, treeSums(t, filepath.Join(rmnt, "doc")), want)
		t.Logf("%s: %d entries copied in %v and found intact in the pulled image", kind, len(want), cp.dur.Round(time.Millisecond))
	})
}

// TestMountKill9: after kill -9 of the serving process the mount point is
// stale; the next `lunbridge mount` on it works.
func TestMountKill9(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		const size = 32 * mib
		srv := startTarget(t, kind, targets.LUN{Size: size})
		backing := srv.BackingFile(0, 0)
		fillRandom(t, backing, 0, size, 95)
		dir := t.TempDir()
		file, pidFile := lbMount(t, srv.URL(0, 0), dir)
		if !bytes.Equal(readAt(t, file, 0, mib), readAt(t, backing, 0, mib)) {
			t.Fatalf("first mount reads wrong data")
		}
		pid := readPid(t, pidFile)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); pidAlive(pid); {
			if time.Now().After(deadline) {
				t.Fatalf("mount process %d survived SIGKILL", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := os.Stat(file); !errors.Is(err, syscall.ENOTCONN) {
			t.Logf("after kill -9, stat %s: %v (expected ENOTCONN)", file, err)
		}
		file2, pidFile2 := lbMount(t, srv.URL(0, 0), dir)
		if !bytes.Equal(readAt(t, file2, size-mib, mib), readAt(t, backing, size-mib, mib)) {
			t.Fatalf("second mount reads wrong data")
		}
		writeAt(t, file2, []byte("after kill -9"), 4096)
		lbOK(t, time.Minute, "umount", "--pid-file", pidFile2, dir)
		if got := readAt(t, backing, 4096, 13); string(got) != "after kill -9" {
			t.Errorf("write through the second mount not in the backing file: %q", got)
		}
	})
}

// TestMountPunchHoleThin: fallocate --punch-hole on disk.img over a thin
// tgtd LUN unmaps the range (GET LBA STATUS through the initiator, the
// backing file, and the sparseness of a pull) and reads back zeroes;
// SEEK_DATA/SEEK_HOLE follow the LUN's allocation.
func TestMountPunchHoleThin(t *testing.T) {
	needTools(t, "fallocate")
	const size = 64 * mib
	srv := startTarget(t, targets.KindTgtd, targets.LUN{Size: size, Thin: true})
	backing := srv.BackingFile(0, 0)
	dir := t.TempDir()
	file, pidFile := lbMount(t, srv.URL(0, 0), dir)
	data := randBytes(96, 8*mib)
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	l := openLUN(t, srv, 0, 0)
	if !l.Thin() {
		t.Fatalf("thin tgtd LUN does not report LBPME")
	}
	extentsOf := func(off, n int64) []blockdev.Extent {
		var out []blockdev.Extent
		for pos := off; pos < off+n; {
			e, err := l.Extents(context.Background(), pos, off+n-pos)
			if err != nil {
				t.Fatalf("Extents(%d): %v", pos, err)
			}
			out = append(out, e...)
			pos = e[len(e)-1].Offset + e[len(e)-1].Length
		}
		return out
	}
	hole := func(off, n int64) bool {
		for _, e := range extentsOf(off, n) {
			if e.Flags&blockdev.ExtentHole == 0 {
				return false
			}
		}
		return true
	}
	if !hole(8*mib, size-8*mib) || hole(2*mib, 2*mib) {
		t.Fatalf("before the punch: extents %+v", extentsOf(0, size))
	}
	runOK(t, time.Minute, "fallocate", "--punch-hole", "--offset", "2M", "--length", "2M", file)
	if !hole(2*mib, 2*mib) {
		t.Errorf("punched range not unmapped on the LUN: extents %+v", extentsOf(0, 16*mib))
	}
	if hole(0, 2*mib) || hole(4*mib, 4*mib) {
		t.Errorf("data around the punched range unmapped: extents %+v", extentsOf(0, 16*mib))
	}
	zero := make([]byte, 2*mib)
	if !bytes.Equal(readAt(t, file, 2*mib, 2*mib), zero) {
		t.Errorf("punched range does not read back zeroes through the mount")
	}
	lunData := make([]byte, 2*mib)
	if err := l.ReadAt(context.Background(), lunData, 2*mib); err != nil || !bytes.Equal(lunData, zero) {
		t.Errorf("punched range does not read back zeroes from the LUN: %v", err)
	}
	if !bytes.Equal(readAt(t, file, 0, 2*mib), data[:2*mib]) || !bytes.Equal(readAt(t, file, 4*mib, 4*mib), data[4*mib:]) {
		t.Errorf("data around the punched range changed")
	}
	// tgtd punches its backing file too.
	if bf, err := os.Open(backing); err == nil {
		if h, err := unix.Seek(int(bf.Fd()), 0, unix.SEEK_HOLE); err != nil || h != 2*mib {
			t.Logf("backing file: first hole at %d (%v), expected 2 MiB", h, err)
		}
		bf.Close()
	}

	// SEEK_DATA / SEEK_HOLE on the sparse thin LUN.
	rf, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	fd := int(rf.Fd())
	for _, c := range []struct {
		whence   int
		off, res int64
	}{
		{unix.SEEK_HOLE, 0, 2 * mib},
		{unix.SEEK_DATA, 0, 0},
		{unix.SEEK_DATA, 2 * mib, 4 * mib},
		{unix.SEEK_HOLE, 2*mib + 12345, 2*mib + 12345},
		{unix.SEEK_HOLE, 4 * mib, 8 * mib},
		{unix.SEEK_HOLE, 9 * mib, 9 * mib},
	} {
		if got, err := unix.Seek(fd, c.off, c.whence); err != nil || got != c.res {
			t.Errorf("lseek(%d, whence %d) = %d, %v; want %d", c.off, c.whence, got, err, c.res)
		}
	}
	if got, err := unix.Seek(fd, 8*mib, unix.SEEK_DATA); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("SEEK_DATA from 8 MiB (only holes after it) = %d, %v; want ENXIO", got, err)
	}
	rf.Close()
	lbOK(t, time.Minute, "umount", "--pid-file", pidFile, dir)

	// A pull of the LUN keeps the hole.
	img := filepath.Join(scratch(t), "pulled.img")
	r := lbOK(t, time.Minute, "pull", "--json", srv.URL(0, 0), img)
	var s copySummary
	parseJSON(t, r.stdout, &s)
	if a := allocated(t, img); a > 6*mib || s.HolesBytes < size-6*mib {
		t.Errorf("pulled image allocates %d bytes, holes %d; want ≤ 6 MiB of data", a, s.HolesBytes)
	}
	want := append(append([]byte(nil), data...), make([]byte, size-8*mib)...)
	clear(want[2*mib : 4*mib])
	if !bytes.Equal(readAt(t, img, 0, size), want) {
		t.Errorf("pulled image differs from what was written and punched")
	}
}
