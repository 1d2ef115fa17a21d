package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

var installedUnits = []string{"lunbridge-serve@.service", "lunbridge-serve@.socket", "lunbridge-attach@.service", "lunbridge-mount@.service"}

// makeInstall runs `make install` of this checkout with the given
// variables; the build output goes to a temporary OUT, not bin/.
func makeInstall(t *testing.T, target string, vars ...string) {
	t.Helper()
	testenv.RequireTool(t, "make")
	out := filepath.Join(t.TempDir(), "out")
	cmd := exec.Command("make", append([]string{"-s", "-C", "../..", target, "OUT=" + out}, vars...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make %s %v: %v\n%s", target, vars, err, b)
	}
}

func treeFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, rel)
		}
		return nil
	})
	sort.Strings(files)
	return files
}

// TestMakeInstallLayout: make install DESTDIR=... lays out the binary, a
// man page per command, bash/zsh/fish completions and the systemd units
// under PREFIX=/usr/local; man finds and renders the pages from that tree;
// make uninstall removes every file again.
func TestMakeInstallLayout(t *testing.T) {
	testenv.Short(t)
	testenv.RequireTool(t, "man")
	dest := t.TempDir()
	makeInstall(t, "install", "DESTDIR="+dest)
	p := filepath.Join(dest, "usr/local")
	want := []string{
		"bin/lunbridge",
		"share/man/man1/lunbridge.1",
		"share/man/man1/lunbridge-serve.1",
		"share/man/man1/lunbridge-attach.1",
		"share/man/man1/lunbridge-mount.1",
		"share/man/man1/lunbridge-version.1",
		"share/bash-completion/completions/lunbridge",
		"share/zsh/site-functions/_lunbridge",
		"share/fish/vendor_completions.d/lunbridge.fish",
	}
	for _, u := range installedUnits {
		want = append(want, "lib/systemd/system/"+u)
	}
	for _, f := range want {
		if st, err := os.Stat(filepath.Join(p, f)); err != nil {
			t.Errorf("not installed: %s (tree: %v)", f, treeFiles(t, dest))
		} else if f == "bin/lunbridge" && st.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable", f)
		}
	}
	if out, err := exec.Command(filepath.Join(p, "bin/lunbridge"), "--version").Output(); err != nil || !strings.HasPrefix(string(out), "lunbridge ") {
		t.Errorf("installed lunbridge --version: %q %v", out, err)
	}
	unit, _ := os.ReadFile(filepath.Join(p, "lib/systemd/system/lunbridge-serve@.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/lunbridge serve") {
		t.Errorf("serve unit does not run the installed binary:\n%s", unit)
	}
	// man lunbridge from the installed tree, by name.
	for _, page := range []string{"lunbridge", "lunbridge-serve"} {
		cmd := exec.Command("man", "--warnings=all", page)
		cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(p, "share/man"), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 || !strings.Contains(string(out), strings.ToUpper(page)+"(1)") {
			t.Errorf("MANPATH=... man %s: %v %s\n%.400s", page, err, stderr.String(), out)
		}
	}
	makeInstall(t, "uninstall", "DESTDIR="+dest)
	if left := treeFiles(t, dest); len(left) > 0 {
		t.Errorf("make uninstall left %v", left)
	}
}

// TestSystemdUnitsVerify: systemd-analyze verify accepts every installed
// unit without a warning (unknown keys, a missing binary, a
// Documentation= man page that does not exist).
func TestSystemdUnitsVerify(t *testing.T) {
	testenv.Short(t)
	testenv.RequireTool(t, "systemd-analyze")
	testenv.RequireTool(t, "man")
	prefix := filepath.Join(t.TempDir(), "usr")
	makeInstall(t, "install", "PREFIX="+prefix)
	for _, u := range installedUnits {
		cmd := exec.Command("systemd-analyze", "verify", "./"+u)
		cmd.Dir = filepath.Join(prefix, "lib/systemd/system")
		cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(prefix, "share/man"))
		out, err := cmd.CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}
}
