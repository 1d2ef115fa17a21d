package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// SIGKILL `lunbridge serve --mirror` in the middle of writes: the legs are
// left with dirty bits; the next assembly (mirror resync) copies only the
// chunks the bitmap marks, and afterwards both legs hold the same bytes —
// including every write the NBD client was told had completed.
func TestMirrorKill9Resync(t *testing.T) {
	testenv.RequireRoot(t)
	qemuIO := tool(t, "qemu-io")
	const size = 64 << 20
	a := targets.StartTgtd(t, targets.Target{LUNs: []targets.LUN{{Size: size}}})
	b := targets.StartIstgt(t, targets.Target{LUNs: []targets.LUN{{Size: size}}})
	urlA, urlB := a.URL(0, 0), b.URL(0, 0)
	lbOK(t, time.Minute, "mirror", "create", "--assume-clean", "--chunk", "1M", "--yes", urlA, urlB)

	sock := filepath.Join(scratch(t), "m.sock")
	srv := start(t, lbPath, "serve", "--mirror", urlB, "--listen", "unix:"+sock, "--persistent",
		"--shared", "4", "--control-socket", "", urlA)
	uri := srv.line(t, 60*time.Second)

	// Acknowledged writes: 8 chunks' worth of patterns, each confirmed by
	// qemu-io's exit status before the next.
	for i := 0; i < 8; i++ {
		off := int64(i) * 5 << 20
		lbRunTool(t, qemuIO, "-f", "raw", "-c", fmt.Sprintf("write -P %d %d 256k", 0x40+i, off), uri)
	}
	// Then kill -9 while more writes are in flight.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bg := exec.CommandContext(ctx, qemuIO, "-f", "raw", "-c", "write -P 0x77 40M 8M", uri)
	bg.Start()
	time.Sleep(150 * time.Millisecond)
	srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.done
	bg.Wait()

	var st struct {
		DirtyChunks int64 `json:"dirty_chunks"`
		Chunks      int64 `json:"chunks"`
		ChunkSize   int64 `json:"chunk_size"`
		Size        int64 `json:"size"`
	}
	out := lbOK(t, time.Minute, "mirror", "status", "--json", urlA, urlB)
	if err := json.Unmarshal([]byte(out.stdout), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out.stdout)
	}
	if st.DirtyChunks == 0 || st.DirtyChunks >= st.Chunks {
		t.Fatalf("after kill -9: %d dirty chunks of %d (want some, not all)", st.DirtyChunks, st.Chunks)
	}
	t.Logf("after kill -9: %d of %d chunks dirty", st.DirtyChunks, st.Chunks)

	res := lbOK(t, 2*time.Minute, "mirror", "resync", "--json", urlA, urlB)
	var after struct {
		BytesResynced int64 `json:"bytes_resynced"`
		DirtyChunks   int64 `json:"dirty_chunks"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &after); err != nil {
		t.Fatalf("resync JSON: %v\n%s", err, res.stdout)
	}
	if after.BytesResynced > st.DirtyChunks*st.ChunkSize || after.BytesResynced >= st.Size {
		t.Fatalf("resynced %d bytes; the bitmap had %d dirty chunks of %d bytes", after.BytesResynced, st.DirtyChunks, st.ChunkSize)
	}
	t.Logf("resync copied %d bytes of %d (%d dirty chunks)", after.BytesResynced, st.Size, st.DirtyChunks)

	// Both legs now hold the same data over the exported size, and every
	// acknowledged write is there.
	da := readAt(t, a.BackingFile(0, 0), 0, st.Size)
	db := readAt(t, b.BackingFile(0, 0), 0, st.Size)
	for i := range da {
		if da[i] != db[i] {
			t.Fatalf("legs differ at byte %d after resync", i)
		}
	}
	for i := 0; i < 8; i++ {
		off := int64(i) * 5 << 20
		for _, x := range da[off : off+256<<10] {
			if x != byte(0x40+i) {
				t.Fatalf("acknowledged write %d (offset %d) is not on the legs", i, off)
			}
		}
	}
	lbOK(t, time.Minute, "mirror", "check", urlA, urlB)
}

func lbRunTool(t *testing.T, name string, args ...string) {
	t.Helper()
	runOK(t, time.Minute, name, args...)
}

// A mirror whose leg A is reached through two portals (--path: multipath)
// and leg B through one (--mirror): an image pushed through it lands on
// both legs' backing files, and the legs then compare equal.
func TestMirrorMultipathLeg(t *testing.T) {
	testenv.RequireRoot(t)
	const size = 32 << 20
	a := targets.StartTgtd(t, targets.Target{LUNs: []targets.LUN{{Size: size}}})
	a.AddPortal(t, "127.0.0.2")
	b := targets.StartIstgt(t, targets.Target{LUNs: []targets.LUN{{Size: size}}})
	urlA, urlB := a.URL(0, 0), b.URL(0, 0)
	urlA2 := strings.Replace(urlA, a.Portal, a.ExtraPortals[0], 1)
	if urlA2 == urlA {
		t.Fatalf("no second portal in %s", urlA)
	}
	lbOK(t, time.Minute, "mirror", "create", "--assume-clean", "--chunk", "1M", "--yes", urlA, urlB)

	img := filepath.Join(scratch(t), "img")
	want := make([]byte, 8<<20)
	rand.NewChaCha8([32]byte{7, 9}).Read(want)
	if err := os.WriteFile(img, want, 0o600); err != nil {
		t.Fatal(err)
	}
	res := lbOK(t, 2*time.Minute, "--log-level", "info", "push", "--yes", "--path", urlA2, "--policy", "round-robin",
		"--mirror", urlB, "--control-socket", "", img, urlA)
	// Leg A really is a two-path device.
	if !strings.Contains(res.stderr, "multipath") || !strings.Contains(res.stderr, a.ExtraPortals[0]) {
		t.Fatalf("push did not report leg A as multipath over %s:\n%s", a.ExtraPortals[0], res.stderr)
	}
	for name, f := range map[string]string{"A": a.BackingFile(0, 0), "B": b.BackingFile(0, 0)} {
		if got := readAt(t, f, 0, int64(len(want))); !bytes.Equal(got, want) {
			t.Fatalf("leg %s's backing file does not hold the pushed image", name)
		}
	}
	lbOK(t, time.Minute, "mirror", "check", urlA, urlB)
}
