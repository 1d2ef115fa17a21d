package vmlab

import (
	"bytes"
	"context"
	"math/rand"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/nvmetcp"
)

// nvmetNQN is the subsystem the nvmet scenario creates.
const nvmetNQN = "nqn.2026-12.org.lunbridge:vmlab"

// TestNVMetKernelTarget runs the NVMe/TCP host against the Linux kernel
// target (nvmet, nvmet-tcp, Debian 6.1) in one VM: discovery, then for
// both namespaces (512-byte blocks on a loop device, 4096-byte blocks on a
// file) with digests off and on and two I/O queues: writes from one block
// to 1 MiB (in capsule and through R2T), read back, Flush, Write Zeroes
// (Linux nvmet refuses it on the tmpfs file: SCT 1 SC 0x83, and the host
// falls back to writing zeroes) and Dataset Management deallocate reading
// back zero.
func TestNVMetKernelTarget(t *testing.T) {
	vm := Boot(t, Options{Scenario: "nvmet", Params: map[string]string{"nvmet.size_mb": "32"}, Timeout: 4 * time.Minute})
	if _, err := vm.WaitFor(MarkerReady, 150*time.Second); err != nil {
		t.Fatalf("vmlab: nvmet not ready: %v\n%s", err, lastLines(vm.Output(), 40))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	base := nvmetcp.Config{Addr: vm.Portal(), CommandTimeout: 60 * time.Second, ReconnectTimeout: -1}

	entries, err := nvmetcp.Discover(ctx, base)
	if err != nil {
		t.Fatalf("discover: %v", err)
	}
	found := false
	for _, e := range entries {
		t.Logf("discovery: %+v", e)
		found = found || e.SubNQN == nvmetNQN
	}
	if !found {
		t.Fatalf("discovery log does not list %s", nvmetNQN)
	}

	for _, dig := range []bool{false, true} {
		cfg := base
		cfg.SubNQN, cfg.IOQueues, cfg.HeaderDigest, cfg.DataDigest = nvmetNQN, 2, dig, dig
		c, err := nvmetcp.Dial(ctx, cfg)
		if err != nil {
			t.Fatalf("digests %v: %v", dig, err)
		}
		info := c.Info()
		t.Logf("controller: model %q serial %q fw %q ioccsz %d mdts %d oncs %#x, %d I/O queues",
			info.Model, info.Serial, info.Firmware, info.IOCCSZ, info.MDTS, info.ONCS, c.IOQueues())
		for _, ns := range []struct {
			nsid uint32
			bs   int
		}{{1, 512}, {2, 4096}} {
			nsid, bs := ns.nsid, ns.bs
			n, err := nvmetcp.OpenNamespace(ctx, c, nsid)
			if err != nil {
				t.Fatalf("namespace %d: %v", nsid, err)
			}
			if n.BlockSize() != bs || n.Size() != 32<<20 {
				t.Fatalf("namespace %d: block %d size %d", nsid, n.BlockSize(), n.Size())
			}
			nvmetWorkload(t, ctx, n, int64(nsid)*10+map[bool]int64{false: 0, true: 1}[dig])
			n.Close()
		}
		c.Close()
	}
}

func nvmetWorkload(t *testing.T, ctx context.Context, n *nvmetcp.Namespace, seed int64) {
	t.Helper()
	bs := n.BlockSize()
	rng := rand.New(rand.NewSource(seed))
	off := int64(0)
	for _, sz := range []int{bs, 4096, 8192, 64 << 10, 256 << 10, 1 << 20} {
		sz = max(sz/bs*bs, bs)
		buf := make([]byte, sz)
		rng.Read(buf)
		if err := n.WriteAt(ctx, buf, off, sz == 8192); err != nil {
			t.Fatalf("ns %d write %d at %d: %v", n.NSID(), sz, off, err)
		}
		got := make([]byte, sz)
		if err := n.ReadAt(ctx, got, off); err != nil {
			t.Fatalf("ns %d read %d at %d: %v", n.NSID(), sz, off, err)
		}
		if !bytes.Equal(got, buf) {
			t.Fatalf("ns %d: %d bytes at %d read back differently", n.NSID(), sz, off)
		}
		off += int64(sz) + int64(bs)
	}
	if err := n.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	// Write Zeroes and deallocate inside the 1 MiB write (the last one).
	last := off - int64(1<<20) - int64(bs)
	if err := n.WriteZeroes(ctx, last, 64<<10, false); err != nil {
		t.Fatalf("write zeroes: %v", err)
	}
	if err := n.Trim(ctx, last+(256<<10), 256<<10); err != nil {
		t.Fatalf("deallocate: %v", err)
	}
	got := make([]byte, 512<<10)
	if err := n.ReadAt(ctx, got, last); err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 256<<10)
	if !bytes.Equal(got[:64<<10], zero[:64<<10]) {
		t.Fatalf("ns %d: Write Zeroes range does not read zero", n.NSID())
	}
	if bytes.Equal(got[64<<10:256<<10], zero[:192<<10]) {
		t.Fatalf("ns %d: data beside the zeroed range was zeroed", n.NSID())
	}
	if !bytes.Equal(got[256<<10:], zero) {
		if n.ReadZeroesAfterTrim() {
			t.Fatalf("ns %d: deallocated range does not read zero though DLFEAT says so", n.NSID())
		}
		t.Logf("ns %d: deallocated range keeps data (DLFEAT %#x: allowed)", n.NSID(), n.Identify().DLFEAT)
	}
}
