package fusefs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrMounted is returned by ClearStale when a live lunbridge mount sits on
// the directory.
var ErrMounted = errors.New("fusefs: a live lunbridge mount is already there")

// livenessTimeout bounds the stat that tells a live mount from a hung one.
const livenessTimeout = 2 * time.Second

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	point  string
	fstype string
}

// mountsAt lists the mounts whose mountpoint is dir, bottom first.
func mountsAt(dir string) ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		e, ok := parseMountinfo(sc.Text())
		if ok && e.point == dir {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// parseMountinfo parses "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3
// /dev/root rw,errors=continue" (proc(5)).
func parseMountinfo(line string) (mountEntry, bool) {
	fields := strings.Fields(line)
	if len(fields) < 7 {
		return mountEntry{}, false
	}
	for i := 6; i < len(fields)-1; i++ {
		if fields[i] == "-" {
			return mountEntry{point: unescapeMountinfo(fields[4]), fstype: fields[i+1]}, true
		}
	}
	return mountEntry{}, false
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// statAlive asks the file system on dir for its statfs, with a time limit:
// a FUSE mount whose server is hung would block forever. (statfs, unlike
// stat, is never answered from the kernel's attribute cache, so a dead
// connection shows at once.) The error is nil for a live directory,
// ENOTCONN for a dead FUSE connection, os.ErrDeadlineExceeded when hung.
func statAlive(dir string) error {
	done := make(chan error, 1)
	go func() {
		var st syscall.Statfs_t
		done <- syscall.Statfs(dir, &st)
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(livenessTimeout):
		return os.ErrDeadlineExceeded
	}
}

// ClearStale makes dir usable as a mountpoint again after a lunbridge
// process died without unmounting ("transport endpoint is not connected").
// A dead or hung FUSE mount on dir, or a lunbridge mount whose server does
// not answer, is detached lazily (umount2 MNT_DETACH). A live lunbridge
// mount is left alone and reported as ErrMounted. Nothing mounted: nil.
func ClearStale(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("fusefs: %w", err)
	}
	for range 8 { // stacked stale mounts: peel them one by one
		serr := statAlive(abs)
		mounts, err := mountsAt(abs)
		if err != nil {
			return fmt.Errorf("fusefs: read mount table: %w", err)
		}
		top := mountEntry{}
		if len(mounts) > 0 {
			top = mounts[len(mounts)-1]
		}
		switch {
		case errors.Is(serr, syscall.ENOTCONN), errors.Is(serr, syscall.ECONNABORTED):
		case top.fstype == FSType && errors.Is(serr, os.ErrDeadlineExceeded):
		case top.fstype == FSType && serr == nil:
			return fmt.Errorf("%w on %s (run `lunbridge umount %s` first)", ErrMounted, abs, abs)
		case serr != nil && !errors.Is(serr, os.ErrDeadlineExceeded):
			return fmt.Errorf("fusefs: mountpoint %s: %w", abs, serr)
		default:
			return nil
		}
		if err := detach(abs); err != nil {
			return fmt.Errorf("fusefs: clear stale mount on %s: %w (try: umount -l %s)", abs, err, abs)
		}
	}
	return fmt.Errorf("fusefs: %s: too many stale mounts stacked (try: umount -l %s)", abs, abs)
}

// detach lazily unmounts dir: umount2(MNT_DETACH) as root, fusermount3 -uz
// otherwise.
func detach(dir string) error {
	err := syscall.Unmount(dir, syscall.MNT_DETACH)
	if err == nil || !errors.Is(err, syscall.EPERM) {
		return err
	}
	return fusermount(dir, true)
}

func fusermount(dir string, lazy bool) error {
	bin, lerr := exec.LookPath("fusermount3")
	if lerr != nil {
		if bin, lerr = exec.LookPath("fusermount"); lerr != nil {
			return syscall.EPERM
		}
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	out, err := exec.Command(bin, append(args, "--", dir)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Unmount unmounts the lunbridge mount on dir from outside the serving
// process (the `lunbridge umount` command): it fsyncs the files in it (so
// the serving process flushes the device), then unmounts; lazy detaches a
// busy mount instead of failing. The serving process sees the unmount,
// flushes once more and closes its device. A stale mount is cleared.
func Unmount(dir string, lazy bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("fusefs: %w", err)
	}
	mounts, err := mountsAt(abs)
	if err != nil {
		return fmt.Errorf("fusefs: read mount table: %w", err)
	}
	if len(mounts) == 0 {
		return fmt.Errorf("fusefs: %s is not mounted", abs)
	}
	if top := mounts[len(mounts)-1]; top.fstype != FSType {
		return fmt.Errorf("fusefs: %s is a %s mount, not lunbridge", abs, top.fstype)
	}
	serr := statAlive(abs)
	if serr != nil {
		if err := detach(abs); err != nil {
			return fmt.Errorf("fusefs: detach stale mount %s: %w", abs, err)
		}
		return nil
	}
	syncFiles(abs)
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	err = syscall.Unmount(abs, flags)
	if errors.Is(err, syscall.EPERM) {
		err = fusermount(abs, lazy)
	}
	if err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("fusefs: unmount %s: %w (detach loop devices / close users, or use --lazy)", abs, err)
		}
		return fmt.Errorf("fusefs: unmount %s: %w", abs, err)
	}
	return nil
}

// syncFiles fsyncs the regular files directly under dir, best effort, each
// bounded by the liveness timeout.
func syncFiles(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			f, err := os.OpenFile(filepath.Join(dir, e.Name()), os.O_WRONLY, 0)
			if err != nil {
				return
			}
			f.Sync()
			f.Close()
		}()
		select {
		case <-done:
		case <-time.After(flushTimeout):
		}
	}
}
