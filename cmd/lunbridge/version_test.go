package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// TestCLIVersion: --version, -V and `version` print one line with the
// version, Go version and platform and exit 0; --json has the fields.
func TestCLIVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-V"}, {"version"}} {
		r := lbRun(t, 10*time.Second, nil, args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "lunbridge ") ||
			!strings.Contains(r.stdout, runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH) {
			t.Errorf("lunbridge %v: code %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	r := lbRun(t, 10*time.Second, nil, "version", "--json")
	var b map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || r.code != 0 {
		t.Fatalf("version --json: %v, code %d, %q", err, r.code, r.stdout)
	}
	for _, k := range []string{"version", "go_version", "goos", "goarch", "modified"} {
		if _, ok := b[k]; !ok {
			t.Errorf("version --json lacks %q: %s", k, r.stdout)
		}
	}
}

// TestVersionLdflags: a version and commit injected with -ldflags -X (as
// the Makefile does) are what the binary prints.
func TestVersionLdflags(t *testing.T) {
	testenv.Short(t)
	bin := filepath.Join(t.TempDir(), "lunbridge")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7-3-gabcdef1-dirty -X main.commit=abcdef1234567890abcdef1234567890abcdef12", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var b buildInfo
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatal(err)
	}
	if b.Version != "v9.8.7-3-gabcdef1-dirty" || b.Commit != "abcdef1234567890abcdef1234567890abcdef12" || !b.Modified || b.CGOEnabled != "0" {
		t.Fatalf("version --json = %+v", b)
	}
}

// TestManPages: a page per command, each rendered by man(1) without a
// warning.
func TestManPages(t *testing.T) {
	testenv.RequireTool(t, "man")
	dir := t.TempDir()
	if err := writeManPages(newApp(), dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lunbridge", "lunbridge-serve", "lunbridge-version", "lunbridge-mirror"} {
		page := filepath.Join(dir, name+".1")
		cmd := exec.Command("man", "--warnings=all", "-l", page)
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Errorf("man -l %s: %v: %s", page, err, stderr.String())
		}
		if !strings.Contains(string(out), "NAME") || !strings.Contains(string(out), name) {
			t.Errorf("man -l %s rendered:\n%s", page, out)
		}
	}
}
