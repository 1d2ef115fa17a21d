// Package targets starts REAL iSCSI targets (Debian's tgtd and istgt) on free
// loopback ports with RAM-backed LUNs (sparse files in a fresh directory under
// /dev/shm), for tests and for the demo. Everything it starts is torn down:
// the testing.TB wrappers (StartTgtd, StartIstgt, StartWith) register
// t.Cleanup, and daemons started for a test are spawned with
// PR_SET_PDEATHSIG=SIGKILL so a test binary killed by -timeout takes them down.
//
// The core (Launch, Server.Close, Server.RestartErr, Server.AddPortalErr,
// LoadState) returns errors and logs through Options.Logf, so the non-test
// command internal/testrig/targets/cmd/lbtarget reuses it to start a detached demo
// target.
//
// Collisions with other users of the machine are avoided: iSCSI ports come
// from the kernel (listen on port 0), tgtd control numbers are random and
// checked against tgtd's lock file, work directories come from os.MkdirTemp,
// and a start that loses a race (port taken, control number taken) is retried
// with fresh values.
//
// LUN numbering differs: tgtd's LUN 0 is its controller, so Target.LUNs[i] is
// LUN i+1 on tgtd and LUN i on istgt; use Server.LUNNumber / Server.URL.
//
// istgt limitations (reported as ErrUnsupported, which the TB wrappers turn
// into a skip whose message starts with "istgt cannot"):
//   - BlockSize and ReadOnly are per target (LogicalUnit section: BlockLength,
//     ReadOnly): all LUNs of one istgt target must agree.
//   - no thin provisioning (no UNMAP / GET LBA STATUS, no VPD page 0xb2), no
//     null backing store.
//   - InitialR2T=No, DataPDUInOrder=No, DataSequenceInOrder=No,
//     ErrorRecoveryLevel>0 are rejected by istgt itself.
//   - digests: UseDigest Header/Data forces CRC32C; Auto accepts either.
//     There is no way to refuse CRC32C, so HeaderDigest/DataDigest=None is
//     unsupported ("None,CRC32C" / "CRC32C,None" map to Auto, "CRC32C" forces).
//   - per target (LogicalUnit section): MaxOutstandingR2T, DefaultTime2Wait,
//     DefaultTime2Retain, FirstBurstLength, MaxBurstLength, InitialR2T,
//     ImmediateData, DataPDUInOrder, DataSequenceInOrder, ErrorRecoveryLevel.
//     Global only ([Global]): MaxConnections, MaxSessions, MaxR2T,
//     NopInInterval, Timeout, MaxRecvDataSegmentLength (istgt ignores a
//     per-LU value on the wire) — all targets of one server must agree on
//     them (IstgtGlobalKeys); a conflict is ErrUnsupported.
//   - istgt defaults written to [Global]: MaxRecvDataSegmentLength 262144,
//     FirstBurstLength 262144, MaxBurstLength 1048576, MaxConnections 4,
//     ImmediateData Yes, InitialR2T Yes (tgtd: 8192 / 65536 / 262144 / 1).
//   - AddPortal on a running istgt: use Options.ExtraPortals at start instead.
package targets

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Kinds of server.
const (
	KindTgtd  = "tgtd"
	KindIstgt = "istgt"
)

// ErrUnsupported marks a request the chosen target implementation cannot
// serve (for example a thin LUN on istgt). Test wrappers skip on it.
var ErrUnsupported = errors.New("unsupported by this target")

// ErrUnavailable marks a missing binary or privilege.
var ErrUnavailable = errors.New("target unavailable")

var errPortInUse = errors.New("port already in use")

// Wait bounds.
const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
	cmdTimeout   = 10 * time.Second
)

// ShmRoot is where work directories (backing files, configs, logs) live.
var ShmRoot = "/dev/shm"

const workPrefix = "lunbridge-target-"

// LUN describes one logical unit.
type LUN struct {
	Size      int64  // bytes; the file is created sparse with truncate
	BlockSize int    // 0 = 512; 512/1024/2048/4096
	ReadOnly  bool   // tgtd: readonly=1; istgt: ReadOnly Yes (per target)
	Thin      bool   // tgtd only: thin_provisioning=1 (LBPME=1, UNMAP; tgtd answers GET LBA STATUS on any file LUN)
	BSType    string // tgtd backing store: "" = rdwr (file); "null" = null LUN (tgtd fixes its size at 1 TiB)
	// BackingFile is an existing file of Size bytes to serve instead of a
	// fresh sparse file in the work dir (e.g. a deliberately slow FUSE
	// file). It is neither created nor removed.
	BackingFile string
	Path        string // filled in: backing file path ("" for a null LUN)
}

// Target is one iSCSI target (an IQN) with its LUNs.
type Target struct {
	Name         string // full IQN; generated when empty
	LUNs         []LUN
	CHAPUser     string // one-way CHAP: the initiator's credentials (incoming account)
	CHAPSecret   string
	MutualUser   string // mutual CHAP: the target's own credentials (outgoing account)
	MutualSecret string
	// Params are negotiation keys (HeaderDigest, DataDigest,
	// MaxRecvDataSegmentLength, FirstBurstLength, MaxBurstLength, InitialR2T,
	// ImmediateData, MaxOutstandingR2T, MaxConnections, ...). tgtd: per target
	// (tgtadm --op update -n K -v V). istgt: see the package comment.
	Params map[string]string
}

// Options tune Launch.
type Options struct {
	// Port is the iSCSI port on 127.0.0.1; 0 = a free one.
	Port int
	// PreferPort is tried first when Port is 0 (e.g. 3260 for the demo); a
	// free port is used when it is taken.
	PreferPort int
	// ExtraPortals are more listening addresses ("127.0.0.2" or
	// "127.0.0.2:PORT"; without a port the main port is used).
	ExtraPortals []string
	// Detached starts the daemon in its own session, not tied to this
	// process (for lbtarget). Otherwise it is killed when this process dies.
	Detached bool
	// Logf receives progress messages; nil = silent.
	Logf func(format string, args ...any)
}

// Server is a running (or stopped) target daemon. Its exported fields are
// also its persisted state (see SaveState / LoadState).
type Server struct {
	Kind         string   // "tgtd" or "istgt"
	Portal       string   // "127.0.0.1:PORT"
	Port         int      // iSCSI port
	ExtraPortals []string // more portals, "IP:PORT"
	Targets      []Target // with names and backing paths filled in
	WorkDir      string   // fresh dir under /dev/shm: backing files, configs, log
	LogFile      string   // the daemon's stdout+stderr
	Pid          int      // daemon pid (0 when stopped)
	Control      int      // tgtd -C control number
	Detached     bool

	mu          sync.Mutex
	portalSpecs []string      // ExtraPortals as given (a port may be missing)
	exited      chan struct{} // closed when our child exits; nil when not our child
	waitErr     error
	logf        func(string, ...any)
	stopped     bool
}

// Available reports whether a kind of server can be started here.
func Available(kind string) error {
	var bins []string
	switch kind {
	case KindTgtd:
		bins = []string{"tgtd", "tgtadm"}
	case KindIstgt:
		bins = []string{"istgt"}
	default:
		return fmt.Errorf("targets: unknown kind %q", kind)
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%w: %s not found in PATH (install package %s: scripts/install-deps.sh)", ErrUnavailable, b, pkgOf(kind))
		}
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: %s needs root", ErrUnavailable, kind)
	}
	if st, err := os.Stat(ShmRoot); err != nil || !st.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrUnavailable, ShmRoot)
	}
	return nil
}

func pkgOf(kind string) string {
	if kind == KindTgtd {
		return "tgt"
	}
	return kind
}

// Launch starts a server of the given kind with the targets and waits until
// it is ready. On error nothing is left running and the work dir is removed.
func Launch(kind string, opts Options, targets ...Target) (*Server, error) {
	if err := Available(kind); err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, errors.New("targets: at least one target is needed")
	}
	sweepStale()
	targets = append([]Target(nil), targets...) // never modify the caller's slice
	s := &Server{Kind: kind, Detached: opts.Detached, logf: opts.Logf}
	tag := randHex(4)
	for i, t := range targets {
		t.Params = copyMap(t.Params)
		t.LUNs = append([]LUN(nil), t.LUNs...)
		if t.Name == "" {
			t.Name = fmt.Sprintf("iqn.2026-01.io.lunbridge.test:%s-%s-%d", kind, tag, i)
		}
		if len(t.LUNs) == 0 {
			return nil, fmt.Errorf("targets: target %s has no LUNs", t.Name)
		}
		for j := range t.LUNs {
			l := &t.LUNs[j]
			bs := l.BlockSize
			if bs == 0 {
				bs = 512
			}
			if bs != 512 && bs != 1024 && bs != 2048 && bs != 4096 {
				return nil, fmt.Errorf("targets: LUN %d of %s: block size %d not one of 512/1024/2048/4096", j, t.Name, bs)
			}
			if l.BSType != "null" && (l.Size <= 0 || l.Size%int64(bs) != 0) {
				return nil, fmt.Errorf("targets: LUN %d of %s: size %d is not a positive multiple of %d", j, t.Name, l.Size, bs)
			}
			if l.BSType != "" && l.BSType != "rdwr" && l.BSType != "null" {
				return nil, fmt.Errorf("targets: LUN %d of %s: backing store type %q not supported (\"\", rdwr, null)", j, t.Name, l.BSType)
			}
		}
		targets[i] = t
	}
	s.Targets = targets
	if kind == KindIstgt {
		if _, err := istgtConfig(s); err != nil { // validate before creating anything
			return nil, err
		}
	}
	dir, err := os.MkdirTemp(ShmRoot, workPrefix)
	if err != nil {
		return nil, fmt.Errorf("targets: work dir: %w", err)
	}
	s.WorkDir = dir
	s.LogFile = filepath.Join(dir, kind+".log")
	// owner: pids whose death makes the dir stale (see sweepStale); the
	// daemon's pid is added once it runs.
	_ = os.WriteFile(filepath.Join(dir, "owner"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	for i := range s.Targets {
		for j := range s.Targets[i].LUNs {
			l := &s.Targets[i].LUNs[j]
			if l.BSType == "null" {
				continue
			}
			if l.BackingFile != "" {
				l.Path = l.BackingFile
				continue
			}
			l.Path = filepath.Join(dir, fmt.Sprintf("t%d-lun%d.img", i, j))
			if err := createSparse(l.Path, l.Size); err != nil {
				os.RemoveAll(dir)
				return nil, err
			}
		}
	}
	s.portalSpecs = append([]string(nil), opts.ExtraPortals...) // resolved to IP:PORT once the port is known
	if err := s.start(opts.Port, opts.PreferPort, false); err != nil {
		s.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func createSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("targets: backing file: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() == size {
		return nil
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("targets: truncate %s: %w", path, err)
	}
	return nil
}

func (s *Server) log(format string, args ...any) {
	if s.logf != nil {
		s.logf(format, args...)
	}
}

// start launches the daemon, retrying with fresh port / control numbers when
// it loses a race. fixedPort != 0 keeps the port (Restart, --port); a taken
// fixed port fails at once, except on restart, where the old daemon's port
// may take a moment to become free.
func (s *Server) start(fixedPort, preferPort int, restarting bool) error {
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for attempt := 0; ; attempt++ {
		port := fixedPort
		if port == 0 {
			if attempt == 0 && preferPort != 0 && portFree("127.0.0.1", preferPort) {
				port = preferPort
			} else {
				p, err := freePort("127.0.0.1")
				if err != nil {
					return err
				}
				port = p
			}
		}
		s.Port = port
		s.Portal = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.resolvePortals()
		var retry bool
		var err error
		switch s.Kind {
		case KindTgtd:
			retry, err = s.startTgtd(deadline)
		case KindIstgt:
			retry, err = s.startIstgt(deadline)
		}
		if err == nil {
			s.writeOwner()
			s.log("targets: %s ready on %s (pid %d, work dir %s)", s.Kind, s.Portal, s.Pid, s.WorkDir)
			return nil
		}
		lastErr = err
		s.kill()
		if retry && fixedPort != 0 && !restarting && errors.Is(err, errPortInUse) {
			retry = false
		}
		if !retry || time.Now().After(deadline) || attempt >= 20 {
			return lastErr
		}
		s.log("targets: %s start attempt %d: %v; retrying", s.Kind, attempt+1, err)
		time.Sleep(time.Duration(50*(attempt+1)) * time.Millisecond)
	}
}

func (s *Server) resolvePortals() {
	if s.portalSpecs == nil {
		s.portalSpecs = append([]string(nil), s.ExtraPortals...)
	}
	s.ExtraPortals = nil
	for _, p := range s.portalSpecs {
		if _, _, err := net.SplitHostPort(p); err != nil {
			p = net.JoinHostPort(p, strconv.Itoa(s.Port))
		}
		s.ExtraPortals = append(s.ExtraPortals, p)
	}
}

func (s *Server) writeOwner() {
	if s.WorkDir == "" {
		return
	}
	var pids []string
	if !s.Detached {
		pids = append(pids, strconv.Itoa(os.Getpid()))
	}
	if s.Pid != 0 {
		pids = append(pids, strconv.Itoa(s.Pid))
	}
	_ = os.WriteFile(filepath.Join(s.WorkDir, "owner"), []byte(strings.Join(pids, "\n")+"\n"), 0o644)
}

// spawn starts the daemon with its output appended to the log file.
func (s *Server) spawn(name string, args ...string) error {
	logf, err := os.OpenFile(s.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== %s %s %s\n", time.Now().Format(time.RFC3339Nano), name, strings.Join(args, " "))
	cmd := exec.Command(name, args...)
	cmd.Dir = s.WorkDir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s.Detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		err = cmd.Start()
	} else {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		err = spawnLocked(cmd)
	}
	if err != nil {
		return fmt.Errorf("targets: start %s: %w", name, err)
	}
	exited := make(chan struct{})
	s.mu.Lock()
	s.Pid = cmd.Process.Pid
	s.exited = exited
	s.stopped = false
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.waitErr = err
		s.mu.Unlock()
		close(exited)
	}()
	return nil
}

// Pdeathsig fires when the *thread* that forked the child exits. Go threads
// normally live forever, but a goroutine that exits while locked to its
// thread takes the thread with it; so all test daemons are forked from one
// dedicated thread that never exits.
var (
	spawnOnce sync.Once
	spawnReq  chan spawnCall
)

type spawnCall struct {
	cmd  *exec.Cmd
	done chan error
}

func spawnLocked(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReq = make(chan spawnCall)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for c := range spawnReq {
				c.done <- c.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnReq <- spawnCall{cmd, done}
	return <-done
}

// alive reports whether the daemon process still runs.
func (s *Server) alive() bool {
	s.mu.Lock()
	pid, exited := s.Pid, s.exited
	s.mu.Unlock()
	if pid == 0 {
		return false
	}
	if exited != nil {
		select {
		case <-exited:
			return false
		default:
			return true
		}
	}
	return pidAlive(pid)
}

// pidAlive: exists and is not a zombie.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	st := b[i+2]
	return st != 'Z' && st != 'X'
}

func pidComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// waitGone waits up to d for the daemon to exit.
func (s *Server) waitGone(d time.Duration) bool {
	s.mu.Lock()
	pid, exited := s.Pid, s.exited
	s.mu.Unlock()
	if pid == 0 {
		return true
	}
	if exited != nil {
		select {
		case <-exited:
			return true
		case <-time.After(d):
			return false
		}
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if !pidAlive(pid) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !pidAlive(pid)
}

// kill SIGKILLs the daemon (if it is still ours) and waits for it.
func (s *Server) kill() {
	s.mu.Lock()
	pid, exited := s.Pid, s.exited
	s.mu.Unlock()
	if pid == 0 {
		return
	}
	if exited == nil && pidComm(pid) != s.Kind {
		// not our child and the pid now belongs to something else
		s.mu.Lock()
		s.Pid = 0
		s.mu.Unlock()
		return
	}
	if s.alive() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		s.waitGone(stopTimeout)
	}
	s.mu.Lock()
	s.Pid = 0
	s.mu.Unlock()
}

// Close stops the daemon (gracefully, then SIGKILL after a bound). It is
// idempotent and keeps the work dir and backing files; see Remove.
func (s *Server) Close() error {
	s.mu.Lock()
	pid := s.Pid
	s.mu.Unlock()
	if pid == 0 || !s.alive() {
		s.mu.Lock()
		s.Pid = 0
		s.stopped = true
		s.mu.Unlock()
		return nil
	}
	var err error
	switch s.Kind {
	case KindTgtd:
		err = s.stopTgtd()
	case KindIstgt:
		err = s.stopIstgt()
	}
	if s.alive() {
		s.kill()
		if err == nil {
			err = fmt.Errorf("targets: %s pid %d did not stop in %v; killed", s.Kind, pid, stopTimeout)
		}
	}
	s.mu.Lock()
	s.Pid = 0
	s.stopped = true
	s.mu.Unlock()
	return err
}

// Remove deletes the work dir (backing files, configs, log). Call after Close.
func (s *Server) Remove() error {
	if s.WorkDir == "" || !strings.HasPrefix(filepath.Base(s.WorkDir), workPrefix) {
		return nil
	}
	return os.RemoveAll(s.WorkDir)
}

// RestartErr stops the daemon and starts it again on the same port with the
// same backing files (a target reboot).
func (s *Server) RestartErr() error {
	if err := s.Close(); err != nil {
		s.log("targets: restart: stop: %v", err)
	}
	for i := range s.Targets {
		for _, l := range s.Targets[i].LUNs {
			if l.Path != "" {
				if _, err := os.Stat(l.Path); err != nil {
					return fmt.Errorf("targets: restart: backing file gone: %w", err)
				}
			}
		}
	}
	return s.start(s.Port, 0, true)
}

// Running reports whether the daemon is alive.
func (s *Server) Running() bool { return s.alive() }

// LUNNumber maps an index into Target.LUNs to the LUN number on the wire.
func (s *Server) LUNNumber(lun int) int {
	if s.Kind == KindTgtd {
		return lun + 1
	}
	return lun
}

// URL is the libiscsi-style URL of a LUN: iscsi://127.0.0.1:PORT/IQN/LUN.
func (s *Server) URL(target, lun int) string {
	return fmt.Sprintf("iscsi://%s/%s/%d", s.Portal, s.Targets[target].Name, s.LUNNumber(lun))
}

// AuthURL is URL with the target's CHAP credentials (user%secret@) and, for
// mutual CHAP, ?target_user=&target_password= — libiscsi syntax.
func (s *Server) AuthURL(target, lun int) string {
	t := s.Targets[target]
	if t.CHAPUser == "" {
		return s.URL(target, lun)
	}
	u := fmt.Sprintf("iscsi://%s%%%s@%s/%s/%d", t.CHAPUser, t.CHAPSecret, s.Portal, t.Name, s.LUNNumber(lun))
	if t.MutualUser != "" {
		u += "?target_user=" + t.MutualUser + "&target_password=" + t.MutualSecret
	}
	return u
}

// BackingFile is the path of a LUN's backing file.
func (s *Server) BackingFile(target, lun int) string { return s.Targets[target].LUNs[lun].Path }

// LogTail returns the last n lines of the daemon's log.
func (s *Server) LogTail(n int) string { return tailFile(s.LogFile, n) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func logContains(path, sub string) bool {
	b, _ := os.ReadFile(path)
	return strings.Contains(string(b), sub)
}

// ---- state (lbtarget) ----

// StateFile is the name of the state file inside a state dir.
const StateFile = "state.json"

// SaveState writes the server's state to dir/state.json (mode 0600: it holds
// CHAP secrets).
func (s *Server) SaveState(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, StateFile))
}

// LoadState reads a state written by SaveState. The returned Server can be
// stopped (Close, Remove) from another process.
func LoadState(dir string, logf func(string, ...any)) (*Server, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, err
	}
	s := &Server{logf: logf}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("targets: %s: %w", filepath.Join(dir, StateFile), err)
	}
	if s.Pid != 0 && (!pidAlive(s.Pid) || pidComm(s.Pid) != s.Kind) {
		s.Pid = 0
	}
	return s, nil
}

// ---- ports ----

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("targets: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(host string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// listenerOwnedBy reports whether addr ("IP:PORT", IPv4) is in LISTEN state on
// a socket held open by pid (read from /proc/net/tcp and /proc/PID/fd).
func listenerOwnedBy(addr string, pid int) bool {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	port, _ := strconv.Atoi(ps)
	ip := net.ParseIP(host).To4()
	if ip == nil {
		return false
	}
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], port)
	wantAny := fmt.Sprintf("00000000:%04X", port)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return false
	}
	defer f.Close()
	inodes := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[3] != "0A" {
			continue
		}
		if fs[1] == want || fs[1] == wantAny {
			inodes["socket:["+fs[9]+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return false
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && inodes[l] {
			return true
		}
	}
	return false
}

// ---- misc ----

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sweepStale removes work dirs left by processes that died without cleanup
// (a test binary killed by SIGKILL): every pid in its owner file is gone and
// it has not been touched for a minute.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(ShmRoot, workPrefix+"*"))
	for _, d := range dirs {
		st, err := os.Stat(d)
		if err != nil || time.Since(st.ModTime()) < time.Minute {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "owner"))
		if err != nil {
			continue
		}
		anyAlive := false
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pidAlive(pid) {
				anyAlive = true
			}
		}
		if !anyAlive {
			os.RemoveAll(d)
		}
	}
}
