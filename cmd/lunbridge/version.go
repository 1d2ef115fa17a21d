package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// version is the release, set at build time by the Makefile:
//
//	go build -ldflags "-X main.version=$(git describe --tags --always --dirty)"
//
// A plain `go build` or `go install` leaves it empty; versionInfo then
// takes the module version or the VCS revision Go records in the binary.
var version string

// commit is the full commit id, set by the Makefile (-X main.commit=...)
// for builds where Go records no VCS information (-buildvcs=false).
var commit string

// buildInfo is what `lunbridge version --json` prints.
type buildInfo struct {
	Version    string `json:"version"`
	Commit     string `json:"commit,omitempty"`
	Modified   bool   `json:"modified"`
	CommitTime string `json:"commit_time,omitempty"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"goos"`
	Arch       string `json:"goarch"`
	CGOEnabled string `json:"cgo_enabled,omitempty"`
	Flags      string `json:"build_flags,omitempty"`
}

func versionInfo() buildInfo {
	b := buildInfo{Version: version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			case "vcs.time":
				b.CommitTime = s.Value
			case "CGO_ENABLED":
				b.CGOEnabled = s.Value
			case "-ldflags", "-tags", "-trimpath", "-gcflags":
				if b.Flags != "" {
					b.Flags += " "
				}
				b.Flags += s.Key + "=" + s.Value
			}
		}
	}
	if b.Commit == "" && commit != "" {
		b.Commit = commit
		b.Modified = strings.HasSuffix(version, "-dirty")
	}
	if b.Version == "" {
		switch {
		case ok && bi.Main.Version != "" && bi.Main.Version != "(devel)":
			b.Version = bi.Main.Version // go install module@version
		case b.Commit != "":
			b.Version = "devel-" + shortCommit(b.Commit)
			if b.Modified {
				b.Version += "-dirty"
			}
		default:
			b.Version = "devel"
		}
	}
	return b
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// String is the one line --version prints.
func (b buildInfo) String() string {
	s := "lunbridge " + b.Version
	if b.Commit != "" {
		s += " (commit " + shortCommit(b.Commit)
		if b.Modified {
			s += ", modified"
		}
		s += ")"
	}
	s += fmt.Sprintf(" %s %s/%s", b.GoVersion, b.OS, b.Arch)
	if b.CGOEnabled != "" {
		s += " CGO_ENABLED=" + b.CGOEnabled
	}
	return s
}

func init() {
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Aliases: []string{"V"}, Usage: "print the version and exit"}
	cli.VersionPrinter = func(c *cli.Context) { fmt.Fprintln(c.App.Writer, versionInfo()) }
	register("", &cli.Command{
		Name:      "version",
		Usage:     "print the version, commit, Go version and platform",
		UsageText: "lunbridge version [--json]",
		Description: `Prints the release (git describe at build time), the commit and whether the
tree had local changes, the Go version, GOOS/GOARCH and CGO_ENABLED.
lunbridge --version (-V) prints the same line.

Examples:
   lunbridge version
   lunbridge version --json`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print one JSON object"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErrorf("version takes no arguments")
			}
			b := versionInfo()
			if c.Bool("json") {
				out, _ := json.Marshal(b)
				fmt.Fprintln(c.App.Writer, string(out))
				return nil
			}
			fmt.Fprintln(c.App.Writer, b)
			return nil
		},
	})
}
