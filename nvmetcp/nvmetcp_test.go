package nvmetcp

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/internal/testrig/fakenvme"
	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

func fake(t *testing.T, cfg fakenvme.Config) *fakenvme.Controller {
	t.Helper()
	if cfg.Namespaces == nil {
		cfg.Namespaces = []fakenvme.NSConfig{{BlockSize: 512, Blocks: 8192}, {BlockSize: 4096, Blocks: 1024}}
	}
	f, err := fakenvme.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func open(t *testing.T, f *fakenvme.Controller, nsid uint32, cfg Config) *Namespace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Addr, cfg.SubNQN = f.Addr(), f.NQN()
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = 5 * time.Second
	}
	if cfg.HostNQN == "" {
		cfg.HostNQN = "nqn.2026-12.org.lunbridge:test-host"
	}
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := OpenNamespace(ctx, c, nsid)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	n.SetOwnsController(true)
	t.Cleanup(func() { n.Close() })
	return n
}

// rwVerify writes random data of many sizes at random offsets from several
// goroutines and checks every byte both through the host and in the fake's
// store.
func rwVerify(t *testing.T, f *fakenvme.Controller, n *Namespace) {
	t.Helper()
	ctx := context.Background()
	bs := n.BlockSize()
	sizes := []int{bs, 4096, 3 * bs, 64 << 10, 300 << 10, 1 << 20}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	region := n.Size() / 8
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			base := int64(g) * region
			for i := range 12 {
				sz := sizes[(i+g)%len(sizes)]
				sz = sz / bs * bs
				if int64(sz) > region {
					sz = int(region)
				}
				off := base + rng.Int63n((region-int64(sz))/int64(bs)+1)*int64(bs)
				buf := make([]byte, sz)
				rng.Read(buf)
				if err := n.WriteAt(ctx, buf, off, i%3 == 0); err != nil {
					errs <- err
					return
				}
				got := make([]byte, sz)
				if err := n.ReadAt(ctx, got, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, buf) {
					errs <- errors.New("read back differs")
					return
				}
				if !bytes.Equal(f.Data(int(n.NSID()), off, int64(sz)), buf) {
					errs <- errors.New("fake store differs")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestReadWriteVerify: both namespaces (512- and 4096-byte blocks), two I/O
// queues, small writes in capsule and large ones through R2T/H2CData,
// reads over several C2HData PDUs and several commands (MDTS 128 KiB).
func TestReadWriteVerify(t *testing.T) {
	f := fake(t, fakenvme.Config{})
	for _, nsid := range []uint32{1, 2} {
		n := open(t, f, nsid, Config{IOQueues: 2})
		if n.Controller().IOQueues() != 2 {
			t.Fatalf("%d I/O queues", n.Controller().IOQueues())
		}
		wantBS := map[uint32]int{1: 512, 2: 4096}[nsid]
		if n.BlockSize() != wantBS || n.Size() != 4<<20 {
			t.Fatalf("ns %d: block %d size %d", nsid, n.BlockSize(), n.Size())
		}
		rwVerify(t, f, n)
	}
	if f.InCapsule.Load() == 0 || f.R2Ts.Load() == 0 {
		t.Fatalf("in-capsule writes %d, R2Ts %d: both paths must run", f.InCapsule.Load(), f.R2Ts.Load())
	}
	if got := f.HostNQN.Load(); got != "nqn.2026-12.org.lunbridge:test-host" {
		t.Fatalf("host NQN %v", got)
	}
}

// TestDigestsAndAlignment: header and data digests on, the controller
// asking for 16-byte data alignment, every write through R2T, reads ending
// with C2HData SUCCESS.
func TestDigestsAndAlignment(t *testing.T) {
	f := fake(t, fakenvme.Config{AllowDigests: true, CPDA: 3, InlineData: -1, Success: true, MaxH2CData: 8192})
	n := open(t, f, 1, Config{HeaderDigest: true, DataDigest: true, IOQueues: 3})
	if f.Digests.Load() != 3 {
		t.Fatalf("digests %b", f.Digests.Load())
	}
	rwVerify(t, f, n)
	if f.InCapsule.Load() != 0 {
		t.Fatalf("%d writes in capsule with no in-capsule data allowed", f.InCapsule.Load())
	}
}

// TestFlushZeroesTrim: Flush, Write Zeroes (with and without DEAC) and
// Dataset Management deallocate reach the controller and zero the range;
// without ONCS support Write Zeroes falls back to writing zeroes and Trim
// is refused as not supported.
func TestFlushZeroesTrim(t *testing.T) {
	ctx := context.Background()
	for _, noWZ := range []bool{false, true} {
		f := fake(t, fakenvme.Config{NoWriteZ: noWZ})
		n := open(t, f, 2, Config{})
		data := bytes.Repeat([]byte{0xab}, 64<<10)
		if err := n.WriteAt(ctx, data, 0, false); err != nil {
			t.Fatal(err)
		}
		if err := n.Flush(ctx); err != nil || f.Flushes.Load() != 1 {
			t.Fatalf("flush: %v (%d)", err, f.Flushes.Load())
		}
		if err := n.WriteZeroes(ctx, 4096, 8192, true); err != nil {
			t.Fatal(err)
		}
		err := n.Trim(ctx, 32768, 16384)
		if noWZ {
			if !errors.Is(err, blockdev.ErrNotSupported) {
				t.Fatalf("trim without DSM: %v", err)
			}
			if f.Zeroes.Load() != 0 {
				t.Fatal("Write Zeroes sent though not supported")
			}
		} else if err != nil || f.Trims.Load() != 1 || f.Zeroes.Load() != 1 {
			t.Fatalf("trim %v, trims %d zeroes %d", err, f.Trims.Load(), f.Zeroes.Load())
		}
		got := make([]byte, 64<<10)
		if err := n.ReadAt(ctx, got, 0); err != nil {
			t.Fatal(err)
		}
		want := bytes.Clone(data)
		clear(want[4096 : 4096+8192])
		if !noWZ {
			clear(want[32768 : 32768+16384])
		}
		if !bytes.Equal(got, want) {
			t.Fatal("zeroed/deallocated ranges read back wrong")
		}
		if !n.ReadZeroesAfterTrim() {
			t.Fatal("DLFEAT says deallocated blocks read zero")
		}
	}
}

// TestRangeChecks: misaligned and out-of-range I/O is refused before
// anything is sent.
func TestRangeChecks(t *testing.T) {
	f := fake(t, fakenvme.Config{})
	n := open(t, f, 2, Config{})
	ctx := context.Background()
	if err := n.ReadAt(ctx, make([]byte, 512), 0); !errors.Is(err, blockdev.ErrInvalid) {
		t.Fatalf("misaligned: %v", err)
	}
	if err := n.ReadAt(ctx, make([]byte, 4096), n.Size()); !errors.Is(err, blockdev.ErrOutOfRange) {
		t.Fatalf("past end: %v", err)
	}
	if f.Reads.Load() != 0 {
		t.Fatal("a read reached the controller")
	}
}

// TestKeepAlive: Keep Alive goes out every KATO/2.
func TestKeepAlive(t *testing.T) {
	f := fake(t, fakenvme.Config{})
	open(t, f, 1, Config{KeepAlive: 200 * time.Millisecond})
	deadline := time.Now().Add(5 * time.Second)
	for f.KeepAlives.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d keep alives", f.KeepAlives.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMisbehaviour: every protocol violation of the controller fails the
// command with an error (none hangs, none panics) when reconnection is
// off, and the next command works again on a fresh association.
func TestMisbehaviour(t *testing.T) {
	cases := map[fakenvme.Fault]error{
		fakenvme.FaultWrongCID:  ErrProtocol,
		fakenvme.FaultShortData: ErrProtocol,
		fakenvme.FaultBadPDU:    ErrProtocol,
		fakenvme.FaultTermReq:   nil, // a *TermError
		fakenvme.FaultClose:     ErrConnection,
		fakenvme.FaultStall:     ErrTimeout,
	}
	for fault, want := range cases {
		f := fake(t, fakenvme.Config{})
		n := open(t, f, 1, Config{ReconnectTimeout: -1, CommandTimeout: 300 * time.Millisecond, IOQueues: 1})
		var once sync.Once
		f.SetFault(func(qid uint16, sqe pdu.SQE) fakenvme.Fault {
			r := fakenvme.FaultNone
			if qid > 0 && sqe.Opcode == pdu.IORead {
				once.Do(func() { r = fault })
			}
			return r
		})
		start := time.Now()
		err := n.ReadAt(context.Background(), make([]byte, 8192), 0)
		if err == nil {
			t.Fatalf("fault %d: no error", fault)
		}
		var te *TermError
		if want == nil && !errors.As(err, &te) || want != nil && !errors.Is(err, want) {
			t.Fatalf("fault %d: %v", fault, err)
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("fault %d took %v", fault, time.Since(start))
		}
		// The next command reconnects and works.
		if err := n.ReadAt(context.Background(), make([]byte, 8192), 0); err != nil {
			t.Fatalf("fault %d: after: %v", fault, err)
		}
	}
}

// TestReconnect: connections dropped mid-I/O (a controller reset seen from
// the host) are re-established with the same host NQN and host ID and the
// I/O completes with no error.
func TestReconnect(t *testing.T) {
	f := fake(t, fakenvme.Config{})
	n := open(t, f, 1, Config{ReconnectTimeout: 10 * time.Second, CommandTimeout: 2 * time.Second, KeepAlive: 200 * time.Millisecond})
	hostID := f.HostID.Load()
	connects := f.Connects.Load()
	// Dropped while idle: the next command reconnects. Then dropped
	// while I/O runs (how often depends on how long rwVerify takes).
	f.DropConnections()
	rwVerify(t, f, n)
	stop := make(chan struct{})
	go func() {
		for i := 0; i < 3; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				f.DropConnections()
			}
		}
	}()
	defer close(stop)
	rwVerify(t, f, n)
	if f.Connects.Load() == connects {
		t.Fatal("no reconnect happened")
	}
	if f.HostID.Load() != hostID || f.HostNQN.Load() != "nqn.2026-12.org.lunbridge:test-host" {
		t.Fatal("reconnect with another host identity")
	}
}

// TestCancel: a cancelled context ends a stalled command promptly: an
// Abort, and when the controller does not abort it (Linux nvmet never
// does), the connection goes after the grace period.
func TestCancel(t *testing.T) {
	for _, abortable := range []bool{true, false} {
		f := fake(t, fakenvme.Config{AbortStalled: abortable})
		n := open(t, f, 1, Config{ReconnectTimeout: -1, CommandTimeout: 500 * time.Millisecond})
		var once sync.Once
		f.SetFault(func(qid uint16, sqe pdu.SQE) fakenvme.Fault {
			r := fakenvme.FaultNone
			if qid > 0 {
				once.Do(func() { r = fakenvme.FaultStall })
			}
			return r
		})
		connects := f.Connects.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		err := n.ReadAt(ctx, make([]byte, 512), 0)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
			t.Fatalf("abortable %v: got %v after %v", abortable, err, time.Since(start))
		}
		if f.Aborts.Load() != 1 {
			t.Fatalf("abortable %v: %d aborts", abortable, f.Aborts.Load())
		}
		if err := n.ReadAt(context.Background(), make([]byte, 512), 0); err != nil {
			t.Fatal(err)
		}
		// An aborted command leaves the association up; an unabortable
		// one costs the connection.
		if reconnected := f.Connects.Load() != connects; reconnected == abortable {
			t.Fatalf("abortable %v: reconnected %v", abortable, reconnected)
		}
	}
}

// TestAbortOnTimeout: a command past CommandTimeout is aborted; the
// caller gets ErrTimeout and the association stays up.
func TestAbortOnTimeout(t *testing.T) {
	f := fake(t, fakenvme.Config{AbortStalled: true})
	n := open(t, f, 1, Config{ReconnectTimeout: -1, CommandTimeout: 300 * time.Millisecond})
	var once sync.Once
	f.SetFault(func(qid uint16, sqe pdu.SQE) fakenvme.Fault {
		r := fakenvme.FaultNone
		if qid > 0 && sqe.Opcode == pdu.IOWrite {
			once.Do(func() { r = fakenvme.FaultStall })
		}
		return r
	})
	connects := f.Connects.Load()
	err := n.WriteAt(context.Background(), make([]byte, 512), 0, false)
	if !errors.Is(err, ErrTimeout) || errors.Is(err, ErrConnection) {
		t.Fatalf("got %v", err)
	}
	if err := n.WriteAt(context.Background(), make([]byte, 512), 0, false); err != nil {
		t.Fatal(err)
	}
	if f.Connects.Load() != connects || f.Aborts.Load() != 1 {
		t.Fatalf("connects %d -> %d, aborts %d", connects, f.Connects.Load(), f.Aborts.Load())
	}
}

// TestDiscover reads the discovery log page.
func TestDiscover(t *testing.T) {
	entries := []pdu.DiscoveryEntry{
		{TrType: 3, AdrFam: 1, SubType: 2, PortID: 1, CntlID: 0xffff, TrSvcID: "4420", TrAddr: "10.0.0.1", SubNQN: "nqn.a"},
		{TrType: 3, AdrFam: 1, SubType: 2, PortID: 2, CntlID: 0xffff, TrSvcID: "4421", TrAddr: "10.0.0.2", SubNQN: "nqn.b"},
	}
	f := fake(t, fakenvme.Config{Discovery: entries})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := Discover(ctx, Config{Addr: f.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != entries[0] || got[1] != entries[1] {
		t.Fatalf("%+v", got)
	}
}

// TestConnectRefused: a wrong subsystem NQN is a readable Connect error.
func TestConnectRefused(t *testing.T) {
	f := fake(t, fakenvme.Config{})
	_, err := Dial(context.Background(), Config{Addr: f.Addr(), SubNQN: "nqn.2026-12.org.lunbridge:nope"})
	var se *StatusError
	if !errors.As(err, &se) || se.Status.SCT() != 1 {
		t.Fatalf("got %v", err)
	}
}

// TestHostNQN: the generated host NQN is stable and UUID-form, and the
// host ID is the NQN's UUID.
func TestHostNQN(t *testing.T) {
	a, b := DefaultHostNQN(), DefaultHostNQN()
	if a != b || len(a) < 20 {
		t.Fatalf("%q %q", a, b)
	}
	id := HostIDFor("nqn.2014-08.org.nvmexpress:uuid:01234567-89ab-cdef-0123-456789abcdef")
	if formatUUID(id) != "01234567-89ab-cdef-0123-456789abcdef" {
		t.Fatalf("%x", id)
	}
}

// TestReconnectOtherMedium: when the reconnected controller shows another
// namespace behind the NSID (another size), I/O fails with ErrUnavailable
// instead of reading or writing it.
func TestReconnectOtherMedium(t *testing.T) {
	f := fake(t, fakenvme.Config{})
	n := open(t, f, 1, Config{ReconnectTimeout: 5 * time.Second})
	ctx := context.Background()
	if err := n.ReadAt(ctx, make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	f.ReplaceNamespace(1, fakenvme.NSConfig{BlockSize: 512, Blocks: 4096})
	f.DropConnections()
	writes := f.Writes.Load()
	err := n.WriteAt(ctx, make([]byte, 512), 0, false)
	if !errors.Is(err, blockdev.ErrUnavailable) {
		t.Fatalf("got %v", err)
	}
	if f.Writes.Load() != writes {
		t.Fatal("a write reached the other medium")
	}
}

// TestWriteZeroesRefused: a controller that advertises Write Zeroes but
// refuses it gets zero buffers written — with Invalid Command Opcode, and
// with SCT 1 SC 0x83, what Linux nvmet (6.1, loop device on tmpfs) answers.
func TestWriteZeroesRefused(t *testing.T) {
	for _, fault := range []fakenvme.Fault{fakenvme.FaultRefuse, fakenvme.FaultRefuseLinux} {
		testWriteZeroesRefused(t, fault)
	}
}

func testWriteZeroesRefused(t *testing.T, fault fakenvme.Fault) {
	f := fake(t, fakenvme.Config{})
	n := open(t, f, 2, Config{})
	ctx := context.Background()
	if err := n.WriteAt(ctx, bytes.Repeat([]byte{1}, 64<<10), 0, false); err != nil {
		t.Fatal(err)
	}
	f.SetFault(func(qid uint16, sqe pdu.SQE) fakenvme.Fault {
		if sqe.Opcode == pdu.IOWriteZeroes {
			return fault
		}
		return fakenvme.FaultNone
	})
	for range 2 {
		if err := n.WriteZeroes(ctx, 8192, 16384, false); err != nil {
			t.Fatal(err)
		}
	}
	got := f.Data(2, 0, 64<<10)
	want := bytes.Repeat([]byte{1}, 64<<10)
	clear(want[8192 : 8192+16384])
	if !bytes.Equal(got, want) {
		t.Fatal("range not zeroed")
	}
}

// TestTrimRefusedLinux: a deallocate refused with SCT 1 SC 0x83 is
// ErrNotSupported, named as such (not as a Connect status).
func TestTrimRefusedLinux(t *testing.T) {
	f := fake(t, fakenvme.Config{})
	n := open(t, f, 1, Config{})
	f.SetFault(func(qid uint16, sqe pdu.SQE) fakenvme.Fault {
		if sqe.Opcode == pdu.IODSM {
			return fakenvme.FaultRefuseLinux
		}
		return fakenvme.FaultNone
	})
	err := n.Trim(context.Background(), 0, 4096)
	if !errors.Is(err, blockdev.ErrNotSupported) || strings.Contains(err.Error(), "discovery") {
		t.Fatalf("got %v", err)
	}
}

// TestNoGoroutineLeak: after Close (also after a reconnect and an
// abandoned command) no goroutine of the host is left.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	f, err := fakenvme.Listen(fakenvme.Config{Namespaces: []fakenvme.NSConfig{{BlockSize: 512, Blocks: 64}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(context.Background(), Config{Addr: f.Addr(), SubNQN: f.NQN(), KeepAlive: 100 * time.Millisecond,
		CommandTimeout: 300 * time.Millisecond, IOQueues: 3, ReconnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n, err := OpenNamespace(context.Background(), c, 1)
	if err != nil {
		t.Fatal(err)
	}
	n.SetOwnsController(true)
	f.DropConnections()
	if err := n.ReadAt(context.Background(), make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	f.SetFault(func(qid uint16, sqe pdu.SQE) fakenvme.Fault {
		if qid > 0 {
			return fakenvme.FaultStall
		}
		return fakenvme.FaultNone
	})
	n.ReadAt(context.Background(), make([]byte, 512), 0)
	n.Close()
	f.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
