package faketarget_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

const iqn = "iqn.2026-11.org.lunbridge:test-initiator"

func dial(t *testing.T, ctx context.Context, tg *faketarget.Target, mod func(*initiator.Config)) *initiator.Session {
	t.Helper()
	cfg := initiator.Config{InitiatorName: iqn, TargetName: tg.Name(), Portal: "fake:3260", Dial: tg.Dial, LoginTimeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	s, err := initiator.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	return s
}

func noViolations(t *testing.T, tg *faketarget.Target) {
	t.Helper()
	for _, v := range tg.Violations() {
		t.Errorf("violation: %s", v)
	}
}

// roundTrip opens LUN 0, writes and reads back len bytes, flushes, pings,
// runs SendTargets and a TMF, then closes.
func roundTrip(t *testing.T, tcfg faketarget.Config, icfg func(*initiator.Config), size int) {
	defer faketarget.LeakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tg := faketarget.New(tcfg)
	defer tg.Close()
	s := dial(t, ctx, tg, icfg)
	lun, err := initiator.OpenLUN(ctx, s, 0)
	if err != nil {
		t.Fatalf("OpenLUN: %v", err)
	}
	if lun.BlockSize() != 512 || lun.Size() != 2048*512 {
		t.Errorf("geometry %d x %d", lun.Size(), lun.BlockSize())
	}
	if lun.Serial != "FAKE00000000" || lun.WWID() == "" || !lun.HasLimits {
		t.Errorf("identity: serial %q wwid %q limits %v", lun.Serial, lun.WWID(), lun.HasLimits)
	}
	data := make([]byte, size)
	rand.Read(data)
	if err := lun.WriteAt(ctx, data, 4096, false); err != nil {
		t.Fatalf("WriteAt: %v", err)
	}
	if !bytes.Equal(tg.Disk(0)[4096:4096+size], data) {
		t.Fatal("disk content differs from what was written")
	}
	got := make([]byte, size)
	if err := lun.ReadAt(ctx, got, 4096); err != nil {
		t.Fatalf("ReadAt: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	if err := lun.Flush(ctx); err != nil {
		t.Errorf("Flush: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	kvs, err := s.Text(ctx, []pdu.KV{{Key: "SendTargets", Value: "All"}})
	if err != nil || len(kvs) < 2 || kvs[0].Value != tg.Name() {
		t.Errorf("SendTargets: %v %v", kvs, err)
	}
	if err := s.TaskManagement(ctx, pdu.TMFLogicalUnitReset, 0); err != nil {
		t.Errorf("LU reset: %v", err)
	}
	luns, err := initiator.ReportLUNs(ctx, s)
	if err != nil || len(luns) != 1 || luns[0] != 0 {
		t.Errorf("REPORT LUNS: %v %v", luns, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	noViolations(t, tg)
}

func TestDefaultBehaviour(t *testing.T) {
	roundTrip(t, faketarget.Config{}, nil, 300<<10)
}

func TestManyR2TsAndUnsolicited(t *testing.T) {
	roundTrip(t, faketarget.Config{FirstBurstLength: 16384, MaxBurstLength: 32768, R2TSize: 8192, MaxOutstandingR2T: 4, MaxRecvDataSegmentLength: 4096},
		func(c *initiator.Config) { c.MaxOutstandingR2T = 4; c.MaxRecvDataSegmentLength = 2048 }, 200<<10)
}

func TestInitialR2TNoImmediate(t *testing.T) {
	roundTrip(t, faketarget.Config{InitialR2T: true, NoImmediateData: true, SeparateStatus: true}, nil, 64<<10)
}

func TestDigests(t *testing.T) {
	roundTrip(t, faketarget.Config{HeaderDigest: true, DataDigest: true},
		func(c *initiator.Config) {
			c.HeaderDigest = []string{"CRC32C", "None"}
			c.DataDigest = []string{"CRC32C", "None"}
		}, 100<<10)
}

func TestCHAP(t *testing.T) {
	roundTrip(t, faketarget.Config{CHAPUser: "user", CHAPSecret: "secret-secret-1", TargetCHAPUser: "tgt", TargetCHAPSecret: "target-secret-2"},
		func(c *initiator.Config) {
			c.CHAP = &initiator.CHAP{User: "user", Secret: "secret-secret-1", TargetUser: "tgt", TargetSecret: "target-secret-2", Algorithms: []int{5}}
		}, 4096)
}

func TestCHAPWrongSecret(t *testing.T) {
	defer faketarget.LeakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tg := faketarget.New(faketarget.Config{CHAPUser: "user", CHAPSecret: "secret-secret-1"})
	defer tg.Close()
	_, err := initiator.Dial(ctx, initiator.Config{InitiatorName: iqn, TargetName: tg.Name(), Portal: "x", Dial: tg.Dial,
		CHAP: &initiator.CHAP{User: "user", Secret: "wrong-secret-22"}})
	if !errors.Is(err, initiator.ErrAuth) {
		t.Fatalf("err = %v, want ErrAuth", err)
	}
}

func TestTCPAndDiscovery(t *testing.T) {
	defer faketarget.LeakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tg := faketarget.New(faketarget.Config{})
	defer tg.Close()
	addr, err := tg.Listen()
	if err != nil {
		t.Fatal(err)
	}
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: iqn, Portal: addr})
	if err != nil {
		t.Fatal(err)
	}
	kvs, err := s.Text(ctx, []pdu.KV{{Key: "SendTargets", Value: "All"}})
	if err != nil || len(kvs) != 2 || kvs[1].Value != addr+",1" {
		t.Errorf("SendTargets: %v %v", kvs, err)
	}
	s.Close()
	noViolations(t, tg)
}

func TestTextContinuation(t *testing.T) {
	defer faketarget.LeakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var portals []string
	for i := 0; i < 100; i++ {
		portals = append(portals, "192.0.2.1:3260,1")
	}
	tg := faketarget.New(faketarget.Config{Portals: portals})
	defer tg.Close()
	s := dial(t, ctx, tg, func(c *initiator.Config) { c.MaxRecvDataSegmentLength = 512 })
	kvs, err := s.Text(ctx, []pdu.KV{{Key: "SendTargets", Value: "All"}})
	if err != nil || len(kvs) != 101 {
		t.Errorf("SendTargets: %d keys, %v", len(kvs), err)
	}
	s.Close()
	noViolations(t, tg)
}

func TestHookAndWindow(t *testing.T) {
	defer faketarget.LeakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tg := faketarget.New(faketarget.Config{
		OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, data []byte) bool {
			if cmd.CDB[0] != 0x00 {
				return false
			}
			c.SendStatus(cmd.ITT, faketarget.StatusBusy, nil)
			return true
		},
	})
	defer tg.Close()
	s := dial(t, ctx, tg, nil)
	resp, err := s.Do(ctx, &initiator.Command{CDB: make([]byte, 6)})
	if err != nil || resp.Status != faketarget.StatusBusy {
		t.Fatalf("Do: %+v %v", resp, err)
	}
	c, _ := tg.WaitConn(ctx, 1)
	if r, err := c.WaitOpcode(ctx, pdu.OpSCSICommand); err != nil || r.MaxCmdSN == 0 {
		t.Errorf("received: %+v %v", r, err)
	}
	s.Close()
	noViolations(t, tg)
}

// TestViolationsDetected drives the target with a raw, misbehaving
// initiator and checks that the target records what it broke.
func TestViolationsDetected(t *testing.T) {
	defer faketarget.LeakCheck(t)()
	tg := faketarget.New(faketarget.Config{Window: 2, InitialR2T: true, NoImmediateData: true})
	defer tg.Close()
	nc, err := tg.Dial(context.Background(), "tcp", "x")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	w, r := pdu.NewWriter(nc), pdu.NewReader(nc)
	login := &pdu.LoginRequest{Header: pdu.Header{ITT: 1}, Transit: true, CSG: pdu.StageOperational, NSG: pdu.StageFullFeature, CmdSN: 10}
	if err := w.WritePDU(login, pdu.AppendText(nil, pdu.KV{Key: "InitialR2T", Value: "Yes"}, pdu.KV{Key: "ImmediateData", Value: "No"})); err != nil {
		t.Fatal(err)
	}
	var b pdu.BHS
	if err := r.ReadHeader(&b); err != nil || b.Opcode() != pdu.OpLoginResp {
		t.Fatalf("login response: %v %v", b.Opcode(), err)
	}
	if _, err := r.ReadDataAlloc(&b); err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, nc); close(drained) }() // net.Pipe: answers must be read
	defer func() { nc.Close(); <-drained }()
	// Immediate data although ImmediateData=No, and F=0 with InitialR2T=Yes.
	cmd := &pdu.SCSICommand{Header: pdu.Header{ITT: 2}, Write: true, EDTL: 1024, CmdSN: 10, CDB: [16]byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 2}}
	w.WritePDU(cmd, make([]byte, 512))
	// CmdSN 12 is beyond MaxCmdSN 11 (window of 2 from 10).
	w.WritePDU(&pdu.SCSICommand{Header: pdu.Header{ITT: 3, Final: true}, CmdSN: 12}, nil)
	// An immediate NOP-Out with a wrong CmdSN.
	w.WritePDU(&pdu.NopOut{Header: pdu.Header{ITT: pdu.ReservedTag, Immediate: true}, TTT: pdu.ReservedTag, CmdSN: 99}, nil)
	c, _ := tg.WaitConn(context.Background(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.WaitOpcode(ctx, pdu.OpNopOut); err != nil {
		t.Fatal(err)
	}
	want := []string{"immediate data with ImmediateData=No", "InitialR2T=Yes", "beyond the advertised MaxCmdSN 11", "carries CmdSN 99"}
	got := strings.Join(tg.Violations(), "\n")
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("violation %q not recorded; got:\n%s", w, got)
		}
	}
	nc.Close()
}
