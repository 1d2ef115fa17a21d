package vmlab

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// tool runs a host peer tool under a timeout and returns its combined output.
func tool(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	testenv.RequireTool(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out after %v:\n%s", name, strings.Join(args, " "), timeout, out)
	}
	return string(out), err
}

func mustTool(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := tool(t, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func requirePeers(t *testing.T) {
	for _, n := range []string{"iscsi-inq", "iscsi-readcapacity16", "qemu-img", "qemu-io"} {
		testenv.RequireTool(t, n)
	}
}

// TestLIO proves the lab: LIO in the VM serves both LUNs to the host's libiscsi tools and
// qemu, with the expected identity, capacity and a data round trip.
func TestLIO(t *testing.T) {
	Require(t)
	requirePeers(t)
	start := time.Now()
	lt := BootLIO(t, LIOOptions{})
	t.Logf("boot to READY: %v (portal %s)", time.Since(start).Round(time.Millisecond), lt.Portal)

	out := mustTool(t, time.Minute, "iscsi-inq", lt.URL(1))
	if !strings.Contains(out, "LIO-ORG") {
		t.Errorf("standard INQUIRY of LUN 1: no LIO-ORG vendor:\n%s", out)
	}
	for lun, serial := range lt.Serials {
		out = mustTool(t, time.Minute, "iscsi-inq", "-e", "1", "-c", "128", lt.URL(lun))
		if !strings.Contains(out, serial) {
			t.Errorf("LUN %d unit serial: want %q in:\n%s", lun, serial, out)
		}
	}
	for _, lun := range lt.LUNs {
		out = mustTool(t, time.Minute, "iscsi-readcapacity16", lt.URL(lun))
		if !regexp.MustCompile(`Total size:\s*67108864\b`).MatchString(out) ||
			!regexp.MustCompile(`LOGICAL BLOCK LENGTH IN BYTES:\s*512\b`).MatchString(out) {
			t.Errorf("LUN %d READ CAPACITY(16): want 64 MiB of 512-byte blocks:\n%s", lun, out)
		}
	}

	out = mustTool(t, 2*time.Minute, "qemu-io", "-f", "raw",
		"-c", "write -P 0x5a 0 64k", "-c", "read -P 0x5a 0 64k",
		"-c", "write -P 0xa5 1M 256k", "-c", "read -P 0xa5 1M 256k", lt.URL(1))
	if strings.Contains(out, "fail") || strings.Count(out, "read 65536/65536") != 1 ||
		strings.Count(out, "read 262144/262144") != 1 {
		t.Errorf("qemu-io round trip:\n%s", out)
	}

	raw := filepath.Join(t.TempDir(), "lun1.raw")
	mustTool(t, 3*time.Minute, "qemu-img", "convert", "-O", "raw", lt.URL(1), raw)
	data, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 64<<20 {
		t.Fatalf("qemu-img convert: %d bytes, want %d", len(data), 64<<20)
	}
	check := func(off, n int, b byte) {
		if !bytes.Equal(data[off:off+n], bytes.Repeat([]byte{b}, n)) {
			t.Errorf("image bytes [%d,+%d) are not all %#x", off, n, b)
		}
	}
	check(0, 64<<10, 0x5a)
	check(64<<10, 1<<20-64<<10, 0)
	check(1<<20, 256<<10, 0xa5)
	check(1<<20+256<<10, 64<<20-(1<<20+256<<10), 0)

	// The console command channel works (and shows the target side of things).
	if out, rc, err := lt.VM.Run("cat /sys/kernel/config/target/core/fileio_1/fd0/info", 30*time.Second); err != nil || rc != 0 ||
		!strings.Contains(out, "/tmp/lio/fd0.img") {
		t.Errorf("Run in guest: rc %d, err %v:\n%s", rc, err, out)
	}
	if _, err := lt.Sessions(30 * time.Second); err != nil {
		t.Errorf("sessions: %v", err)
	}
	if r := lt.Stop(); !r.Pass {
		t.Errorf("scenario result: %v", r)
	}
	t.Logf("full lio test: %v", time.Since(start).Round(time.Millisecond))
}

// TestLIOCHAPACL: an explicit ACL for one initiator name with mutual CHAP on it.
func TestLIOCHAPACL(t *testing.T) {
	Require(t)
	requirePeers(t)
	const ini = "iqn.2026-11.org.lunbridge:vmlab-test"
	chap := &CHAP{User: "inituser", Secret: "initsecret12", TargetUser: "tgtuser", TargetSecret: "tgtsecret123"}
	lt := BootLIO(t, LIOOptions{CHAP: chap, Initiator: ini})

	// right name + CHAP (mutual): works
	out := mustTool(t, time.Minute, "iscsi-inq", "-i", ini, lt.URL(1))
	if !strings.Contains(out, "LIO-ORG") {
		t.Errorf("INQUIRY with CHAP:\n%s", out)
	}
	out = mustTool(t, time.Minute, "iscsi-readcapacity16", "-i", ini, lt.URL(0))
	if !strings.Contains(out, "67108864") {
		t.Errorf("READ CAPACITY(16) with CHAP:\n%s", out)
	}
	// no credentials, a wrong secret, an unknown initiator name, a wrong target secret: refused
	bad := map[string][]string{
		"no credentials":      {"-i", ini, lt.PlainURL(1)},
		"wrong secret":        {"-i", ini, strings.Replace(lt.URL(1), "initsecret12", "wrongsecret9", 1)},
		"other initiator":     {"-i", "iqn.2026-11.org.lunbridge:intruder", lt.URL(1)},
		"wrong target secret": {"-i", ini, strings.Replace(lt.URL(1), "tgtsecret123", "wrongtgtsecr", 1)},
	}
	for name, args := range bad {
		if out, err := tool(t, time.Minute, "iscsi-inq", args...); err == nil {
			t.Errorf("%s: login succeeded:\n%s", name, out)
		}
	}
	if r := lt.Stop(); !r.Pass {
		t.Errorf("scenario result: %v", r)
	}
}

// TestLIODigest: the target requires HeaderDigest=CRC32C.
func TestLIODigest(t *testing.T) {
	Require(t)
	requirePeers(t)
	lt := BootLIO(t, LIOOptions{HeaderDigest: "CRC32C", DataDigest: "None"})
	out, rc, err := lt.VM.Run("cat /sys/kernel/config/target/iscsi/"+lt.IQN+"/tpgt_1/param/HeaderDigest", 30*time.Second)
	if err != nil || rc != 0 || strings.TrimSpace(out) != "CRC32C" {
		t.Fatalf("HeaderDigest param: %q rc %d err %v", out, rc, err)
	}
	// libiscsi offers None,CRC32C: LIO must pick CRC32C, the only value it allows.
	out = mustTool(t, time.Minute, "iscsi-inq", lt.URL(1))
	if !strings.Contains(out, "LIO-ORG") {
		t.Errorf("INQUIRY with header digest:\n%s", out)
	}
	opts := "driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=" + lt.Portal +
		",file.target=" + lt.IQN + ",file.lun=1,file.header-digest=crc32c"
	out = mustTool(t, 2*time.Minute, "qemu-io", "-c", "write -P 0x77 4096 64k", "-c", "read -P 0x77 4096 64k", "--image-opts", opts)
	if strings.Contains(out, "fail") || !strings.Contains(out, "read 65536/65536") {
		t.Errorf("qemu-io with header digest:\n%s", out)
	}
	// a session with digest None only is refused
	opts = strings.Replace(opts, "header-digest=crc32c", "header-digest=none", 1)
	if out, err := tool(t, time.Minute, "qemu-io", "-c", "read 0 4k", "--image-opts", opts); err == nil && !strings.Contains(out, "Failed") {
		t.Errorf("login without header digest succeeded:\n%s", out)
	}
	if r := lt.Stop(); !r.Pass {
		t.Errorf("scenario result: %v", r)
	}
}

// TestNBDScenarioGate: the nbd scenarios fail with a clear reason when /bin/lunbridge is absent.
func TestNBDScenarioGate(t *testing.T) {
	Require(t)
	r, _ := RunNBD(t, NBDOptions{Scenario: "nbd-attach", URL: "iscsi://10.0.2.2:3260/iqn.x/1", Timeout: 2 * time.Minute})
	if !r.Seen || r.Pass || !strings.Contains(r.Reason, "no /bin/lunbridge") {
		t.Errorf("result %v, want FAIL: no /bin/lunbridge ...", r)
	}
}

// TestNBDScenariosStandin runs nbd-attach and nbd-reconnect with the nbdstandin command (same
// command line as `lunbridge attach/detach`, a file in the guest instead of an iSCSI LUN): the
// kernel NBD driver driven by nbdbridge's netlink attach, ext4 on /dev/nbd0, reconnect after
// kill -9 of the bridge.
func TestNBDScenariosStandin(t *testing.T) {
	Require(t)
	bin := BuildStatic(t, "./internal/testrig/vmlab/nbdstandin")
	for _, tc := range []struct {
		name, scenario string
		args           []string
	}{
		{"attach", "nbd-attach", nil},
		{"reconnect", "nbd-reconnect", nil},
		// With a backend identifier on CONNECT, Linux 6.1 rejects a RECONFIGURE that does not
		// repeat it ("block nbdN: must specify backend", EINVAL).
		{"reconnect-backend", "nbd-reconnect", []string{"--backend=vmlab-standin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r, _ := RunNBD(t, NBDOptions{Scenario: tc.scenario, Lunbridge: bin, URL: "file:///tmp/standin.img",
				AttachArgs: tc.args, Timeout: 4 * time.Minute})
			if !r.Pass {
				t.Errorf("%s: %v", tc.scenario, r)
			}
			t.Logf("%s: %v", tc.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestLIOCHAPDemo: one-way CHAP on the TPG's demo-mode auth (any initiator name).
func TestLIOCHAPDemo(t *testing.T) {
	Require(t)
	requirePeers(t)
	lt := BootLIO(t, LIOOptions{CHAP: &CHAP{User: "inituser", Secret: "initsecret12"}})
	out := mustTool(t, time.Minute, "iscsi-inq", lt.URL(0))
	if !strings.Contains(out, "LIO-ORG") {
		t.Errorf("INQUIRY with CHAP:\n%s", out)
	}
	out = mustTool(t, 2*time.Minute, "qemu-io", "-f", "raw", "-c", "write -P 0x11 0 64k", "-c", "read -P 0x11 0 64k", lt.URL(1))
	if strings.Contains(out, "fail") || !strings.Contains(out, "read 65536/65536") {
		t.Errorf("qemu-io with CHAP:\n%s", out)
	}
	if out, err := tool(t, time.Minute, "iscsi-inq", lt.PlainURL(0)); err == nil {
		t.Errorf("login without credentials succeeded:\n%s", out)
	}
	if r := lt.Stop(); !r.Pass {
		t.Errorf("scenario result: %v", r)
	}
}

// TestLIODigestBoth: lunbridge.lio.digest=crc32c requires both digests; libiscsi never offers a
// data digest, so its login is refused (a lunbridge test can use this variant for DataDigest).
func TestLIODigestBoth(t *testing.T) {
	Require(t)
	requirePeers(t)
	lt := BootLIO(t, LIOOptions{Digest: "crc32c"})
	tpg := "/sys/kernel/config/target/iscsi/" + lt.IQN + "/tpgt_1/param/"
	out, rc, err := lt.VM.Run("cat "+tpg+"HeaderDigest "+tpg+"DataDigest", 30*time.Second)
	if err != nil || rc != 0 || strings.Fields(out)[0] != "CRC32C" || strings.Fields(out)[1] != "CRC32C" {
		t.Fatalf("digest params: %q rc %d err %v", out, rc, err)
	}
	if out, err := tool(t, time.Minute, "iscsi-inq", lt.URL(1)); err == nil {
		t.Errorf("login without a data digest succeeded:\n%s", out)
	}
	if r := lt.Stop(); !r.Pass {
		t.Errorf("scenario result: %v", r)
	}
}
