// Package testenv decides what a test does when a real component (a target
// binary, a peer tool, FUSE, root) is missing: with CI=true the test FAILS,
// otherwise it is skipped with the reason. Tests never silently pass on a
// machine that lacks what they check.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether CI=true is set.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable fails the test under CI and skips it elsewhere.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required under CI=true: "+format, args...)
	}
	t.Skipf("unavailable: "+format+" (run scripts/install-deps.sh; fails under CI=true)", args...)
}

// RequireTool returns the path of an executable, or fails/skips the test.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "tool %q not found in PATH", name)
	}
	return p
}

// RequireRoot fails/skips when not running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "test needs root")
	}
}

// Short skips a slow real-component test under -short (never under CI).
func Short(t testing.TB) {
	t.Helper()
	if testing.Short() && !InCI() {
		t.Skip("slow test skipped in -short mode")
	}
}
