package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// TestTakeSecretEnv: LUNBRIDGE_*_SECRET variables leave the environment
// (so no child inherits them) but stay readable by the process.
func TestTakeSecretEnv(t *testing.T) {
	t.Setenv("LUNBRIDGE_CHAP_SECRET", "env-secret-123456")
	t.Setenv("LUNBRIDGE_FUTURE_THING_SECRET", "other-secret-654321")
	t.Setenv("LUNBRIDGE_CHAP_USER", "alice")
	takeSecretEnv()
	for _, kv := range os.Environ() {
		if strings.Contains(kv, "_SECRET=") {
			t.Errorf("still in the environment: %s", kv)
		}
	}
	if os.Getenv("LUNBRIDGE_CHAP_USER") != "alice" {
		t.Error("a variable that is no secret was removed")
	}
	if v := secretFromEnv("LUNBRIDGE_CHAP_SECRET"); v != "env-secret-123456" {
		t.Errorf("secretFromEnv = %q", v)
	}
	if v := secretFromEnv("LUNBRIDGE_FUTURE_THING_SECRET"); v != "other-secret-654321" {
		t.Errorf("secretFromEnv = %q", v)
	}
}

// TestMountCLIDaemonSecret: `mount --daemon` logs in with the CHAP secret
// from LUNBRIDGE_CHAP_SECRET, yet the background process's environment
// (which fusermount3 and any other child would inherit) does not hold it
// (review #11).
func TestMountCLIDaemonSecret(t *testing.T) {
	requireFUSE(t)
	const user, secret = "daemon-user", "daemon-secret-0123"
	_, addr := fakePortal(t, faketarget.Config{CHAPUser: user, CHAPSecret: secret})
	_, dir := mountImage(t, 1<<20)
	pidf := filepath.Join(t.TempDir(), "pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidf); err == nil {
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
	})
	url := "iscsi://" + addr + "/" + faketarget.DefaultTargetName + "/0"
	cmd := lunbridgeCmd("--chap-user", user, "mount", "--daemon", "--pid-file", pidf, url, dir)
	cmd.Env = append(cmd.Env, "LUNBRIDGE_CHAP_SECRET="+secret)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("mount --daemon with CHAP: %v\n%s%s", err, out, stderr)
	}
	b, err := os.ReadFile(pidf)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(b))
	env, err := os.ReadFile("/proc/" + pid + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if strings.Contains(kv, secret) || strings.HasPrefix(kv, "LUNBRIDGE_CHAP_SECRET=") {
			t.Errorf("the daemon's environment holds the secret: %q", kv)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "disk.img")); err != nil || st.Size() != 1<<20 {
		t.Errorf("mounted file: %v %v", st, err)
	}
	if out, err := lunbridgeCmd("umount", "--pid-file", pidf, dir).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
}

// TestSecretFileModeWarning: a secret file other users can read is used,
// with a warning; a 0600 one without (review #11).
func TestSecretFileModeWarning(t *testing.T) {
	const user, secret = "file-user", "file-secret-0123"
	_, addr := fakePortal(t, faketarget.Config{CHAPUser: user, CHAPSecret: secret})
	url := "iscsi://" + addr + "/" + faketarget.DefaultTargetName + "/0"
	f := filepath.Join(t.TempDir(), "chap.secret")
	for _, mode := range []os.FileMode{0o644, 0o640, 0o600} {
		if err := os.WriteFile(f, []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, mode); err != nil {
			t.Fatal(err)
		}
		r := lbRun(t, 20*time.Second, nil, "--chap-user", user, "--chap-secret-file", f, "info", url)
		if r.code != 0 || !strings.Contains(r.stdout, "FAKE00000000") {
			t.Fatalf("info with a secret file of mode %v: exit %d\n%s%s", mode, r.code, r.stdout, r.stderr)
		}
		warned := strings.Contains(r.stderr, "chmod 600") && strings.Contains(r.stderr, f)
		if warned != (mode != 0o600) {
			t.Errorf("secret file mode %v: warned=%v; stderr: %s", mode, warned, r.stderr)
		}
	}
}
