package initiator_test

// Helpers for the conformance tests (conformance_*_test.go): the UNH-IOL
// iSCSI Initiator Full Feature Phase items played against the scripted
// fake target. docs/conformance.md maps every item to its test.

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/initiator/scsi"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

const confIQN = "iqn.2026-11.org.lunbridge:conformance"

// confTimeout bounds every conformance test: a hang is a failure.
const confTimeout = 15 * time.Second

type env struct {
	t   *testing.T
	ctx context.Context
	tg  *faketarget.Target
	s   *initiator.Session
	c   *faketarget.Conn
}

// newEnv starts a fake target with tcfg, logs in with the initiator
// configuration modified by mod, and registers cleanups that close both
// and then check for leaked goroutines and protocol violations.
func newEnv(t *testing.T, tcfg faketarget.Config, mod func(*initiator.Config)) *env {
	t.Helper()
	t.Cleanup(faketarget.LeakCheck(t)) // runs last
	ctx, cancel := context.WithTimeout(context.Background(), confTimeout)
	t.Cleanup(cancel)
	tg := faketarget.New(tcfg)
	t.Cleanup(func() { tg.Close() })
	// Keepalive pings and session recovery are off unless a test turns
	// them on: the scripted exchanges must see only the PDUs they cause,
	// and a connection-fatal error must surface, not be retried.
	cfg := initiator.Config{InitiatorName: confIQN, TargetName: tg.Name(), Portal: "fake:3260", Dial: tg.Dial,
		LoginTimeout: 5 * time.Second, NopInterval: -1, NoRecovery: true}
	if mod != nil {
		mod(&cfg)
	}
	s, err := initiator.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := tg.WaitConn(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, ctx: ctx, tg: tg, s: s, c: c}
}

// noViolations fails the test for every rule the target saw broken.
func (e *env) noViolations() {
	e.t.Helper()
	for _, v := range e.tg.Violations() {
		e.t.Errorf("target saw a violation: %s", v)
	}
}

// holder collects SCSI commands a hook keeps for the test to answer.
type holder struct {
	ch chan *pdu.SCSICommand
}

func newHolder() *holder { return &holder{ch: make(chan *pdu.SCSICommand, 256)} }

// hook holds every command whose CDB opcode is op.
func (h *holder) hook(op byte) func(*faketarget.Conn, *pdu.SCSICommand, []byte) bool {
	return func(c *faketarget.Conn, cmd *pdu.SCSICommand, data []byte) bool {
		if cmd.CDB[0] != op {
			return false
		}
		cp := *cmd
		h.ch <- &cp
		return true
	}
}

// next waits for the next held command.
func (h *holder) next(t *testing.T, ctx context.Context) *pdu.SCSICommand {
	t.Helper()
	select {
	case c := <-h.ch:
		return c
	case <-ctx.Done():
		t.Fatalf("no command arrived: %v", ctx.Err())
		return nil
	}
}

// none checks that no command arrives for d.
func (h *holder) none(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case c := <-h.ch:
		t.Fatalf("%s: command itt %#x CmdSN %d arrived", why, c.ITT, c.CmdSN)
	case <-time.After(d):
	}
}

// result is the outcome of an asynchronous Session.Do.
type result struct {
	resp initiator.Response
	err  error
}

// goDo runs cmd on a goroutine; wait on the returned channel.
func goDo(ctx context.Context, s *initiator.Session, cmd *initiator.Command) <-chan result {
	ch := make(chan result, 1)
	go func() {
		r, err := s.Do(ctx, cmd)
		ch <- result{r, err}
	}()
	return ch
}

// await waits for an asynchronous Do.
func await(t *testing.T, ctx context.Context, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		t.Fatalf("command never completed: %v", ctx.Err())
		return result{}
	}
}

func tur() *initiator.Command { return &initiator.Command{CDB: scsi.TestUnitReady()} }

func read10(lba uint32, blocks uint16) *initiator.Command {
	return &initiator.Command{CDB: scsi.Read10(lba, blocks, false), Read: make([]byte, int(blocks)*512)}
}

func write10(lba uint32, data []byte) *initiator.Command {
	return &initiator.Command{CDB: scsi.Write10(lba, uint16(len(data)/512), false), Write: data}
}

// ofOpcode returns the received PDUs with opcode op.
func ofOpcode(rs []faketarget.Received, op pdu.Opcode) []faketarget.Received {
	var out []faketarget.Received
	for _, r := range rs {
		if r.Opcode() == op {
			out = append(out, r)
		}
	}
	return out
}

// cpuTime returns the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// expectConnError checks that err is a connection-fatal error wrapping want
// (when want is not nil).
func expectConnError(t *testing.T, err, want error) {
	t.Helper()
	var ce *initiator.ConnError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v (%T), want *initiator.ConnError", err, err)
	}
	if want != nil && !errors.Is(err, want) {
		t.Fatalf("err = %v, want it to wrap %v", err, want)
	}
}
