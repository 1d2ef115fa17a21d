package initiator_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// ErrorRecoveryLevel 1 (issue 22): SNACK recovery of damaged or lost
// Data-In and status inside the connection, against the scripted target.

// erlEnv is a session at ERL 1 with data digests and Data-In PDUs of 1 KiB
// (a 16-block read is 8 PDUs), disk 0 filled with a pattern.
func erlEnv(t *testing.T, tcfg faketarget.Config, mod func(*initiator.Config)) *env {
	t.Helper()
	tcfg.ErrorRecoveryLevel = 1
	tcfg.DataDigest = true
	e := newEnv(t, tcfg, func(c *initiator.Config) {
		c.ErrorRecoveryLevel = 1
		c.DataDigest = []string{"CRC32C"}
		c.MaxRecvDataSegmentLength = 1024
		c.NopTimeout = time.Second // SNACK timeout
		if mod != nil {
			mod(c)
		}
	})
	d := e.tg.Disk(0)
	for i := range d {
		d[i] = byte(i*7 + i/512)
	}
	if e.s.Params().ErrorRecoveryLvl != 1 {
		t.Fatalf("ERL %d negotiated", e.s.Params().ErrorRecoveryLvl)
	}
	return e
}

// once returns a hook true for the first PDU of DataSN sn (not re-sent).
func once(sn uint32) func(itt, dataSN uint32, resend bool) bool {
	var mu sync.Mutex
	done := false
	return func(_, dataSN uint32, resend bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if dataSN != sn || resend || done {
			return false
		}
		done = true
		return true
	}
}

func snacks(e *env, typ uint8) []*pdu.SNACKRequest {
	var out []*pdu.SNACKRequest
	for _, r := range ofOpcode(e.c.Received(), pdu.OpSNACK) {
		if q := r.PDU.(*pdu.SNACKRequest); q.Type == typ {
			out = append(out, q)
		}
	}
	return out
}

func checkRead(t *testing.T, e *env, lba int, r result) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("read: %v", r.err)
	}
	if r.resp.Status != 0 || r.resp.Received != 16*512 {
		t.Fatalf("read: status %d, %d bytes received", r.resp.Status, r.resp.Received)
	}
}

func TestERL1DataDigestSNACK(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sn       uint32
		separate bool
		beg, run uint32
	}{
		{name: "middle", sn: 3, beg: 3, run: 1},
		{name: "first", sn: 0, beg: 0, run: 1},
		// The PDU carrying status: its header (status) is good, its
		// data is not; RunLength 0 for a range reaching the last DataSN.
		{name: "last-with-status", sn: 7, beg: 7, run: 0},
		{name: "last-separate-status", sn: 7, separate: true, beg: 7, run: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := erlEnv(t, faketarget.Config{CorruptDataIn: once(tc.sn), SeparateStatus: tc.separate}, nil)
			cmd := read10(4, 16)
			resp, err := e.s.Do(e.ctx, cmd)
			checkRead(t, e, 4, result{resp, err})
			if want := e.tg.Disk(0)[4*512 : 20*512]; !bytes.Equal(cmd.Read, want) {
				t.Fatalf("read data differs from the disk after SNACK recovery")
			}
			sn := snacks(e, 0)
			if len(sn) != 1 || sn[0].BegRun != tc.beg || sn[0].RunLength != tc.run || sn[0].ITT == pdu.ReservedTag {
				t.Fatalf("Data SNACKs %+v, want one with BegRun %d RunLength %d", sn, tc.beg, tc.run)
			}
			if _, err := e.s.Do(e.ctx, tur()); err != nil {
				t.Fatalf("session unusable after recovery: %v", err)
			}
			e.noViolations()
		})
	}
}

// A re-sent PDU damaged again is asked for again; one damaged every time
// ends the connection after a bounded number of SNACKs (the level 0 path).
func TestERL1DataDigestRepeated(t *testing.T) {
	t.Run("twice", func(t *testing.T) {
		var mu sync.Mutex
		n := 0
		e := erlEnv(t, faketarget.Config{CorruptDataIn: func(_, sn uint32, _ bool) bool {
			mu.Lock()
			defer mu.Unlock()
			if sn == 2 && n < 2 {
				n++
				return true
			}
			return false
		}}, nil)
		cmd := read10(0, 16)
		resp, err := e.s.Do(e.ctx, cmd)
		checkRead(t, e, 0, result{resp, err})
		if !bytes.Equal(cmd.Read, e.tg.Disk(0)[:16*512]) {
			t.Fatal("data differs")
		}
		if n := len(snacks(e, 0)); n != 2 {
			t.Fatalf("%d Data SNACKs, want 2", n)
		}
		e.noViolations()
	})
	t.Run("always", func(t *testing.T) {
		e := erlEnv(t, faketarget.Config{CorruptDataIn: func(_, sn uint32, _ bool) bool { return sn == 2 }}, nil)
		_, err := e.s.Do(e.ctx, read10(0, 16))
		expectConnError(t, err, initiator.ErrProtocol)
		if n := len(snacks(e, 0)); n != 3 {
			t.Fatalf("%d Data SNACKs, want 3 (bounded)", n)
		}
	})
}

func TestERL1SNACKRejectedOrUnanswered(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  faketarget.Config
	}{
		{"rejected", faketarget.Config{RejectSNACK: true}},
		{"unanswered", faketarget.Config{IgnoreSNACK: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.CorruptDataIn = once(1)
			e := erlEnv(t, tc.cfg, nil)
			start := time.Now()
			_, err := e.s.Do(e.ctx, read10(0, 16))
			expectConnError(t, err, initiator.ErrProtocol)
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("fallback took %v", d)
			}
		})
	}
	// With recovery on, the fallback is session recovery and the read is
	// re-issued in a new session (it succeeds: only the first PDU of the
	// first session was damaged).
	t.Run("rejected-recovers-session", func(t *testing.T) {
		e := erlEnv(t, faketarget.Config{RejectSNACK: true, CorruptDataIn: once(1)}, func(c *initiator.Config) {
			c.NoRecovery = false
			c.ReplacementTimeout = 10 * time.Second
		})
		cmd := read10(0, 16)
		resp, err := e.s.Do(e.ctx, cmd)
		checkRead(t, e, 0, result{resp, err})
		if !bytes.Equal(cmd.Read, e.tg.Disk(0)[:16*512]) {
			t.Fatal("data differs")
		}
		if n := e.s.Recovery().Reconnects; n != 1 {
			t.Fatalf("%d session recoveries, want 1", n)
		}
	})
}

func TestERL1DataACK(t *testing.T) {
	e := erlEnv(t, faketarget.Config{DataACK: func(_, sn uint32) bool { return sn == 2 || sn == 5 }}, nil)
	cmd := read10(0, 16)
	resp, err := e.s.Do(e.ctx, cmd)
	checkRead(t, e, 0, result{resp, err})
	// The SNACKs left before the status arrived; the target may not have
	// read them yet.
	for i := 0; len(e.c.DataACKs()) < 2 && i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	acks := e.c.DataACKs()
	if len(acks) != 2 || acks[0].BegRun != 3 || acks[1].BegRun != 6 {
		t.Fatalf("DataACKs %+v, want BegRun 3 and 6", acks)
	}
	for _, q := range snacks(e, 2) {
		if q.ITT != pdu.ReservedTag || q.RunLength != 0 {
			t.Errorf("DataACK ITT %#x RunLength %d", q.ITT, q.RunLength)
		}
	}
	e.noViolations()
}

// A lost status (the target skips a StatSN) is found at the next status
// and re-requested with a Status SNACK; both commands complete.
func TestERL1StatusSNACK(t *testing.T) {
	var mu sync.Mutex
	dropped := false
	e := erlEnv(t, faketarget.Config{SeparateStatus: true, DropStatus: func(itt, _ uint32) bool {
		mu.Lock()
		defer mu.Unlock()
		if dropped {
			return false
		}
		dropped = true
		return true
	}}, nil)
	cmd := read10(0, 16)
	first := goDo(e.ctx, e.s, cmd)
	if _, err := e.c.WaitFor(e.ctx, func(r faketarget.Received) bool { return r.Opcode() == pdu.OpSCSICommand }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := e.s.Do(e.ctx, tur()); err != nil {
		t.Fatalf("TUR: %v", err)
	}
	checkRead(t, e, 0, await(t, e.ctx, first))
	sn := snacks(e, 1)
	if len(sn) != 1 || sn[0].RunLength != 1 || sn[0].ITT != pdu.ReservedTag {
		t.Fatalf("Status SNACKs %+v, want one for one StatSN", sn)
	}
	e.noViolations()
}

// A header digest error discards the PDU; the DataSN gap it leaves is
// re-requested.
func TestERL1HeaderDigestGap(t *testing.T) {
	e := erlEnv(t, faketarget.Config{HeaderDigest: true, CorruptDataInHeader: once(2)}, func(c *initiator.Config) {
		c.HeaderDigest = []string{"CRC32C"}
	})
	cmd := read10(0, 16)
	resp, err := e.s.Do(e.ctx, cmd)
	checkRead(t, e, 0, result{resp, err})
	if !bytes.Equal(cmd.Read, e.tg.Disk(0)[:16*512]) {
		t.Fatal("data differs")
	}
	if sn := snacks(e, 0); len(sn) != 1 || sn[0].BegRun != 2 || sn[0].RunLength != 1 {
		t.Fatalf("Data SNACKs %+v", sn)
	}
	e.noViolations()
}

// The target rejects an unsolicited Data-Out for a data digest error and
// asks for it again with a recovery R2T: the initiator sends that range
// again and the write completes.
func TestERL1DataOutRecoveryR2T(t *testing.T) {
	var mu sync.Mutex
	var got []byte
	rejected := false
	ttt := uint32(0x77)
	cfg := faketarget.Config{NoImmediateData: true,
		OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
			return cmd.CDB[0] == 0x2a // the hooks below serve the write
		},
		OnDataOut: func(c *faketarget.Conn, d *pdu.DataOut, data []byte) bool {
			mu.Lock()
			defer mu.Unlock()
			if !rejected {
				if d.Final {
					rejected = true
					var raw pdu.BHS
					d.MarshalBHS(&raw)
					c.SendReject(pdu.RejectDataDigest, raw)
					c.SendR2T(d.ITT, ttt, 0, 4096)
				}
				return true
			}
			if d.TTT != ttt {
				got = nil // a wrong TTT fails the comparison below
				return true
			}
			got = append(got, data...)
			if d.Final {
				c.SendStatus(d.ITT, 0, nil)
			}
			return true
		}}
	e := erlEnv(t, cfg, func(c *initiator.Config) { c.NoImmediateData = true })
	buf := bytes.Repeat([]byte{0xa5, 0x5a, 1, 2}, 1024)
	if _, err := e.s.Do(e.ctx, write10(0, buf)); err != nil {
		t.Fatalf("write: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got, buf) {
		t.Fatalf("re-sent data: %d bytes, differs", len(got))
	}
}

// The LUN's non-blocking read path completes from the read loop: a read
// recovered by SNACK reports success with the right data there too.
func TestERL1AsyncRead(t *testing.T) {
	e := erlEnv(t, faketarget.Config{CorruptDataIn: once(3)}, nil)
	l, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 8192)
	done := make(chan error, 1)
	l.StartReadAt(p, 4096, func(err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("StartReadAt: %v", err)
		}
	case <-e.ctx.Done():
		t.Fatal("StartReadAt never completed")
	}
	if !bytes.Equal(p, e.tg.Disk(0)[4096:4096+8192]) {
		t.Fatal("data differs")
	}
	if sn := snacks(e, 0); len(sn) != 1 || sn[0].BegRun != 3 {
		t.Fatalf("Data SNACKs %+v", sn)
	}
	e.noViolations()
}
