package mirror

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/filedev"
	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

func openLUN(t *testing.T, srv *targets.Server) *initiator.LUN {
	t.Helper()
	u, err := discovery.ParseURL(srv.URL(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := initiator.Dial(ctx, initiator.Config{
		InitiatorName: "iqn.2026-11.org.lunbridge:mirror-test", TargetName: u.Target, Portal: u.Portal,
		ReplacementTimeout: 2 * time.Second, NopInterval: time.Second, NopTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := initiator.OpenLUN(ctx, s, u.LUN)
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	l.SetOwnsSession(true)
	return l
}

func sameFiles(t *testing.T, a, b string, n int64) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	x, y := make([]byte, 4<<20), make([]byte, 4<<20)
	for off := int64(0); off < n; off += int64(len(x)) {
		k := min(int64(len(x)), n-off)
		if _, err := io.ReadFull(io.NewSectionReader(fa, off, k), x[:k]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(io.NewSectionReader(fb, off, k), y[:k]); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x[:k], y[:k]) {
			t.Fatalf("backing files differ in [%d, %d)", off, off+k)
		}
	}
}

// TestRealTargetsLegLossAndIncrementalResync: tgtd is SAN A, istgt SAN B.
func TestRealTargetsLegLossAndIncrementalResync(t *testing.T) {
	const lunSize = 256 << 20
	srvA := targets.StartTgtd(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}}})
	srvB := targets.StartIstgt(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}}})
	ctx := context.Background()
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	opts := Options{BitmapIdle: time.Second, Logger: logrus.NewEntry(log)}
	m, err := Create(ctx, openLUN(t, srvA), openLUN(t, srvB), CreateOptions{Options: opts, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	md := newModel(m.Size())
	stop := make(chan struct{})
	done := make(chan struct{})
	var n int64
	var errs []error
	const region = 32 << 20 // the workload's working set: 8 of 64 chunks
	go func() { n, errs = md.workload(ctx, m, 8, region, stop); close(done) }()
	time.Sleep(time.Second)
	t.Log("stopping target B (istgt) mid-write")
	srvB.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for m.Status().State != "degraded" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if st := m.Status(); st.State != "degraded" {
		t.Fatalf("leg B not failed: %+v", st)
	}
	time.Sleep(2 * time.Second) // keep writing degraded
	srvB.Restart(t)
	if err := m.Reattach(ctx, openLUN(t, srvB)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	<-done
	if len(errs) > 0 {
		t.Fatalf("caller saw %d errors: %v", len(errs), errs[0])
	}
	st := waitSync(t, m)
	t.Logf("%d writes, 0 errors; %s resync copied %d of %d bytes (%.1f%% of the LUN) at %.1f MB/s",
		n, st.Resync.Mode, st.BytesResynced, m.Size(), 100*float64(st.BytesResynced)/float64(m.Size()), st.Resync.MBPerSec)
	if st.Resync.Mode != "incremental" || st.BytesResynced == 0 || st.BytesResynced > region+m.ChunkSize() {
		t.Fatalf("resync not incremental: %+v", st.Resync)
	}
	got := readAll(t, m, m.Size())
	if !bytes.Equal(got, md.data) {
		t.Fatal("workload verify failed")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, srvA.BackingFile(0, 0), srvB.BackingFile(0, 0), m.Size())
}

// TestExt4OnEitherLeg: mkfs.ext4 through a mirror of two files, then
// e2fsck each leg's file alone.
func TestExt4OnEitherLeg(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s: %v", tool, err)
		}
	}
	dir, err := os.MkdirTemp("/dev/shm", "mirror-ext4-")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	var legs [2]blockdev.Device
	var paths [2]string
	for i := range legs {
		paths[i] = filepath.Join(dir, "leg"+legName(i)+".img")
		if err := os.WriteFile(paths[i], nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Truncate(paths[i], 128<<20)
		f, err := filedev.Open(paths[i], 512, false)
		if err != nil {
			t.Fatal(err)
		}
		legs[i] = f
	}
	m, err := Create(ctx, legs[0], legs[1], CreateOptions{AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	// mkfs writes to a plain file: stage the image, then push it through
	// the mirror (the mirror is the only writer of the legs).
	img := filepath.Join(dir, "fs.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, m.Size())
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < m.Size(); off += 1 << 20 {
		k := min(1<<20, m.Size()-off)
		if err := m.WriteAt(ctx, data[off:off+k], off, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		out, err := exec.Command("e2fsck", "-fn", p).CombinedOutput()
		if err != nil {
			t.Fatalf("e2fsck -fn %s: %v\n%s", p, err, out)
		}
		t.Logf("e2fsck -fn leg %s: clean", filepath.Base(p))
	}
}

// TestRealTargetsReservation (issue 20 item 1): with Reserve, the owner
// holds Write Exclusive – Registrants Only on both legs (tgtd and istgt):
// a second, unregistered session's write fails with RESERVATION CONFLICT
// (status 0x18) while its reads succeed; a clean Close releases both.
func TestRealTargetsReservation(t *testing.T) {
	const lunSize = 64 << 20
	srvs := []*targets.Server{
		targets.StartTgtd(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}}}),
		targets.StartIstgt(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}}}),
	}
	ctx := context.Background()
	opts := Options{Reserve: true}
	m, err := Create(ctx, openLUN(t, srvs[0]), openLUN(t, srvs[1]), CreateOptions{Options: opts, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	if m.reserved != [2]bool{true, true} {
		t.Fatalf("legs reserved: %v", m.reserved)
	}
	p := bytes.Repeat([]byte{0x77}, 4096)
	if err := m.WriteAt(ctx, p, 0, true); err != nil {
		t.Fatalf("owner's write: %v", err)
	}
	var others []*initiator.LUN
	for i, srv := range srvs {
		o := openLUN(t, srv)
		defer o.Close()
		others = append(others, o)
		err := o.WriteAt(ctx, make([]byte, 4096), 0, true)
		var st interface{ ScsiStatus() uint8 }
		if !errors.As(err, &st) || st.ScsiStatus() != 0x18 {
			t.Fatalf("leg %s: second session's write: %v, want RESERVATION CONFLICT (0x18)", legName(i), err)
		}
		got := make([]byte, 4096)
		if err := o.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("leg %s: second session's read: %v", legName(i), err)
		}
		t.Logf("%s: second session's write: %v; its read succeeds", srv.Kind, err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for i, o := range others {
		if err := o.WriteAt(ctx, p, 0, true); err != nil {
			t.Fatalf("leg %s: write after the owner's Close: %v", legName(i), err)
		}
	}
}
