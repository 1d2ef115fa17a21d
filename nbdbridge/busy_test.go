package nbdbridge

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// TestBusyForeverIsEIO (review #13): a LUN that answers BUSY to every READ
// makes the NBD request fail with EIO within about the command timeout,
// and a cancelled Serve then returns at once. Requests run under
// WithoutCancel, so before the retries were bounded both hung for good.
func TestBusyForeverIsEIO(t *testing.T) {
	defer faketarget.LeakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tg := faketarget.New(faketarget.Config{OnCommand: func(c *faketarget.Conn, cmd *pdu.SCSICommand, _ []byte) bool {
		if cmd.CDB[0] != 0x28 && cmd.CDB[0] != 0x88 {
			return false
		}
		c.SendStatus(cmd.ITT, faketarget.StatusBusy, nil)
		return true
	}})
	defer tg.Close()
	const budget = 500 * time.Millisecond
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: "iqn.2026-11.org.lunbridge:busy", TargetName: tg.Name(),
		Portal: "fake:3260", Dial: tg.Dial, NopInterval: -1, NoRecovery: true, CommandTimeout: budget})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lun, err := initiator.OpenLUN(ctx, s, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(lun, DefaultOptions())
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, l) }()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &rawClient{t: t, nc: nc, br: newReader(nc)}
	c.greet()
	c.goExport(false)
	t0 := time.Now()
	c.write(reqBytes(0, cmdRead, 1, 0, 4096))
	errno, cookie := c.simpleReply()
	took := time.Since(t0)
	if errno != errIO || cookie != 1 {
		t.Fatalf("reply errno %d cookie %d, want EIO (%d)", errno, cookie, errIO)
	}
	if took > budget+2*time.Second {
		t.Errorf("EIO after %v, want about the command timeout %v", took, budget)
	}
	t.Logf("EIO after %v", took.Round(time.Millisecond))
	// A request in flight when serve is told to stop ends within the same
	// bound, so the drain finishes.
	c.write(reqBytes(0, cmdRead, 2, 0, 4096))
	time.Sleep(50 * time.Millisecond)
	t1 := time.Now()
	scancel()
	if errno, _ := c.simpleReply(); errno != errIO {
		t.Errorf("request drained with errno %d, want EIO", errno)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(budget + 5*time.Second):
		t.Fatal("Serve did not return: the drain hangs on a BUSY LUN")
	}
	t.Logf("serve drained and returned %v after cancel", time.Since(t1).Round(time.Millisecond))
}
