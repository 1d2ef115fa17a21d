package main

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/fakenvme"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

// TestServeMirrorNVMeAndISCSI (issue 23 item 3: --mirror accepts a leg of
// either protocol): a mirror whose leg A is an NVMe/TCP namespace (the fake
// controller) and leg B a LUN on real tgtd. mirror create copies A to B,
// serve --mirror takes NBD writes, and after SIGTERM both legs hold every
// acknowledged write: the namespace's memory and tgtd's backing file are
// compared with the model of what the NBD client wrote.
func TestServeMirrorNVMeAndISCSI(t *testing.T) {
	const size = 16 << 20
	f, err := fakenvme.Listen(fakenvme.Config{Namespaces: []fakenvme.NSConfig{{BlockSize: 512, Blocks: size / 512}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv := targets.StartTgtd(t, targets.Target{LUNs: []targets.LUN{{Size: size}}})
	urlA := "nvme+tcp://" + f.Addr() + "/" + f.NQN() + "/1"
	urlB := srv.URL(0, 0)
	dir := t.TempDir()
	env := []string{"LUNBRIDGE_HOST_NQN=nqn.2026-12.org.lunbridge:clitest", "XDG_RUNTIME_DIR=" + dir,
		"LUNBRIDGE_ISID_LOCK_DIR=" + filepath.Join(dir, "isid")}

	if r := lbRun(t, 60*time.Second, env, "mirror", "create", "--yes", urlA, urlB); r.code != 0 {
		t.Fatalf("mirror create NVMe/TCP + iSCSI: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	sock, ctl := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "control.sock")
	p := startServe(t, env, "serve", "--listen", "unix:"+sock, "--control-socket", ctl, "--mirror", urlB, urlA)
	nc := nbdHold(t, "unix", sock)
	w := &nbdWriter{c: nc}
	const span = 4 << 20
	model := make([]byte, span)
	rng := rand.New(rand.NewSource(23))
	buf := make([]byte, 4096)
	for i := 0; i < 300; i++ {
		rng.Read(buf)
		off := rng.Int63n(span/4096) * 4096
		if err := w.write(buf, off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], buf)
	}
	r := lbRun(t, 20*time.Second, env, "mirror", "status", "--control-socket", ctl)
	if r.code != 0 || strings.Count(r.stdout, "in-sync") < 2 {
		t.Fatalf("mirror status: exit %d, want both legs in sync\n%s%s", r.code, r.stdout, r.stderr)
	}
	nc.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("serve exit %d: %s", code, p.stderr)
	}
	if !bytes.Equal(f.Data(1, 0, span), model) {
		t.Fatal("leg A (NVMe/TCP namespace) does not hold the acknowledged writes")
	}
	b, err := os.ReadFile(srv.BackingFile(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[:span], model) {
		t.Fatal("leg B (tgtd LUN) does not hold the acknowledged writes")
	}
}
