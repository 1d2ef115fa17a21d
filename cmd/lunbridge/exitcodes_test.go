package main

import (
	"bufio"
	"context"
	"errors"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/filedev"
	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// readmeExitCodes parses the table under "### Exit codes" in README.md:
// code -> meaning.
func readmeExitCodes(t *testing.T) map[int]string {
	t.Helper()
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile(`^\|\s*(\d+)\s*\|\s*(.*?)\s*\|\s*$`)
	codes := map[int]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "#"):
			in = strings.TrimSpace(l) == "### Exit codes"
		case in:
			if m := row.FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[1])
				codes[n] = m[2]
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(codes) == 0 {
		t.Fatal(`README.md: no "### Exit codes" table`)
	}
	return codes
}

// TestExitCodesMatchREADME runs the real binary into every row of the
// README's exit-code table, against a real tgtd where a target is needed.
// A row without a case here, or a case whose code the README does not
// list, fails the test.
func TestExitCodesMatchREADME(t *testing.T) {
	readme := readmeExitCodes(t)
	const lunSize = 32 << 20
	srv := targets.StartTgtd(t,
		targets.Target{Name: "iqn.2026-12.org.lunbridge.test:exit-plain", LUNs: []targets.LUN{{Size: lunSize}}},
		targets.Target{Name: "iqn.2026-12.org.lunbridge.test:exit-chap", LUNs: []targets.LUN{{Size: 4 << 20}}, CHAPUser: "carol", CHAPSecret: "carol-secret-1234"},
		targets.Target{Name: "iqn.2026-12.org.lunbridge.test:exit-ro", LUNs: []targets.LUN{{Size: 4 << 20, ReadOnly: true}}},
		targets.Target{Name: "iqn.2026-12.org.lunbridge.test:exit-resv", LUNs: []targets.LUN{{Size: 4 << 20}}},
	)
	// Another initiator (this test) holds Write Exclusive – Registrants
	// Only on the exit-resv LUN: a write from lunbridge gets RESERVATION
	// CONFLICT from the target.
	holder := dialLUNTarget(t, srv, 3)
	defer holder.Close()
	if err := holder.(blockdev.Reserver).Register(context.Background(), 0x4c42); err != nil {
		t.Fatal(err)
	}
	if err := holder.(blockdev.Reserver).Reserve(context.Background(), 0x4c42, 0); err != nil {
		t.Fatal(err)
	}
	// Data, not holes: a rate-limited pull of it takes long.
	data := make([]byte, lunSize)
	rand.New(rand.NewSource(3)).Read(data)
	if err := os.WriteFile(srv.BackingFile(0, 0), data, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	env := []string{"XDG_RUNTIME_DIR=" + dir, "LUNBRIDGE_ISID_LOCK_DIR=" + filepath.Join(dir, "isid")}
	url := srv.URL(0, 0)

	// A portal nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	// An image differing from the LUN in one byte.
	diff := append([]byte(nil), data...)
	diff[lunSize/2] ^= 0xff
	diffImg := filepath.Join(dir, "diff.img")
	if err := os.WriteFile(diffImg, diff, 0o600); err != nil {
		t.Fatal(err)
	}

	// A mirror on two files owned by this (live) process: a second
	// assembler gets ErrOwned.
	legs := [2]string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")}
	for _, p := range legs {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 16<<20); err != nil {
			t.Fatal(err)
		}
	}
	da, err := filedev.Open(legs[0], 512, false)
	if err != nil {
		t.Fatal(err)
	}
	db, err := filedev.Open(legs[1], 512, false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mirror.Create(context.Background(), da, db, mirror.CreateOptions{ChunkSize: 1 << 20, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	// A mirror whose legs differ (created --assume-clean over different
	// data, as mirror create --force allows).
	dlegs := [2]string{filepath.Join(dir, "da.img"), filepath.Join(dir, "db.img")}
	for k, p := range dlegs {
		b := make([]byte, 16<<20)
		b[4096] = byte(k)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dda, err := filedev.Open(dlegs[0], 512, false)
	if err != nil {
		t.Fatal(err)
	}
	ddb, err := filedev.Open(dlegs[1], 512, false)
	if err != nil {
		t.Fatal(err)
	}
	dm, err := mirror.Create(context.Background(), dda, ddb, mirror.CreateOptions{ChunkSize: 1 << 20, AssumeClean: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := dm.Close(); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(dir, "small.img")
	if err := os.WriteFile(small, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	plain := "iscsi://" + srv.Portal + "/iqn.2026-12.org.lunbridge.test:exit-plain/"
	px, err := faultproxy.New(srv.Portal)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	proxied := "iscsi://" + px.Addr() + "/iqn.2026-12.org.lunbridge.test:exit-plain/1"

	cases := []struct {
		code   int
		what   string
		args   []string
		stderr string // a word the one-line message must hold
		sigint bool   // interrupt it after a moment
		env    []string
		fault  func() // run a moment after the start (instead of SIGINT)
	}{
		{0, "info of a LUN", []string{"info", url}, "", false, nil, nil},
		{1, "mirror resync of a mirror a live process owns (ErrOwned)", []string{"mirror", "resync", "file://" + legs[0], "file://" + legs[1]}, "in use", false, nil, nil},
		{1, "pull into a directory that does not exist", []string{"pull", url, filepath.Join(dir, "no", "such", "dir", "x.img")}, "", false, nil, nil},
		{2, "an unknown flag", []string{"info", "--no-such-flag", url}, "", false, nil, nil},
		{2, "a URL that is not a device URL", []string{"info", "http://" + srv.Portal + "/x"}, "URL", false, nil, nil},
		{3, "a dead portal", []string{"info", "iscsi://" + dead + "/iqn.2026-12.org.lunbridge.test:exit-plain/1"}, "", false, nil, nil},
		{3, "the connection lost past the replacement timeout", []string{"--replacement-timeout", "2s", "pull", "--rate-limit", "1M", proxied, filepath.Join(dir, "lost.img")}, "", false, nil, func() {
			px.RefuseNew(true)
			px.ResetAll()
		}},
		{4, "a wrong CHAP secret", []string{"--chap-user", "carol", "info", srv.URL(1, 0)}, "CHAP", false, []string{"LUNBRIDGE_CHAP_SECRET=not-the-secret-99"}, nil},
		{4, "an unknown target", []string{"info", "iscsi://" + srv.Portal + "/iqn.2026-12.org.lunbridge.test:no-such-target/1"}, "", false, nil, nil},
		{1, "push to a read-only LUN (refused before writing)", []string{"push", "--yes", small, srv.URL(2, 0)}, "read-only", false, nil, nil},
		{5, "a write to a LUN another initiator reserved (RESERVATION CONFLICT)", []string{"push", "--yes", small, srv.URL(3, 0)}, "", false, nil, nil},
		{5, "tgtd's controller LUN, not a disk", []string{"pull", plain + "0", filepath.Join(dir, "ctl.img")}, "", false, nil, nil},
		{5, "a LUN that does not exist", []string{"info", plain + "7"}, "", false, nil, nil},
		{6, "verify against an image that differs", []string{"verify", url, diffImg}, "", false, nil, nil},
		{6, "mirror check of legs that differ", []string{"mirror", "check", "file://" + dlegs[0], "file://" + dlegs[1]}, "differ", false, nil, nil},
		{130, "SIGINT during a pull", []string{"pull", "--rate-limit", "1M", url, filepath.Join(dir, "pulled.img")}, "", true, nil, nil},
		{130, "SIGTERM during a verify", []string{"verify", "--rate-limit", "1M", url, diffImg}, "", true, nil, nil},
	}
	covered := map[int]bool{}
	for _, tc := range cases {
		covered[tc.code] = true
		if _, ok := readme[tc.code]; !ok {
			t.Errorf("exit code %d (%s) is not in the README's table", tc.code, tc.what)
		}
		var r lbResult
		switch {
		case tc.sigint:
			r = lbRunAfter(t, 60*time.Second, time.Second, func(c *exec.Cmd) { c.Process.Signal(syscall.SIGINT) }, append(env, tc.env...), tc.args...)
		case tc.fault != nil:
			r = lbRunAfter(t, 60*time.Second, time.Second, func(*exec.Cmd) { tc.fault() }, append(env, tc.env...), tc.args...)
		default:
			r = lbRun(t, 60*time.Second, append(env, tc.env...), tc.args...)
		}
		if r.code != tc.code {
			t.Errorf("%s (README: %d %q): exit %d\nstderr: %s", tc.what, tc.code, readme[tc.code], r.code, r.stderr)
			continue
		}
		if l := lastLine(r.stderr); tc.code != 0 && (!strings.HasPrefix(l, "lunbridge: ") || !strings.Contains(l, tc.stderr)) {
			t.Errorf("%s: want a last stderr line \"lunbridge: ...\" holding %q, got:\n%s", tc.what, tc.stderr, r.stderr)
		}
		t.Logf("exit %d, %s: %s", r.code, tc.what, strings.TrimSpace(lastLine(r.stderr)))
	}
	for code, meaning := range readme {
		if !covered[code] {
			t.Errorf("README exit code %d (%s) has no case in this test", code, meaning)
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// dialLUNTarget logs in to the first LUN of srv's target tg (random ISID).
func dialLUNTarget(t *testing.T, srv *targets.Server, tg int) blockdev.Device {
	t.Helper()
	u, err := discovery.ParseURL(srv.URL(tg, 0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: "iqn.2026-12.org.lunbridge:exit-holder", TargetName: u.Target, Portal: u.Portal})
	if err != nil {
		t.Fatal(err)
	}
	l, err := initiator.OpenLUN(ctx, s, u.LUN)
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	l.SetOwnsSession(true)
	return l
}

// lbRunAfter runs lunbridge like lbRun and calls do after after (SIGINT,
// a fault).
func lbRunAfter(t *testing.T, limit, after time.Duration, do func(*exec.Cmd), env []string, args ...string) lbResult {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "LUNBRIDGE_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(append(cmd.Env, "LUNBRIDGE_CLITEST_MAIN=1"), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tm := time.AfterFunc(after, func() { do(cmd) })
	defer tm.Stop()
	err = cmd.Wait()
	r := lbResult{stdout: out.String(), stderr: errb.String()}
	if ctx.Err() != nil {
		t.Fatalf("lunbridge %s did not stop within %v (stderr: %s)", strings.Join(args, " "), limit, r.stderr)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return r
}
