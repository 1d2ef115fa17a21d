package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// unitService is the [Service] part of a unit file that starting its
// ExecStart needs.
type unitService struct {
	execStart, envFile string
	env                []string
	dynamicUser        bool
}

func parseUnit(t *testing.T, text, instance string) unitService {
	t.Helper()
	var u unitService
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit line %q is not key=value", line)
		}
		v = strings.ReplaceAll(v, "%i", instance)
		switch k {
		case "ExecStart":
			u.execStart = v
		case "EnvironmentFile":
			u.envFile = v
		case "Environment":
			u.env = append(u.env, v)
		case "DynamicUser":
			u.dynamicUser = v == "yes"
		}
	}
	if u.execStart == "" {
		t.Fatal("unit has no ExecStart")
	}
	return u
}

// expandExec expands an ExecStart line as systemd does for the forms the
// units use: $VAR splits into words, ${VAR} is one word, unset is nothing.
func expandExec(line string, env map[string]string) []string {
	var argv []string
	for _, w := range strings.Fields(line) {
		switch {
		case strings.HasPrefix(w, "${") && strings.HasSuffix(w, "}"):
			if v := env[w[2:len(w)-1]]; v != "" {
				argv = append(argv, v)
			}
		case strings.HasPrefix(w, "$"):
			argv = append(argv, strings.Fields(env[w[1:]])...)
		default:
			argv = append(argv, w)
		}
	}
	return argv
}

// startUnit starts a unit's ExecStart the way systemd would for it: the
// EnvironmentFile (read by the manager, as root) and Environment= lines,
// as an unprivileged user (what DynamicUser=yes gives), with a
// notification socket. /run/lunbridge is mapped to runDir (created as
// RuntimeDirectory= would be, owned by that user).
func startUnit(t *testing.T, unitText, instance string, envFile map[string]string, runDir string) (*exec.Cmd, *net.UnixConn, *bytes.Buffer) {
	t.Helper()
	u := parseUnit(t, unitText, instance)
	env := map[string]string{}
	var list []string
	for _, kv := range u.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k, v := range envFile {
		env[k] = v
	}
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	argv := expandExec(strings.ReplaceAll(u.execStart, "/run/lunbridge/", runDir+"/"), env)
	ndir := t.TempDir()
	openUp(ndir)
	npath := filepath.Join(ndir, "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: npath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	os.Chmod(npath, 0o777)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(list, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET="+npath)
	if u.dynamicUser {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, nc, &stderr
}

// TestServeUnitStartsAsShipped: the installed lunbridge-serve@.service's
// ExecStart, run as its DynamicUser would run it (uid 65534) with an
// environment file naming a URL, options and a config file, reaches
// READY=1, serves, and stops with STOPPING=1 and exit 0 on SIGTERM. (The
// unit shipped before set LUNBRIDGE_CONFIG to a file the admin may not
// have created, or made unreadable: exit 2, which it never restarted.)
func TestServeUnitStartsAsShipped(t *testing.T) {
	testenv.Short(t)
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "nbdinfo")
	prefix := filepath.Join(t.TempDir(), "usr")
	makeInstall(t, "install", "PREFIX="+prefix)
	// Everything the service reads must be readable by the dynamic user.
	openUp(filepath.Dir(prefix))
	unit, err := os.ReadFile(filepath.Join(prefix, "lib/systemd/system/lunbridge-serve@.service"))
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	openUp(data)
	img := filepath.Join(data, "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte{0x5a}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(data, "lunbridge.conf")
	os.WriteFile(conf, []byte("timeout = 10s\n"), 0o644)
	runDir := filepath.Join(data, "lunbridge") // stands for /run/lunbridge
	inst := fmt.Sprintf("lbtest%d", os.Getpid())
	if err := os.MkdirAll(filepath.Join(runDir, inst), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(runDir, inst), 65534, 65534) // RuntimeDirectory=lunbridge/%i
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"no config", map[string]string{"LUNBRIDGE_URL": "file://" + img, "LUNBRIDGE_ARGS": "--read-only"}},
		{"config", map[string]string{"LUNBRIDGE_URL": "file://" + img, "LUNBRIDGE_ARGS": "--read-only --export-name db1", "LUNBRIDGE_CONFIG": conf}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.env["RUNTIME_DIRECTORY"] = filepath.Join(runDir, inst) // as systemd sets it
			cmd, nc, stderr := startUnit(t, string(unit), inst, tc.env, runDir)
			msg := readNotifyOrExit(t, nc, cmd, stderr)
			if !strings.HasPrefix(msg, "READY=1\nSTATUS=serving nbd+unix://") {
				t.Fatalf("first notification %q", msg)
			}
			uri := strings.TrimPrefix(msg, "READY=1\nSTATUS=serving ")
			if want := "socket=" + filepath.Join(runDir, inst, "nbd.sock"); !strings.HasSuffix(uri, want) {
				t.Fatalf("serving %q, want the unit's socket (%s)", uri, want)
			}
			info := toolOut(t, "nbdinfo", uri)
			if !strings.Contains(info, "export-size: 1048576") {
				t.Fatalf("nbdinfo:\n%s", info)
			}
			// Its control socket is in its RuntimeDirectory, named after
			// the unit's instance: root's lunbridge status lists it.
			r := lbRun(t, 30*time.Second, []string{"LUNBRIDGE_RUN_DIR=" + runDir}, "status", "--json", inst)
			if r.code != 0 || !strings.Contains(r.stdout, `"command": "serve"`) || !strings.Contains(r.stdout, filepath.Join(runDir, inst, "control.sock")) {
				t.Fatalf("status of the unit's serve: exit %d\n%s%s\nserve: %s", r.code, r.stdout, r.stderr, stderr)
			}
			cmd.Process.Signal(syscall.SIGTERM)
			if msg := readNotifyOrExit(t, nc, cmd, stderr); !strings.HasPrefix(msg, "STOPPING=1") {
				t.Fatalf("after SIGTERM: %q", msg)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("exit after SIGTERM: %v; stderr: %s", err, stderr)
			}
		})
	}
}

// openUp makes dir and its parents up to the temporary directory
// searchable by other users (t.TempDir makes them 0700).
func openUp(dir string) {
	for p := dir; p != "/" && p != filepath.Clean(os.TempDir()); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
}

func readNotifyOrExit(t *testing.T, nc *net.UnixConn, cmd *exec.Cmd, stderr *bytes.Buffer) string {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	n, err := nc.Read(buf)
	if err != nil {
		cmd.Process.Kill()
		werr := cmd.Wait()
		t.Fatalf("no notification (%v); the service: %v; stderr: %s", err, werr, stderr)
	}
	return string(buf[:n])
}
