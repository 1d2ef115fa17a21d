package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMirrorHelpHasDescriptionAndExample: `lunbridge mirror X --help` of
// every mirror subcommand (those named below and any registered later) has
// a description and at least one example line running that subcommand.
func TestMirrorHelpHasDescriptionAndExample(t *testing.T) {
	names := []string{"create", "status", "check", "resync", "fail", "remove", "add", "split", "rejoin", "replace"}
	for _, c := range commands {
		if c.Name != "mirror" {
			continue
		}
		for _, s := range c.Subcommands {
			found := false
			for _, n := range names {
				found = found || n == s.Name
			}
			if !found {
				names = append(names, s.Name)
			}
		}
	}
	for _, n := range names {
		r := lbRun(t, 30*time.Second, nil, "mirror", n, "--help")
		if r.code != 0 {
			t.Errorf("mirror %s --help: exit %d: %s", n, r.code, r.stderr)
			continue
		}
		i := strings.Index(r.stdout, "DESCRIPTION:")
		if i < 0 {
			t.Errorf("mirror %s --help has no description:\n%s", n, r.stdout)
			continue
		}
		desc := r.stdout[i:]
		ex := regexp.MustCompile(`(?m)^\s+lunbridge mirror ` + n + `\b`)
		if !strings.Contains(desc, "Examples:") || !ex.MatchString(desc[strings.Index(desc, "Examples:")+1:]) {
			t.Errorf("mirror %s --help has no example running it:\n%s", n, r.stdout)
		}
	}
}
