package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

// A config error names the file, the line and the key.
func TestConfigSectionErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ body, want string }{
		{"[target \"iqn.2026-12.org.example:t\"]\nchap-secret = hunter22hunter\n", ":2: \"chap-secret\": secrets are not accepted"},
		{"[target \"iqn.2026-12.org.example:t\"]\npolicy = round-robin\n", ":2: unknown key \"policy\" in [target"},
		{"[target \"iqn.2026-12.org.example:t\"]\nchap-secret-env = SAN_PASSWORD_VAR\n", ":2: chap-secret-env = SAN_PASSWORD_VAR: name a variable LUNBRIDGE_<NAME>_SECRET"},
		{"timeout = 5s\n[volume \"x\"]\n", ":2: unknown section kind \"volume\""},
		{"[device \"db1\"]\npath = iscsi://h/iqn.2026-12.org.example:t/1\n", ":1: [device \"db1\"] has no url"},
		{"[device \"db/1\"]\nurl = iscsi://h/iqn.2026-12.org.example:t/1\n", ":1: [device \"db/1\"]: a device name has no '/'"},
		{"[device \"db1\"]\nurl = iscsi://h/iqn.2026-12.org.example:t/1\n[device \"db1\"]\nurl = iscsi://h/iqn.2026-12.org.example:t/2\n", ":3: [device \"db1\"] already defined on line 1"},
		{"[target iqn\n", ":1: want a section header"},
		{"[portal \"h:99999\"]\n", ":1: [portal \"h:99999\"]: want host or host:port"},
	} {
		p := writeFile(t, dir, "bad.conf", tc.body)
		r := lbRun(t, 20*time.Second, nil, "--config", p, "info", "iscsi://127.0.0.1:1/iqn.2026-12.org.example:t/1")
		if r.code != ExitUsage || !strings.Contains(r.stderr, p+tc.want) {
			t.Errorf("%q: exit %d, stderr %s; want exit 2 and %q", tc.body, r.code, r.stderr, p+tc.want)
		}
	}
}

// Issue 21: a mirror whose legs live on two targets with different CHAP
// secrets runs from a config file, with no secret on any command line or
// URL: one leg's secret from a file, the other's from an environment
// variable the section names; the device by its name.
func TestConfigPerTargetCHAPMirror(t *testing.T) {
	s := targets.StartTgtd(t,
		targets.Target{Name: "iqn.2026-12.org.lunbridge.test:san1", LUNs: []targets.LUN{{Size: 8 << 20}}, CHAPUser: "alice", CHAPSecret: "alice-secret-1"},
		targets.Target{Name: "iqn.2026-12.org.lunbridge.test:san2", LUNs: []targets.LUN{{Size: 8 << 20}}, CHAPUser: "bob", CHAPSecret: "bob-secret-22"},
	)
	dir := t.TempDir()
	writeFile(t, dir, "san1.secret", "alice-secret-1\n")
	os.Chmod(filepath.Join(dir, "san1.secret"), 0o600)
	a, b := s.URL(0, 0), s.URL(1, 0)
	cfg := writeFile(t, dir, "lunbridge.conf", `# two SANs, two secrets
timeout = 10s
[target "iqn.2026-12.org.lunbridge.test:san1"]
chap-user = alice
chap-secret-file = san1.secret
[target "iqn.2026-12.org.lunbridge.test:san2"]
chap-user = bob
chap-secret-env = LUNBRIDGE_SAN2_SECRET
[device "db1"]
url = `+a+`
mirror = `+b+`
[device "plain"]
url = `+b+`
`)
	env := []string{"LUNBRIDGE_SAN2_SECRET=bob-secret-22"}
	for _, u := range []string{a, b, "plain"} {
		lbRun(t, 30*time.Second, env, "--config", cfg, "info", u).mustOK(t, "info "+u)
	}
	// Without the section's variable, leg B's login is refused.
	if r := lbRun(t, 30*time.Second, nil, "--config", cfg, "info", b); r.code != ExitUsage || !strings.Contains(r.stderr, "LUNBRIDGE_SAN2_SECRET is not set") {
		t.Errorf("info without LUNBRIDGE_SAN2_SECRET: exit %d: %s", r.code, r.stderr)
	}
	if r := lbRun(t, 60*time.Second, env, "--config", cfg, "mirror", "create", "--yes", a, b); r.code != 0 {
		t.Fatalf("mirror create: exit %d: %s", r.code, r.stderr)
	}
	// Write through the named device (the mirror), read it back by name.
	img := filepath.Join(dir, "in.img")
	want := bytes.Repeat([]byte("lunbridge per-target config "), 4096)
	if err := os.WriteFile(img, want, 0o600); err != nil {
		t.Fatal(err)
	}
	lbRun(t, 60*time.Second, env, "--config", cfg, "push", "--yes", img, "db1").mustOK(t, "push db1")
	out := filepath.Join(dir, "out.img")
	lbRun(t, 60*time.Second, env, "--config", cfg, "pull", "--checksum", "none", "db1", out).mustOK(t, "pull db1")
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got[:len(want)], want) {
		t.Fatalf("pull db1 did not return what push db1 wrote (%v)", err)
	}
	// Both legs hold it: each read alone through its own section.
	for _, leg := range []string{a, b} {
		o := filepath.Join(dir, "leg.img")
		os.Remove(o)
		lbRun(t, 60*time.Second, env, "--config", cfg, "pull", "--checksum", "none", leg, o).mustOK(t, "pull leg "+leg)
		if g, _ := os.ReadFile(o); !bytes.Equal(g[:len(want)], want) {
			t.Errorf("leg %s does not hold the mirrored data", leg)
		}
	}
}

// The documented example stays a valid file.
func TestConfigExampleParses(t *testing.T) {
	kv, sections, err := parseConfigFile("../../docs/lunbridge.conf.example")
	if err != nil {
		t.Fatal(err)
	}
	resetSections()
	defer resetSections()
	for _, s := range sections {
		if err := addSection(s); err != nil {
			t.Error(err)
		}
	}
	global := flagsOf(globalFlags())
	for _, e := range kv {
		if _, ok := global[e.key]; !ok && !configCommandKeys[e.key] {
			t.Errorf("line %d: %q is not a global flag", e.line, e.key)
		}
	}
	if d := configSections.devices["db1"]; d == nil || len(d.paths) != 1 || len(d.mirrors) != 1 {
		t.Errorf("device db1: %+v", d)
	}
	if len(configSections.targets) != 2 || len(configSections.portals) != 1 {
		t.Errorf("%d targets, %d portals", len(configSections.targets), len(configSections.portals))
	}
}
