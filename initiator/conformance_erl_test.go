package initiator_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// UNH-IOL FFP 10.2, 13.1 and 13.2 at ErrorRecoveryLevel 1 (erlEnv:
// MaxRecvDataSegmentLength 1024, so a 16-block read is DataSN 0..7).

// waitSNACKs waits until the target has read n SNACKs of type typ.
func waitSNACKs(t *testing.T, e *env, typ uint8, n int) []*pdu.SNACKRequest {
	t.Helper()
	for i := 0; i < 200; i++ {
		if s := snacks(e, typ); len(s) >= n {
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
	return snacks(e, typ)
}

// 10.2: the A bit in the final Data-In of a read (status in a separate
// SCSI Response) is answered with a DataACK SNACK.
func TestConformanceDataInAckBit(t *testing.T) {
	e := erlEnv(t, faketarget.Config{SeparateStatus: true, DataACK: func(_, sn uint32) bool { return sn == 7 }}, nil)
	resp, err := e.s.Do(e.ctx, read10(0, 16))
	checkRead(t, e, 0, result{resp, err})
	acks := waitSNACKs(t, e, 2, 1)
	if len(acks) != 1 || acks[0].BegRun != 8 || acks[0].RunLength != 0 || acks[0].ITT != pdu.ReservedTag {
		t.Fatalf("DataACKs %+v, want one with BegRun 8, RunLength 0, ITT 0xffffffff", acks)
	}
	if got := e.c.DataACKs(); len(got) != 1 || got[0].TTT != acks[0].TTT {
		t.Fatalf("DataACK TTT %#x does not echo the Data-In's (%+v)", acks[0].TTT, got)
	}
	e.noViolations()
}

// 13.1: a skipped DataSN 3 gets a Data/R2T SNACK with the command's ITT,
// TTT 0xffffffff, BegRun 3, RunLength 1, sent before the status is
// acknowledged (the fake target flags a SNACK after the acknowledgement).
func TestConformanceSNACKDataGap(t *testing.T) {
	e := erlEnv(t, faketarget.Config{DropDataIn: once(3)}, nil)
	cmd := read10(0, 16)
	resp, err := e.s.Do(e.ctx, cmd)
	checkRead(t, e, 0, result{resp, err})
	if !bytes.Equal(cmd.Read, e.tg.Disk(0)[:16*512]) {
		t.Fatal("data differs")
	}
	reads := ofOpcode(e.c.Received(), pdu.OpSCSICommand)
	itt := reads[len(reads)-1].ITT()
	sn := snacks(e, 0)
	if len(sn) != 1 || sn[0].ITT != itt || sn[0].TTT != pdu.ReservedTag || sn[0].BegRun != 3 || sn[0].RunLength != 1 {
		t.Fatalf("Data SNACKs %+v, want ITT %#x TTT 0xffffffff BegRun 3 RunLength 1", sn, itt)
	}
	e.noViolations()
}

// 13.2: a DataACK after a MaxBurstLength of data carries RunLength 0, ITT
// 0xffffffff and the Data-In's Target Transfer Tag.
func TestConformanceSNACKDataACK(t *testing.T) {
	e := erlEnv(t, faketarget.Config{MaxBurstLength: 4096, DataACK: func(_, sn uint32) bool { return sn == 3 }}, nil)
	resp, err := e.s.Do(e.ctx, read10(0, 16))
	checkRead(t, e, 0, result{resp, err})
	acks := waitSNACKs(t, e, 2, 1)
	got := e.c.DataACKs()
	if len(acks) != 1 || len(got) != 1 || acks[0].RunLength != 0 || acks[0].ITT != pdu.ReservedTag || acks[0].TTT != got[0].TTT || acks[0].BegRun != 4 {
		t.Fatalf("DataACKs %+v (target: %+v)", acks, got)
	}
	e.noViolations()
}
