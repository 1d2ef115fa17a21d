package vmlab

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// DefaultLIOIQN is the target name the lio scenario creates.
const DefaultLIOIQN = "iqn.2003-01.org.linux-iscsi.vmlab:t0"

// CHAP credentials. User/Secret authenticate the initiator; TargetUser/TargetSecret (mutual
// CHAP) authenticate the target. LIO rejects a mutual secret equal to the initiator secret.
type CHAP struct {
	User, Secret             string
	TargetUser, TargetSecret string
}

// LIOOptions select a variant of the lio scenario (scripts/vmlab/scenarios/lio.sh).
type LIOOptions struct {
	// CHAP enables authentication (attrib/authentication 1). Without Initiator the
	// credentials are the TPG's demo-mode auth (any initiator name may log in with them).
	CHAP *CHAP
	// Initiator, when set, creates an explicit ACL for this initiator name (LUNs 0 and 1
	// mapped) and turns generate_node_acls off: other initiator names are refused.
	Initiator string
	// Digest sets both HeaderDigest and DataDigest on the TPG: "crc32c" (required),
	// "crc32c,none", "none". HeaderDigest/DataDigest set one of them (raw LIO values,
	// e.g. "CRC32C", "None,CRC32C"). Empty keeps LIO's default "CRC32C,None" (LIO still
	// picks None when the initiator offers None first).
	Digest, HeaderDigest, DataDigest string
	// ERL sets the ErrorRecoveryLevel LIO offers (tpgt_1/attrib/default_erl, which a node
	// ACL copies when created, and param/ErrorRecoveryLevel); nil keeps LIO's 0.
	ERL *int
	// MaxConnections sets tpgt_1/param/MaxConnections (0 keeps LIO's 1).
	MaxConnections int
	// TPGParams are written to tpgt_1/param/KEY (iSCSI keys, e.g. MaxRecvDataSegmentLength).
	TPGParams map[string]string
	// TPGAttribs are written to tpgt_1/attrib/KEY (e.g. default_cmdsn_depth, login_timeout).
	TPGAttribs map[string]string
	// SizeMB is the size of each LUN (default 64).
	SizeMB int
	// Lunbridge optionally includes a static lunbridge binary in the guest.
	Lunbridge string
	// Timeout bounds the VM's life (default 10 minutes).
	Timeout time.Duration
	// ReadyTimeout bounds the wait for READY after qemu started (default 3 minutes).
	ReadyTimeout time.Duration
	// KernelPackage boots another kernel than the lab's default (Options.KernelPackage).
	KernelPackage string
}

// LIOTarget is a running LIO target in the VM, reachable from the host.
type LIOTarget struct {
	VM        *VM
	Portal    string // "127.0.0.1:PORT" (SendTargets answers 10.0.2.15:3260: do not use it)
	IQN       string
	LUNs      []int // 0 = rd_mcp ramdisk, 1 = fileio on tmpfs
	DiskLUN   int   // 1: the fileio LUN used by the reference captures
	LUNSize   int64 // bytes, each LUN
	BlockSize int   // 512
	CHAP      *CHAP
	Initiator string // "" = any initiator name
	Serials   map[int]string
}

// BootLIO boots the lio scenario with the given variant and waits for READY.
func BootLIO(t testing.TB, o LIOOptions) *LIOTarget {
	t.Helper()
	size := o.SizeMB
	if size <= 0 {
		size = 64
	}
	p := map[string]string{"lio.size_mb": strconv.Itoa(size)}
	if o.CHAP != nil {
		v := o.CHAP.User + ":" + o.CHAP.Secret
		if o.CHAP.TargetUser != "" {
			v += ":" + o.CHAP.TargetUser + ":" + o.CHAP.TargetSecret
		}
		p["lio.chap"] = v
	}
	if o.Initiator != "" {
		p["lio.initiator"] = o.Initiator
	}
	if o.Digest != "" {
		p["lio.digest"] = o.Digest
	}
	if o.HeaderDigest != "" {
		p["lio.headerdigest"] = o.HeaderDigest
	}
	if o.DataDigest != "" {
		p["lio.datadigest"] = o.DataDigest
	}
	if o.ERL != nil {
		p["lio.erl"] = strconv.Itoa(*o.ERL)
	}
	if o.MaxConnections > 0 {
		p["lio.maxconnections"] = strconv.Itoa(o.MaxConnections)
	}
	for k, v := range o.TPGParams {
		p["lio.param."+k] = v
	}
	for k, v := range o.TPGAttribs {
		p["lio.attrib."+k] = v
	}
	vm := Boot(t, Options{Scenario: "lio", Params: p, Lunbridge: o.Lunbridge, Timeout: o.Timeout, KernelPackage: o.KernelPackage})
	rt := o.ReadyTimeout
	if rt <= 0 {
		rt = 3 * time.Minute
	}
	if _, err := vm.WaitFor(MarkerReady, rt); err != nil {
		t.Fatalf("vmlab: LIO not ready: %v\n%s", err, lastLines(vm.Output(), 40))
	}
	return &LIOTarget{
		VM: vm, Portal: vm.Portal(), IQN: DefaultLIOIQN, LUNs: []int{0, 1}, DiskLUN: 1,
		LUNSize: int64(size) << 20, BlockSize: 512, CHAP: o.CHAP, Initiator: o.Initiator,
		Serials: map[int]string{0: "vmlab-rd0", 1: "vmlab-fd0"},
	}
}

// URL is the libiscsi-style URL of a LUN, with the CHAP credentials (if any) in it:
// iscsi://user%secret@127.0.0.1:PORT/IQN/LUN?target_user=..&target_password=..
func (lt *LIOTarget) URL(lun int) string {
	var b strings.Builder
	b.WriteString("iscsi://")
	if c := lt.CHAP; c != nil {
		b.WriteString(c.User + "%" + c.Secret + "@") // libiscsi does not unescape: keep credentials URL-safe
	}
	fmt.Fprintf(&b, "%s/%s/%d", lt.Portal, lt.IQN, lun)
	if c := lt.CHAP; c != nil && c.TargetUser != "" {
		b.WriteString("?target_user=" + c.TargetUser + "&target_password=" + c.TargetSecret)
	}
	return b.String()
}

// PlainURL is the URL without credentials.
func (lt *LIOTarget) PlainURL(lun int) string {
	return fmt.Sprintf("iscsi://%s/%s/%d", lt.Portal, lt.IQN, lun)
}

// Sessions lists the target's current sessions as LIO reports them (tpgt_1/dynamic_sessions
// for demo mode, else the ACL's info file).
func (lt *LIOTarget) Sessions(timeout time.Duration) (string, error) {
	tpg := "/sys/kernel/config/target/iscsi/" + lt.IQN + "/tpgt_1"
	cmd := "cat " + tpg + "/dynamic_sessions"
	if lt.Initiator != "" {
		cmd = "cat " + tpg + "/acls/" + lt.Initiator + "/info"
	}
	out, rc, err := lt.VM.Run(cmd, timeout)
	if err == nil && rc != 0 {
		err = fmt.Errorf("vmlab: %s: rc %d: %s", cmd, rc, out)
	}
	return out, err
}

// Stop ends the VM (also done automatically in t.Cleanup).
func (lt *LIOTarget) Stop() Result { return lt.VM.Stop() }
