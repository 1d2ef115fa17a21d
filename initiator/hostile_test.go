package initiator_test

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// Review #12: Data-In must arrive contiguous (DataPDUInOrder=Yes). Two
// overlapping segments that add up to the transfer length would leave the
// second half of the buffer unwritten while Received says it is full; the
// initiator must call that a protocol error, not return the buffer.
func TestDataInOverlapIsProtocolError(t *testing.T) {
	e := newEnv(t, faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, data []byte) bool {
		if cmd.CDB[0] != 0x28 {
			return false
		}
		half := bytes.Repeat([]byte{0xAB}, int(cmd.EDTL/2))
		c.SendDataIn(&pdu.DataIn{Header: pdu.Header{ITT: cmd.ITT}, BufferOffset: 0}, half)
		c.SendDataIn(&pdu.DataIn{Header: pdu.Header{ITT: cmd.ITT}, BufferOffset: 0, HasStatus: true}, half)
		return true
	}}, nil)
	cmd := read10(0, 2)
	for i := range cmd.Read {
		cmd.Read[i] = 0xEE // stale bytes of an earlier request
	}
	resp, err := e.s.Do(e.ctx, cmd)
	if err == nil {
		t.Fatalf("overlapping Data-In accepted: status %d, received %d, byte 512 = %#x", resp.Status, resp.Received, cmd.Read[512])
	}
	expectConnError(t, err, initiator.ErrProtocol)
}

// Review #12: a target that keeps pinging (NOP-In with a Target Transfer
// Tag) while it does not read our socket must not grow the write queue:
// at most one echo is outstanding per connection, further pings are
// dropped, and an echo carries at most the target's
// MaxRecvDataSegmentLength of ping data.
func TestPingFloodWhileTargetDoesNotRead(t *testing.T) {
	var echoes atomic.Int32
	var lastLen atomic.Int32
	release := make(chan struct{})
	e := newEnv(t, faketarget.Config{OnPDU: func(c *faketarget.Conn, p pdu.PDU, data []byte) bool {
		if q, ok := p.(*pdu.NopOut); ok && q.TTT != pdu.ReservedTag {
			lastLen.Store(int32(len(data)))
			if echoes.Add(1) == 1 {
				<-release // stop reading the initiator's socket
			}
			return true
		}
		return false
	}}, nil)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (echoes %d)", what, echoes.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	ping := bytes.Repeat([]byte{0x5A}, 4096)
	e.c.SendNopIn(1, 0, ping)
	waitFor("the first echo", func() bool { return echoes.Load() == 1 })
	const flood = 200
	for i := 0; i < flood; i++ {
		if err := e.c.SendNopIn(uint32(2+i), 0, ping); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // let the read loop handle them all
	close(release)
	time.Sleep(300 * time.Millisecond)
	if n := echoes.Load(); n > 3 {
		t.Errorf("%d pings while the target did not read were all queued and echoed (%d echoes); want at most one outstanding", flood, n)
	}
	// The drained connection answers pings again; the echo is capped at
	// the target's MaxRecvDataSegmentLength.
	before := echoes.Load()
	big := bytes.Repeat([]byte{0x77}, 3*e.tg.Config().MaxRecvDataSegmentLength)
	e.c.SendNopIn(0x1000, 0, big)
	waitFor("an echo after the queue drained", func() bool { return echoes.Load() > before })
	if n, max := int(lastLen.Load()), e.tg.Config().MaxRecvDataSegmentLength; n > max {
		t.Errorf("echo of %d bytes of ping data exceeds the target's MaxRecvDataSegmentLength %d", n, max)
	}
	if _, err := e.s.Do(e.ctx, tur()); err != nil {
		t.Fatal(err)
	}
	e.noViolations()
}
