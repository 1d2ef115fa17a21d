package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/targets"
	"github.com/lunbridge/lunbridge/internal/testenv"
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
