package initiator_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// UNH-IOL 11.1.2: a Data-In with DataSegmentLength 0 is not an error.
func TestConformanceDataInZeroLength(t *testing.T) {
	payload := randBytes(512)
	e := newEnv(t, faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
		if cmd.CDB[0] != 0x28 {
			return false
		}
		c.SendDataIn(&pdu.DataIn{Header: pdu.Header{ITT: cmd.ITT}}, nil)
		c.SendDataIn(&pdu.DataIn{Header: pdu.Header{ITT: cmd.ITT}, BufferOffset: 0}, payload[:100])
		c.SendDataIn(&pdu.DataIn{Header: pdu.Header{ITT: cmd.ITT}, BufferOffset: 100}, nil)
		c.SendDataIn(&pdu.DataIn{Header: pdu.Header{ITT: cmd.ITT}, BufferOffset: 100, HasStatus: true}, payload[100:])
		return true
	}}, nil)
	cmd := read10(0, 1)
	resp, err := e.s.Do(e.ctx, cmd)
	if err != nil || resp.Status != 0 || resp.Received != 512 || !bytes.Equal(cmd.Read, payload) {
		t.Fatalf("Do: %+v %v (data equal %v)", resp, err, bytes.Equal(cmd.Read, payload))
	}
	e.noViolations()
}

// UNH-IOL 10.1: status in the final Data-In (S bit) completes the command
// without a SCSI Response; residuals are reported.
func TestConformanceStatusInFinalDataIn(t *testing.T) {
	e := newEnv(t, faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
		if cmd.CDB[0] != 0x28 {
			return false
		}
		// Half the requested data, status GOOD with underflow.
		c.SendDataIn(&pdu.DataIn{Header: pdu.Header{ITT: cmd.ITT}, HasStatus: true, Underflow: true, Residual: cmd.EDTL / 2}, make([]byte, cmd.EDTL/2))
		return true
	}}, nil)
	resp, err := e.s.Do(e.ctx, read10(0, 2))
	if err != nil || resp.Status != 0 || !resp.Underflow || resp.Residual != 512 || resp.Received != 512 {
		t.Fatalf("Do: %+v %v", resp, err)
	}
	// The next command goes out without waiting for any SCSI Response.
	if _, err := e.s.Do(e.ctx, tur()); err != nil {
		t.Fatal(err)
	}
	e.noViolations()
}

// writeCheck writes size bytes through a LUN handle and verifies the disk.
func writeCheck(t *testing.T, e *env, size int) {
	t.Helper()
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(size)
	if err := lun.WriteAt(e.ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.tg.Disk(0)[:size], data) {
		t.Fatal("disk content differs")
	}
}

// dataOuts returns the Data-Out PDUs received for the last write command.
func lastWrite(e *env) (*pdu.SCSICommand, []faketarget.Received) {
	var cmd *pdu.SCSICommand
	var outs []faketarget.Received
	for _, r := range e.c.Received() {
		switch p := r.PDU.(type) {
		case *pdu.SCSICommand:
			if p.Write {
				cmd, outs = p, nil
			}
		case *pdu.DataOut:
			if cmd != nil && p.ITT == cmd.ITT {
				outs = append(outs, r)
			}
		}
	}
	return cmd, outs
}

// UNH-IOL 8.2, 16.2.3, 16.3.1, 11.1.1, 11.2.2, 11.3, 11.4, 12.2, 6.1:
// InitialR2T=Yes, ImmediateData=No; several R2Ts per write. No data before
// an R2T; Data-Out no larger than the target's MaxRecvDataSegmentLength;
// DataSN from 0 per R2T; offsets continuous; F on the last PDU of each R2T;
// TTT echoed. The fake target checks each rule on every PDU.
func TestConformanceSolicitedOnly(t *testing.T) {
	e := newEnv(t, faketarget.Config{InitialR2T: true, NoImmediateData: true, MaxRecvDataSegmentLength: 1024, R2TSize: 4096, MaxBurstLength: 16384}, nil)
	writeCheck(t, e, 32768)
	cmd, outs := lastWrite(e)
	if cmd.DataLen != 0 || !cmd.Final || !cmd.Write {
		t.Errorf("write command: DSL %d F %v W %v, want 0, true, true", cmd.DataLen, cmd.Final, cmd.Write)
	}
	ttts := map[uint32]int{}
	for _, o := range outs {
		d := o.PDU.(*pdu.DataOut)
		ttts[d.TTT]++
		if d.TTT == pdu.ReservedTag {
			t.Errorf("unsolicited Data-Out with InitialR2T=Yes")
		}
	}
	if len(ttts) != 8 || len(outs) != 32 {
		t.Errorf("%d R2T sequences and %d Data-Outs, want 8 and 32", len(ttts), len(outs))
	}
	e.noViolations()
}

// UNH-IOL 8.1, 8.3, 11.2.1, 16.2.1, 16.2.4, 16.6: ImmediateData=Yes,
// InitialR2T=No: immediate data, then unsolicited Data-Out up to
// FirstBurstLength with F on the last, the rest solicited.
func TestConformanceUnsolicitedAndImmediate(t *testing.T) {
	e := newEnv(t, faketarget.Config{FirstBurstLength: 8192, MaxRecvDataSegmentLength: 2048, MaxOutstandingR2T: 2}, func(c *initiator.Config) {
		c.MaxOutstandingR2T = 2
	})
	writeCheck(t, e, 20480)
	cmd, outs := lastWrite(e)
	if cmd.DataLen != 2048 || cmd.Final {
		t.Errorf("write command: %d bytes of immediate data, F=%v; want 2048 and F=0", cmd.DataLen, cmd.Final)
	}
	unsol := 0
	for _, o := range outs {
		if d := o.PDU.(*pdu.DataOut); d.TTT == pdu.ReservedTag {
			unsol += len(o.Data)
		}
	}
	if unsol != 8192-2048 {
		t.Errorf("%d bytes of unsolicited Data-Out, want %d (FirstBurstLength minus immediate data)", unsol, 8192-2048)
	}
	e.noViolations()
}

// UNH-IOL 16.2.2: ImmediateData=No, InitialR2T=No: the command carries no
// data, W=1, F=0, and unsolicited Data-Out follows.
func TestConformanceUnsolicitedNoImmediate(t *testing.T) {
	e := newEnv(t, faketarget.Config{NoImmediateData: true, FirstBurstLength: 4096}, nil)
	writeCheck(t, e, 16384)
	cmd, outs := lastWrite(e)
	if cmd.DataLen != 0 || cmd.Final || !cmd.Write {
		t.Errorf("write command: DSL %d F %v W %v", cmd.DataLen, cmd.Final, cmd.Write)
	}
	if d := outs[0].PDU.(*pdu.DataOut); d.TTT != pdu.ReservedTag || len(outs[0].Data) != 4096 || !d.Final {
		t.Errorf("first Data-Out: TTT %#x len %d F %v, want one unsolicited PDU of 4096 with F", d.TTT, len(outs[0].Data), d.Final)
	}
	e.noViolations()
}

// UNH-IOL 16.2.1, 16.6: all data fits the immediate data: F=1, no Data-Out.
func TestConformanceImmediateDataOnly(t *testing.T) {
	e := newEnv(t, faketarget.Config{InitialR2T: true}, nil)
	writeCheck(t, e, 4096)
	cmd, outs := lastWrite(e)
	if cmd.DataLen != 4096 || !cmd.Final || len(outs) != 0 {
		t.Errorf("write: DSL %d F %v, %d Data-Outs; want 4096, true, 0", cmd.DataLen, cmd.Final, len(outs))
	}
	e.noViolations()
}

// UNH-IOL 12.1, 12.3, 9.1: R2Ts with arbitrary offsets and lengths and the
// TTT 0xABBAABBA are answered exactly: TTT echoed, one PDU per R2T matching
// its offset and length, R2Ts served in the order received.
func TestConformanceR2TOffsetsHonoured(t *testing.T) {
	type r2t struct{ ttt, off, n uint32 }
	plan := []r2t{{0xABBAABBA, 0, 2048}, {0x11, 2048, 1000}, {0x22, 3048, 1048}}
	errs := make(chan string, 16)
	var hook func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool
	hook = func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
		if cmd.CDB[0] != 0x2a {
			return false
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), confTimeout)
			defer cancel()
			for _, r := range plan {
				c.SendR2T(cmd.ITT, r.ttt, r.off, r.n)
				got, err := c.WaitFor(ctx, func(x faketarget.Received) bool {
					d, ok := x.PDU.(*pdu.DataOut)
					return ok && d.ITT == cmd.ITT && d.Final && d.TTT == r.ttt
				})
				if err != nil {
					errs <- err.Error()
					c.Close()
					return
				}
				d := got.PDU.(*pdu.DataOut)
				if d.BufferOffset != r.off || uint32(len(got.Data)) != r.n || d.DataSN != 0 || d.LUN != cmd.LUN {
					errs <- "Data-Out for an R2T does not match it"
				}
			}
			c.SendStatus(cmd.ITT, 0, nil)
		}()
		return true
	}
	e := newEnv(t, faketarget.Config{InitialR2T: true, NoImmediateData: true, OnCommand: hook}, nil)
	data := randBytes(4096)
	if _, err := e.s.Do(e.ctx, write10(0, data)); err != nil {
		t.Fatal(err)
	}
	close(errs)
	for s := range errs {
		t.Error(s)
	}
	// The data arrived at the right offsets.
	var got [4096]byte
	for _, r := range e.c.Received() {
		if d, ok := r.PDU.(*pdu.DataOut); ok {
			copy(got[d.BufferOffset:], r.Data)
		}
	}
	if !bytes.Equal(got[:], data) {
		t.Error("Data-Out payloads do not reassemble the write buffer")
	}
	e.noViolations()
}

// UNH-IOL 12.4: R2Ts for two parallel writes are answered in the order the
// R2Ts arrive, not the order of the commands.
func TestConformanceParallelWritesR2TOrder(t *testing.T) {
	h := newHolder()
	e := newEnv(t, faketarget.Config{InitialR2T: true, NoImmediateData: true, OnCommand: h.hook(0x2a)}, nil)
	d1 := goDo(e.ctx, e.s, write10(0, randBytes(1024)))
	w1 := h.next(t, e.ctx)
	d2 := goDo(e.ctx, e.s, write10(8, randBytes(1024)))
	w2 := h.next(t, e.ctx)
	for _, w := range []*pdu.SCSICommand{w2, w1} {
		ttt := e.c.NewTTT()
		e.c.SendR2T(w.ITT, ttt, 0, 1024)
		if _, err := e.c.WaitFor(e.ctx, func(r faketarget.Received) bool {
			d, ok := r.PDU.(*pdu.DataOut)
			return ok && d.TTT == ttt && d.Final
		}); err != nil {
			t.Fatal(err)
		}
	}
	outs := ofOpcode(e.c.Received(), pdu.OpDataOut)
	if outs[0].ITT() != w2.ITT {
		t.Errorf("first Data-Out for itt %#x, want the second write's %#x (the first R2T)", outs[0].ITT(), w2.ITT)
	}
	e.c.SendStatus(w1.ITT, 0, nil)
	e.c.SendStatus(w2.ITT, 0, nil)
	await(t, e.ctx, d1)
	await(t, e.ctx, d2)
	e.noViolations()
}

// RFC 7143 11.7.1 with digests: a full write/read round trip with
// HeaderDigest and DataDigest CRC32C.
func TestConformanceDigestsRoundTrip(t *testing.T) {
	e := newEnv(t, faketarget.Config{HeaderDigest: true, DataDigest: true}, func(c *initiator.Config) {
		c.HeaderDigest, c.DataDigest = []string{"CRC32C"}, []string{"CRC32C"}
	})
	writeCheck(t, e, 65536+3*512)
	if p := e.c.Params(); !p.HeaderDigest || !p.DataDigest {
		t.Fatalf("digests not negotiated: %+v", p)
	}
	e.noViolations()
}
