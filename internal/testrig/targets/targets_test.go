package targets

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

const (
	mib      = 1 << 20
	chapUser = "lbuser"
	chapPass = "lbsecret12345"
	mutUser  = "lbtarget"
	mutPass  = "lbtgtsecret123"
)

// peer runs a libiscsi tool under a hard timeout (iscsi-ls can hang on istgt).
func peer(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	testenv.RequireTool(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out: %w", name, ctx.Err())
	}
	return out.String(), err
}

type capacity struct {
	size      int64
	blockSize int
	lbpme     bool
}

func readCap(t *testing.T, url string) (capacity, error) {
	t.Helper()
	out, err := peer(t, "iscsi-readcapacity16", url)
	if err != nil {
		return capacity{}, fmt.Errorf("iscsi-readcapacity16 %s: %v: %s", url, err, out)
	}
	var c capacity
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Total size":
			c.size, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		case "LOGICAL BLOCK LENGTH IN BYTES":
			c.blockSize, _ = strconv.Atoi(strings.TrimSpace(v))
		case "LBPME":
			c.lbpme = strings.HasPrefix(strings.TrimSpace(v), "1")
		}
	}
	return c, nil
}

func wantCap(t *testing.T, url string, size int64, bs int) capacity {
	t.Helper()
	c, err := readCap(t, url)
	if err != nil {
		t.Fatal(err)
	}
	if c.size != size || c.blockSize != bs {
		t.Fatalf("%s: size %d block %d, want %d / %d", url, c.size, c.blockSize, size, bs)
	}
	return c
}

func writeMarker(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

func readMarker(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func sampleTargets() []Target {
	return []Target{
		{CHAPUser: chapUser, CHAPSecret: chapPass, LUNs: []LUN{{Size: 8 * mib}}},
		{LUNs: []LUN{{Size: 16 * mib, Thin: true}, {Size: 8 * mib, BlockSize: 4096, ReadOnly: true}, {BSType: "null"}}},
		{CHAPUser: chapUser, CHAPSecret: chapPass, MutualUser: mutUser, MutualSecret: mutPass, LUNs: []LUN{{Size: 4 * mib}},
			Params: map[string]string{"HeaderDigest": "CRC32C,None", "MaxRecvDataSegmentLength": "4096", "ImmediateData": "No"}},
	}
}

func TestTgtd(t *testing.T) {
	t.Parallel()
	s := StartTgtd(t, sampleTargets()...)
	if s.Kind != KindTgtd || s.LUNNumber(0) != 1 {
		t.Fatalf("kind %s, LUNNumber(0)=%d", s.Kind, s.LUNNumber(0))
	}
	if !strings.HasPrefix(s.Portal, "127.0.0.1:") {
		t.Fatalf("portal %s", s.Portal)
	}

	// one-way CHAP: works with credentials, fails without
	if _, err := readCap(t, s.URL(0, 0)); err == nil {
		t.Fatalf("CHAP target answered without credentials")
	}
	wantCap(t, s.AuthURL(0, 0), 8*mib, 512)
	bad := strings.Replace(s.AuthURL(0, 0), chapPass, "wrongsecret99", 1)
	if _, err := readCap(t, bad); err == nil {
		t.Fatalf("CHAP target answered with a wrong secret")
	}
	// thin 512-byte LUN, read-only 4K LUN, null LUN
	if c := wantCap(t, s.URL(1, 0), 16*mib, 512); !c.lbpme {
		t.Errorf("thin LUN: LBPME=0")
	}
	if c := wantCap(t, s.URL(1, 1), 8*mib, 4096); c.lbpme {
		t.Errorf("thick LUN: LBPME=1")
	}
	wantCap(t, s.URL(1, 2), 1<<40, 512)
	if s.BackingFile(1, 2) != "" || s.BackingFile(1, 1) == "" {
		t.Errorf("backing files: %q %q", s.BackingFile(1, 1), s.BackingFile(1, 2))
	}
	out, err := peer(t, "iscsi-inq", "-e", "1", "-c", "0", s.URL(1, 0))
	if err != nil || !strings.Contains(out, "0xb2") {
		t.Errorf("thin LUN: VPD page 0xb2 not listed (%v): %s", err, out)
	}
	show, err := s.tgtadm("--lld", "iscsi", "--mode", "target", "--op", "show")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Readonly: Yes", "Thin-provisioning: Yes", "Block size: 4096", "Backing store type: null"} {
		if !strings.Contains(show, want) {
			t.Errorf("tgtadm show lacks %q", want)
		}
	}
	params, _ := s.tgtadm("--lld", "iscsi", "--mode", "target", "--op", "show", "--tid", "3")
	for _, want := range []string{"HeaderDigest=CRC32C", "MaxRecvDataSegmentLength=4096", "ImmediateData=No"} {
		if !strings.Contains(params, want) {
			t.Errorf("tid 3 params lack %q:\n%s", want, params)
		}
	}
	// mutual CHAP
	wantCap(t, s.AuthURL(2, 0), 4*mib, 512)

	// extra portal
	s.AddPortal(t, "127.0.0.2")
	alt := strings.Replace(s.URL(1, 1), "127.0.0.1:", "127.0.0.2:", 1)
	wantCap(t, alt, 8*mib, 4096)

	// restart keeps content, port and portals
	marker := []byte("lunbridge-marker-" + t.Name())
	writeMarker(t, s.BackingFile(1, 0), 4096, marker)
	oldPid, oldPortal := s.Pid, s.Portal
	// an initiator connected across the reboot: the server side of that
	// connection lingers in TIME_WAIT on the portal port
	held, err := net.Dial("tcp", s.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	s.Restart(t)
	if s.Portal != oldPortal || s.Pid == oldPid || pidAlive(oldPid) {
		t.Fatalf("restart: portal %s->%s pid %d->%d (old alive %v)", oldPortal, s.Portal, oldPid, s.Pid, pidAlive(oldPid))
	}
	if got := readMarker(t, s.BackingFile(1, 0), 4096, len(marker)); !bytes.Equal(got, marker) {
		t.Fatalf("marker lost over restart: %q", got)
	}
	wantCap(t, s.URL(1, 0), 16*mib, 512)
	wantCap(t, alt, 8*mib, 4096)
	wantCap(t, s.AuthURL(0, 0), 8*mib, 512)

	// stop: no process left, files kept until cleanup
	pid, control := s.Pid, s.Control
	s.Stop()
	s.Stop() // idempotent
	if pidAlive(pid) || s.Running() {
		t.Fatalf("tgtd pid %d still alive after Stop", pid)
	}
	if !controlFree(control) {
		t.Errorf("control %d still locked", control)
	}
	if _, err := os.Stat(s.BackingFile(1, 0)); err != nil {
		t.Fatalf("backing file removed by Stop: %v", err)
	}
	if _, err := readCap(t, s.URL(1, 0)); err == nil {
		t.Fatalf("stopped target still answers")
	}
}

func TestIstgt(t *testing.T) {
	t.Parallel()
	s := StartWith(t, KindIstgt, Options{ExtraPortals: []string{"127.0.0.2"}},
		Target{CHAPUser: chapUser, CHAPSecret: chapPass, LUNs: []LUN{{Size: 8 * mib}}},
		Target{LUNs: []LUN{{Size: 16 * mib, BlockSize: 4096}, {Size: 8 * mib, BlockSize: 4096}}},
		Target{CHAPUser: chapUser, CHAPSecret: chapPass, MutualUser: mutUser, MutualSecret: mutPass,
			LUNs:   []LUN{{Size: 4 * mib, ReadOnly: true}},
			Params: map[string]string{"HeaderDigest": "None,CRC32C", "MaxRecvDataSegmentLength": "8192", "MaxConnections": "2"}},
	)
	if s.LUNNumber(0) != 0 || !strings.HasSuffix(s.URL(1, 1), "/1") {
		t.Fatalf("istgt LUN numbering: %s", s.URL(1, 1))
	}
	if _, err := readCap(t, s.URL(0, 0)); err == nil {
		t.Fatalf("CHAP target answered without credentials")
	}
	wantCap(t, s.AuthURL(0, 0), 8*mib, 512)
	wantCap(t, s.URL(1, 0), 16*mib, 4096)
	wantCap(t, s.URL(1, 1), 8*mib, 4096)
	wantCap(t, s.AuthURL(2, 0), 4*mib, 512)
	alt := strings.Replace(s.URL(1, 1), "127.0.0.1:", "127.0.0.2:", 1)
	wantCap(t, alt, 8*mib, 4096)
	log := s.LogTail(200)
	if !strings.Contains(log, "readonly storage for "+s.Targets[2].Name) {
		t.Errorf("istgt did not report the read-only LUN:\n%s", log)
	}

	marker := []byte("lunbridge-marker-" + t.Name())
	writeMarker(t, s.BackingFile(1, 1), 8192, marker)
	oldPid, oldPortal := s.Pid, s.Portal
	// an initiator connected across the reboot: the server side of that
	// connection lingers in TIME_WAIT on the portal port
	held, err := net.Dial("tcp", s.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	s.Restart(t)
	if s.Portal != oldPortal || s.Pid == oldPid || pidAlive(oldPid) {
		t.Fatalf("restart: portal %s->%s pid %d->%d", oldPortal, s.Portal, oldPid, s.Pid)
	}
	if got := readMarker(t, s.BackingFile(1, 1), 8192, len(marker)); !bytes.Equal(got, marker) {
		t.Fatalf("marker lost over restart: %q", got)
	}
	wantCap(t, s.URL(1, 1), 8*mib, 4096)

	pid := s.Pid
	s.Stop()
	s.Stop()
	if pidAlive(pid) || s.Running() {
		t.Fatalf("istgt pid %d still alive after Stop", pid)
	}
	if _, err := os.Stat(s.BackingFile(1, 1)); err != nil {
		t.Fatalf("backing file removed by Stop: %v", err)
	}
}

func TestIstgtUnsupported(t *testing.T) {
	cases := []struct {
		name string
		t    Target
		want string
	}{
		{"thin", Target{LUNs: []LUN{{Size: mib, Thin: true}}}, "thin"},
		{"null", Target{LUNs: []LUN{{BSType: "null"}}}, "null"},
		{"mixed block sizes", Target{LUNs: []LUN{{Size: mib}, {Size: mib, BlockSize: 4096}}}, "block sizes"},
		{"mixed read-only", Target{LUNs: []LUN{{Size: mib}, {Size: mib, ReadOnly: true}}}, "read-only"},
		{"InitialR2T", Target{LUNs: []LUN{{Size: mib}}, Params: map[string]string{"InitialR2T": "No"}}, "InitialR2T"},
		{"digest none", Target{LUNs: []LUN{{Size: mib}}, Params: map[string]string{"DataDigest": "None"}}, "refuse"},
		{"unknown key", Target{LUNs: []LUN{{Size: mib}}, Params: map[string]string{"MaxXmitDataSegmentLength": "1"}}, "MaxXmit"},
	}
	for _, c := range cases {
		c.t.Name = "iqn.2026-01.x:c"
		_, err := istgtConfig(&Server{Targets: []Target{c.t}})
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "istgt cannot") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// global-only keys must agree
	a := Target{Name: "iqn.2026-01.x:a", LUNs: []LUN{{Size: mib}}, Params: map[string]string{"MaxConnections": "2"}}
	b := Target{Name: "iqn.2026-01.x:b", LUNs: []LUN{{Size: mib}}, Params: map[string]string{"MaxConnections": "4"}}
	if _, err := istgtConfig(&Server{Targets: []Target{a, b}}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("conflicting global key: %v", err)
	}
	b.Params = map[string]string{"MaxConnections": "2", "FirstBurstLength": "8192", "DataDigest": "CRC32C", "HeaderDigest": "CRC32C"}
	conf, err := istgtConfig(&Server{Portal: "127.0.0.1:1", Targets: []Target{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"  MaxConnections 2\n", "  FirstBurstLength 8192\n", "  UseDigest Header Data\n", "  UseDigest Auto\n", "  Portal DA1 127.0.0.1:1\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	// and Launch refuses before starting anything
	if _, err := Launch(KindIstgt, Options{}, Target{LUNs: []LUN{{Size: mib, Thin: true}}}); !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrUnavailable) {
		t.Errorf("Launch thin istgt: %v", err)
	}
}

// Several servers at once: distinct ports, control numbers and dirs, each
// serving its own target.
func TestConcurrentServers(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	kinds := []string{KindTgtd, KindTgtd, KindTgtd, KindIstgt}
	for _, k := range kinds {
		if err := Available(k); err != nil {
			testenv.Unavailable(t, "%v", err)
		}
	}
	servers := make([]*Server, len(kinds))
	errs := make([]error, len(kinds))
	var wg sync.WaitGroup
	for i, k := range kinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i], errs[i] = Launch(k, Options{}, Target{LUNs: []LUN{{Size: int64(i+1) * mib}}})
		}()
	}
	wg.Wait()
	for i, s := range servers {
		if s != nil {
			t.Cleanup(func() { s.Close(); s.Remove() })
		}
		if errs[i] != nil {
			t.Fatalf("server %d (%s): %v", i, kinds[i], errs[i])
		}
	}
	ports, controls, dirs := map[int]bool{}, map[int]bool{}, map[string]bool{}
	for _, s := range servers {
		if ports[s.Port] || dirs[s.WorkDir] || (s.Kind == KindTgtd && controls[s.Control]) {
			t.Fatalf("collision: port %d control %d dir %s", s.Port, s.Control, s.WorkDir)
		}
		ports[s.Port], dirs[s.WorkDir] = true, true
		if s.Kind == KindTgtd {
			controls[s.Control] = true
		}
	}
	for i, s := range servers {
		wantCap(t, s.URL(0, 0), int64(i+1)*mib, 512)
	}
	// tgtd with a port already taken by someone else: Launch fails fast
	// (fixed port) rather than hang.
	for _, s := range servers {
		s.Stop()
		if pidAlive(s.Pid) {
			t.Fatalf("pid %d alive", s.Pid)
		}
	}
}

// Detached start + state file + stop from a freshly loaded state: what
// lbtarget does across processes.
func TestDetachedState(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	if err := Available(KindTgtd); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	s, err := Launch(KindTgtd, Options{Detached: true, Logf: t.Logf}, Target{CHAPUser: chapUser, CHAPSecret: chapPass, LUNs: []LUN{{Size: 2 * mib}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.kill(); s.Remove() })
	stateDir := t.TempDir()
	if err := s.SaveState(stateDir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(stateDir + "/" + StateFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", err, st.Mode())
	}
	l, err := LoadState(stateDir, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if l.Pid != s.Pid || l.Control != s.Control || l.Portal != s.Portal || l.BackingFile(0, 0) != s.BackingFile(0, 0) {
		t.Fatalf("loaded state differs: %+v", l)
	}
	wantCap(t, l.AuthURL(0, 0), 2*mib, 512)
	pid := l.Pid
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
	if !s.waitGone(5*time.Second) || pidAlive(pid) {
		t.Fatalf("pid %d alive after stop from state", pid)
	}
	if _, err := os.Stat(s.WorkDir); !os.IsNotExist(err) {
		t.Fatalf("work dir kept: %v", err)
	}
}

func TestPortHelpers(t *testing.T) {
	p, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if listenerOwnedBy(fmt.Sprintf("127.0.0.1:%d", p), os.Getpid()) {
		t.Fatal("closed port reported as listening")
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !listenerOwnedBy(l.Addr().String(), os.Getpid()) {
		t.Fatal("own listener not found")
	}
	if listenerOwnedBy(l.Addr().String(), 1) {
		t.Fatal("listener attributed to pid 1")
	}
	if portFree("127.0.0.1", p) {
		t.Fatal("taken port reported free")
	}
}

// A test binary that dies without running its cleanups (SIGKILL, -timeout
// panic) must not leave daemons behind: they are started with
// PR_SET_PDEATHSIG=SIGKILL from a thread that never exits.
func TestDaemonsDieWithTestBinary(t *testing.T) {
	if os.Getenv("LB_TARGETS_HELPER") == "1" {
		kind := os.Getenv("LB_TARGETS_KIND")
		s, err := Launch(kind, Options{}, Target{LUNs: []LUN{{Size: mib}}})
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Printf("PID %d %s\n", s.Pid, s.WorkDir)
		time.Sleep(time.Minute)
		os.Exit(1)
	}
	t.Parallel()
	testenv.RequireRoot(t)
	for _, kind := range []string{KindTgtd, KindIstgt} {
		if err := Available(kind); err != nil {
			testenv.Unavailable(t, "%v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDaemonsDieWithTestBinary$")
		cmd.Env = append(os.Environ(), "LB_TARGETS_HELPER=1", "LB_TARGETS_KIND="+kind)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var pid int
		var dir string
		line, _ := bufio.NewReader(out).ReadString('\n')
		if _, err := fmt.Sscanf(line, "PID %d %s", &pid, &dir); err != nil {
			cancel()
			cmd.Wait()
			t.Fatalf("%s helper: %q", kind, line)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if !pidAlive(pid) {
			t.Fatalf("%s pid %d not running", kind, pid)
		}
		cmd.Process.Kill()
		cmd.Wait()
		cancel()
		end := time.Now().Add(5 * time.Second)
		for pidAlive(pid) && time.Now().Before(end) {
			time.Sleep(20 * time.Millisecond)
		}
		if pidAlive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("%s pid %d survived its test binary", kind, pid)
		}
	}
}

// A fixed port that someone else holds fails fast with a clear error.
func TestFixedPortTaken(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	for _, kind := range []string{KindTgtd, KindIstgt} {
		if err := Available(kind); err != nil {
			testenv.Unavailable(t, "%v", err)
		}
		start := time.Now()
		s, err := Launch(kind, Options{Port: port}, Target{LUNs: []LUN{{Size: mib}}})
		if err == nil {
			s.Close()
			s.Remove()
			t.Fatalf("%s started on a taken port", kind)
		}
		if !errors.Is(err, errPortInUse) || time.Since(start) > 5*time.Second {
			t.Errorf("%s on a taken port: after %v: %v", kind, time.Since(start), err)
		}
	}
}
