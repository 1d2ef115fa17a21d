package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/fakenvme"
	"github.com/lunbridge/lunbridge/nvmetcp"
	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// limitCLI bounds one lunbridge run against the fake controller.
const limitCLI = 60 * time.Second

// TestNVMeCLI runs the lunbridge binary against the in-process fake
// NVMe/TCP controller (listening on 127.0.0.1 in this test process): push an
// image onto a 4096-byte-block namespace, pull it back, verify it, info
// (text and JSON) and discover --nvme.
func TestNVMeCLI(t *testing.T) {
	f, err := fakenvme.Listen(fakenvme.Config{
		Namespaces: []fakenvme.NSConfig{{BlockSize: 512, Blocks: 2048}, {BlockSize: 4096, Blocks: 1024}},
		Discovery: []pdu.DiscoveryEntry{{TrType: 3, AdrFam: 1, SubType: 2, PortID: 1, CntlID: 0xffff,
			TrSvcID: "4420", TrAddr: "0.0.0.0", SubNQN: fakenvme.DefaultNQN}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	url := "nvme+tcp://" + f.Addr() + "/" + f.NQN() + "/2"
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	want := writeImage(t, img, 4<<20, 7)
	env := []string{"LUNBRIDGE_HOST_NQN=nqn.2026-12.org.lunbridge:clitest"}
	lbRun(t, limitCLI, env, "push", "--yes", img, url).mustOK(t, "push")
	if !bytes.Equal(f.Data(2, 0, 4<<20), want) {
		t.Fatal("push: namespace content differs from the image")
	}
	out := filepath.Join(dir, "out")
	lbRun(t, limitCLI, env, "pull", "--checksum", "none", url, out).mustOK(t, "pull")
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("pull: image differs (%v)", err)
	}
	r := lbRun(t, limitCLI, env, "verify", url, out)
	if r.code != 0 || !strings.Contains(r.stdout, "identical") {
		t.Fatalf("verify: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = lbRun(t, limitCLI, env, "info", "--json", url)
	r.mustOK(t, "info --json")
	var info nvmeInfo
	decodeStrict(t, r.stdout, &info)
	if info.BlockSize != 4096 || info.SizeBytes != 4<<20 || info.Model != "lunbridge fakenvme" || info.Serial != "fake0001" ||
		info.NSID != 2 || info.NGUID == "" || info.HostNQN != "nqn.2026-12.org.lunbridge:clitest" || !info.Deallocate {
		t.Fatalf("info: %+v", info)
	}
	r = lbRun(t, limitCLI, env, "info", url)
	r.mustOK(t, "info")
	if !strings.Contains(r.stdout, "4096-byte blocks") || !strings.Contains(r.stdout, "lunbridge fakenvme") {
		t.Fatalf("info text:\n%s", r.stdout)
	}
	r = lbRun(t, limitCLI, env, "discover", "--nvme", "--json", f.Addr())
	r.mustOK(t, "discover --nvme")
	var entries []nvmeDiscoverEntry
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil || len(entries) != 1 ||
		entries[0].Subsystem != fakenvme.DefaultNQN || entries[0].Address != "127.0.0.1:4420" {
		t.Fatalf("discover: %v %+v", err, entries)
	}
	r = lbRun(t, limitCLI, env, "bench", "--rw", "randwrite", "--yes", "--bs", "8k", "--qd", "8", "--time", "300ms", "--json", url)
	r.mustOK(t, "bench randwrite")
	if !strings.Contains(r.stdout, "iops") {
		t.Fatalf("bench: %s", r.stdout)
	}
	// A wrong subsystem is a Connect refusal: exit code ExitLogin.
	if r := lbRun(t, limitCLI, env, "info", "nvme+tcp://"+f.Addr()+"/nqn.2026-12.org.lunbridge:nope/1"); r.code != ExitLogin {
		t.Fatalf("wrong NQN: exit %d, %s", r.code, r.stderr)
	}
}

// TestParseNVMeURL covers the URL forms.
func TestParseNVMeURL(t *testing.T) {
	for raw, want := range map[string]string{
		"nvme+tcp://10.0.0.5/nqn.2026-12.com.example:pool/1":         "nvme+tcp://10.0.0.5:4420/nqn.2026-12.com.example:pool/1",
		"nvme+tcp://[::1]:4421/nqn.2026-12.com.example:pool/7/":      "nvme+tcp://[::1]:4421/nqn.2026-12.com.example:pool/7",
		"nvme+tcp://h/nqn.2014-08.org.nvmexpress:uuid:1234?queues=4": "nvme+tcp://h:4420/nqn.2014-08.org.nvmexpress:uuid:1234",
	} {
		u, err := parseNVMeURL(raw)
		if err != nil || u.String() != want {
			t.Errorf("%s: %v %v", raw, u, err)
		}
	}
	for _, bad := range []string{"nvme+tcp:///nqn.x/1", "nvme+tcp://h/nqn.x/0", "nvme+tcp://h/iqn.x/1", "nvme+tcp://h/nqn.x/abc"} {
		if _, err := parseNVMeURL(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestNVMeMultipathCLI: --path with two NVMe/TCP portals of one fake
// subsystem whose first port's ANA group is inaccessible: push and pull
// go through the second port (ANA-aware multipath), and `ls --nvme`
// lists the subsystem on both ports with each port's ANA state, in JSON
// and as a table.
func TestNVMeMultipathCLI(t *testing.T) {
	f, err := fakenvme.Listen(fakenvme.Config{ANA: true,
		Namespaces: []fakenvme.NSConfig{{BlockSize: 512, Blocks: 4096}, {BlockSize: 4096, Blocks: 512}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a2, p2, err := f.AddPort()
	if err != nil {
		t.Fatal(err)
	}
	f.SetANAState(0, pdu.ANAInaccessible)
	var es []pdu.DiscoveryEntry
	for i, a := range []string{f.Addr(), a2} {
		host, port, _ := strings.Cut(a, ":")
		es = append(es, pdu.DiscoveryEntry{TrType: 3, AdrFam: 1, SubType: 2, PortID: uint16(i + 1), CntlID: 0xffff,
			TrSvcID: port, TrAddr: host, SubNQN: f.NQN()})
	}
	f.SetDiscovery(es)
	url1 := "nvme+tcp://" + f.Addr() + "/" + f.NQN() + "/1"
	url2 := "nvme+tcp://" + a2 + "/" + f.NQN() + "/1"
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	want := writeImage(t, img, 2<<20, 3)
	env := []string{"LUNBRIDGE_HOST_NQN=nqn.2026-12.org.lunbridge:clitest"}
	lbRun(t, limitCLI, env, "push", "--yes", "--path", url2, img, url1).mustOK(t, "push over two paths")
	if !bytes.Equal(f.Data(1, 0, 2<<20), want) {
		t.Fatal("push: namespace content differs from the image")
	}
	if f.Writes.Load() == 0 || f.ANALogs.Load() == 0 {
		t.Fatalf("writes %d, ANA log reads %d", f.Writes.Load(), f.ANALogs.Load())
	}
	out := filepath.Join(dir, "out")
	lbRun(t, limitCLI, env, "pull", "--checksum", "none", "--path", url2, url1, out).mustOK(t, "pull over two paths")
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("pull: image differs (%v)", err)
	}
	if r := lbRun(t, limitCLI, env, "pull", "--path", "iscsi://127.0.0.1/iqn.x/0", url1, out+"2"); r.code != ExitUsage {
		t.Fatalf("mixed protocols in --path: exit %d %s", r.code, r.stderr)
	}

	r := lbRun(t, limitCLI, env, "ls", "--nvme", "--json", f.Addr())
	r.mustOK(t, "ls --nvme --json")
	var subs []lsNVMeSubsystem
	decodeStrict(t, r.stdout, &subs)
	if len(subs) != 2 {
		t.Fatalf("ls: %d subsystems: %s", len(subs), r.stdout)
	}
	for i, s := range subs {
		wantANA := []string{"inaccessible", "optimized"}[i]
		if s.Subsystem != f.NQN() || s.PortID != uint16(i+1) || s.Controller == nil || s.Controller.Model != "lunbridge fakenvme" ||
			!s.Controller.ANAReporting || len(s.Namespaces) != 2 {
			t.Fatalf("ls subsystem %d: %+v", i, s)
		}
		for j, n := range s.Namespaces {
			if n.NSID != uint32(j+1) || n.BlockSize != []int{512, 4096}[j] || n.SizeBytes != 2<<20 || n.NGUID == "" ||
				n.ANAGroup != 1 || n.ANAState != wantANA || n.LBAFormat != j {
				t.Fatalf("ls subsystem %d namespace %d: %+v", i, j+1, n)
			}
		}
	}
	_ = p2
	r = lbRun(t, limitCLI, env, "info", "--json", url1)
	r.mustOK(t, "info --json")
	var info nvmeInfo
	decodeStrict(t, r.stdout, &info)
	if info.ANAGroup != 1 || info.ANAState != "inaccessible" {
		t.Fatalf("info through port 0: ANA group %d state %q", info.ANAGroup, info.ANAState)
	}
	r = lbRun(t, limitCLI, env, "ls", url2[:strings.LastIndex(url2, "/")])
	r.mustOK(t, "ls nvme+tcp://")
	if !strings.Contains(r.stdout, "NGUID/EUI64") || !strings.Contains(r.stdout, " optimized ") || strings.Count(r.stdout, "\n") != 3 {
		t.Fatalf("ls table:\n%s", r.stdout)
	}
}

// TestNVMeStatusFences: `lunbridge status NAME` of a single-path NVMe/TCP
// namespace shows its controller's reconnects and write fences.
func TestNVMeStatusFences(t *testing.T) {
	f, err := fakenvme.Listen(fakenvme.Config{Namespaces: []fakenvme.NSConfig{{BlockSize: 512, Blocks: 2048}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := nvmetcp.Dial(ctx, nvmetcp.Config{Addr: f.Addr(), SubNQN: f.NQN(), KeepAlive: 200 * time.Millisecond, IOQueues: 1})
	if err != nil {
		t.Fatal(err)
	}
	n, err := nvmetcp.OpenNamespace(ctx, c, 1)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	n.SetOwnsController(true)
	defer n.Close()
	var once atomic.Bool
	f.SetFault(func(qid uint16, sqe pdu.SQE) fakenvme.Fault {
		if qid > 0 && sqe.Opcode == pdu.IOWrite && once.CompareAndSwap(false, true) {
			return fakenvme.FaultClose
		}
		return fakenvme.FaultNone
	})
	if err := n.WriteAt(ctx, make([]byte, 512), 0, false); err != nil {
		t.Fatal(err)
	}
	ct := &controlTarget{}
	ct.setDevice(n, false)
	d := ct.detail()
	if d.NVMe == nil || d.NVMe.Reconnects != 1 || d.NVMe.FencesKATO != 1 || d.NVMe.FencedCommands != 1 {
		t.Fatalf("nvme view %+v, want 1 reconnect, 1 fence, 1 held command", d.NVMe)
	}
	var b strings.Builder
	if err := printInstance(&b, d); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "1 reconnects, 1 write fences (keep-alive timeout), 1 commands held") {
		t.Errorf("status:\n%s", b.String())
	}
}
