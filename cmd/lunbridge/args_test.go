package main

import (
	"strings"
	"testing"
)

func TestPlaceFlags(t *testing.T) {
	app := newApp()
	const u, v = "iscsi://h/iqn.2026-12.org.example:t/1", "iscsi://h2/iqn.2026-12.org.example:t/1"
	for _, tc := range []struct{ in, want string }{
		// global flags after the command move before it
		{"ls --chap-user alice san1:3260", "--chap-user alice ls san1:3260"},
		{"info --timeout 5s " + u, "--timeout 5s info " + u},
		{"info " + u + " --timeout=5s --json", "--timeout=5s info --json " + u},
		// command flags after an argument are parsed, with their values
		{"serve " + u + " --mirror " + v, "serve --mirror " + v + " " + u},
		{"pull " + u + " - --checksum none", "pull --checksum none " + u + " -"},
		{"serve " + u + " --nop-interval -1s", "--nop-interval -1s serve " + u},
		// leading global flags stay; bool flags take no value
		{"--log-level debug serve " + u + " --read-only --persistent", "--log-level debug serve --read-only --persistent " + u},
		// subcommands
		{"mirror status " + u + " " + v + " --json", "mirror status --json " + u + " " + v},
		{"mirror status --json " + u + " " + v, "mirror status --json " + u + " " + v},
		// "--" ends flags; unknown flags stay with the command's
		{"pull " + u + " -- --not-a-flag", "pull " + u + " -- --not-a-flag"},
		{"ls san1 --jsn", "ls --jsn san1"},
		// nothing to do
		{"--help", "--help"},
		{"lss san1 --json", "lss san1 --json"},
		{"ls san1 --generate-bash-completion", "ls san1 --generate-bash-completion"},
		{"info -h", "info -h"},
		{"info " + u + " --help", "info --help " + u},
		// plain seconds for durations
		{"--timeout 5 info " + u + " --command-timeout=2.5", "--timeout 5s --command-timeout=2.5s info " + u},
		{"serve " + u + " --nop-interval -1", "--nop-interval -1s serve " + u},
		{"pull " + u + " out.img --timeout 30s", "--timeout 30s pull " + u + " out.img"},
	} {
		got := strings.Join(placeFlags(app, append([]string{"lunbridge"}, strings.Fields(tc.in)...))[1:], " ")
		if got != tc.want {
			t.Errorf("%s\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"jsn", "json", 1}, {"timout", "timeout", 1}, {"pefer", "prefer", 1}, {"abc", "xyz", 3}} {
		if d := editDistance(tc.a, tc.b); d != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, d, tc.d)
		}
	}
}

func TestHumanize(t *testing.T) {
	for in, want := range map[string]string{
		"blockcopy: r.img exists":                                 "r.img exists",
		"nbd: /dev/nbd0 does not exist":                           "/dev/nbd0 does not exist",
		"pull: fusefs: mountpoint /x: no such file or directory":  "pull: mountpoint /x: no such file or directory",
		"iscsi://h/t/1: iscsi pdu: malformed Data-In: x":          "iscsi://h/t/1: malformed Data-In: x",
		"iscsi: connection to h failed: refused":                  "iscsi: connection to h failed: refused",
		"the nbd: prefix in the middle of a word staysnbd: as is": "the nbd: prefix in the middle of a word staysnbd: as is",
	} {
		if got := humanize(in); got != want {
			t.Errorf("humanize(%q) = %q, want %q", in, got, want)
		}
	}
}
