package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/discovery"
)

// Sections of the configuration file (issue 21 item 2): settings per
// target, per portal, and named devices.
//
//	[target "iqn.2026-12.com.example:san1"]
//	chap-user = alice
//	chap-secret-file = /etc/lunbridge/san1.secret
//
//	[portal "10.0.0.7:3260"]
//	header-digest = crc32c
//
//	[device "db1"]
//	url = iscsi://10.0.0.5/iqn.2026-12.com.example:san1/1
//	path = iscsi://10.0.1.5/iqn.2026-12.com.example:san1/1
//	mirror = iscsi://10.0.0.7/iqn.2026-12.com.example:san2/1
//	policy = round-robin
//
// A session takes each setting from the command line (flag or environment
// variable) first, then the [target] section of its target, then the
// [portal] section of its portal, then the top of the file, then the
// default. A secret comes from a *-secret-file, or from the environment
// variable a *-secret-env names (LUNBRIDGE_..._SECRET, so lunbridge can
// take it out of its environment at start); never from the file itself.
// `lunbridge serve db1` (and attach, mount, pull, push, verify, bench,
// info) opens the device a [device] section names.

// sessionKeys may be set in [target] and [portal] sections.
var sessionKeys = map[string]bool{
	"initiator-name": true, "chap-user": true, "chap-secret-file": true, "chap-secret-env": true,
	"target-chap-user": true, "target-chap-secret-file": true, "target-chap-secret-env": true,
	"header-digest": true, "data-digest": true, "timeout": true, "nop-interval": true, "nop-timeout": true,
	"command-timeout": true, "replacement-timeout": true, "queue-depth": true, "connections": true, "erl": true,
	"max-recv-data-segment-length": true,
}

// deviceKeys may be set in [device] sections; path and mirror repeat.
var deviceKeys = map[string]bool{
	"url": true, "path": true, "mirror": true, "policy": true, "failback": true, "no-path-timeout": true,
	"check-interval": true, "resync-rate": true, "prefer": true,
}

type section struct {
	kind, name string
	path       string // config file, for messages
	line       int    // of the header
	vals       map[string]configEntry
	paths      []string // device: path = ...
	mirrors    []string // device: mirror = ...
}

// configSections holds the loaded file's sections by kind and name
// (portals normalised to host:port).
var configSections = struct {
	targets, portals, devices map[string]*section
}{}

// explicit records which global flags the command line or the environment
// set, before the config file filled in the others.
var explicit = map[string]bool{}

func resetSections() {
	configSections.targets = map[string]*section{}
	configSections.portals = map[string]*section{}
	configSections.devices = map[string]*section{}
}

// addSection files a parsed section, checking its keys.
func addSection(s *section) error {
	var set map[string]*section
	switch s.kind {
	case "target":
		set = configSections.targets
	case "portal":
		p, err := discovery.ParseURL(s.name)
		if err != nil || p.Target != "" {
			return usageErrorf("%s:%d: [portal %q]: want host or host:port", s.path, s.line, s.name)
		}
		s.name = p.Portal
		set = configSections.portals
	case "device":
		set = configSections.devices
		if strings.ContainsAny(s.name, "/:") {
			return usageErrorf("%s:%d: [device %q]: a device name has no '/' or ':' (it is used where a URL would be)", s.path, s.line, s.name)
		}
		if _, ok := s.vals["url"]; !ok {
			return usageErrorf("%s:%d: [device %q] has no url", s.path, s.line, s.name)
		}
	default:
		return usageErrorf("%s:%d: unknown section kind %q (want target, portal or device)", s.path, s.line, s.kind)
	}
	if prev, dup := set[s.name]; dup {
		return usageErrorf("%s:%d: [%s %q] already defined on line %d", s.path, s.line, s.kind, s.name, prev.line)
	}
	keys := sessionKeys
	if s.kind == "device" {
		keys = deviceKeys
	}
	for k, e := range s.vals {
		if !keys[k] {
			return usageErrorf("%s:%d: unknown key %q in [%s %q]", s.path, e.line, k, s.kind, s.name)
		}
		if strings.HasSuffix(k, "-secret-env") && !isSecretEnv(e.value) {
			return usageErrorf("%s:%d: %s = %s: name a variable LUNBRIDGE_<NAME>_SECRET, so lunbridge takes it out of its environment at start", s.path, e.line, k, e.value)
		}
	}
	set[s.name] = s
	return nil
}

// sessionSetting is the value of key for a session to u from the
// sections, when the command line did not set it: (value, where, true).
func sessionSetting(u *discovery.URL, key string) (string, string, bool) {
	if explicit[key] {
		return "", "", false
	}
	if u != nil {
		for _, s := range []*section{configSections.targets[u.Target], configSections.portals[u.Portal]} {
			if s == nil {
				continue
			}
			if e, ok := s.vals[key]; ok {
				return e.value, fmt.Sprintf("%s:%d", s.path, e.line), true
			}
		}
	}
	return "", "", false
}

// sessionString is key's value for u: the sections, else the flag.
func sessionString(c *cli.Context, u *discovery.URL, key string) string {
	if v, _, ok := sessionSetting(u, key); ok {
		return v
	}
	return c.String(key)
}

func sessionDuration(c *cli.Context, u *discovery.URL, key string) (time.Duration, error) {
	v, at, ok := sessionSetting(u, key)
	if !ok {
		return c.Duration(key), nil
	}
	if plainNumber.MatchString(v) {
		v += "s"
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, usageErrorf("%s: %s = %q: not a duration (e.g. 30s, 2m)", at, key, v)
	}
	return d, nil
}

func sessionInt(c *cli.Context, u *discovery.URL, key string) (int, error) {
	v, at, ok := sessionSetting(u, key)
	if !ok {
		return c.Int(key), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, usageErrorf("%s: %s = %q: not a number", at, key, v)
	}
	return n, nil
}

// sessionSize is key's value for u in bytes (parseSize: 262144, 256k,
// 1M, 1MiB): the sections, else the flag; 0 when neither sets it.
func sessionSize(c *cli.Context, u *discovery.URL, key string) (int64, error) {
	v, at, ok := sessionSetting(u, key)
	if !ok {
		if v = c.String(key); v == "" {
			return 0, nil
		}
		n, err := parseSize(v)
		if err != nil {
			return 0, usageErrorf("--%s: %v", key, err)
		}
		return n, nil
	}
	n, err := parseSize(v)
	if err != nil {
		return 0, usageErrorf("%s: %s = %q: %v", at, key, v, err)
	}
	return n, nil
}

// sectionSecret is the secret the sections give u for prefix ("chap" or
// "target-chap"): from a *-secret-file or a *-secret-env. ok is false when
// the sections name none (or the command line gave its own).
func sectionSecret(c *cli.Context, u *discovery.URL, prefix string) (string, bool, error) {
	if explicit[prefix+"-secret-file"] {
		return "", false, nil
	}
	if f, _, ok := sessionSetting(u, prefix+"-secret-file"); ok {
		s, err := readSecretFile(f, prefix+"-secret-file")
		return s, true, err
	}
	if env, at, ok := sessionSetting(u, prefix+"-secret-env"); ok {
		s := secretFromEnv(env)
		if s == "" {
			return "", true, usageErrorf("%s: %s-secret-env = %s, but %s is not set", at, prefix, env, env)
		}
		return s, true, nil
	}
	return "", false, nil
}

// deviceSection returns the [device] section named name, if any.
func deviceSection(name string) *section {
	if strings.Contains(name, "://") {
		return nil
	}
	return configSections.devices[name]
}

// expandDevice turns a device name into its URL; anything else is
// returned as it is.
func expandDevice(arg string) string {
	if s := deviceSection(arg); s != nil {
		return s.vals["url"].value
	}
	return arg
}

// applyDevice makes the command use the device section named arg: its
// URL, and its paths, mirror legs and settings for every flag the command
// line did not set. It returns the URL.
func applyDevice(c *cli.Context, arg string) (string, error) {
	s := deviceSection(arg)
	if s == nil {
		return arg, nil
	}
	for _, k := range []string{"policy", "failback", "no-path-timeout", "check-interval", "resync-rate", "prefer"} {
		e, ok := s.vals[k]
		if !ok || c.IsSet(k) {
			continue
		}
		if err := c.Set(k, e.value); err != nil {
			return "", usageErrorf("%s:%d: %s = %q: %v", s.path, e.line, k, e.value, err)
		}
	}
	for _, x := range []struct {
		flag string
		urls []string
	}{{"path", s.paths}, {"mirror", s.mirrors}} {
		if c.IsSet(x.flag) {
			continue
		}
		for _, u := range x.urls {
			if err := c.Set(x.flag, u); err != nil {
				return "", usageErrorf("%s: [device %q] %s: %v", s.path, s.name, x.flag, err)
			}
		}
	}
	return s.vals["url"].value, nil
}
