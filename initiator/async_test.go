package initiator_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

var _ blockdev.AsyncIO = (*initiator.LUN)(nil)

// startWait runs one Start call and waits for its callback, failing the
// test if it runs twice or never.
func startWait(t *testing.T, ctx context.Context, start func(done func(error))) error {
	t.Helper()
	ch := make(chan error, 2)
	start(func(err error) { ch <- err })
	var err error
	select {
	case err = <-ch:
	case <-ctx.Done():
		t.Fatal("callback never ran")
	}
	select {
	case err2 := <-ch:
		t.Fatalf("callback ran twice (%v, then %v)", err, err2)
	case <-time.After(50 * time.Millisecond):
	}
	return err
}

// The non-blocking path moves the same bytes as ReadAt/WriteAt, many at
// once, and each I/O is one READ or WRITE (nothing retried).
func TestAsyncReadWrite(t *testing.T) {
	e := newEnv(t, faketarget.Config{}, nil)
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	const n, bs = 64, 4096
	want := make([]byte, n*bs)
	rand.Read(want)
	rw := func() (n int) {
		for _, r := range ofOpcode(e.c.Received(), pdu.OpSCSICommand) {
			if op := r.PDU.(*pdu.SCSICommand).CDB[0]; op == 0x28 || op == 0x2a {
				n++
			}
		}
		return n
	}
	before := rw()
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		lun.StartWriteAt(want[i*bs:(i+1)*bs], int64(i*bs), i%2 == 0, func(err error) {
			errs <- err
			wg.Done()
		})
	}
	wg.Wait()
	got := make([]byte, n*bs)
	for i := 0; i < n; i++ {
		wg.Add(1)
		lun.StartReadAt(got[i*bs:(i+1)*bs], int64(i*bs), func(err error) {
			errs <- err
			wg.Done()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs from what was written")
	}
	if cmds := rw() - before; cmds != 2*n {
		t.Errorf("%d READ and WRITE commands for %d I/Os", cmds, 2*n)
	}
	e.noViolations()
}

// Outcomes the fast path does not decide go through the blocking path:
// UNIT ATTENTION and BUSY are retried, a medium error keeps its sentinel,
// a range past the end fails before anything is sent,
// and an I/O larger than one command is split.
func TestAsyncFallbacks(t *testing.T) {
	var mu sync.Mutex
	script := map[byte][]func(c *faketarget.Conn, itt uint32){}
	e := newEnv(t, faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		q := script[cmd.CDB[0]]
		if len(q) == 0 {
			return false
		}
		script[cmd.CDB[0]] = q[1:]
		q[0](c, cmd.ITT)
		return true
	}}, nil)
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	ua := func(c *faketarget.Conn, itt uint32) {
		c.SendStatus(itt, faketarget.StatusCheckCondition, faketarget.Sense(0x06, 0x29, 0x00))
	}
	busy := func(c *faketarget.Conn, itt uint32) { c.SendStatus(itt, faketarget.StatusBusy, nil) }
	medium := func(c *faketarget.Conn, itt uint32) {
		c.SendStatus(itt, faketarget.StatusCheckCondition, faketarget.Sense(0x03, 0x11, 0x00))
	}
	set := func(op byte, fs ...func(*faketarget.Conn, uint32)) {
		mu.Lock()
		script[op] = fs
		mu.Unlock()
	}
	buf := make([]byte, 4096)

	set(0x28, ua, busy) // READ(10)
	if err := startWait(t, e.ctx, func(d func(error)) { lun.StartReadAt(buf, 0, d) }); err != nil {
		t.Errorf("read after UNIT ATTENTION and BUSY: %v", err)
	}
	set(0x2a, busy) // WRITE(10)
	if err := startWait(t, e.ctx, func(d func(error)) { lun.StartWriteAt(buf, 4096, false, d) }); err != nil {
		t.Errorf("write after BUSY: %v", err)
	}
	set(0x28, medium, medium)
	if err := startWait(t, e.ctx, func(d func(error)) { lun.StartReadAt(buf, 0, d) }); !errors.Is(err, blockdev.ErrMedium) {
		t.Errorf("read of an unreadable block: %v, want ErrMedium", err)
	}
	if err := startWait(t, e.ctx, func(d func(error)) { lun.StartReadAt(buf, lun.Size(), d) }); !errors.Is(err, blockdev.ErrOutOfRange) {
		t.Errorf("read past the end: %v, want ErrOutOfRange", err)
	}
	// Larger than one command: split by the blocking path.
	big := make([]byte, lun.MaxTransfer()+4096)
	if len(big) <= int(lun.Size()) {
		if err := startWait(t, e.ctx, func(d func(error)) { lun.StartReadAt(big, 0, d) }); err != nil {
			t.Errorf("read of two commands: %v", err)
		}
	}

	e.noViolations()
}

// With the command window used up the I/O is not sent (nor does anything
// spin): it waits on the blocking path and goes once a NOP-In opens the
// window, with the next CmdSN.
func TestAsyncClosedWindow(t *testing.T) {
	h := newHolder()
	e := newEnv(t, faketarget.Config{Window: 1, OnCommand: h.hook(0x28)}, nil)
	lun, err := initiator.OpenLUN(e.ctx, e.s, 0)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 2)
	done := func(err error) { ch <- err }
	lun.StartReadAt(make([]byte, 512), 0, done)
	first := h.next(t, e.ctx)
	e.c.SetWindowSize(0)
	lun.StartReadAt(make([]byte, 512), 512, done)
	h.none(t, 300*time.Millisecond, "window of one already used")
	e.c.SetWindowSize(1)
	e.c.SendNopIn(pdu.ReservedTag, 0, nil)
	second := h.next(t, e.ctx)
	if second.CmdSN != first.CmdSN+1 {
		t.Errorf("CmdSNs %d then %d", first.CmdSN, second.CmdSN)
	}
	for _, c := range []*pdu.SCSICommand{first, second} {
		e.c.SendDataIn(&pdu.DataIn{Header: pdu.Header{ITT: c.ITT, Final: true}, HasStatus: true, TTT: pdu.ReservedTag}, make([]byte, 512))
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("read %d: %v", i, err)
			}
		case <-e.ctx.Done():
			t.Fatal("reads never finished")
		}
	}
	e.noViolations()
}
