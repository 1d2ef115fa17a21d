package vmlab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/multipath"
	"github.com/lunbridge/lunbridge/nvmetcp"
)

// nvmetNQN is the subsystem the nvmet scenario creates.
const nvmetNQN = "nqn.2026-12.org.lunbridge:vmlab"

// TestNVMetKernelTarget runs the NVMe/TCP host against the Linux kernel
// target (nvmet, nvmet-tcp, Debian 6.1) in one VM with one subsystem, two
// namespaces (512-byte blocks on a loop device, 4096-byte blocks on a
// file, both in guest RAM) and two ports (guest TCP 3260 and 4420):
//
//   - discovery;
//   - the R/W/verify matrix: digests off and on × 1 and 4 I/O queues ×
//     both namespaces: writes from one block to 1 MiB (in capsule and
//     through R2T), read back, Flush, Write Zeroes (Linux nvmet refuses
//     it on the tmpfs file: SCT 1 SC 0x83, and the host falls back to
//     writing zeroes) and Dataset Management deallocate reading back
//     zero; with 4 queues also 4 concurrent writers;
//   - ANA multipath over both ports (multipath.OpenNVMe) under
//     continuous write/read-verify I/O: port 1's ANA group made
//     inaccessible moves I/O to port 2, and back; port 1 made
//     non-optimized (no command fails: nvmet's ANA change event says so)
//     moves it too, and back; then port 1 disabled
//     mid-I/O (its subsystem link removed in configfs, which deletes its
//     controllers) fails over to port 2 with no error, and the path is
//     reinstated when the link is back;
//   - controller reset mid-I/O on one association, both ways: every
//     connection reset from the host side (a proxy), and the target
//     deleting the controller (port link removed and restored); the host
//     reconnects with the same host NQN and no I/O fails; the data
//     verifies.
func TestNVMetKernelTarget(t *testing.T) {
	vm := Boot(t, Options{Scenario: "nvmet", Params: map[string]string{"nvmet.size_mb": "32", "nvmet.ports": "2"},
		Forward: []int{4420}, Timeout: 9 * time.Minute})
	if _, err := vm.WaitFor(MarkerReady, 150*time.Second); err != nil {
		t.Fatalf("vmlab: nvmet not ready: %v\n%s", err, lastLines(vm.Output(), 40))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	base := nvmetcp.Config{Addr: vm.Portal(), CommandTimeout: 60 * time.Second, ReconnectTimeout: -1}
	port2 := vm.PortalFor(4420)

	t.Run("discover", func(t *testing.T) {
		// Linux nvmet's discovery log lists the port the discovery
		// controller was reached through (and referrals): ask both.
		ports := map[uint16]bool{}
		for _, addr := range []string{vm.Portal(), port2} {
			cfg := base
			cfg.Addr = addr
			entries, err := nvmetcp.Discover(ctx, cfg)
			if err != nil {
				t.Fatalf("discover through %s: %v", addr, err)
			}
			for _, e := range entries {
				t.Logf("discovery through %s: %+v", addr, e)
				if e.SubNQN == nvmetNQN {
					ports[e.PortID] = true
				}
			}
		}
		if !ports[1] || !ports[2] {
			t.Fatalf("discovery log does not list %s on ports 1 and 2: %v", nvmetNQN, ports)
		}
	})

	t.Run("ls", func(t *testing.T) {
		// lunbridge ls on the subsystem through port 1 with its ANA group
		// non-optimized: controller, both namespaces, their formats and
		// the ANA state as nvmet reports it.
		if out, rc, err := vm.Run("echo non-optimized > /sys/kernel/config/nvmet/ports/1/ana_groups/1/ana_state", 30*time.Second); err != nil || rc != 0 {
			t.Fatalf("ana_state: rc %d %v %s", rc, err, out)
		}
		defer vm.Run("echo optimized > /sys/kernel/config/nvmet/ports/1/ana_groups/1/ana_state", 30*time.Second)
		bin := BuildStatic(t, "./cmd/lunbridge")
		cctx, ccancel := context.WithTimeout(ctx, time.Minute)
		defer ccancel()
		out, err := exec.CommandContext(cctx, bin, "ls", "--json", "nvme+tcp://"+vm.Portal()+"/"+nvmetNQN).Output()
		if err != nil {
			t.Fatalf("lunbridge ls: %v\n%s", err, out)
		}
		t.Logf("lunbridge ls --json:\n%s", out)
		var subs []struct {
			Subsystem  string `json:"subsystem_nqn"`
			Controller struct {
				Model string `json:"model"`
				ANA   bool   `json:"ana_reporting"`
			} `json:"controller"`
			Namespaces []struct {
				NSID      uint32 `json:"nsid"`
				BlockSize int    `json:"block_size"`
				SizeBytes int64  `json:"size_bytes"`
				NGUID     string `json:"nguid"`
				ANAState  string `json:"ana_state"`
			} `json:"namespaces"`
		}
		if err := json.Unmarshal(out, &subs); err != nil || len(subs) != 1 || len(subs[0].Namespaces) != 2 {
			t.Fatalf("ls: %v %+v", err, subs)
		}
		s := subs[0]
		if s.Subsystem != nvmetNQN || s.Controller.Model != "Linux" || !s.Controller.ANA {
			t.Fatalf("ls controller: %+v", s)
		}
		for i, bs := range []int{512, 4096} {
			n := s.Namespaces[i]
			if n.NSID != uint32(i+1) || n.BlockSize != bs || n.SizeBytes != 32<<20 || n.NGUID == "" || n.ANAState != "non-optimized" {
				t.Fatalf("ls namespace %d: %+v", i+1, n)
			}
		}
		cmd := exec.CommandContext(cctx, bin, "ls", "nvme+tcp://"+vm.Portal()+"/"+nvmetNQN)
		text, err := cmd.Output()
		if err != nil || !strings.Contains(string(text), "non-optimized") {
			t.Fatalf("ls text: %v\n%s", err, text)
		}
		t.Logf("lunbridge ls:\n%s", text)
	})

	t.Run("matrix", func(t *testing.T) {
		for _, dig := range []bool{false, true} {
			for _, queues := range []int{1, 4} {
				cfg := base
				cfg.SubNQN, cfg.IOQueues, cfg.HeaderDigest, cfg.DataDigest = nvmetNQN, queues, dig, dig
				c, err := nvmetcp.Dial(ctx, cfg)
				if err != nil {
					t.Fatalf("digests %v queues %d: %v", dig, queues, err)
				}
				info := c.Info()
				t.Logf("digests %v: controller %d: model %q serial %q fw %q ioccsz %d mdts %d oncs %#x cmic %#x anagrpmax %d, %d I/O queues",
					dig, info.CntlID, info.Model, info.Serial, info.Firmware, info.IOCCSZ, info.MDTS, info.ONCS, info.CMIC, info.ANAGRPMAX, c.IOQueues())
				if c.IOQueues() != queues {
					t.Fatalf("%d I/O queues connected, want %d", c.IOQueues(), queues)
				}
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
					seed := int64(nsid)*100 + int64(queues)*10 + map[bool]int64{false: 0, true: 1}[dig]
					nvmetWorkload(t, ctx, n, seed)
					if queues > 1 {
						nvmetConcurrent(t, ctx, n, queues, seed)
					}
					n.Close()
				}
				c.Close()
			}
		}
	})

	t.Run("multipath", func(t *testing.T) {
		cfgs := []nvmetcp.Config{{Addr: vm.Portal(), SubNQN: nvmetNQN, IOQueues: 2, CommandTimeout: 30 * time.Second},
			{Addr: port2, SubNQN: nvmetNQN, IOQueues: 2, CommandTimeout: 30 * time.Second}}
		// The checker's period is longer than the test: ANA changes are
		// learnt from ANA statuses and nvmet's ANA change events only.
		d, err := multipath.OpenNVMe(ctx, cfgs, 2, multipath.Options{CheckInterval: 10 * time.Minute, Logger: vmLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		st := d.Status()
		t.Logf("paths: %+v", st.Paths)
		if st.Paths[0].State != multipath.StateActive || st.Paths[0].ALUA != "active/optimized" || st.Paths[1].ALUA != "active/optimized" {
			t.Fatalf("initial paths %+v", st.Paths)
		}
		l := startLoad(d, 7)
		ana := func(port int, state string) {
			t.Helper()
			out, rc, err := vm.Run(fmt.Sprintf("echo %s > /sys/kernel/config/nvmet/ports/%d/ana_groups/1/ana_state", state, port), 30*time.Second)
			if err != nil || rc != 0 {
				t.Fatalf("ana_state %s on port %d: rc %d %v %s", state, port, rc, err, out)
			}
		}
		onPath := func(what string, i int) {
			t.Helper()
			before := d.Status().Paths[i].IOs
			deadline := time.Now().Add(60 * time.Second)
			for {
				st := d.Status()
				if st.Paths[i].State == multipath.StateActive && st.Paths[i].IOs > before+10 {
					t.Logf("%s: I/O on path %d (%+v)", what, i, st.Paths)
					return
				}
				if err := l.err(); err != nil {
					t.Fatalf("%s: I/O failed: %v", what, err)
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: no I/O on path %d within 60 s: %+v", what, i, st.Paths)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		onPath("start", 0)
		ana(1, "inaccessible")
		onPath("port 1 ANA inaccessible", 1)
		ana(2, "inaccessible")
		ana(1, "optimized")
		onPath("port 2 ANA inaccessible, port 1 optimized", 0)
		ana(2, "optimized")
		// Optimized <-> non-optimized fails no command: only the ANA
		// change event (AER) tells the host.
		ana(1, "non-optimized")
		onPath("port 1 non-optimized (ANA change event)", 1)
		ana(2, "non-optimized")
		ana(1, "optimized")
		onPath("port 1 optimized again (ANA change event)", 0)
		ana(2, "optimized")
		time.Sleep(2 * time.Second)

		link := "/sys/kernel/config/nvmet/ports/1/subsystems/" + nvmetNQN
		if out, rc, err := vm.Run("rm "+link, 30*time.Second); err != nil || rc != 0 {
			t.Fatalf("remove port 1's subsystem link: rc %d %v %s", rc, err, out)
		}
		onPath("port 1 disabled", 1)
		if out, rc, err := vm.Run("ln -s /sys/kernel/config/nvmet/subsystems/"+nvmetNQN+" "+link, 30*time.Second); err != nil || rc != 0 {
			t.Fatalf("restore port 1's subsystem link: rc %d %v %s", rc, err, out)
		}
		onPath("port 1 back (failback)", 0)
		if err := l.stop(); err != nil {
			t.Fatalf("I/O failed: %v", err)
		}
		st = d.Status()
		t.Logf("%d write+verify rounds; failovers %d, last %d ms, fences by keep-alive %d; paths %+v",
			l.rounds.Load(), st.Failovers, st.LastFailoverMs, st.FencesKATO, st.Paths)
		l.verify(t, ctx, d)
	})

	t.Run("reset", func(t *testing.T) {
		px, err := faultproxy.New(vm.Portal())
		if err != nil {
			t.Fatal(err)
		}
		defer px.Close()
		cfg := nvmetcp.Config{Addr: px.Addr(), SubNQN: nvmetNQN, IOQueues: 2, CommandTimeout: 30 * time.Second,
			KeepAlive: 5 * time.Second, ReconnectTimeout: 90 * time.Second, Logger: vmLogger(t)}
		c, err := nvmetcp.Dial(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		n, err := nvmetcp.OpenNamespace(ctx, c, 1)
		if err != nil {
			t.Fatal(err)
		}
		l := startLoad(n, 8)
		wait := func(k int64) {
			t.Helper()
			deadline := time.Now().Add(60 * time.Second)
			for r := l.rounds.Load(); l.rounds.Load() < r+k; {
				if err := l.err(); err != nil {
					t.Fatalf("I/O failed: %v", err)
				}
				if time.Now().After(deadline) {
					t.Fatalf("no I/O progress within 60 s")
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		wait(10)
		before := px.TotalAccepted()
		px.ResetAll()
		wait(10)
		px.ResetAll()
		wait(10)
		if px.TotalAccepted() <= before {
			t.Fatalf("no reconnect after the resets (%d connections before, %d after)", before, px.TotalAccepted())
		}
		// The target deletes the controller: port 1 loses the subsystem
		// link for 3 s.
		link := "/sys/kernel/config/nvmet/ports/1/subsystems/" + nvmetNQN
		acc := px.TotalAccepted()
		if out, rc, err := vm.Run("rm "+link+" && sleep 3 && ln -s /sys/kernel/config/nvmet/subsystems/"+nvmetNQN+" "+link, 60*time.Second); err != nil || rc != 0 {
			t.Fatalf("bounce port 1's subsystem link: rc %d %v %s", rc, err, out)
		}
		wait(10)
		if err := l.stop(); err != nil {
			t.Fatalf("I/O failed: %v", err)
		}
		t.Logf("%d write+verify rounds; connections %d before the resets, %d before the target reset, %d at the end",
			l.rounds.Load(), before, acc, px.TotalAccepted())
		if px.TotalAccepted() <= acc {
			t.Fatalf("the target's controller deletion did not make the host reconnect")
		}
		l.verify(t, ctx, n)
		n.Close()
	})
}

// load runs write/read-verify rounds of random sizes at random offsets
// of the first 8 MiB of dev until stopped, keeping a model of what it
// wrote.
type load struct {
	dev    blockdev.Device
	model  []byte
	rounds atomic.Int64
	quit   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	first  error
}

func startLoad(dev blockdev.Device, seed int64) *load {
	l := &load{dev: dev, model: make([]byte, 8<<20), quit: make(chan struct{}), done: make(chan struct{})}
	ctx := context.Background()
	// The model starts as what is there.
	if err := dev.ReadAt(ctx, l.model, 0); err != nil {
		l.first = err
		close(l.done)
		return l
	}
	go func() {
		defer close(l.done)
		rng := rand.New(rand.NewSource(seed))
		bs := dev.BlockSize()
		for {
			select {
			case <-l.quit:
				return
			default:
			}
			n := (1 + rng.Intn(32)) * bs
			off := int64(rng.Intn(len(l.model)-n)) / int64(bs) * int64(bs)
			buf := make([]byte, n)
			rng.Read(buf)
			err := dev.WriteAt(ctx, buf, off, false)
			if err == nil {
				copy(l.model[off:], buf)
				got := make([]byte, n)
				if err = dev.ReadAt(ctx, got, off); err == nil && !bytes.Equal(got, buf) {
					err = fmt.Errorf("%d bytes at %d read back differently", n, off)
				}
			}
			if err != nil {
				l.mu.Lock()
				l.first = err
				l.mu.Unlock()
				return
			}
			l.rounds.Add(1)
		}
	}()
	return l
}

func (l *load) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

func (l *load) stop() error {
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	<-l.done
	return l.err()
}

func (l *load) verify(t *testing.T, ctx context.Context, dev blockdev.Device) {
	t.Helper()
	got := make([]byte, len(l.model))
	if err := dev.ReadAt(ctx, got, 0); err != nil {
		t.Fatalf("final read: %v", err)
	}
	if !bytes.Equal(got, l.model) {
		t.Fatal("the namespace differs from what was written")
	}
}

// nvmetConcurrent runs k writers on disjoint 1 MiB regions at 20 MiB
// and verifies each.
func nvmetConcurrent(t *testing.T, ctx context.Context, n *nvmetcp.Namespace, k int, seed int64) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, k)
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed + int64(i)))
			base := int64(20<<20) + int64(i)<<20
			for j := 0; j < 16; j++ {
				buf := make([]byte, 64<<10)
				rng.Read(buf)
				off := base + int64(j)*(64<<10)
				if err := n.WriteAt(ctx, buf, off, false); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(buf))
				if err := n.ReadAt(ctx, got, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, buf) {
					errs <- fmt.Errorf("writer %d: 64 KiB at %d read back differently", i, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("ns %d concurrent: %v", n.NSID(), err)
	}
}

func vmLogger(t *testing.T) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(tWriter{t})
	l.SetLevel(logrus.InfoLevel)
	return logrus.NewEntry(l)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
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
