// Package vmlab boots a small Debian kernel in qemu (TCG, no KVM needed) for the parts of
// lunbridge's testing that this machine's kernel cannot do: a real LIO (kernel) iSCSI target,
// and the kernel NBD driver (/dev/nbdX).
//
// The kernel and a base initramfs come from Debian packages and are cached by
// scripts/vmlab/build.sh under ${XDG_CACHE_HOME:-$HOME/.cache}/lunbridge-vmlab/KERNELVERSION/.
// Each Boot assembles a per-run initramfs (base + /init + scenarios + optionally a static
// lunbridge binary) with scripts/vmlab/initramfs.sh and starts
//
//	qemu-system-x86_64 -accel tcg -m 512 -smp 1 -nographic -no-reboot -kernel vmlinux ...
//	  -netdev user,id=n0,hostfwd=tcp:127.0.0.1:FREEPORT-:3260 -device virtio-net-pci,netdev=n0
//
// The guest runs /scenarios/NAME.sh and prints "=== VMLAB RESULT PASS ===" or
// "=== VMLAB RESULT FAIL: reason ===" on its serial console, which is qemu's stdout here (also
// written to a log file). qemu's stdin is the guest console's input: long-running scenarios
// (lio) serve a small command channel on it ("stop", "run ID CMD"), see Stop and Run.
//
// VM tests are opt-in: they run only with LUNBRIDGE_VMLAB=1 or CI=true (see Require), so a
// plain `go test ./...` during development does not boot VMs. Only one VM runs at a time on
// the machine (a file lock in the cache directory), with one virtual CPU.
package vmlab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// EnvEnable is the environment variable that enables VM tests outside CI.
const EnvEnable = "LUNBRIDGE_VMLAB"

// Markers printed by the guest on its console.
const (
	MarkerReady      = "=== VMLAB READY ==="
	markerResult     = "=== VMLAB RESULT "
	markerResultPass = "=== VMLAB RESULT PASS ==="
)

// Options describe one VM run.
type Options struct {
	// Scenario is the guest script to run: scripts/vmlab/scenarios/NAME.sh.
	Scenario string
	// Params become "lunbridge.KEY=VALUE" on the kernel command line (KEY without the
	// "lunbridge." prefix, e.g. "lio.chap"). Values must not contain spaces.
	Params map[string]string
	// Lunbridge is the path of a static lunbridge binary installed as /bin/lunbridge.
	Lunbridge string
	// Files adds extra files to the initramfs: guest path -> host path.
	Files map[string]string
	// Timeout bounds the VM's whole life: the guest watchdog powers off after it and the
	// host kills qemu shortly after. Default 10 minutes.
	Timeout time.Duration
	// BootTimeout bounds build + start; default 5 minutes (a cold build downloads a kernel).
	BootTimeout time.Duration
	// MemoryMB is the guest RAM; default 512.
	MemoryMB int
	// LogPath is where the serial console is written; default a file in t.TempDir().
	LogPath string
	// Forward lists more guest TCP ports to forward to free host ports (3260 always is);
	// PortalFor names the host side.
	Forward []int
	// KernelPackage boots another Debian kernel package than linux-image-amd64 (build.sh's
	// VMLAB_KPKG: a versioned package or a meta-package such as linux-image-6.12-amd64),
	// cached in its own directory. Empty: $LUNBRIDGE_VMLAB_KPKG, else linux-image-amd64.
	KernelPackage string
}

// Result is the scenario outcome parsed from the console.
type Result struct {
	Seen   bool   // a RESULT marker was printed
	Pass   bool   // it was PASS
	Reason string // the FAIL reason
}

func (r Result) String() string {
	switch {
	case !r.Seen:
		return "no result"
	case r.Pass:
		return "PASS"
	default:
		return "FAIL: " + r.Reason
	}
}

// VM is one running qemu.
type VM struct {
	t       testing.TB
	opts    Options
	port    int
	fwd     map[int]int // guest port -> host port (Options.Forward)
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	logPath string
	logFile *os.File
	unlock  func()

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced whenever lines grow or the VM exits
	exited  bool
	exitErr error
	done    chan struct{}

	stopOnce sync.Once
	cmdSeq   int
}

var procMu sync.Mutex // one VM per test process (plus the cross-process file lock)

// Enabled reports whether VM tests should run: LUNBRIDGE_VMLAB=1 or CI=true.
func Enabled() bool { return os.Getenv(EnvEnable) == "1" || testenv.InCI() }

// Require skips the test unless VM tests are enabled, and fails/skips (testenv.Unavailable)
// when qemu is missing.
func Require(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skipf("VM lab test: set %s=1 to boot a qemu VM (always on under CI=true)", EnvEnable)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		testenv.Unavailable(t, "qemu-system-x86_64 not found (run scripts/vmlab/build.sh as root)")
	}
}

// ScriptsDir returns the directory holding build.sh, initramfs.sh, init and scenarios/.
// LUNBRIDGE_VMLAB_SCRIPTS overrides it.
func ScriptsDir() string {
	if d := os.Getenv("LUNBRIDGE_VMLAB_SCRIPTS"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "scripts", "vmlab")
}

// Artifacts are the cached build outputs.
type Artifacts struct {
	Dir, KernelVersion, Kernel, Base string
}

// Build runs build.sh (cheap when cached) and returns the artifact paths. It never installs
// packages unless LUNBRIDGE_VMLAB_INSTALL=1.
func Build(ctx context.Context) (Artifacts, error) { return BuildKernel(ctx, "") }

// BuildKernel is Build for the kernel package kpkg (see Options.KernelPackage; "" is the
// default kernel).
func BuildKernel(ctx context.Context, kpkg string) (Artifacts, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(ScriptsDir(), "build.sh"))
	env := os.Environ()
	if kpkg == "" {
		kpkg = os.Getenv("LUNBRIDGE_VMLAB_KPKG")
	}
	if kpkg != "" {
		env = append(env, "VMLAB_KPKG="+kpkg)
	}
	if os.Getenv("LUNBRIDGE_VMLAB_INSTALL") != "1" {
		env = append(env, "VMLAB_NO_INSTALL=1")
	}
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Artifacts{}, fmt.Errorf("build.sh: %v: %s", err, lastLines(stderr.String(), 15))
	}
	var a Artifacts
	for _, l := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok {
			continue
		}
		switch k {
		case "VMLAB_DIR":
			a.Dir = v
		case "VMLAB_KVER":
			a.KernelVersion = v
		case "VMLAB_KERNEL":
			a.Kernel = v
		case "VMLAB_BASE":
			a.Base = v
		}
	}
	if a.Kernel == "" || a.Base == "" {
		return a, fmt.Errorf("build.sh printed no artifact paths: %q", out)
	}
	return a, nil
}

// Boot builds (or reuses) the lab, assembles the initramfs and starts the VM. qemu is always
// killed in t.Cleanup; on test failure the tail of the serial log is logged.
func Boot(t testing.TB, opts Options) *VM {
	t.Helper()
	Require(t)
	if opts.Scenario == "" {
		t.Fatal("vmlab: Options.Scenario is empty")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.BootTimeout <= 0 {
		opts.BootTimeout = 5 * time.Minute
	}
	if opts.MemoryMB <= 0 {
		opts.MemoryMB = 512
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.BootTimeout)
	defer cancel()

	art, err := BuildKernel(ctx, opts.KernelPackage)
	if err != nil {
		testenv.Unavailable(t, "VM lab build: %v", err)
	}
	if opts.KernelPackage != "" || os.Getenv("LUNBRIDGE_VMLAB_KPKG") != "" {
		t.Logf("vmlab: kernel %s", art.KernelVersion)
	}
	tmp := t.TempDir()
	initrd := filepath.Join(tmp, "initrd.cpio.gz")
	args := []string{initrd, art.Base}
	if opts.Lunbridge != "" {
		args = append(args, "--lunbridge", opts.Lunbridge)
	}
	for guest, host := range opts.Files {
		args = append(args, "--add", host+"="+guest)
	}
	asm := exec.CommandContext(ctx, filepath.Join(ScriptsDir(), "initramfs.sh"), args...)
	if out, err := asm.CombinedOutput(); err != nil {
		t.Fatalf("vmlab: initramfs.sh: %v: %s", err, out)
	}

	unlock, err := lockVM(ctx, art.Dir)
	if err != nil {
		t.Fatalf("vmlab: %v", err)
	}

	logPath := opts.LogPath
	if logPath == "" {
		logPath = filepath.Join(tmp, "serial-"+opts.Scenario+".log")
	}
	var vm *VM
	for attempt := 0; ; attempt++ {
		vm, err = start(t, opts, art, initrd, logPath)
		if err == nil {
			break
		}
		if attempt >= 2 || !strings.Contains(err.Error(), "hostfwd") {
			unlock()
			t.Fatalf("vmlab: start qemu: %v", err)
		}
	}
	vm.unlock = unlock
	t.Cleanup(func() {
		vm.Stop()
		if t.Failed() {
			t.Logf("vmlab: serial log %s (last lines):\n%s", vm.logPath, lastLines(vm.Output(), 80))
		}
	})
	return vm
}

// start launches qemu once on a fresh port; an error mentioning hostfwd means the port raced.
func start(t testing.TB, opts Options, art Artifacts, initrd, logPath string) (*VM, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	netdev := fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:3260", port)
	fwd := map[int]int{}
	for _, g := range opts.Forward {
		h, err := freePort()
		if err != nil {
			return nil, err
		}
		fwd[g] = h
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", h, g)
	}
	secs := int(opts.Timeout / time.Second)
	cmdline := []string{"console=ttyS0", "panic=-1", "loglevel=4",
		"lunbridge.scenario=" + opts.Scenario, "lunbridge.timeout=" + strconv.Itoa(secs)}
	for k, v := range opts.Params {
		if strings.ContainsAny(k+v, " \t\n") {
			return nil, fmt.Errorf("param %s=%q contains white space", k, v)
		}
		cmdline = append(cmdline, "lunbridge."+k+"="+v)
	}
	qemu := []string{"-k", "5", strconv.Itoa(secs + 30), "qemu-system-x86_64",
		"-accel", "tcg", "-m", strconv.Itoa(opts.MemoryMB), "-smp", "1",
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-monitor", "none",
		"-kernel", art.Kernel, "-initrd", initrd,
		"-append", strings.Join(cmdline, " "),
		"-netdev", netdev,
		"-device", "virtio-net-pci,netdev=n0,romfile=",
	}
	// `timeout` bounds qemu even if this process dies without running its cleanup.
	cmd := exec.Command("timeout", qemu...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout // qemu's own errors go to the same log
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(lf, "# %s\n", strings.Join(cmd.Args, " "))
	vm := &VM{t: t, opts: opts, port: port, fwd: fwd, cmd: cmd, stdin: stdin, logPath: logPath, logFile: lf,
		changed: make(chan struct{}), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	go vm.readConsole(stdout)
	// qemu fails on a taken port right away; give it a moment to say so.
	select {
	case <-vm.done:
		out := vm.Output()
		return nil, fmt.Errorf("qemu exited at start (%v): %s", vm.exitErr, lastLines(out, 10))
	case <-time.After(300 * time.Millisecond):
	}
	return vm, nil
}

func (vm *VM) readConsole(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			vm.logFile.WriteString(line)
			l := strings.TrimRight(line, "\r\n")
			vm.mu.Lock()
			vm.lines = append(vm.lines, l)
			close(vm.changed)
			vm.changed = make(chan struct{})
			vm.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	werr := vm.cmd.Wait()
	vm.logFile.Close()
	vm.mu.Lock()
	vm.exited = true
	vm.exitErr = werr
	close(vm.changed)
	vm.changed = make(chan struct{})
	vm.mu.Unlock()
	close(vm.done)
}

// Portal is the host address of the guest's port 3260: "127.0.0.1:PORT".
func (vm *VM) Portal() string { return fmt.Sprintf("127.0.0.1:%d", vm.port) }

// PortalFor is the host address forwarded to guest TCP port g (3260 or one of
// Options.Forward); empty when g is not forwarded.
func (vm *VM) PortalFor(g int) string {
	if g == 3260 {
		return vm.Portal()
	}
	if h, ok := vm.fwd[g]; ok {
		return fmt.Sprintf("127.0.0.1:%d", h)
	}
	return ""
}

// Port is the forwarded host port.
func (vm *VM) Port() int { return vm.port }

// LogPath is the serial log file.
func (vm *VM) LogPath() string { return vm.logPath }

// Output returns the console output so far.
func (vm *VM) Output() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return strings.Join(vm.lines, "\n")
}

// Exited reports whether qemu has exited.
func (vm *VM) Exited() bool {
	select {
	case <-vm.done:
		return true
	default:
		return false
	}
}

// waitLine waits until pred matches a console line at index >= from; returns the line index.
func (vm *VM) waitLine(from int, timeout time.Duration, pred func(string) bool) (int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		vm.mu.Lock()
		for i := from; i < len(vm.lines); i++ {
			if pred(vm.lines[i]) {
				vm.mu.Unlock()
				return i, nil
			}
		}
		from = len(vm.lines)
		exited, ch := vm.exited, vm.changed
		vm.mu.Unlock()
		if exited {
			return -1, fmt.Errorf("VM exited (%v; %s)", vm.exitErr, vm.Result())
		}
		select {
		case <-ch:
		case <-deadline.C:
			return -1, fmt.Errorf("timeout after %v", timeout)
		}
	}
}

// WaitFor waits until a console line contains marker (searching from the start of the
// output) and returns that line. It fails early when the VM exits.
func (vm *VM) WaitFor(marker string, timeout time.Duration) (string, error) {
	i, err := vm.waitLine(0, timeout, func(l string) bool { return strings.Contains(l, marker) })
	if err != nil {
		return "", fmt.Errorf("waiting for %q: %w", marker, err)
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.lines[i], nil
}

// Result parses the RESULT marker from the output so far.
func (vm *VM) Result() Result {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	for _, l := range vm.lines {
		i := strings.Index(l, markerResult)
		if i < 0 {
			continue
		}
		l = l[i:]
		if strings.HasPrefix(l, markerResultPass) {
			return Result{Seen: true, Pass: true}
		}
		if rest, ok := strings.CutPrefix(l, markerResult+"FAIL:"); ok {
			return Result{Seen: true, Reason: strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "==="))}
		}
	}
	return Result{}
}

// Wait waits for the VM to power off and returns the scenario result.
func (vm *VM) Wait(timeout time.Duration) (Result, error) {
	select {
	case <-vm.done:
		return vm.Result(), nil
	case <-time.After(timeout):
		return vm.Result(), fmt.Errorf("VM still running after %v", timeout)
	}
}

// Run executes a shell command inside the guest through the console command channel (only
// while a scenario serves it, e.g. lio after READY) and returns its output and exit code.
func (vm *VM) Run(command string, timeout time.Duration) (string, int, error) {
	if strings.ContainsAny(command, "\n\r") {
		return "", -1, errors.New("vmlab: Run: command must be one line")
	}
	vm.mu.Lock()
	vm.cmdSeq++
	id := fmt.Sprintf("c%d", vm.cmdSeq)
	from := len(vm.lines)
	vm.mu.Unlock()
	begin := "=== VMLAB CMD " + id + " BEGIN ==="
	endPrefix := "=== VMLAB CMD " + id + " END rc="
	if _, err := io.WriteString(vm.stdin, "run "+id+" "+command+"\n"); err != nil {
		return "", -1, fmt.Errorf("vmlab: Run: %w", err)
	}
	b, err := vm.waitLine(from, timeout, func(l string) bool { return strings.Contains(l, begin) })
	if err != nil {
		return "", -1, fmt.Errorf("vmlab: Run %q: %w", command, err)
	}
	e, err := vm.waitLine(b+1, timeout, func(l string) bool { return strings.Contains(l, endPrefix) })
	if err != nil {
		return "", -1, fmt.Errorf("vmlab: Run %q: %w", command, err)
	}
	vm.mu.Lock()
	out := strings.Join(vm.lines[b+1:e], "\n")
	endLine := vm.lines[e]
	vm.mu.Unlock()
	rcs := endLine[strings.Index(endLine, endPrefix)+len(endPrefix):]
	rcs = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rcs), "==="))
	rc, _ := strconv.Atoi(rcs)
	return out, rc, nil
}

// Stop ends the VM: it asks the guest to stop ("stop" on the console, the scenario then
// prints its result and powers off), waits up to 20 s, then kills qemu. Safe to call twice.
func (vm *VM) Stop() Result {
	vm.stopOnce.Do(func() {
		if !vm.Exited() {
			io.WriteString(vm.stdin, "stop\n")
			select {
			case <-vm.done:
			case <-time.After(20 * time.Second):
				vm.Kill()
			}
		}
		vm.stdin.Close()
		select {
		case <-vm.done:
		case <-time.After(10 * time.Second):
			vm.t.Logf("vmlab: qemu (pid %d) did not exit after SIGKILL", vm.cmd.Process.Pid)
		}
		if vm.unlock != nil {
			vm.unlock()
		}
	})
	return vm.Result()
}

// Kill kills qemu (and its `timeout` wrapper) at once.
func (vm *VM) Kill() {
	if vm.cmd.Process != nil {
		syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGKILL)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockVM serialises VMs across processes (one TCG VM at a time on this machine).
func lockVM(ctx context.Context, dir string) (func(), error) {
	procMu.Lock()
	f, err := os.OpenFile(filepath.Join(filepath.Dir(dir), "vm.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		procMu.Unlock()
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			f.Close()
			procMu.Unlock()
			return nil, fmt.Errorf("waiting for another VM to finish (lock %s): %w", f.Name(), ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			f.Close()
			procMu.Unlock()
		})
	}, nil
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// ModuleRoot is the repository root (where go.mod is).
func ModuleRoot() string { return filepath.Clean(filepath.Join(ScriptsDir(), "..", "..")) }

// BuildStatic builds a static (CGO_ENABLED=0) binary of a package of this module, e.g.
// "./cmd/lunbridge", into a temporary directory and returns its path.
func BuildStatic(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = ModuleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vmlab: go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// NBDOptions run one of the kernel-NBD scenarios (nbd-attach, nbd-reconnect): inside the guest
// `lunbridge attach [ARGS] URL /dev/nbd0`, mke2fs -t ext4, mount, write, verify, detach.
type NBDOptions struct {
	Scenario   string   // "nbd-attach" or "nbd-reconnect"
	Lunbridge  string   // static lunbridge binary (required; see BuildStatic)
	URL        string   // iscsi://10.0.2.2:PORT/IQN/LUN — the host's loopback seen from the guest
	AttachArgs []string // extra `attach` arguments (no commas or spaces inside one argument)
	FS         string   // "ext4" (default) or "ext2"
	Timeout    time.Duration
}

// HostAddr is how the guest reaches the host's 127.0.0.1 services (qemu user networking).
const HostAddr = "10.0.2.2"

// RunNBD boots an NBD scenario, waits for it to power off and returns its result (the test
// decides what a FAIL means).
func RunNBD(t testing.TB, o NBDOptions) (Result, *VM) {
	t.Helper()
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	p := map[string]string{"url": o.URL}
	if len(o.AttachArgs) > 0 {
		p["attach_args"] = strings.Join(o.AttachArgs, ",")
	}
	if o.FS != "" {
		p["mkfs"] = o.FS
	}
	vm := Boot(t, Options{Scenario: o.Scenario, Params: p, Lunbridge: o.Lunbridge, Timeout: o.Timeout})
	r, err := vm.Wait(o.Timeout + 30*time.Second)
	if err != nil {
		t.Errorf("vmlab: %s: %v", o.Scenario, err)
	}
	return r, vm
}
