// Package archtest checks that imports point down the layers drawn in
// docs/architecture.md: codecs import nothing of ours, libraries never
// import the bridges or cmd, and every module dependency is one we chose.
package archtest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/lunbridge/lunbridge/"

// allowed lists, per package (prefix match on the package path below the
// module), the lunbridge packages and third-party modules it may import.
var allowed = map[string][]string{
	"initiator/pdu":  {},
	"initiator/scsi": {},
	"blockdev":       {"golang.org/x/sys"},
	"nvmetcp/pdu":    {},
	"nvmetcp":        {"nvmetcp/pdu", "blockdev", "github.com/sirupsen/logrus", "golang.org/x/sys"},
	"initiator":      {"initiator/pdu", "initiator/scsi", "blockdev", "github.com/sirupsen/logrus", "golang.org/x/sys"},
	"discovery":      {"initiator", "blockdev", "github.com/sirupsen/logrus", "golang.org/x/sys"},
	"blockcopy":      {"blockdev", "golang.org/x/sys"},
	"multipath":      {"blockdev", "initiator", "nvmetcp", "blockcopy", "discovery", "github.com/sirupsen/logrus", "golang.org/x/sys"},
	"nbdbridge":      {"blockdev", "github.com/sirupsen/logrus", "golang.org/x/sys", "github.com/mdlayher/", "golang.org/x/net", "golang.org/x/sync", "github.com/josharian/native"},
	"fusefs":         {"blockdev", "github.com/hanwen/go-fuse/v2", "github.com/sirupsen/logrus", "golang.org/x/sys"},
}

type pkg struct {
	ImportPath string
	Deps       []string
	Standard   bool
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "-deps=false", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p.ImportPath, mod)
		rules, layer := rulesFor(rel)
		if !layer {
			continue
		}
		checked++
		deps, err := exec.Command("go", "list", "-f", `{{join .Deps "\n"}}`, p.ImportPath).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range strings.Fields(string(deps)) {
			if !strings.Contains(strings.SplitN(d, "/", 2)[0], ".") {
				continue // standard library
			}
			if strings.HasPrefix(d, mod) {
				dr := strings.TrimPrefix(d, mod)
				if strings.HasPrefix(dr, "internal/") || strings.HasPrefix(dr, rel) || strings.HasPrefix(rel, dr+"/") {
					continue
				}
				if !allows(rules, dr, true) {
					t.Errorf("%s imports %s: that points up or sideways (see docs/architecture.md)", rel, dr)
				}
				continue
			}
			if !allows(rules, d, false) {
				t.Errorf("%s depends on %s, which is not in its allowed list", rel, d)
			}
		}
	}
	if checked < 6 {
		t.Fatalf("only %d packages checked", checked)
	}
}

func rulesFor(rel string) ([]string, bool) {
	best := ""
	for k := range allowed {
		if (rel == k || strings.HasPrefix(rel, k+"/")) && len(k) > len(best) {
			best = k
		}
	}
	if best == "" {
		return nil, false
	}
	return allowed[best], true
}

func allows(rules []string, dep string, ours bool) bool {
	for _, r := range rules {
		isOurs := !strings.Contains(strings.SplitN(r, "/", 2)[0], ".")
		if isOurs != ours {
			continue
		}
		if dep == r || strings.HasPrefix(dep, r+"/") || (strings.HasSuffix(r, "/") && strings.HasPrefix(dep, r)) {
			return true
		}
	}
	return false
}

// TestRigsStayInTests: internal/ holds production code (rawsock, sdnotify),
// internal/testrig the test and benchmark rigs (real targets, the fake
// targets, the fault proxy, the VM lab, the history checker). No package
// that ships in a binary may import a rig; only rigs and the test-suite
// packages (named ...test, like blockdevtest) may, besides _test.go files.
func TestRigsStayInTests(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const rig = mod + "internal/testrig/"
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		p := f[0]
		if strings.HasPrefix(p, rig) || strings.HasSuffix(p, "test") {
			continue
		}
		checked++
		for _, d := range f[1:] {
			if strings.HasPrefix(d, rig) {
				t.Errorf("%s imports the test rig %s", strings.TrimPrefix(p, mod), strings.TrimPrefix(d, mod))
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d packages checked", checked)
	}
}
