package main

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// The configuration file (--config FILE or $LUNBRIDGE_CONFIG) holds
// defaults for the global flags, one per line, with the flags' names as
// keys, then optional sections per target, portal and device
// (configsections.go):
//
//	# comment
//	initiator-name = iqn.2026-11.org.example:host1
//	timeout = 10s
//	chap-user = alice
//	chap-secret-file = /etc/lunbridge/chap.secret
//
// Values may be quoted ("..." with Go escapes, or '...'). Flags and
// environment variables override the file. Secrets never go in it: only
// *-secret-file paths (relative paths are taken from the file's
// directory). It is never required.

// configCommandKeys are command flags a config file may set too; commands
// read them with flagOrConfig.
var configCommandKeys = map[string]bool{
	"discovery-chap-user":               true,
	"discovery-chap-secret-file":        true,
	"discovery-target-chap-user":        true,
	"discovery-target-chap-secret-file": true,
}

// loadedConfig holds the file's values for configCommandKeys.
var loadedConfig = map[string]string{}

// configFile reads --config and applies it to the global flags not set on
// the command line or in the environment.
func applyConfigFile(c *cli.Context) error {
	loadedConfig = map[string]string{}
	resetSections()
	path := c.String("config")
	if path == "" {
		return nil
	}
	resetSections()
	global := map[string]bool{}
	explicit = map[string]bool{}
	for _, f := range globalFlags() {
		for _, n := range f.Names() {
			global[n] = true
			explicit[n] = c.IsSet(n) // the command line or the environment
		}
	}
	kv, sections, err := parseConfigFile(path)
	if err != nil {
		return err
	}
	for _, s := range sections {
		if err := addSection(s); err != nil { // configsections.go
			return err
		}
	}
	for _, e := range kv {
		switch {
		case e.key == "config" || e.key == "help":
			return usageErrorf("%s:%d: %q cannot be set in a config file", path, e.line, e.key)
		case configCommandKeys[e.key]:
			loadedConfig[e.key] = e.value
		case global[e.key]:
			if c.IsSet(e.key) {
				continue // flag or environment wins
			}
			if err := c.Set(e.key, e.value); err != nil {
				return usageErrorf("%s:%d: %s = %q: %v", path, e.line, e.key, e.value, err)
			}
		default:
			return usageErrorf("%s:%d: unknown key %q (keys are the global flags' names, e.g. initiator-name, timeout, chap-user, chap-secret-file; see lunbridge --help)", path, e.line, e.key)
		}
	}
	return nil
}

// flagOrConfig returns a command flag's value, else the config file's.
func flagOrConfig(c *cli.Context, name string) string {
	if c.IsSet(name) {
		return c.String(name)
	}
	if v, ok := loadedConfig[name]; ok {
		return v
	}
	return c.String(name)
}

type configEntry struct {
	key, value string
	line       int
}

// secretKey reports whether a key would hold a secret itself rather than
// the path of a file holding it.
func secretKey(k string) bool {
	if strings.HasSuffix(k, "-file") || strings.HasSuffix(k, "-secret-env") {
		return false // where the secret is, not the secret
	}
	return strings.Contains(k, "secret") || strings.Contains(k, "password")
}

func parseConfigFile(path string) ([]configEntry, []*section, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, usageErrorf("--config: %v", err)
	}
	defer f.Close()
	dir := filepath.Dir(path)
	var out []configEntry
	var sections []*section
	var cur *section
	seen := map[string]int{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			m := sectionHeader.FindStringSubmatch(line)
			if m == nil {
				return nil, nil, usageErrorf("%s:%d: want a section header like [target \"iqn...\"], [portal \"host:port\"] or [device \"name\"]", path, n)
			}
			cur = &section{kind: m[1], name: m[2], path: path, line: n, vals: map[string]configEntry{}}
			sections = append(sections, cur)
			seen = map[string]int{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, nil, usageErrorf("%s:%d: want key = value", path, n)
		}
		k = strings.TrimPrefix(strings.TrimSpace(k), "--")
		v = strings.TrimSpace(v)
		if k == "" {
			return nil, nil, usageErrorf("%s:%d: empty key", path, n)
		}
		if secretKey(k) {
			return nil, nil, usageErrorf("%s:%d: %q: secrets are not accepted in a config file; put the secret in a file readable only by you and give its path as %s-file", path, n, k, strings.TrimSuffix(k, "-password"))
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			u, err := strconv.Unquote(v)
			if err != nil {
				return nil, nil, usageErrorf("%s:%d: bad quoted value: %v", path, n, err)
			}
			v = u
		} else if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = v[1 : len(v)-1]
		} else if i := strings.Index(v, " #"); i >= 0 {
			v = strings.TrimSpace(v[:i]) // trailing comment
		}
		if strings.HasSuffix(k, "-file") && v != "" && !filepath.IsAbs(v) {
			v = filepath.Join(dir, v)
		}
		e := configEntry{key: k, value: v, line: n}
		if cur != nil && cur.kind == "device" && (k == "path" || k == "mirror") {
			if k == "path" {
				cur.paths = append(cur.paths, v)
			} else {
				cur.mirrors = append(cur.mirrors, v)
			}
			cur.vals[k] = e
			continue
		}
		if prev, dup := seen[k]; dup {
			return nil, nil, usageErrorf("%s:%d: %q already set on line %d", path, n, k, prev)
		}
		seen[k] = n
		if cur != nil {
			cur.vals[k] = e
			continue
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, usageErrorf("--config: %v", err)
	}
	return out, sections, nil
}

// sectionHeader matches [kind "name"] (or [kind name]).
var sectionHeader = regexp.MustCompile(`^\[\s*([a-z]+)\s+"?([^"\]]+?)"?\s*\]$`)

// configFlag is the global --config flag.
func configFlag() cli.Flag {
	return &cli.StringFlag{
		Name:      "config",
		Usage:     "read defaults for the global flags from `FILE` (key = value lines; see docs/cli.md)",
		EnvVars:   []string{"LUNBRIDGE_CONFIG"},
		TakesFile: true,
	}
}
