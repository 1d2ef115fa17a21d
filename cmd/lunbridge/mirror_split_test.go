package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// hotWriter writes random ranges of [lo, hi) one at a time, logging each
// with the ticks taken before it was issued and after it was acknowledged.
type hotWriter struct {
	lo, hi int64
	rng    *rand.Rand
	log    []hotWrite
}

type hotWrite struct {
	off        int64
	data       []byte
	issue, ack uint64
}

func (w *hotWriter) run(m *mirror.Mirror, tick *atomic.Uint64, stop <-chan struct{}) error {
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		n := (w.rng.Int63n(32) + 1) * 512
		off := w.lo + w.rng.Int63n((w.hi-w.lo-n)/512)*512
		p := make([]byte, n)
		w.rng.Read(p)
		issue := tick.Add(1)
		if err := m.WriteAt(context.Background(), p, off, false); err != nil {
			return err
		}
		w.log = append(w.log, hotWrite{off, p, issue, tick.Add(1)})
	}
}

// TestCLIMirrorSplitPull (issue 20 item 5) at the CLI: with writers
// running into a mirror on two file legs (this process owns it and serves
// its control socket, as serve does), `mirror split B` returns once B is
// frozen; `mirror status` shows it split and since when; `pull
// --mirror-leg` of leg B beside the owner copies exactly the exported range
// and writes nothing to B; the image holds, for every writer, every write
// acknowledged before the split command started and none issued after it
// returned; `mirror rejoin B` resyncs only the chunks written since the
// split and the legs end identical.
func TestCLIMirrorSplitPull(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	const chunk = 1 << 20
	m, paths := fileMirror(t, ctx, dir, 64<<20, chunk)
	defer m.Close()
	size := m.Size()
	img := make([]byte, size) // the whole disk written: every chunk dirty
	rand.New(rand.NewSource(2)).Read(img)
	if err := m.WriteAt(ctx, img, 0, false); err != nil {
		t.Fatal(err)
	}

	sock := filepath.Join(dir, "control.sock")
	go serveControlOn(ctx, sock, &controlTarget{mirror: m})
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("control socket not up")
		}
		time.Sleep(10 * time.Millisecond)
	}

	const nw = 3
	per := size / nw / chunk * chunk
	ws := make([]*hotWriter, nw)
	for k := range ws {
		ws[k] = &hotWriter{lo: int64(k) * per, hi: int64(k)*per + chunk*3/2, rng: rand.New(rand.NewSource(int64(k) + time.Now().UnixNano()))}
	}
	var tick atomic.Uint64
	run := func() (chan struct{}, *sync.WaitGroup) {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := w.run(m, &tick, stop); err != nil {
					t.Errorf("write: %v", err)
				}
			}()
		}
		return stop, &wg
	}
	stop, wg := run()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	time.Sleep(100 * time.Millisecond)

	before := tick.Add(1)
	r := lbRun(t, 60*time.Second, nil, "mirror", "split", "--control-socket", sock, "B")
	after := tick.Add(1)
	if r.code != 0 || !strings.Contains(r.stdout, "leg B split since") {
		t.Fatalf("mirror split B: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("mirror split B:\n%s", r.stdout)
	r = lbRun(t, 60*time.Second, nil, "mirror", "status", "--json", "--control-socket", sock)
	var v mirrorView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Legs[1].State != "split" || v.Legs[1].SplitSince.IsZero() || v.Size != size {
		t.Fatalf("mirror status: %v\n%s", err, r.stdout)
	}

	bBefore, err := os.ReadFile(paths[1])
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "b-backup.img")
	r = lbRun(t, 120*time.Second, nil, "pull", "--mirror-leg", "file://"+paths[1], out)
	if r.code != 0 || strings.Contains(r.stderr, "not split off") {
		t.Fatalf("pull --mirror-leg of the split leg: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	bAfter, err := os.ReadFile(paths[1])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bBefore, bAfter) {
		t.Fatal("leg B changed while split (by the pull or the mirror)")
	}
	if int64(len(got)) != size || !bytes.Equal(got, bAfter[:size]) {
		t.Fatalf("pulled %d bytes, want leg B's exported %d bytes", len(got), size)
	}
	// A leg still written is read with a warning.
	r = lbRun(t, 120*time.Second, nil, "pull", "--mirror-leg", "file://"+paths[0], filepath.Join(dir, "a-live.img"))
	if r.code != 0 || !strings.Contains(r.stderr, "not split off") {
		t.Fatalf("pull --mirror-leg of the live leg: exit %d, stderr:\n%s", r.code, r.stderr)
	}

	close(stop)
	wg.Wait()
	dirty := map[int64]bool{}
	prefix := make([]int, nw)
	for k, w := range ws {
		kmin, kmax := 0, 0
		for _, wr := range w.log {
			if wr.ack < before {
				kmin++
			}
			if wr.issue < after {
				kmax++
			}
		}
		for _, wr := range w.log[:kmin] {
			copy(img[wr.off:], wr.data)
		}
		found := -1
		for j := kmin; j <= kmax; j++ {
			if bytes.Equal(got[w.lo:w.hi], img[w.lo:w.hi]) {
				found = j
				break
			}
			if j < kmax {
				copy(img[w.log[j].off:], w.log[j].data)
			}
		}
		if found < 0 {
			t.Fatalf("writer %d: the pulled image holds no prefix of its writes between %d (acknowledged before the split) and %d (issued before it returned)", k, kmin, kmax)
		}
		prefix[k] = found
		for _, wr := range w.log[found:] {
			for c := wr.off / chunk; c <= (wr.off+int64(len(wr.data))-1)/chunk; c++ {
				dirty[c] = true
			}
		}
	}
	if !bytes.Equal(got, img) {
		t.Fatal("pulled image differs from the acknowledged writes at the split outside the writers' areas")
	}

	r = lbRun(t, 60*time.Second, nil, "mirror", "rejoin", "--json", "--control-socket", sock, "B")
	var rep controlReply
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil || !rep.OK {
		t.Fatalf("mirror rejoin B: exit %d, %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if res := rep.Mirror.Resync; res == nil || res.Mode != "incremental" || res.TotalChunks != int64(len(dirty)) {
		t.Fatalf("rejoin resync %+v, want incremental of the %d chunks written since the split (of %d)", res, len(dirty), v.Chunks)
	}
	stop, wg = run()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := m.WaitResync(wctx, time.Second, nil); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	for k, w := range ws {
		for _, wr := range w.log[prefix[k]:] {
			copy(img[wr.off:], wr.data)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[:size], img) {
			t.Fatalf("leg %c differs from the acknowledged writes after the rejoin", 'A'+i)
		}
	}
}

// TestServeMirrorSplitRealTargets (issue 20 item 5, "Done when"): serve
// --mirror over a tgtd LUN (leg A) and an istgt LUN (leg B) under a 4 KiB random-write load through NBD;
// `mirror split B`, then `pull --mirror-leg` of leg B's URL (a second
// initiator, beside serve's persistent reservation) while the writes go
// on: the image is leg B's frozen exported range, holding every write
// acknowledged before the split and none issued after it; `mirror rejoin
// B` copies only the chunks written since, and the backing files end
// identical, serve never restarted.
func TestServeMirrorSplitRealTargets(t *testing.T) {
	const lunSize = 64 << 20
	srvA := targets.StartTgtd(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}}})
	srvB := targets.StartIstgt(t, targets.Target{LUNs: []targets.LUN{{Size: lunSize}}})
	ctx := context.Background()
	m, err := mirror.Create(ctx, dialLUN(t, srvA), dialLUN(t, srvB), mirror.CreateOptions{ChunkSize: 1 << 20, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	size, chunk := m.Size(), m.ChunkSize()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	env := []string{"XDG_RUNTIME_DIR=" + dir, "LUNBRIDGE_ISID_LOCK_DIR=" + filepath.Join(dir, "isid")}
	sock, ctl := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "control.sock")
	p := startServe(t, env, "serve", "--listen", "unix:"+sock, "--persistent", "--control-socket", ctl,
		"--mirror", srvB.URL(0, 0), srvA.URL(0, 0))
	nc := nbdHold(t, "unix", sock)
	defer nc.Close()

	// One writer, 4 KiB random writes in the first 16 MiB, each logged
	// with the ticks before its issue and after its acknowledgement.
	const region = 16 << 20
	w := &nbdWriter{c: nc}
	var tick atomic.Uint64
	var mu sync.Mutex
	var log []hotWrite
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewSource(1))
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			off := rng.Int63n(region/4096) * 4096
			buf := make([]byte, 4096)
			rng.Read(buf)
			issue := tick.Add(1)
			if err := w.write(buf, off); err != nil {
				done <- err
				return
			}
			mu.Lock()
			log = append(log, hotWrite{off, buf, issue, tick.Add(1)})
			mu.Unlock()
		}
	}()
	time.Sleep(time.Second)

	before := tick.Add(1)
	r := lbRun(t, 60*time.Second, env, "mirror", "split", "--control-socket", ctl, "B")
	after := tick.Add(1)
	if r.code != 0 || !strings.Contains(r.stdout, "leg B split since") {
		t.Fatalf("mirror split B: exit %d\n%s\n%s\nserve: %s", r.code, r.stdout, r.stderr, p.stderr)
	}
	time.Sleep(500 * time.Millisecond) // writes go on to leg A only
	bBefore, err := os.ReadFile(srvB.BackingFile(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "b-backup.img")
	r = lbRun(t, 120*time.Second, env, "pull", "--mirror-leg", srvB.URL(0, 0), out)
	if r.code != 0 || strings.Contains(r.stderr, "not split off") {
		t.Fatalf("pull --mirror-leg of split leg B: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	bAfter, err := os.ReadFile(srvB.BackingFile(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bBefore, bAfter) {
		t.Fatal("leg B's backing file changed while split (by the pull or serve)")
	}
	if int64(len(got)) != size || !bytes.Equal(got, bAfter[:size]) {
		t.Fatalf("pulled %d bytes, want leg B's exported %d bytes", len(got), size)
	}
	mu.Lock()
	hist := append([]hotWrite(nil), log...)
	mu.Unlock()
	kmin, kmax := 0, 0
	for _, wr := range hist {
		if wr.ack < before {
			kmin++
		}
		if wr.issue < after {
			kmax++
		}
	}
	img := make([]byte, size)
	for _, wr := range hist[:kmin] {
		copy(img[wr.off:], wr.data)
	}
	found := -1
	for j := kmin; j <= kmax; j++ {
		if bytes.Equal(got, img) {
			found = j
			break
		}
		if j < kmax {
			copy(img[hist[j].off:], hist[j].data)
		}
	}
	if found < 0 {
		t.Fatalf("the pulled image holds no prefix of the writes between %d (acknowledged before the split) and %d (issued before it returned)", kmin, kmax)
	}

	r = lbRun(t, 60*time.Second, env, "mirror", "rejoin", "--json", "--control-socket", ctl, "B")
	var rep controlReply
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil || !rep.OK || rep.Mirror.Resync == nil {
		t.Fatalf("mirror rejoin B: exit %d, %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	res := rep.Mirror.Resync
	var v *mirrorView
	for start := time.Now(); ; {
		v = liveMirror(t, ctl)
		if v.Legs[0].State == "in-sync" && v.Legs[1].State == "in-sync" && v.State != "resyncing" {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("leg B not back in sync 60 s after the rejoin: %+v", v.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("writes through serve failed: %v", err)
	}
	// Only chunks written since the split: within the writer's region,
	// and no more than it touched after the writes B holds.
	mu.Lock()
	touched := map[int64]bool{}
	for _, wr := range log[found:] {
		touched[wr.off/chunk] = true
	}
	final := append([]hotWrite(nil), log...)
	mu.Unlock()
	t.Logf("split: %d writes on B (%d acknowledged before the split, %d issued before it returned); rejoin resync %s of %d chunks (of %d), %d touched since the split",
		found, kmin, kmax, res.Mode, res.TotalChunks, v.Chunks, len(touched))
	if res.Mode != "incremental" || res.TotalChunks == 0 || res.TotalChunks > int64(len(touched)) || res.TotalChunks > region/chunk {
		t.Fatalf("rejoin resync %+v, want incremental of at most the %d chunks written since the split", res, len(touched))
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("serve exit %d; stderr: %s", code, p.stderr)
	}
	sameBacking(t, srvA.BackingFile(0, 0), srvB.BackingFile(0, 0), size)
	for _, wr := range final[found:] {
		copy(img[wr.off:], wr.data)
	}
	a, err := os.ReadFile(srvA.BackingFile(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a[:size], img) {
		t.Fatal("leg A does not hold what the NBD client was told is written")
	}
}
