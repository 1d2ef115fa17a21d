package initiator_test

import (
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// faultCase scripts a connection-fatal answer to the first READ while a
// second command (TEST UNIT READY) is also outstanding; both must fail with
// a *ConnError (wrapping want when not nil), promptly, with no goroutine
// leaked and no panic.
type faultCase struct {
	name    string
	digests bool
	// keepalive turns NOP-Out pings on (200 ms idle, 300 ms timeout): the
	// only way to notice a peer that stops in the middle of a PDU.
	keepalive bool
	want      error
	inject    func(c *faketarget.Conn, rd *pdu.SCSICommand)
}

func runFault(t *testing.T, fc faultCase) {
	h := newHolder()
	tcfg := faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, d []byte) bool {
		if cmd.CDB[0] == 0x28 || cmd.CDB[0] == 0x00 {
			return h.hook(cmd.CDB[0])(c, cmd, d)
		}
		return false
	}}
	if fc.digests {
		tcfg.HeaderDigest, tcfg.DataDigest = true, true
	}
	e := newEnv(t, tcfg, func(c *initiator.Config) {
		if fc.digests {
			c.HeaderDigest, c.DataDigest = []string{"CRC32C"}, []string{"CRC32C"}
		}
		if fc.keepalive {
			c.NopInterval, c.NopTimeout = 200*time.Millisecond, 300*time.Millisecond
		}
	})
	rdDone := goDo(e.ctx, e.s, read10(0, 1))
	rd := h.next(t, e.ctx)
	turDone := goDo(e.ctx, e.s, tur())
	h.next(t, e.ctx)
	start := time.Now()
	fc.inject(e.c, rd)
	for _, d := range []<-chan result{rdDone, turDone} {
		res := await(t, e.ctx, d)
		expectConnError(t, res.err, fc.want)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("tasks failed only after %v", el)
	}
	select {
	case <-e.c.Done():
	case <-time.After(2 * time.Second):
		// The target's end closes only when the initiator drops the
		// connection.
		t.Error("the initiator did not close the connection")
	}
	if _, err := e.s.Do(e.ctx, tur()); err == nil {
		t.Error("a command succeeded on the failed connection")
	}
	e.noViolations()
}

func dataIn(c *faketarget.Conn, rd *pdu.SCSICommand, n int) []byte {
	return c.Wire(&pdu.DataIn{Header: pdu.Header{ITT: rd.ITT, Final: true, DataLen: n}, HasStatus: true, TTT: pdu.ReservedTag}, make([]byte, n))
}

// Header and data digest mismatches, an unknown opcode, malformed PDUs, a
// data segment larger than negotiated, a close in the middle of a PDU and
// an unexpected StatSN (UNH-IOL 5.1): each is connection-fatal and ends
// every outstanding task with a clear error.
func TestConformanceConnectionFaults(t *testing.T) {
	cases := []faultCase{
		{name: "header-digest", digests: true, want: pdu.ErrHeaderDigest, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			b := dataIn(c, rd, 512)
			b[pdu.BHSLen] ^= 0xff // first byte of the header digest
			c.SendRaw(b)
		}},
		{name: "data-digest", digests: true, want: pdu.ErrDataDigest, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			b := dataIn(c, rd, 512)
			b[len(b)-1] ^= 0xff // last byte of the data digest
			c.SendRaw(b)
		}},
		{name: "data-corrupted-under-digest", digests: true, want: pdu.ErrDataDigest, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			b := dataIn(c, rd, 512)
			b[pdu.BHSLen+4+100] ^= 0x01
			c.SendRaw(b)
		}},
		{name: "unknown-opcode", want: initiator.ErrProtocol, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			var b pdu.BHS
			b[0] = 0x3a
			b[1] = 0x80
			c.SendRaw(b[:])
		}},
		{name: "initiator-opcode-from-target", want: initiator.ErrProtocol, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			c.SendAsIs(&pdu.SCSICommand{Header: pdu.Header{ITT: rd.ITT, Final: true}}, nil)
		}},
		{name: "data-in-S-without-F", want: initiator.ErrProtocol, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			b := c.Wire(&pdu.DataIn{Header: pdu.Header{ITT: rd.ITT}, HasStatus: true, TTT: pdu.ReservedTag}, make([]byte, 512))
			b[1] &^= 0x80
			c.SendRaw(b)
		}},
		{name: "r2t-reserved-ttt", want: initiator.ErrProtocol, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			c.Send(&pdu.R2T{Header: pdu.Header{ITT: rd.ITT}, TTT: pdu.ReservedTag, DesiredLength: 512}, nil)
		}},
		{name: "response-with-AHS", want: initiator.ErrProtocol, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			b := c.Wire(&pdu.SCSIResponse{Header: pdu.Header{ITT: rd.ITT}}, nil)
			b[4] = 1
			c.SendRaw(append(b, 0, 0, 0, 0))
		}},
		{name: "data-segment-too-long", want: pdu.ErrDataTooLong, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			// The initiator declared MaxRecvDataSegmentLength 1 MiB (the default).
			c.SendDataIn(&pdu.DataIn{Header: pdu.Header{ITT: rd.ITT}}, make([]byte, 1<<20+4))
		}},
		{name: "data-in-beyond-buffer", want: initiator.ErrProtocol, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			c.SendDataIn(&pdu.DataIn{Header: pdu.Header{ITT: rd.ITT}, BufferOffset: 256, HasStatus: true}, make([]byte, 512))
		}},
		{name: "data-in-datasn-gap", want: initiator.ErrProtocol, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			c.Send(&pdu.DataIn{Header: pdu.Header{ITT: rd.ITT, Final: true}, TTT: pdu.ReservedTag, DataSN: 1, HasStatus: true}, make([]byte, 512))
		}},
		{name: "statsn-out-of-window", want: initiator.ErrProtocol, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			c.SetStatSN(c.StatSN() + 1<<30)
			c.SendStatus(rd.ITT, 0, nil)
		}},
		{name: "close-mid-header", inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			c.SendRaw(dataIn(c, rd, 512)[:20])
			c.Close()
		}},
		{name: "stall-mid-pdu", keepalive: true, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			c.SendRaw(dataIn(c, rd, 512)[:pdu.BHSLen+100])
		}},
		{name: "close-mid-data", inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			c.SendRaw(dataIn(c, rd, 512)[:pdu.BHSLen+100])
			c.Close()
		}},
		{name: "close", inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) { c.Close() }},
		// 0xff... announces an AHS of 1020 bytes that never comes: the
		// initiator waits for it, and only the keepalive ends the wait.
		{name: "garbage-then-silence", keepalive: true, inject: func(c *faketarget.Conn, rd *pdu.SCSICommand) {
			g := make([]byte, 96)
			for i := range g {
				g[i] = 0xff
			}
			c.SendRaw(g)
		}},
	}
	for _, fc := range cases {
		t.Run(fc.name, func(t *testing.T) { runFault(t, fc) })
	}
}

// UNH-IOL 5.1 (the recovery half): with session recovery on (the default),
// a connection lost while a command is outstanding is recovered and the
// command re-issued and completed.
func TestConformanceRecoveryAfterConnectionLoss(t *testing.T) {
	closed := false
	e := newEnv(t, faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
		if cmd.CDB[0] == 0x28 && !closed {
			closed = true
			c.Close()
			return true
		}
		return false
	}}, func(c *initiator.Config) { c.NoRecovery = false })
	resp, err := e.s.Do(e.ctx, read10(0, 1))
	if err != nil || resp.Status != 0 {
		t.Fatalf("Do across a connection loss: %+v %v", resp, err)
	}
	if n := len(e.tg.Conns()); n != 2 {
		t.Errorf("%d connections, want 2 (original and recovered)", n)
	}
	c2 := e.tg.Conns()[1]
	if c2.ISID() != e.c.ISID() || c2.Logins()[0].Req.TSIH != 0 {
		t.Errorf("recovery login: ISID %x (was %x) TSIH %d; want the same ISID and TSIH 0 (reinstatement)", c2.ISID(), e.c.ISID(), c2.Logins()[0].Req.TSIH)
	}
	e.noViolations()
}
