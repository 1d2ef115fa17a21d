package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev"
)

// DefaultName is the file name used when Options.Name is empty.
const DefaultName = "disk.img"

// FSType is the file system type the mount shows in /proc/self/mountinfo
// ("fuse." + the subtype); ClearStale looks for it.
const FSType = "fuse.lunbridge"

const (
	maxWrite      = 1 << 20 // bytes per READ/WRITE request
	maxBackground = 64      // async requests the kernel keeps in flight
	cacheTimeout  = time.Hour
	flushTimeout  = 30 * time.Second // bound on the flush done by Unmount
)

// Options configure a Mount. The zero value is a writable, direct-I/O mount
// of "disk.img" (mode 0600) visible to the mounting user only.
type Options struct {
	// Name of the file inside the mountpoint (default "disk.img").
	Name string
	// ReadOnly drops the file's write bits (0400 by default) and refuses
	// writes with EROFS. A
	// device that reports ReadOnly() true is always exposed read-only.
	ReadOnly bool
	// Cache uses the kernel page cache instead of direct I/O; see the
	// package documentation for the trade-off.
	Cache bool
	// AllowOther lets other users access the mount (subject to the file's
	// mode: the mount uses default_permissions). Non-root users need
	// user_allow_other in /etc/fuse.conf.
	AllowOther bool
	// Mode is the file's permission bits; zero means 0600, the mounting
	// user only: the file is a whole disk. Write bits are dropped on a
	// read-only mount.
	Mode os.FileMode
	// GID, when set, is the file's group (the mounting user's otherwise);
	// give a Mode that lets the group in, such as 0660.
	GID *uint32
	// Logger receives request errors (debug level) and go-fuse's own
	// diagnostics. Nil means silent.
	Logger *logrus.Entry
}

// MountPoint is a mounted device file, returned by Mount. (The type cannot
// share the function's name.) Its methods are safe for concurrent use.
type MountPoint struct {
	dir    string
	file   string
	dev    blockdev.Device
	io     *blockIO
	server *fuse.Server
	log    *logrus.Entry

	mu        sync.Mutex // serialises Unmount
	unmounted bool
}

// Mount mounts a file system exposing dev as one file at dir and starts
// serving it. It returns once the kernel has the mount. The device stays
// owned by the caller: close it after Wait returns.
func Mount(dir string, dev blockdev.Device, opts Options) (*MountPoint, error) {
	if dev == nil {
		return nil, errors.New("fusefs: nil device")
	}
	if dev.Size() <= 0 {
		return nil, fmt.Errorf("fusefs: device has no capacity (size %d)", dev.Size())
	}
	name := opts.Name
	if name == "" {
		name = DefaultName
	}
	if name == "." || name == ".." || filepath.Base(name) != name || len(name) > 255 {
		return nil, fmt.Errorf("fusefs: invalid file name %q", name)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fusefs: %w", err)
	}
	readOnly := opts.ReadOnly
	if ro, ok := dev.(blockdev.ReadOnlyer); ok && ro.ReadOnly() {
		readOnly = true
	}
	if opts.Mode&^os.ModePerm != 0 {
		return nil, fmt.Errorf("fusefs: mode %v: want permission bits only", opts.Mode)
	}
	mode := uint32(opts.Mode)
	if mode == 0 {
		mode = 0o600
	}
	if readOnly {
		mode &^= 0o222
	}
	gid := uint32(os.Getgid())
	if opts.GID != nil {
		gid = *opts.GID
	}
	bio := newBlockIO(dev)
	now := time.Now()
	file := &fileNode{
		io:       bio,
		readOnly: readOnly,
		cache:    opts.Cache,
		log:      opts.Logger,
		born:     now,
		uid:      uint32(os.Getuid()),
		gid:      gid,
		mode:     mode,
		atime:    now,
		ctime:    now,
	}
	file.mtime.Store(now.UnixNano())
	root := &rootNode{name: name, file: file}

	mo := fuse.MountOptions{
		FsName:        "lunbridge",
		Name:          "lunbridge",
		AllowOther:    opts.AllowOther,
		Options:       []string{"default_permissions"},
		MaxWrite:      maxWrite,
		DisableSplice: true, // with 1 MiB requests splice is slower and logs EINVAL floods
		MaxBackground: maxBackground,
		DisableXAttrs: true, // no GETXATTR(security.capability) round trip per write
		DirectMount:   true, // mount(2) as root, fusermount3 otherwise
		// Without ASYNC_DIO the kernel turns every asynchronous O_DIRECT
		// request (libaio, io_uring, loop devices in direct mode) into a
		// synchronous one: queue depth 1 whatever the application asks.
		ExtraCapabilities: fuse.CAP_ASYNC_DIO,
	}
	if readOnly {
		mo.Options = append(mo.Options, "ro")
	}
	fo := &fs.Options{MountOptions: mo}
	if opts.Cache {
		t := cacheTimeout
		fo.AttrTimeout, fo.EntryTimeout = &t, &t
		fo.MountOptions.MaxReadAhead = 128 << 10
	} else {
		// Attributes never change size; a second of caching is harmless
		// and saves a GETATTR per stat.
		t := time.Second
		fo.AttrTimeout, fo.EntryTimeout = &t, &t
	}
	if opts.Logger != nil {
		w := opts.Logger.WriterLevel(logrus.DebugLevel)
		fo.Logger = log.New(w, "", 0)
		fo.MountOptions.Logger = log.New(w, "", 0)
	} else {
		fo.Logger = log.New(io.Discard, "", 0)
		fo.MountOptions.Logger = log.New(io.Discard, "", 0)
	}
	// go-fuse sizes its pool of request readers — and so how many
	// requests run at once — from GOMAXPROCS when the server is created
	// (2 on a 2-core machine, capped at 16). A block device wants many
	// requests in flight (the iSCSI session pipelines them), so create the
	// server as if there were 16 CPUs and restore the setting at once.
	// (fs.Mount, spelled out so that syncRaw can see each WRITE's flags.)
	raw := &syncRaw{RawFileSystem: fs.NewNodeFS(root, fo), file: file}
	prev := runtime.GOMAXPROCS(16)
	server, err := fuse.NewServer(raw, abs, &fo.MountOptions)
	runtime.GOMAXPROCS(prev)
	if err != nil {
		return nil, explainMountError(abs, err, openDevFuse, exec.LookPath)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		// As fs.Mount: the serve loop ends by itself when the mount failed.
		return nil, explainMountError(abs, err, openDevFuse, exec.LookPath)
	}
	m := &MountPoint{dir: abs, file: filepath.Join(abs, name), dev: dev, io: bio, server: server, log: opts.Logger}
	if m.log != nil {
		m.log.WithFields(logrus.Fields{"dir": abs, "file": name, "size": dev.Size(), "block": bio.bs, "read_only": readOnly, "cache": opts.Cache}).Info("fusefs: mounted")
	}
	return m, nil
}

// Dir is the mountpoint (absolute).
func (m *MountPoint) Dir() string { return m.dir }

// File is the absolute path of the device file.
func (m *MountPoint) File() string { return m.file }

// Unmount flushes the device and unmounts. It fails (and stays mounted)
// when the file is busy — open, or attached to a loop device. The device
// is flushed again once the mount is gone, so no write acknowledged through
// the mount escapes the flush. A flush error is returned but does not stop
// the unmount. Unmount after a successful Unmount is a no-op.
func (m *MountPoint) Unmount() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.unmounted {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	ferr := m.io.Flush(ctx, false)
	if err := m.server.Unmount(); err != nil {
		return fmt.Errorf("fusefs: unmount %s: %w", m.dir, err)
	}
	m.unmounted = true
	if m.io.dirty.Load() {
		ferr = m.io.Flush(ctx, false)
	}
	if ferr != nil {
		return fmt.Errorf("fusefs: flush before unmount of %s: %w", m.dir, ferr)
	}
	if m.log != nil {
		m.log.WithField("dir", m.dir).Info("fusefs: unmounted")
	}
	return nil
}

// Wait blocks until the file system is unmounted, by Unmount or from
// outside (umount, fusermount3 -u, lunbridge umount).
func (m *MountPoint) Wait() { m.server.Wait() }

// Flush flushes the device if anything was written since the last flush.
// The CLI calls it after Wait, before closing the device.
func (m *MountPoint) Flush(ctx context.Context) error {
	return m.io.Flush(ctx, true)
}

// openDevFuse checks that this process may use the FUSE device.
func openDevFuse() error {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// explainMountError turns a failed mount into a sentence that says what is
// missing and how to fix it, instead of fusermount's exit status: no
// usable /dev/fuse, no fusermount3 for a user who is not root. Other
// errors keep their text.
func explainMountError(dir string, err error, devFuse func() error, lookPath func(string) (string, error)) error {
	if derr := devFuse(); derr != nil {
		switch {
		case errors.Is(derr, os.ErrNotExist):
			return fmt.Errorf("cannot mount %s: this system has no /dev/fuse (modprobe fuse; in a container, pass the device in): %w", dir, err)
		case errors.Is(derr, os.ErrPermission):
			return fmt.Errorf("cannot mount %s: this user may not open /dev/fuse: run as root, or give the user access to /dev/fuse (Debian's default is mode 0666): %w", dir, err)
		}
	}
	if os.Geteuid() != 0 {
		if _, lerr := lookPath("fusermount3"); lerr != nil {
			if _, lerr := lookPath("fusermount"); lerr != nil {
				return fmt.Errorf("cannot mount %s as a user that is not root without fusermount3: install the fuse3 package, or run as root: %w", dir, err)
			}
		}
	}
	return fmt.Errorf("cannot mount %s: %w", dir, err)
}
