package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

// A subprocess started by lbCmd runs main() instead of the tests.
func init() {
	if os.Getenv("LUNBRIDGE_CLITEST_MAIN") == "1" {
		main()
	}
}

type lbResult struct {
	stdout, stderr string
	code           int
	elapsed        time.Duration
}

// lbRun runs lunbridge (this test binary) with a clean LUNBRIDGE_*
// environment plus env, and fails the test when it runs longer than limit.
func lbRun(t testing.TB, limit time.Duration, env []string, args ...string) lbResult {
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
	cmd.Env = append(cmd.Env, "LUNBRIDGE_CLITEST_MAIN=1")
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err = cmd.Run()
	r := lbResult{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("lunbridge %s did not finish within %v (stderr: %s)", strings.Join(args, " "), limit, r.stderr)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// mustOK fails unless lunbridge exited 0 with an empty stderr.
func (r lbResult) mustOK(t testing.TB, what string) {
	t.Helper()
	if r.code != 0 || strings.TrimSpace(r.stderr) != "" {
		t.Fatalf("%s: exit %d, stderr:\n%s\nstdout:\n%s", what, r.code, r.stderr, r.stdout)
	}
}

// decodeStrict unmarshals JSON into v, refusing fields the documented
// structs do not have.
func decodeStrict(t testing.TB, s string, v any) {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		t.Fatalf("JSON does not match the documented schema: %v\n%s", err, s)
	}
	if d.More() {
		t.Fatalf("trailing data after the JSON document:\n%s", s)
	}
}

// tableRows splits an aligned table into rows of fields and checks the
// header.
func tableRows(t testing.TB, out string, header ...string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || strings.Join(strings.Fields(lines[0]), " ") != strings.Join(header, " ") {
		t.Fatalf("table header: got %q, want %q", lines[0], strings.Join(header, " "))
	}
	var rows [][]string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

// expectedLUN is what the harness configured for one LUN.
type expectedLUN struct {
	target   string
	lun      uint64
	size     int64
	block    int
	readOnly bool
}

func expected(s *targets.Server) map[string][]expectedLUN {
	m := map[string][]expectedLUN{}
	for i, tg := range s.Targets {
		for j, l := range tg.LUNs {
			bs := l.BlockSize
			if bs == 0 {
				bs = 512
			}
			m[tg.Name] = append(m[tg.Name], expectedLUN{tg.Name, uint64(s.LUNNumber(j)), l.Size, bs, l.ReadOnly})
		}
		_ = i
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// checkDiscover runs discover (JSON and table) and compares with the
// harness configuration: every target, exactly once, on the server's portal.
func checkDiscover(t *testing.T, s *targets.Server) {
	t.Helper()
	want := expected(s)
	r := lbRun(t, 30*time.Second, nil, "discover", "--json", s.Portal)
	r.mustOK(t, "discover --json")
	var got []discoverTarget
	decodeStrict(t, r.stdout, &got)
	var names []string
	for _, tg := range got {
		names = append(names, tg.Name)
		if len(tg.Portals) != 1 || tg.Portals[0].Address != s.Portal || tg.Portals[0].Tag != 1 || tg.Portals[0].URL != "iscsi://"+s.Portal+"/"+tg.Name {
			t.Errorf("discover --json: %s portals %+v, want [{%s 1 iscsi://%s/%s}]", tg.Name, tg.Portals, s.Portal, s.Portal, tg.Name)
		}
	}
	sort.Strings(names)
	if strings.Join(names, " ") != strings.Join(sortedKeys(want), " ") {
		t.Errorf("discover --json targets %v, want %v", names, sortedKeys(want))
	}
	r = lbRun(t, 30*time.Second, nil, "discover", s.Portal)
	r.mustOK(t, "discover")
	rows := tableRows(t, r.stdout, "TARGET", "PORTAL", "TPGT", "URL")
	names = nil
	for _, row := range rows {
		if len(row) != 4 || row[1] != s.Portal || row[2] != "1" || row[3] != "iscsi://"+s.Portal+"/"+row[0] {
			t.Errorf("discover table row %q", row)
			continue
		}
		names = append(names, row[0])
	}
	sort.Strings(names)
	if strings.Join(names, " ") != strings.Join(sortedKeys(want), " ") {
		t.Errorf("discover table targets %v, want %v", names, sortedKeys(want))
	}
}

// checkLS runs ls (JSON and table) with the CHAP credentials of the CHAP
// target and compares every LUN with the harness configuration. tgtd adds
// its controller LUN 0.
func checkLS(t *testing.T, s *targets.Server, chapUser, chapSecret, vendor, product string) []lsTarget {
	t.Helper()
	want := expected(s)
	env := []string{"LUNBRIDGE_CHAP_SECRET=" + chapSecret}
	r := lbRun(t, 60*time.Second, env, "--chap-user", chapUser, "ls", "--json", s.Portal)
	r.mustOK(t, "ls --json")
	var got []lsTarget
	decodeStrict(t, r.stdout, &got)
	if len(got) != len(want) {
		t.Fatalf("ls --json: %d targets, want %d:\n%s", len(got), len(want), r.stdout)
	}
	for _, tg := range got {
		wl, ok := want[tg.Name]
		if !ok {
			t.Errorf("ls --json: unexpected target %s", tg.Name)
			continue
		}
		if tg.Portal != s.Portal || tg.Error != "" || len(tg.Portals) != 1 || tg.Portals[0] != (discovery.Portal{Address: s.Portal, Tag: 1}) {
			t.Errorf("ls --json: target %+v", tg)
		}
		disks := map[uint64]lsLUN{}
		for _, l := range tg.LUNs {
			if want := fmt.Sprintf("iscsi://%s/%s/%d", s.Portal, tg.Name, l.LUN); l.URL != want {
				t.Errorf("ls --json: %s LUN %d: url %q, want %q", tg.Name, l.LUN, l.URL, want)
			}
			if l.Error != "" {
				t.Errorf("ls --json: %s LUN %d: error %s", tg.Name, l.LUN, l.Error)
			}
			if s.Kind == targets.KindTgtd && l.LUN == 0 {
				if l.DeviceType != "controller" || l.SizeBytes != 0 || l.BlockSize != 0 || l.WWID != "" {
					t.Errorf("ls --json: tgtd controller LUN: %+v", l)
				}
				continue
			}
			disks[l.LUN] = l
		}
		if len(disks) != len(wl) {
			t.Errorf("ls --json: %s has %d disks, want %d", tg.Name, len(disks), len(wl))
		}
		for _, w := range wl {
			l, ok := disks[w.lun]
			if !ok {
				t.Errorf("ls --json: %s LUN %d missing", tg.Name, w.lun)
				continue
			}
			if l.DeviceType != "disk" || l.Vendor != vendor || l.Product != product || l.SizeBytes != w.size || l.BlockSize != w.block ||
				!strings.HasPrefix(l.WWID, "naa.") || l.Serial == "" || l.ReadOnly != w.readOnly || l.Thin {
				t.Errorf("ls --json: %s LUN %d: got %+v, want size %d block %d read-only %v vendor %q product %q, a naa. WWID and a serial",
					tg.Name, w.lun, l, w.size, w.block, w.readOnly, vendor, product)
			}
		}
	}
	// The table: one row per LUN; SIZE is two fields ("16.0 MiB").
	r = lbRun(t, 60*time.Second, env, "--chap-user", chapUser, "ls", s.Portal)
	r.mustOK(t, "ls")
	rows := tableRows(t, r.stdout, "TARGET", "PORTAL", "LUN", "TYPE", "VENDOR", "PRODUCT", "SIZE", "BLOCK", "WWID", "URL")
	seen := map[string]bool{}
	for _, row := range rows {
		if len(row) < 3 {
			t.Errorf("ls table row %q", row)
			continue
		}
		seen[row[0]+"/"+row[2]] = true
	}
	for _, wl := range want {
		for _, w := range wl {
			key := fmt.Sprintf("%s/%d", w.target, w.lun)
			if !seen[key] {
				t.Errorf("ls table: no row for %s", key)
			}
			re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(w.target) + `\s+` + regexp.QuoteMeta(s.Portal) + `\s+` +
				strconv.FormatUint(w.lun, 10) + `\s+disk\s+.*\s` + regexp.QuoteMeta(formatBytes(w.size)) + `\s+` + strconv.Itoa(w.block) + `\s+naa\.\S+\s+` + regexp.QuoteMeta(fmt.Sprintf("iscsi://%s/%s/%d", s.Portal, w.target, w.lun)) + `$`)
			if !re.MatchString(r.stdout) {
				t.Errorf("ls table: row for %s does not show size %s and block %d:\n%s", key, formatBytes(w.size), w.block, r.stdout)
			}
		}
	}
	return got
}

// iscsiLS runs libiscsi's iscsi-ls -s (under a timeout: it hangs against
// istgt) and returns target → LUN → "TYPE size-in-bytes-or-0".
type peerLUN struct {
	typ  string
	size int64 // as iscsi-ls prints it, rounded down to its unit
	unit int64
}

func iscsiLS(t *testing.T, url string) map[string]map[uint64]peerLUN {
	t.Helper()
	if _, err := exec.LookPath("iscsi-ls"); err != nil {
		t.Skipf("iscsi-ls not installed (libiscsi-bin): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "iscsi-ls", "-s", url).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("iscsi-ls -s %s hung; output so far:\n%s", url, out)
	}
	if err != nil {
		t.Fatalf("iscsi-ls -s: %v\n%s", err, out)
	}
	res := map[string]map[uint64]peerLUN{}
	targetRE := regexp.MustCompile(`^Target:(\S+) Portal:(\S+)`)
	lunRE := regexp.MustCompile(`^Lun:(\d+)\s+Type:(\S+)(?: \(Size:(\d+)([kKMGT]?)\))?`)
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := targetRE.FindStringSubmatch(line); m != nil {
			cur = m[1]
			res[cur] = map[uint64]peerLUN{}
		} else if m := lunRE.FindStringSubmatch(line); m != nil && cur != "" {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			p := peerLUN{typ: m[2], unit: 1}
			if m[3] != "" {
				v, _ := strconv.ParseInt(m[3], 10, 64)
				switch m[4] {
				case "k", "K":
					p.unit = 1 << 10
				case "M":
					p.unit = 1 << 20
				case "G":
					p.unit = 1 << 30
				case "T":
					p.unit = 1 << 40
				}
				p.size = v * p.unit
			}
			res[cur][n] = p
		}
	}
	if len(res) == 0 {
		t.Fatalf("iscsi-ls -s printed no target:\n%s", out)
	}
	return res
}

func TestCLIDiscoverLSTgtd(t *testing.T) {
	s := targets.StartTgtd(t,
		targets.Target{Name: "iqn.2026-11.org.lunbridge.test:two-luns", LUNs: []targets.LUN{{Size: 16 << 20}, {Size: 8 << 20, BlockSize: 4096}}},
		targets.Target{Name: "iqn.2026-11.org.lunbridge.test:chap", LUNs: []targets.LUN{{Size: 12 << 20}}, CHAPUser: "alice", CHAPSecret: "alice-secret-12"},
		targets.Target{Name: "iqn.2026-11.org.lunbridge.test:ro", LUNs: []targets.LUN{{Size: 3 << 20, ReadOnly: true}}},
	)
	checkDiscover(t, s)
	got := checkLS(t, s, "alice", "alice-secret-12", "IET", "VIRTUAL-DISK")

	// The peer tool sees the same targets, LUNs and sizes. iscsi-ls uses
	// the URL's credentials for every target.
	peer := iscsiLS(t, "iscsi://alice%alice-secret-12@"+s.Portal)
	for _, tg := range got {
		pl, ok := peer[tg.Name]
		if !ok {
			t.Errorf("iscsi-ls does not list %s (it lists %v)", tg.Name, sortedKeys(peer))
			continue
		}
		if len(pl) != len(tg.LUNs) {
			t.Errorf("%s: iscsi-ls lists %d LUNs, lunbridge %d", tg.Name, len(pl), len(tg.LUNs))
		}
		for _, l := range tg.LUNs {
			p, ok := pl[l.LUN]
			if !ok {
				t.Errorf("%s LUN %d: not in iscsi-ls", tg.Name, l.LUN)
				continue
			}
			wantType := map[string]string{"disk": "DIRECT_ACCESS", "controller": "STORAGE_ARRAY_CONTROLLER"}[l.DeviceType]
			if p.typ != wantType {
				t.Errorf("%s LUN %d: iscsi-ls type %s, lunbridge %s", tg.Name, l.LUN, p.typ, l.DeviceType)
			}
			// iscsi-ls prints last-LBA × block size, truncated to its unit.
			if l.DeviceType == "disk" && (p.size > l.SizeBytes || l.SizeBytes-p.size > 2*p.unit) {
				t.Errorf("%s LUN %d: iscsi-ls size %d (unit %d), lunbridge %d", tg.Name, l.LUN, p.size, p.unit, l.SizeBytes)
			}
		}
	}
	if len(peer) != len(got) {
		t.Errorf("iscsi-ls lists %d targets, lunbridge %d", len(peer), len(got))
	}

	// Without credentials the CHAP target is reported (one line on
	// stderr, exit 4) and the others are still listed.
	r := lbRun(t, 60*time.Second, nil, "ls", "--json", s.Portal)
	if r.code != ExitLogin || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "CHAP") {
		t.Errorf("ls without CHAP: exit %d, stderr %q", r.code, r.stderr)
	}
	var partial []lsTarget
	decodeStrict(t, r.stdout, &partial)
	for _, tg := range partial {
		if (tg.Error != "") != (tg.Name == "iqn.2026-11.org.lunbridge.test:chap") {
			t.Errorf("ls without CHAP: %s error %q", tg.Name, tg.Error)
		}
	}
	// One target by URL.
	r = lbRun(t, 30*time.Second, nil, "ls", "--json", "iscsi://"+s.Portal+"/iqn.2026-11.org.lunbridge.test:two-luns")
	r.mustOK(t, "ls URL")
	var one []lsTarget
	decodeStrict(t, r.stdout, &one)
	if len(one) != 1 || len(one[0].LUNs) != 3 {
		t.Errorf("ls URL: %+v", one)
	}
}

func TestCLIDiscoverLSIstgt(t *testing.T) {
	s := targets.StartIstgt(t,
		targets.Target{Name: "iqn.2026-11.org.lunbridge.test:i-a", LUNs: []targets.LUN{{Size: 16 << 20}}},
		targets.Target{Name: "iqn.2026-11.org.lunbridge.test:i-b", LUNs: []targets.LUN{{Size: 8 << 20, BlockSize: 4096}}},
		targets.Target{Name: "iqn.2026-11.org.lunbridge.test:i-chap", LUNs: []targets.LUN{{Size: 5 << 20}}, CHAPUser: "bob", CHAPSecret: "bob-secret-123"},
	)
	// iscsi-ls hangs against istgt; lunbridge must finish (lbRun's limit)
	// and match the harness configuration.
	checkDiscover(t, s)
	checkLS(t, s, "bob", "bob-secret-123", "FreeBSD", "iSCSI DISK")
	r := lbRun(t, 30*time.Second, nil, "info", "--json", s.URL(1, 0))
	r.mustOK(t, "info")
	var info lunInfo
	decodeStrict(t, r.stdout, &info)
	if info.SizeBytes != 8<<20 || info.BlockSize != 4096 || info.Blocks != 2048 || info.LUN != 0 || info.Target != s.Targets[1].Name ||
		info.DeviceType != "disk" || !strings.HasPrefix(info.WWID, "naa.") || info.URL != s.URL(1, 0) {
		t.Errorf("info --json: %+v", info)
	}
}
