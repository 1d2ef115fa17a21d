package vmlab

// The LIO row of the interop matrix (initiator/interop_test.go has the tgtd and istgt rows):
// the lunbridge initiator, in process, against the Linux kernel target (LIO, Debian 6.1 kernel)
// in ONE qemu VM. The VM boots once; every variant reconfigures the running TPG (and, for the
// write-cache variants, the backstore) through configfs (VM.Run) and restores it afterwards.
// LIO applies tpgt_1/param/*, attrib/* and auth/* changes to the next login while the TPG stays
// enabled, so no disable/enable is needed.
//
// There is no host-side backing file, so each variant is judged three ways against a host-side
// model of both LUNs that lives as long as the VM:
//   - our own read-back of every extent, then a read of the whole window in one call;
//   - for LUN 1 (fileio on the guest's tmpfs) the md5 of the backing file range, computed in the
//     guest (dd | md5sum through VM.Run);
//   - what qemu-img (libiscsi, an independent initiator) reads from the same range (json: raw
//     driver with offset/size), where it can log in: not when the target requires digests
//     (libiscsi never offers a data digest).
// Each variant's workload covers a 16 MiB window of the 64 MiB LUN (LUNBRIDGE_LIO_WINDOW_MB=64:
// the whole LUN) with writes from one block to 4 MiB at unaligned offsets, 16 in flight; the
// windows rotate. At the end both LUNs are read whole by us and by qemu-img and the whole fileio
// file is hashed in the guest, which catches a write that landed outside its window.
//
// What LIO (6.1, iscsi_target_mod) does differently, found with this test:
//   - MaxRecvDataSegmentLength: on TCP LIO does NOT declare tpgt_1/param/MaxRecvDataSegmentLength.
//     iscsi_check_acceptor_state() keeps the initiator's declared value (LIO's send limit) and
//     REPLACES its own answer with param/MaxXmitDataSegmentLength (default 262144), which is also
//     the limit LIO enforces on received Data-Out/immediate data ("DataSegmentLength: N is
//     greater than MaxXmitDataSegmentLength"). Setting only param/MaxRecvDataSegmentLength=4096
//     still logs in with the target declaring 262144. The MRDSL variants set both params.
//   - FUA: LIO's default backstores (emulate_write_cache=0) report no DPOFUA in MODE SENSE and
//     refuse WRITE with FUA=1: CHECK CONDITION ILLEGAL REQUEST / INVALID FIELD IN CDB (dmesg "Got
//     CDB: 0x2a with FUA bit set, but device does not advertise support for FUA write"). With
//     emulate_write_cache=1 (the wce-fua variants) it advertises DPOFUA and accepts FUA.
//   - Optional answers (RFC 7143 6.2.1): LIO omits the answer to ImmediateData=No (AND function)
//     and to DataPDUInOrder=Yes / DataSequenceInOrder=Yes (OR function); the outcome is the
//     offered value. Sending immediate data anyway gets a Reject (protocol error) and, as LIO
//     does not skip the rejected PDU's data segment, "Got unknown iSCSI OpCode" and a dropped
//     connection.
//   - Digests: the default HeaderDigest/DataDigest "CRC32C,None" picks the initiator's first
//     acceptable choice, so libiscsi's "None,CRC32C" gets None; offer CRC32C first. With
//     "CRC32C" only on the target, our offer "None,CRC32C" negotiates CRC32C, and an offer of
//     "None" only is refused with Login status 0x0200 (initiator error).
//   - Defaults differ from the RFC's and from tgtd: InitialR2T=Yes, FirstBurstLength=65536,
//     MaxBurstLength=262144, MaxXmitDataSegmentLength=262144; AuthMethod is "CHAP,None" with
//     attrib/authentication=0 and "CHAP" with 1.
//   - A login offering AuthMethod=None to a CHAP-only TPG is not answered with a Login Response
//     (status 0x0201): LIO logs "Proposer's value list "None" contains no valid values" and
//     closes the connection, so the initiator sees EOF while reading the login response.
//   - Mutual CHAP in demo mode (tpgt_1/auth/userid_mutual, password_mutual): an initiator that
//     does one-way CHAP (qemu 7.2, or ours without TargetSecret) is still let in; LIO only proves
//     itself when asked (CHAP_I/CHAP_C). "NULL" clears an auth value.
//   - fileio does not size a new backing file: it grows with the writes and LIO reads past its
//     end as zeros (the guest comparison pads the same way). rd_mcp starts zeroed.
//   - SendTargets answers TargetAddress=10.0.2.15:3260,1, the guest's own address (not reachable
//     from the host): discovery lists the target with that portal; callers keep dialling the
//     portal they used.
//   - REPORT LUNS lists exactly the mapped LUNs {0, 1} (no controller LUN 0 as with tgtd).
//   - A new session's first command to a LUN may get UNIT ATTENTION 3F/0E (REPORTED LUNS DATA HAS
//     CHANGED); OpenLUN's TEST UNIT READY absorbs it, raw Session.Do commands must retry.

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

const (
	lioInitiatorName = "iqn.2026-11.org.lunbridge:lio-interop"
	lioCHAPUser      = "inituser"
	lioCHAPSecret    = "initsecret12"
	lioTgtUser       = "tgtuser"
	lioTgtSecret     = "tgtsecret123"
	lioFileioPath    = "/tmp/lio/fd0.img" // LUN 1's backing file in the guest (scenarios/lio.sh)
)

// lioVariant is one row entry: TPG settings, our login configuration, what must be negotiated.
type lioVariant struct {
	name string
	lun  int
	// set: configfs writes, paths relative to tpgt_1 or absolute under /sys/kernel/config/target/,
	// in order (the old values are restored in reverse order afterwards).
	set [][2]string
	// cfg adjusts our initiator.Config (digest offers, CHAP, R2T, ...).
	cfg func(*initiator.Config)
	// check verifies the negotiated parameters.
	check func(t *testing.T, p initiator.Params)
	// fua: a quarter of the writes with FUA (only where the LUN advertises DPOFUA: see fua*).
	fua bool
	// qemu: compare with qemu-img's view.
	qemu bool
	// qemuCHAP: qemu logs in with one-way CHAP (user/password options).
	qemuCHAP bool
	// after runs extra checks after the workload, with the variant's settings still in place.
	after func(t *testing.T, ctx context.Context, lab *lioLab)
}

type lioLab struct {
	lt     *LIOTarget
	tpg    string
	model  map[int][]byte // what each LUN must hold
	window int64
}

func lioQuietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	return logrus.NewEntry(l)
}

func (lab *lioLab) config() initiator.Config {
	return initiator.Config{InitiatorName: lioInitiatorName, TargetName: lab.lt.IQN, Portal: lab.lt.Portal,
		Logger: lioQuietLogger(), ReplacementTimeout: 10 * time.Second, LoginTimeout: 30 * time.Second}
}

// guest runs a shell command in the VM and fails the test on a non-zero exit.
func (lab *lioLab) guest(t *testing.T, cmd string) string {
	t.Helper()
	out, rc, err := lab.lt.VM.Run(cmd, time.Minute)
	if err != nil || rc != 0 {
		t.Fatalf("guest %q: rc %d, %v:\n%s", cmd, rc, err, out)
	}
	return out
}

// configure writes the variant's settings and returns a function restoring the old values.
func (lab *lioLab) configure(t *testing.T, set [][2]string) func(t *testing.T) {
	t.Helper()
	if len(set) == 0 {
		return func(*testing.T) {}
	}
	var files, writes []string
	for _, kv := range set {
		files = append(files, kv[0])
		writes = append(writes, fmt.Sprintf("printf %%s '%s' > %s", kv[1], kv[0]))
		if strings.HasPrefix(kv[0], "/") && !strings.HasPrefix(kv[0], "/sys/kernel/config/target/") {
			t.Fatalf("configure: %s is not a configfs path", kv[0])
		}
	}
	// Read the old values first (one line each; auth values may be empty).
	var reads []string
	for _, f := range files {
		reads = append(reads, "echo \"$(cat "+f+")\"")
	}
	old := strings.Split(lab.guest(t, "cd "+lab.tpg+" && "+strings.Join(reads, " && ")), "\n")
	if len(old) != len(files) {
		t.Fatalf("reading %v: got %q", files, old)
	}
	lab.guest(t, "cd "+lab.tpg+" && "+strings.Join(writes, " && "))
	var check []string
	for _, f := range files {
		check = append(check, "echo "+f+"=\"$(cat "+f+")\"")
	}
	got := lab.guest(t, "cd "+lab.tpg+" && "+strings.Join(check, " && "))
	lines := map[string]bool{}
	for _, l := range strings.Split(got, "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, kv := range set {
		if !lines[kv[0]+"="+kv[1]] {
			t.Fatalf("configfs %s=%s did not stick:\n%s", kv[0], kv[1], got)
		}
	}
	return func(t *testing.T) {
		var undo []string
		for i := len(set) - 1; i >= 0; i-- {
			v := old[i]
			if v == "" && strings.HasPrefix(set[i][0], "auth/") {
				v = "NULL"
			}
			undo = append(undo, fmt.Sprintf("printf %%s '%s' > %s", v, set[i][0]))
		}
		lab.guest(t, "cd "+lab.tpg+" && "+strings.Join(undo, " && "))
	}
}

func lioSizes(bs int64) []int64 {
	return []int64{bs, 3 * bs, 8 << 10, 60 << 10, 64 << 10, 200 << 10, 1 << 20, 3<<20 + 5*bs, 4 << 20}
}

// lioPlan cuts [base, base+n) into non-overlapping writes from one block to 4 MiB at offsets
// aligned to nothing but the block size, with gaps, shuffled.
func lioPlan(rng *rand.Rand, base, n, bs int64) [][2]int64 {
	var out [][2]int64
	sizes := lioSizes(bs)
	for off := base + bs*int64(rng.Intn(7)+1); ; {
		l := sizes[rng.Intn(len(sizes))]
		if rng.Intn(3) == 0 {
			l = bs * (1 + rng.Int63n((512<<10)/bs))
		}
		if off+l > base+n {
			break
		}
		out = append(out, [2]int64{off, l})
		off += l + bs*int64(rng.Intn(9))
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func lioParallel(t *testing.T, exts [][2]int64, f func(off, n int64) error) {
	t.Helper()
	var wg sync.WaitGroup
	work := make(chan [2]int64)
	errs := make(chan error, len(exts))
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				if err := f(e[0], e[1]); err != nil {
					errs <- fmt.Errorf("extent %d+%d: %w", e[0], e[1], err)
				}
			}
		}()
	}
	for _, e := range exts {
		work <- e
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func lioFirstDiff(a, b []byte) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// run executes one variant: configure, log in, check negotiation, workload, compare three ways.
func (lab *lioLab) run(t *testing.T, k int, v lioVariant) {
	start := time.Now()
	restore := lab.configure(t, v.set)
	// Until the writes are verified the model is unknown: a failure resyncs it (after the
	// TPG is back to its defaults, so that a plain login works).
	ok := false
	defer func() {
		restore(t)
		if !ok {
			lab.resync(t, v.lun)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := lab.config()
	if v.cfg != nil {
		v.cfg(&cfg)
	}
	s, err := initiator.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer s.Close()
	p := s.Params()
	t.Logf("negotiated: %v", p)
	if v.check != nil {
		v.check(t, p)
		if t.Failed() {
			t.FailNow() // the workload would only add noise under wrong parameters
		}
	}
	l, err := initiator.OpenLUN(ctx, s, uint64(v.lun))
	if err != nil {
		t.Fatalf("open LUN %d: %v", v.lun, err)
	}
	want := lab.model[v.lun]
	if l.Size() != int64(len(want)) || l.BlockSize() != lab.lt.BlockSize {
		t.Fatalf("LUN %d: size %d block %d, want %d/%d", v.lun, l.Size(), l.BlockSize(), len(want), lab.lt.BlockSize)
	}
	bs := int64(l.BlockSize())
	base := (int64(k) * lab.window) % l.Size()
	rng := rand.New(rand.NewSource(int64(k) + 1))
	exts := lioPlan(rng, base, lab.window, bs)
	for _, e := range exts {
		rng.Read(want[e[0] : e[0]+e[1]])
	}
	var fuaMu sync.Mutex
	tw := time.Now()
	lioParallel(t, exts, func(off, n int64) error {
		fuaMu.Lock()
		fua := v.fua && rng.Intn(4) == 0
		fuaMu.Unlock()
		return l.WriteAt(ctx, want[off:off+n], off, fua)
	})
	if err := l.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	dw := time.Since(tw)
	tr := time.Now()
	lioParallel(t, exts, func(off, n int64) error {
		got := make([]byte, n)
		if err := l.ReadAt(ctx, got, off); err != nil {
			return err
		}
		if i := lioFirstDiff(got, want[off:off+n]); i < int(n) {
			return fmt.Errorf("read back differs at byte %d (LUN offset %d)", i, off+int64(i))
		}
		return nil
	})
	// The whole window in one call (4 MiB commands in parallel).
	all := make([]byte, lab.window)
	if err := l.ReadAt(ctx, all, base); err != nil {
		t.Fatalf("full read: %v", err)
	}
	if i := lioFirstDiff(all, want[base:base+lab.window]); i < len(all) {
		t.Fatalf("full read of LUN %d differs from the model at LUN offset %d", v.lun, base+int64(i))
	}
	dr := time.Since(tr)
	if err := s.CloseContext(ctx); err != nil {
		t.Errorf("logout: %v", err)
	}
	ok = true
	var sum int64
	for _, e := range exts {
		sum += e[1]
	}
	t.Logf("LUN %d window [%d MiB, +%d MiB): %d writes, %.1f MiB; write+flush %v, read back + full read %v",
		v.lun, base>>20, lab.window>>20, len(exts), float64(sum)/(1<<20), dw.Round(time.Millisecond), dr.Round(time.Millisecond))
	tc := time.Now()
	if v.lun == lab.lt.DiskLUN {
		lab.guestCompare(t, base, lab.window)
	}
	dg := time.Since(tc)
	tc = time.Now()
	if v.qemu {
		lab.qemuCompare(t, v.lun, base, lab.window, v.qemuCHAP)
	}
	t.Logf("compare: guest %v, qemu-img %v", dg.Round(time.Millisecond), time.Since(tc).Round(time.Millisecond))
	if v.after != nil {
		v.after(t, ctx, lab)
	}
	t.Logf("variant %s: %v", v.name, time.Since(start).Round(time.Millisecond))
}

// resync reloads the model of a LUN from the target after a failed variant, so the next
// variants are judged on their own.
func (lab *lioLab) resync(t *testing.T, lun int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := lab.config()
	s, err := initiator.Dial(ctx, cfg)
	if err == nil {
		defer s.Close()
		var l *initiator.LUN
		if l, err = initiator.OpenLUN(ctx, s, uint64(lun)); err == nil {
			err = l.ReadAt(ctx, lab.model[lun], 0)
		}
	}
	if err != nil {
		t.Errorf("resync of LUN %d after a failure: %v", lun, err)
	}
}

// guestCompare hashes [off, off+n) of the fileio backing file inside the guest (MiB-aligned).
func (lab *lioLab) guestCompare(t *testing.T, off, n int64) {
	t.Helper()
	// The file was extended to the LUN size at the start (sizeFileio), so no padding is needed.
	out := lab.guest(t, fmt.Sprintf("dd if=%s bs=1048576 skip=%d count=%d 2>/dev/null | md5sum", lioFileioPath, off>>20, n>>20))
	sum := md5.Sum(lab.model[lab.lt.DiskLUN][off : off+n])
	if got := strings.Fields(out); len(got) == 0 || got[0] != hex.EncodeToString(sum[:]) {
		t.Errorf("guest backing file %s [%d,+%d): md5 %q, want %x", lioFileioPath, off, n, out, sum)
	}
}

// sizeFileio extends LUN 1's backing file to the LUN size. LIO's fileio does not size a new
// file: it grows with the writes, and LIO reads past its end as zeros; a sparse extension keeps
// that view and lets the guest hash any range of the file directly.
func (lab *lioLab) sizeFileio(t *testing.T) {
	t.Helper()
	out := lab.guest(t, fmt.Sprintf("ls -l %[1]s && truncate -s %[2]d %[1]s && stat -c %%s %[1]s", lioFileioPath, lab.lt.LUNSize))
	if !strings.HasSuffix(strings.TrimSpace(out), strconv.FormatInt(lab.lt.LUNSize, 10)) {
		t.Fatalf("extending %s: %s", lioFileioPath, out)
	}
	t.Logf("fileio backing file before and after extension: %s", out)
}

// qemuCompare reads [off, off+n) of a LUN with qemu-img (libiscsi) and compares with the model.
func (lab *lioLab) qemuCompare(t *testing.T, lun int, off, n int64, chap bool) {
	t.Helper()
	qemu := testenv.RequireTool(t, "qemu-img")
	// The raw driver's offset/size select the range; the iscsi driver then needs its options
	// spelled out (it does not parse a URL given as file.filename inside json:).
	auth := ""
	if chap {
		auth = fmt.Sprintf(`,"user":"%s","password":"%s"`, lioCHAPUser, lioCHAPSecret)
	}
	src := fmt.Sprintf(`json:{"driver":"raw","offset":%d,"size":%d,"file":{"driver":"iscsi","transport":"tcp","portal":"%s","target":"%s","lun":%d%s}}`,
		off, n, lab.lt.Portal, lab.lt.IQN, lun, auth)
	out := filepath.Join(t.TempDir(), "qemu.raw")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "convert", "-O", "raw", src, out)
	cmd.Env = append(os.Environ(), "LIBISCSI_INITIATOR_NAME=iqn.2026-11.org.lunbridge:qemu-check")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s: %v\n%s", src, err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := lab.model[lun][off : off+n]
	if !bytes.Equal(got, want) {
		t.Errorf("qemu-img's view of LUN %d [%d,+%d) (%d bytes) differs at byte %d", lun, off, n, len(got), lioFirstDiff(got, want))
	}
}

func wantDigests(hd, dd bool) func(*testing.T, initiator.Params) {
	return func(t *testing.T, p initiator.Params) {
		if p.HeaderDigest != hd || p.DataDigest != dd {
			t.Errorf("digests header=%v data=%v, want %v/%v", p.HeaderDigest, p.DataDigest, hd, dd)
		}
	}
}

func wantXmitDSL(n int) func(*testing.T, initiator.Params) {
	return func(t *testing.T, p initiator.Params) {
		if p.MaxXmitDSL != n {
			t.Errorf("target's MaxRecvDataSegmentLength (our MaxXmitDSL) %d, want %d", p.MaxXmitDSL, n)
		}
	}
}

func mrdslVariant(lun, n int) lioVariant {
	v := strconv.Itoa(n)
	return lioVariant{name: "mrdsl" + v, lun: lun, qemu: true, check: wantXmitDSL(n),
		set: [][2]string{{"param/MaxRecvDataSegmentLength", v}, {"param/MaxXmitDataSegmentLength", v}}}
}

func r2tVariant(lun int, r2t, imm string) lioVariant {
	return lioVariant{name: "r2t" + r2t + "-imm" + imm, lun: lun, qemu: true,
		set: [][2]string{{"param/InitialR2T", r2t}, {"param/ImmediateData", imm}},
		cfg: func(c *initiator.Config) { c.InitialR2T = r2t == "Yes"; c.NoImmediateData = imm == "No" },
		check: func(t *testing.T, p initiator.Params) {
			if p.InitialR2T != (r2t == "Yes") || p.ImmediateData != (imm == "Yes") {
				t.Errorf("InitialR2T=%v ImmediateData=%v, want %s/%s", p.InitialR2T, p.ImmediateData, r2t, imm)
			}
		}}
}

// lioDPOFUA reads the DPOFUA bit of a LUN's MODE SENSE(6) device-specific parameter.
func lioDPOFUA(ctx context.Context, s *initiator.Session, lun int) (bool, error) {
	f := scsi.EncodeLUN(uint64(lun))
	buf := make([]byte, 255)
	var resp initiator.Response
	var err error
	for try := 0; try < 3; try++ {
		// A new I_T nexus may first get a UNIT ATTENTION (LIO: 3F/0E REPORTED LUNS DATA HAS
		// CHANGED); the raw command does not absorb it as OpenLUN does.
		resp, err = s.Do(ctx, &initiator.Command{LUN: binary.BigEndian.Uint64(f[:]), CDB: scsi.ModeSense6(0x3f, 0, true, 255), Read: buf})
		if err != nil {
			return false, err
		}
		if !(resp.Status == 2 && len(resp.Sense) > 2 && resp.Sense[2]&0x0f == 6) {
			break
		}
	}
	if resp.Status != 0 {
		return false, fmt.Errorf("MODE SENSE(6): status %#x, sense % x", resp.Status, resp.Sense)
	}
	m, err := scsi.ParseModeSense6(buf[:resp.Received])
	return m.DPOFUA, err
}

// wantDPOFUA checks, on a new session, what MODE SENSE says about FUA support.
func wantDPOFUA(lun int, want bool) func(*testing.T, context.Context, *lioLab) {
	return func(t *testing.T, ctx context.Context, lab *lioLab) {
		s, err := initiator.Dial(ctx, lab.config())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if got, err := lioDPOFUA(ctx, s, lun); err != nil || got != want {
			t.Errorf("LUN %d: MODE SENSE DPOFUA=%v (err %v), want %v", lun, got, err, want)
		}
	}
}

// lioWCE is the emulate_write_cache attribute of a LUN's backstore (scenarios/lio.sh names).
func lioWCE(lun int) string {
	if lun == 0 {
		return "/sys/kernel/config/target/core/rd_mcp_0/rd0/attrib/emulate_write_cache"
	}
	return "/sys/kernel/config/target/core/fileio_1/fd0/attrib/emulate_write_cache"
}

var lioCHAPSet = [][2]string{{"auth/userid", lioCHAPUser}, {"auth/password", lioCHAPSecret}, {"attrib/authentication", "1"}}

func lioVariants() []lioVariant {
	chap := func(c *initiator.Config) { c.CHAP = &initiator.CHAP{User: lioCHAPUser, Secret: lioCHAPSecret} }
	mutual := func(c *initiator.Config) {
		c.CHAP = &initiator.CHAP{User: lioCHAPUser, Secret: lioCHAPSecret, TargetUser: lioTgtUser, TargetSecret: lioTgtSecret}
	}
	return []lioVariant{
		{name: "none-lun0", lun: 0, qemu: true, check: wantDigests(false, false)},
		{name: "none-lun1", lun: 1, qemu: true, check: func(t *testing.T, p initiator.Params) {
			// LIO's defaults (see the top of the file).
			if p.InitialR2T != true || p.ImmediateData != true || p.FirstBurstLength != 65536 ||
				p.MaxBurstLength != 262144 || p.MaxXmitDSL != 262144 || p.HeaderDigest || p.DataDigest {
				t.Errorf("LIO defaults: %v", p)
			}
		}},
		// Target default "CRC32C,None": our offer "CRC32C,None" must get CRC32C for both.
		{name: "digests", lun: 1, qemu: true, check: wantDigests(true, true),
			cfg: func(c *initiator.Config) {
				c.HeaderDigest, c.DataDigest = []string{"CRC32C", "None"}, []string{"CRC32C", "None"}
			}},
		// Target requires CRC32C: our offer "None,CRC32C" must still end with CRC32C.
		{name: "digests-required", lun: 0, check: wantDigests(true, true),
			set: [][2]string{{"param/HeaderDigest", "CRC32C"}, {"param/DataDigest", "CRC32C"}},
			cfg: func(c *initiator.Config) {
				c.HeaderDigest, c.DataDigest = []string{"None", "CRC32C"}, []string{"None", "CRC32C"}
			},
			after: func(t *testing.T, ctx context.Context, lab *lioLab) {
				_, err := initiator.Dial(ctx, lab.config()) // offers None only
				if err == nil {
					t.Fatal("login offering no digest succeeded against a target requiring CRC32C")
				}
				t.Logf("offering no digest to a CRC32C-only LIO: %v", err)
			}},
		mrdslVariant(1, 512),
		mrdslVariant(0, 4096),
		mrdslVariant(1, 8192),
		mrdslVariant(0, 262144),
		// Our own MaxRecvDataSegmentLength small: LIO must cut Data-In to 4096.
		{name: "ini-mrdsl4096", lun: 1, qemu: true, cfg: func(c *initiator.Config) { c.MaxRecvDataSegmentLength = 4096 },
			check: func(t *testing.T, p initiator.Params) {
				if p.MaxRecvDSL != 4096 {
					t.Errorf("MaxRecvDSL %d, want 4096", p.MaxRecvDSL)
				}
			}},
		{name: "smallbursts", lun: 1, qemu: true,
			set: [][2]string{{"param/FirstBurstLength", "4096"}, {"param/MaxBurstLength", "8192"},
				{"param/MaxRecvDataSegmentLength", "4096"}, {"param/MaxXmitDataSegmentLength", "4096"}},
			check: func(t *testing.T, p initiator.Params) {
				if p.FirstBurstLength != 4096 || p.MaxBurstLength != 8192 || p.MaxXmitDSL != 4096 {
					t.Errorf("bursts: %v", p)
				}
			}},
		// Small bursts with unsolicited data (InitialR2T=No): immediate + Data-Out within 4096.
		{name: "smallbursts-unsolicited", lun: 0, qemu: true,
			set: [][2]string{{"param/FirstBurstLength", "4096"}, {"param/MaxBurstLength", "8192"}, {"param/InitialR2T", "No"}},
			check: func(t *testing.T, p initiator.Params) {
				if p.FirstBurstLength != 4096 || p.MaxBurstLength != 8192 || p.InitialR2T || !p.ImmediateData {
					t.Errorf("bursts: %v", p)
				}
			}},
		r2tVariant(0, "Yes", "Yes"),
		r2tVariant(1, "Yes", "No"),
		r2tVariant(0, "No", "Yes"),
		r2tVariant(1, "No", "No"),
		// A volatile write cache on both backstores: LIO then advertises DPOFUA and accepts FUA.
		{name: "wce-fua-lun1", lun: 1, qemu: true, fua: true, set: [][2]string{{lioWCE(1), "1"}}, after: wantDPOFUA(1, true)},
		{name: "wce-fua-lun0", lun: 0, qemu: true, fua: true, set: [][2]string{{lioWCE(0), "1"}}, after: wantDPOFUA(0, true)},
		{name: "chap", lun: 0, qemu: true, qemuCHAP: true, set: lioCHAPSet, cfg: chap,
			after: func(t *testing.T, ctx context.Context, lab *lioLab) {
				cfg := lab.config()
				chap(&cfg)
				cfg.CHAP.Secret = "wrongsecret9x"
				_, err := initiator.Dial(ctx, cfg)
				var le *initiator.LoginError
				if !errors.As(err, &le) || !errors.Is(err, initiator.ErrAuth) || !strings.Contains(err.Error(), "authentication failure (0x0201)") {
					t.Errorf("wrong initiator secret: got %v", err)
				}
				// LIO closes the connection without a Login Response (see the top of the file).
				if _, err = initiator.Dial(ctx, lab.config()); err == nil {
					t.Errorf("login without credentials to a CHAP-only TPG succeeded")
				}
				t.Logf("no credentials: %v", err)
			}},
		// qemu logs in with one-way CHAP, which LIO accepts here (see the top of the file).
		{name: "mutual", lun: 1, cfg: mutual, qemu: true, qemuCHAP: true,
			set: append(append([][2]string{}, lioCHAPSet...), [2]string{"auth/userid_mutual", lioTgtUser}, [2]string{"auth/password_mutual", lioTgtSecret}),
			after: func(t *testing.T, ctx context.Context, lab *lioLab) {
				cfg := lab.config()
				mutual(&cfg)
				cfg.CHAP.TargetSecret = "wrongtgtsecret"
				_, err := initiator.Dial(ctx, cfg)
				if !errors.Is(err, initiator.ErrAuth) || !strings.Contains(err.Error(), "mutual CHAP") {
					t.Errorf("wrong target secret: got %v", err)
				}
				// One-way CHAP (what qemu does) while the target has mutual credentials.
				cfg = lab.config()
				chap(&cfg)
				s, err := initiator.Dial(ctx, cfg)
				if err == nil {
					s.Close()
				}
				if err != nil {
					t.Errorf("one-way CHAP against a TPG with mutual credentials: %v (LIO 6.1 accepted it when this test was written)", err)
				}
			}},
	}
}

// TestLIOInterop is the LIO row of the interop matrix (see the top of this file).
func TestLIOInterop(t *testing.T) {
	Require(t)
	testenv.RequireTool(t, "qemu-img")
	start := time.Now()
	lt := BootLIO(t, LIOOptions{})
	t.Logf("boot to READY: %v", time.Since(start).Round(time.Millisecond))
	window := int64(16 << 20)
	if s := os.Getenv("LUNBRIDGE_LIO_WINDOW_MB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || int64(n)<<20 > lt.LUNSize || lt.LUNSize%(int64(n)<<20) != 0 {
			t.Fatalf("LUNBRIDGE_LIO_WINDOW_MB=%q: want a divisor of %d", s, lt.LUNSize>>20)
		}
		window = int64(n) << 20
	}
	lab := &lioLab{lt: lt, tpg: "/sys/kernel/config/target/iscsi/" + lt.IQN + "/tpgt_1", window: window,
		model: map[int][]byte{}}
	for _, lun := range lt.LUNs {
		lab.model[lun] = make([]byte, lt.LUNSize) // both backstores start zeroed
	}
	lab.sizeFileio(t)

	t.Run("discovery", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cfg := lab.config()
		cfg.TargetName = ""
		got, err := discovery.SendTargets(ctx, cfg, "All")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("SendTargets: %+v", got)
		if len(got) != 1 || got[0].Name != lt.IQN || len(got[0].Portals) == 0 {
			t.Fatalf("SendTargets: want %s with a portal, got %+v", lt.IQN, got)
		}
		if p := got[0].Portals[0]; p.Address != "10.0.2.15:3260" || p.Tag != 1 {
			t.Errorf("portal %+v: LIO was expected to answer its own address 10.0.2.15:3260,1", p)
		}
		s, err := initiator.Dial(ctx, lab.config())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		luns, err := initiator.ReportLUNs(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		sort.Slice(luns, func(i, j int) bool { return luns[i] < luns[j] })
		if fmt.Sprint(luns) != "[0 1]" {
			t.Errorf("REPORT LUNS: %v, want [0 1]", luns)
		}
	})

	// FUA on LIO's default LUNs. They report WCE=0 and no DPOFUA in MODE SENSE, and LIO refuses a
	// WRITE with FUA=1 there with ILLEGAL REQUEST / INVALID FIELD IN CDB ("Got CDB: 0x2a with
	// FUA bit set, but device does not advertise support for FUA write"). An initiator must
	// not set FUA when DPOFUA is clear (Linux sd does not); a durable write is then a plain
	// write (WCE=0) or a write followed by SYNCHRONIZE CACHE.
	t.Run("fua-without-dpofua", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, err := initiator.Dial(ctx, lab.config())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, lun := range lt.LUNs {
			if dpofua, err := lioDPOFUA(ctx, s, lun); err != nil || dpofua {
				t.Errorf("LUN %d: MODE SENSE DPOFUA=%v (err %v): LIO was expected not to advertise FUA with emulate_write_cache=0", lun, dpofua, err)
			}
			l, err := initiator.OpenLUN(ctx, s, uint64(lun))
			if err != nil {
				t.Fatal(err)
			}
			off := lt.LUNSize - 1<<20 + 4096
			data := make([]byte, 64<<10+512)
			rand.New(rand.NewSource(int64(lun) + 100)).Read(data)
			if err := l.WriteAt(ctx, data, off, true); err != nil {
				t.Errorf("LUN %d: WriteAt(fua=true) on a LUN without DPOFUA: %v (initiator must not send FUA here)", lun, err)
				lab.resync(t, lun)
				continue
			}
			copy(lab.model[lun][off:], data)
			got := make([]byte, len(data))
			if err := l.ReadAt(ctx, got, off); err != nil || !bytes.Equal(got, data) {
				t.Errorf("LUN %d: read back after a FUA write: err %v, equal %v", lun, err, bytes.Equal(got, data))
			}
		}
	})

	for k, v := range lioVariants() {
		t.Run(v.name, func(t *testing.T) { lab.run(t, k, v) })
	}

	t.Run("final", func(t *testing.T) {
		// Whole LUNs as we and qemu see them, and the whole fileio file in the guest: catches
		// a write that landed outside its variant's window.
		tf := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, err := initiator.Dial(ctx, lab.config())
		if err != nil {
			t.Fatal(err)
		}
		for _, lun := range lt.LUNs {
			l, err := initiator.OpenLUN(ctx, s, uint64(lun))
			if err != nil {
				t.Fatal(err)
			}
			all := make([]byte, l.Size())
			if err := l.ReadAt(ctx, all, 0); err != nil {
				t.Fatal(err)
			}
			if i := lioFirstDiff(all, lab.model[lun]); i < len(all) {
				t.Errorf("LUN %d differs from the model at byte %d", lun, i)
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("logout: %v", err)
		}
		for _, lun := range lt.LUNs {
			lab.qemuCompare(t, lun, 0, lt.LUNSize, false)
		}
		tg := time.Now()
		lab.guestCompare(t, 0, lt.LUNSize)
		t.Logf("whole-LUN reads: ours + qemu-img %v, guest md5 %v", tg.Sub(tf).Round(time.Millisecond), time.Since(tg).Round(time.Millisecond))
		out, err := lt.Sessions(30 * time.Second)
		if err != nil {
			t.Error(err)
		}
		t.Logf("sessions left on the target: %q; final compare %v", strings.TrimSpace(out), time.Since(tf).Round(time.Millisecond))
	})
	if r := lt.Stop(); !r.Pass {
		t.Errorf("scenario result: %v", r)
	}
	t.Logf("LIO row: %v in all", time.Since(start).Round(time.Millisecond))
}
