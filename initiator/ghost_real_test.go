package initiator_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// A backing file whose writes can be held up one at a time, served over
// FUSE to the target daemon. It stands for a slow disk under the target:
// the target's worker thread sits in pwrite(2) for as long as we like.
//
// The file is opened with FOPEN_DIRECT_IO and FOPEN_PARALLEL_DIRECT_WRITES,
// so the kernel neither caches nor serialises writes (no inode lock held
// across the request): a held write does not block a later write to the
// same range, exactly like a disk with several commands in flight. (fusefs
// cannot serve here: it range-locks overlapping writes, which would hide
// the very reordering this test looks for.)

type slowEvent struct {
	at   time.Time
	what string
}

type slowFile struct {
	fs.Inode

	mu     sync.Mutex
	data   []byte
	events []slowEvent
	// hold: the next write whose data starts with holdPrefix sleeps for
	// holdFor before it is applied; entered is closed when it arrives,
	// applied when it has been applied.
	holdPrefix []byte
	holdFor    time.Duration
	entered    chan struct{}
	applied    chan struct{}
	appliedAt  time.Time
}

var (
	_ fs.NodeOpener    = (*slowFile)(nil)
	_ fs.NodeReader    = (*slowFile)(nil)
	_ fs.NodeWriter    = (*slowFile)(nil)
	_ fs.NodeGetattrer = (*slowFile)(nil)
	_ fs.NodeSetattrer = (*slowFile)(nil)
	_ fs.NodeFsyncer   = (*slowFile)(nil)
	_ fs.NodeFlusher   = (*slowFile)(nil)
	_ fs.NodeReleaser  = (*slowFile)(nil)
	_ fs.NodeAllocater = (*slowFile)(nil)
	_ fs.NodeAccesser  = (*slowFile)(nil)
	_ fs.NodeOnAdder   = (*slowRoot)(nil)
	_ fs.NodeGetattrer = (*slowRoot)(nil)
)

// arm makes the next write starting with prefix sleep d before landing.
func (f *slowFile) arm(prefix []byte, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holdPrefix, f.holdFor = prefix, d
	f.entered, f.applied = make(chan struct{}), make(chan struct{})
}

func (f *slowFile) event(format string, args ...any) {
	f.events = append(f.events, slowEvent{time.Now(), fmt.Sprintf(format, args...)})
}

func (f *slowFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES, 0
}

func (f *slowFile) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }
func (f *slowFile) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno   { return 0 }
func (f *slowFile) Access(ctx context.Context, mask uint32) syscall.Errno       { return 0 }
func (f *slowFile) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}

func (f *slowFile) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	f.mu.Lock()
	f.event("fsync")
	f.mu.Unlock()
	return 0
}

func (f *slowFile) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	return syscall.EOPNOTSUPP
}

func (f *slowFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	out.Mode = syscall.S_IFREG | 0o600
	out.Size = uint64(len(f.data))
	out.Blocks = out.Size / 512
	out.Blksize = 4096
	return 0
}

func (f *slowFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && sz != uint64(len(f.data)) {
		return syscall.EPERM // the size is fixed
	}
	return f.Getattr(ctx, fh, out)
}

func (f *slowFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off >= int64(len(f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, f.data[off:])
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *slowFile) Write(ctx context.Context, fh fs.FileHandle, p []byte, off int64) (uint32, syscall.Errno) {
	if off < 0 || off+int64(len(p)) > int64(len(f.data)) {
		return 0, syscall.ENOSPC
	}
	tag := string(bytes.TrimRight(p[:min(len(p), 8)], "\x00"))
	f.mu.Lock()
	var hold time.Duration
	var applied chan struct{}
	if f.holdPrefix != nil && bytes.HasPrefix(p, f.holdPrefix) {
		hold, applied = f.holdFor, f.applied
		f.holdPrefix = nil
		f.event("write %q at %d entered; held for %v", tag, off, hold)
		close(f.entered)
	}
	f.mu.Unlock()
	// The held write ignores ctx on purpose: nothing cancels a disk
	// write that is already on its way.
	time.Sleep(hold)
	f.mu.Lock()
	copy(f.data[off:], p)
	f.event("write %q at %d applied", tag, off)
	if applied != nil {
		f.appliedAt = time.Now()
	}
	f.mu.Unlock()
	if applied != nil {
		close(applied)
	}
	return uint32(len(p)), 0
}

type slowRoot struct {
	fs.Inode
	file *slowFile
}

func (r *slowRoot) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, r.file, fs.StableAttr{Mode: syscall.S_IFREG})
	r.AddChild("disk.img", ch, false)
}

func (r *slowRoot) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o755
	return 0
}

// mountSlowFile serves a file of size bytes at DIR/disk.img and unmounts
// it at the end of the test (after the target, registered later, stopped).
func mountSlowFile(t *testing.T, size int) (*slowFile, string) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Unavailable(t, "/dev/fuse: %v", err)
	}
	dir, err := os.MkdirTemp("", "lunbridge-slowfile-")
	if err != nil {
		t.Fatal(err)
	}
	f := &slowFile{data: make([]byte, size)}
	sec := time.Second
	opts := &fs.Options{
		AttrTimeout:  &sec,
		EntryTimeout: &sec,
		MountOptions: fuse.MountOptions{
			FsName:        "lunbridge-slow",
			Name:          "lunbridge-slow",
			DirectMount:   true,
			DisableXAttrs: true,
			MaxWrite:      1 << 20,
			DisableSplice: true,
		},
	}
	// go-fuse sizes its pool of request readers from GOMAXPROCS; a held
	// write must not starve the others.
	prev := runtime.GOMAXPROCS(16)
	server, err := fs.Mount(dir, &slowRoot{file: f}, opts)
	runtime.GOMAXPROCS(prev)
	if err != nil {
		os.Remove(dir)
		if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.ENODEV) {
			testenv.Unavailable(t, "FUSE mount: %v", err)
		}
		t.Fatalf("FUSE mount: %v", err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmount %s: %v; detaching lazily", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
		done := make(chan struct{})
		go func() { server.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("FUSE server for %s still running 10s after unmount", dir)
		}
		os.Remove(dir)
	})
	return f, filepath.Join(dir, "disk.img")
}

// ghostHold is how long the backend holds the old session's write. It
// must dwarf loopback latencies (a recovery takes a few ms on tgtd).
const ghostHold = 2 * time.Second

const (
	ghostSize = 8 << 20
	ghostOff  = 1 << 20 // the block both writes go to
)

var (
	ghostA = append([]byte("GHOST-A"), bytes.Repeat([]byte{'A'}, 4096-7)...)
	ghostB = append([]byte("NEWER-B"), bytes.Repeat([]byte{'B'}, 4096-7)...)
)

// ghostRun is what one run saw, times measured from the connection reset.
type ghostRun struct {
	final  byte          // last byte of the block: 'A' (the old write landed last) or 'B'
	login  time.Duration // the reinstating login answered
	ackB   time.Duration // the newer write acknowledged
	landed time.Duration // the held write applied by the backend
	events []string
}

func (r ghostRun) String() string {
	return fmt.Sprintf("block holds %q; after the reset: login answered %v, newer write acked %v, old write landed %v\n%s",
		r.final, r.login.Round(time.Millisecond), r.ackB.Round(time.Millisecond), r.landed.Round(time.Millisecond), strings.Join(r.events, "\n"))
}

// ghostSetup serves a held-write file to a target of kind behind a fault
// proxy.
func ghostSetup(t *testing.T, kind string) (*slowFile, *targets.Server, *faultproxy.Proxy) {
	t.Helper()
	requireKind(t, kind)
	file, path := mountSlowFile(t, ghostSize)
	srv := startKind(t, kind, targets.Target{Name: "iqn.2026-12.org.lunbridge.test:ghost", LUNs: []targets.LUN{{Size: ghostSize, BackingFile: path}}})
	px, err := faultproxy.New(srv.Portal)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	return file, srv, px
}

// holdAndReset writes A through l, waits until the backend holds it, and
// resets every connection. It returns the reset time and A's outcome.
func holdAndReset(t *testing.T, ctx context.Context, file *slowFile, px *faultproxy.Proxy, l *initiator.LUN) (time.Time, <-chan error) {
	t.Helper()
	file.arm(ghostA[:7], ghostHold)
	errA := make(chan error, 1)
	go func() { errA <- l.WriteAt(ctx, ghostA, ghostOff, false) }()
	select {
	case <-file.entered:
	case err := <-errA:
		t.Fatalf("write A finished before the backend held it: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatalf("write A never reached the backing file")
	}
	t0 := time.Now()
	px.ResetAll()
	return t0, errA
}

// finish waits for the held write to land and fills in the outcome.
func (r *ghostRun) finish(t *testing.T, ctx context.Context, file *slowFile, t0 time.Time) {
	t.Helper()
	select {
	case <-file.applied:
	case <-ctx.Done():
		t.Fatalf("the held write never landed")
	}
	file.mu.Lock()
	defer file.mu.Unlock()
	r.landed = file.appliedAt.Sub(t0)
	r.final = file.data[ghostOff+len(ghostA)-1]
	for _, e := range file.events {
		r.events = append(r.events, fmt.Sprintf("  %+6.0fms %s", float64(e.at.Sub(t0))/float64(time.Millisecond), e.what))
	}
}

// TestReinstatementTargetGuarantee characterises the targets themselves,
// without lunbridge's recovery: session 1 writes A, the backend holds it,
// the connection is reset; session 2 logs in with the same ISID (session
// reinstatement) and writes B to the same block with a plain SIMPLE
// command. Does the target finish the old session's backend I/O before it
// answers the login (or at least before B)? docs/architecture.md records
// the answer; this test fails when a target's behaviour changes.
//
//   - tgtd: no. It answers the login at once; the old write lands after B
//     (its bs_rdwr threads are not waited for: tgt usr/iscsi/conn.c).
//   - istgt: yes.
func TestReinstatementTargetGuarantee(t *testing.T) {
	testenv.RequireRoot(t)
	for _, kind := range []string{targets.KindTgtd, targets.KindIstgt} {
		t.Run(kind, func(t *testing.T) {
			file, srv, px := ghostSetup(t, kind)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cfg := config(srv, 0, variant{})
			cfg.Portal = px.Addr()
			cfg.NoRecovery = true
			cfg.ISID = initiator.NewISID()
			s1, l1 := openLUN(t, ctx, srv, 0, 0, cfg)
			defer s1.Close()
			t0, errA := holdAndReset(t, ctx, file, px, l1)
			if err := <-errA; err == nil {
				t.Fatalf("write A succeeded over a reset connection without recovery")
			}
			s2, err := initiator.Dial(ctx, cfg) // same ISID, TSIH 0: reinstatement
			if err != nil {
				t.Fatalf("reinstating login: %v\n%s", err, srv.LogTail(20))
			}
			defer s2.Close()
			var r ghostRun
			r.login = time.Since(t0)
			f := scsi.EncodeLUN(uint64(srv.LUNNumber(0)))
			bs := l1.BlockSize()
			cmd := &initiator.Command{LUN: binary.BigEndian.Uint64(f[:]), CDB: scsi.Write10(uint32(ghostOff/bs), uint16(len(ghostB)/bs), false), Write: ghostB}
			for try := 0; ; try++ {
				resp, err := s2.Do(ctx, cmd)
				if err != nil {
					t.Fatalf("write B: %v", err)
				}
				if resp.Status == 0 {
					break
				}
				if try > 8 {
					t.Fatalf("write B: status %#x sense %x", resp.Status, resp.Sense)
				}
				// CHECK CONDITION: the UNIT ATTENTION of the new nexus.
			}
			r.ackB = time.Since(t0)
			r.finish(t, ctx, file, t0)
			t.Logf("%s: %v", kind, r)
			switch kind {
			case targets.KindTgtd:
				if r.final != 'A' || r.login > ghostHold/2 {
					t.Fatalf("tgtd now waits for the old session's backend I/O (%v): update docs/architecture.md", r)
				}
			default:
				if r.final != 'B' {
					t.Fatalf("%s let the old session's write land after the reinstated session's newer write: %v", kind, r)
				}
			}
		})
	}
}

// TestRecoveryNoGhostWrite is the end-to-end guarantee: a write in the
// target's backend when the connection dies, the session recovered by
// reinstatement, the write re-issued and acknowledged, then a newer write
// to the same block acknowledged: the block must end up holding the newer
// write, on every target — on tgtd only because recovery drains the LU's
// task set (barrier.go) before callers' I/O resumes.
func TestRecoveryNoGhostWrite(t *testing.T) {
	testenv.RequireRoot(t)
	for _, kind := range []string{targets.KindTgtd, targets.KindIstgt} {
		t.Run(kind, func(t *testing.T) {
			file, srv, px := ghostSetup(t, kind)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cfg := config(srv, 0, variant{})
			cfg.Portal = px.Addr()
			cfg.ReplacementTimeout = 20 * time.Second
			s, err := initiator.Dial(ctx, cfg)
			if err != nil {
				t.Fatalf("login: %v\n%s", err, srv.LogTail(20))
			}
			defer s.Close()
			// Registered before the LUN's own checks: runs right after
			// the reinstating login.
			var loginAt atomic.Int64
			s.OnReconnect(func(context.Context) error { loginAt.Store(time.Now().UnixNano()); return nil })
			l, err := initiator.OpenLUN(ctx, s, uint64(srv.LUNNumber(0)))
			if err != nil {
				t.Fatalf("open LUN: %v", err)
			}
			t0, errA := holdAndReset(t, ctx, file, px, l)
			if err := <-errA; err != nil {
				t.Fatalf("write A (re-issued by recovery): %v", err)
			}
			if err := l.WriteAt(ctx, ghostB, ghostOff, false); err != nil {
				t.Fatalf("write B: %v", err)
			}
			var r ghostRun
			r.ackB = time.Since(t0)
			r.login = time.Unix(0, loginAt.Load()).Sub(t0)
			r.finish(t, ctx, file, t0)
			got := make([]byte, len(ghostB))
			if err := l.ReadAt(ctx, got, ghostOff); err != nil {
				t.Fatalf("read back: %v", err)
			}
			t.Logf("%s (recovery %v): %v", kind, s.Recovery().LastDuration.Round(time.Millisecond), r)
			if r.final != 'B' || !bytes.Equal(got, ghostB) {
				t.Fatalf("%s: the old session's write landed after a newer acknowledged write (ghost write): %v", kind, r)
			}
		})
	}
}

// After a recovery, a LUN handle first sends a TEST UNIT READY with the
// ORDERED task attribute and holds callers' I/O until it is answered: the
// re-issued write reaches the new connection only after the barrier (the
// fake target answers the barrier late, as tgtd does while an old write is
// still in its backend).
func TestRecoveryOrderedBarrier(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	var recovered atomic.Bool
	note := func(s string) {
		mu.Lock()
		seen = append(seen, s)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	e := newEnv(t, faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, data []byte) bool {
		if !recovered.Load() {
			return false
		}
		if cmd.CDB[0] == 0x00 && cmd.Attr == pdu.AttrOrdered {
			note("ORDERED TEST UNIT READY")
			itt := cmd.ITT
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(300 * time.Millisecond)
				note("ORDERED TEST UNIT READY answered")
				_ = c.SendStatus(itt, 0, nil)
			}()
			return true
		}
		note(fmt.Sprintf("opcode %#02x attr %d", cmd.CDB[0], cmd.Attr))
		return false
	}}, func(c *initiator.Config) { c.NoRecovery = false; c.ReplacementTimeout = 10 * time.Second })
	l, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	recovered.Store(true)
	e.c.Close()
	if err := l.WriteAt(e.ctx, make([]byte, 512), 0, false); err != nil {
		t.Fatalf("write across a connection loss: %v", err)
	}
	mu.Lock()
	got := append([]string(nil), seen...)
	mu.Unlock()
	t.Logf("commands after the loss: %q", got)
	if len(got) < 3 || got[0] != "ORDERED TEST UNIT READY" || got[1] != "ORDERED TEST UNIT READY answered" {
		t.Fatalf("after recovery the first command must be an ORDERED TEST UNIT READY, answered before anything else: %q", got)
	}
	if last := got[len(got)-1]; last != "opcode 0x2a attr 1" {
		t.Fatalf("the re-issued WRITE(10) should come last, after the checks: %q", got)
	}
	e.noViolations()
}
