package initiator

import (
	"context"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// On an idle session the fast path takes the command (a test of the
// fallbacks alone would pass with a fast path that never applies), and
// it declines, sending nothing, once every slot is taken.
func TestTryStartTakesTheFastPath(t *testing.T) {
	defer faketarget.LeakCheck(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tg := faketarget.New(faketarget.Config{})
	defer tg.Close()
	s, err := Dial(ctx, Config{InitiatorName: "iqn.2026-11.org.lunbridge:async", TargetName: tg.Name(),
		Portal: "fake:3260", Dial: tg.Dial, NopInterval: -1, NoRecovery: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make(chan error, 1)
	a := &asyncCmd{s: s, want: 512, done: func(err error) { got <- err }}
	a.cmd = Command{CDB: scsi.AppendReadCDB(a.cdb[:0], 0, 1, false), Read: make([]byte, 512)}
	if !s.tryStart(a) {
		t.Fatal("tryStart declined on an idle session")
	}
	select {
	case err := <-got:
		// done(nil) only for GOOD status with all 512 bytes received.
		if err != nil {
			t.Error(err)
		}
	case <-ctx.Done():
		t.Fatal("no callback")
	}
	for i := 0; i < cap(s.slots); i++ {
		s.slots <- struct{}{}
	}
	never := &asyncCmd{s: s, want: 512, done: func(error) { t.Error("callback of a command never started") }}
	never.cmd = a.cmd
	if s.tryStart(never) {
		t.Error("tryStart took a command with no slot free")
	}
	for i := 0; i < cap(s.slots); i++ {
		<-s.slots
	}
}
