package nbdbridge

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// TestNbdfuseExt4: nbdfuse exposes the export as a file; a loop device over
// it carries an ext4 filesystem that is mounted, written, unmounted and
// checked clean.
func TestNbdfuseExt4(t *testing.T) {
	testenv.Short(t)
	testenv.RequireRoot(t)
	requireTools(t, "nbdfuse", "mkfs.ext4", "e2fsck", "losetup", "mount", "umount")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Unavailable(t, "/dev/fuse: %v", err)
	}
	dev := blockdevtest.NewMem(64<<20, 512)
	ts := startServer(t, dev, DefaultOptions())
	dir := t.TempDir()
	mnt, fsdir := filepath.Join(dir, "fuse"), filepath.Join(dir, "fs")
	os.Mkdir(mnt, 0o755)
	os.Mkdir(fsdir, 0o755)
	pidf := filepath.Join(dir, "nbdfuse.pid")
	fuse := exec.Command("nbdfuse", "-P", pidf, mnt+"/disk.img", ts.uri)
	var fuseErr bytes.Buffer
	fuse.Stderr = &fuseErr
	if err := fuse.Start(); err != nil {
		t.Fatal(err)
	}
	fuseDone := make(chan error, 1)
	go func() { fuseDone <- fuse.Wait() }()
	t.Cleanup(func() {
		exec.Command("umount", "-l", fsdir).Run()
		exec.Command("umount", mnt).Run()
		select {
		case <-fuseDone:
		case <-time.After(10 * time.Second):
			fuse.Process.Kill()
			<-fuseDone
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(pidf); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdfuse not ready: %s", fuseErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	img := mnt + "/disk.img"
	run(t, 60*time.Second, "mkfs.ext4", "-q", "-F", img)
	loop := strings.TrimSpace(run(t, 20*time.Second, "losetup", "--find", "--show", img))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	run(t, 20*time.Second, "mount", loop, fsdir)
	payload := bytes.Repeat([]byte("lunbridge nbd "), 200000)
	if err := os.WriteFile(filepath.Join(fsdir, "f"), payload, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, 20*time.Second, "umount", fsdir)
	run(t, 20*time.Second, "mount", "-o", "ro", loop, fsdir)
	got, err := os.ReadFile(filepath.Join(fsdir, "f"))
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("file read back differs (err %v)", err)
	}
	run(t, 20*time.Second, "umount", fsdir)
	run(t, 20*time.Second, "losetup", "-d", loop)
	out := run(t, 60*time.Second, "e2fsck", "-f", "-n", img)
	t.Log(out)
	st := ts.Stats()
	t.Logf("server: %d reads, %d writes (%d bytes), %d flushes, %d connections",
		st.Read.Requests, st.Write.Requests, st.Write.Bytes, st.Flush.Requests, st.Connections)
	if st.Write.Bytes < uint64(len(payload)) {
		t.Fatalf("only %d bytes written through the server", st.Write.Bytes)
	}
}
