package initiator_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// An independent judge: Wireshark's iSCSI dissector reads a capture of an
// interop run (header and data digests on, small bursts so R2T/Data-Out are
// exercised) and must find iSCSI PDUs and no malformed one.
func TestTsharkJudgesCapture(t *testing.T) {
	testenv.RequireRoot(t)
	dumpcap := testenv.RequireTool(t, "dumpcap")
	tshark := testenv.RequireTool(t, "tshark")
	requireKind(t, targets.KindTgtd)
	v := variant{name: "tshark", params: map[string]string{"HeaderDigest": "CRC32C", "DataDigest": "CRC32C",
		"FirstBurstLength": "8192", "MaxBurstLength": "16384", "MaxRecvDataSegmentLength": "8192"},
		hdigest: []string{"CRC32C"}, ddigest: []string{"CRC32C"}, wantHD: true, wantDD: true}
	srv := startKind(t, targets.KindTgtd, v.target())
	port := srv.Portal[strings.LastIndexByte(srv.Portal, ':')+1:]
	pcap := filepath.Join(t.TempDir(), "run.pcap")
	if p := os.Getenv("LUNBRIDGE_KEEP_PCAP"); p != "" {
		pcap = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dc := exec.CommandContext(ctx, dumpcap, "-q", "-i", "lo", "-f", "tcp port "+port, "-P", "-w", pcap)
	stderr, _ := dc.StderrPipe()
	if err := dc.Start(); err != nil {
		t.Fatal(err)
	}
	defer dc.Process.Kill()
	// dumpcap says "File: ..." once it captures.
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "File:") {
				close(ready)
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("dumpcap did not start")
	}
	s, l := openLUN(t, ctx, srv, 0, 0, config(srv, 0, v))
	if p := s.Params(); !p.HeaderDigest || !p.DataDigest {
		t.Fatalf("digests not negotiated: %v", p)
	}
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for i := 0; i < 8; i++ {
		if err := l.WriteAt(ctx, buf, int64(i)*int64(len(buf)), false); err != nil {
			t.Fatal(err)
		}
		if err := l.ReadAt(ctx, buf, int64(i)*int64(len(buf))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	time.Sleep(time.Second) // or the end of the capture is lost
	dc.Process.Signal(os.Interrupt)
	dc.Wait()

	run := func(args ...string) string {
		cmd := exec.CommandContext(ctx, tshark, append([]string{"-r", pcap, "-d", "tcp.port==" + port + ",iscsi"}, args...)...)
		var errb strings.Builder
		cmd.Stderr = &errb // "Running as user root..." goes there
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tshark %v: %v\n%s", args, err, errb.String())
		}
		return string(out)
	}
	count := func(filter string) int {
		out := run("-Y", filter, "-T", "fields", "-e", "frame.number")
		return len(strings.Fields(out))
	}
	pdus := count("iscsi")
	if pdus == 0 {
		t.Fatal("tshark found no iSCSI PDU in the capture")
	}
	if m := count("_ws.malformed || _ws.expert.severity == error"); m != 0 {
		t.Fatalf("tshark flags %d malformed/error frames:\n%s", m, run("-V", "-Y", "_ws.malformed || _ws.expert.severity == error"))
	}
	if bad := strings.Count(run("-V", "-Y", "iscsi"), "Bad CRC32"); bad != 0 {
		t.Fatalf("tshark reports %d bad digests", bad)
	}
	t.Logf("tshark: %s frames with iSCSI, 0 malformed, 0 bad digests", strconv.Itoa(pdus))
}
