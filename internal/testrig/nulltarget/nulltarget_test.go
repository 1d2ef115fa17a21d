package nulltarget

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
)

// serveNull starts a null target on a loopback port and returns its portal.
func serveNull(t *testing.T, cfg Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(cfg)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the null target did not stop")
		}
	})
	return ln.Addr().String()
}

// TestInitiatorOnNullTarget: lunbridge's initiator logs in (with the
// parameters it offers by default), opens the LUN (identity, capacity,
// VPD), reads zeroes of every size up to several Data-In segments, writes
// with immediate data and through R2T, flushes, and logs out.
func TestInitiatorOnNullTarget(t *testing.T) {
	portal := serveNull(t, Config{Size: 64 << 20, BlockSize: 512})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := initiator.Dial(ctx, initiator.Config{InitiatorName: "iqn.2026-12.org.lunbridge:nulltest",
		TargetName: DefaultTargetName, Portal: portal, NopInterval: -1, NoRecovery: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lun, err := initiator.OpenLUN(ctx, s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if lun.Size() != 64<<20 || lun.BlockSize() != 512 {
		t.Fatalf("size %d block %d", lun.Size(), lun.BlockSize())
	}
	if lun.WWID() == "" {
		t.Error("no WWID from VPD 0x83")
	}
	for _, n := range []int{512, 4096, 256 << 10, 1 << 20, 4 << 20} {
		p := bytes.Repeat([]byte{0xaa}, n)
		if err := lun.ReadAt(ctx, p, 0); err != nil {
			t.Fatalf("read %d: %v", n, err)
		}
		if !bytes.Equal(p, make([]byte, n)) {
			t.Fatalf("read %d: not zeroes", n)
		}
		if err := lun.WriteAt(ctx, p, int64(n), false); err != nil {
			t.Fatalf("write %d: %v", n, err)
		}
	}
	if err := lun.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lun.ReadAt(ctx, make([]byte, 512), 64<<20); err == nil {
		t.Fatal("a read past the end succeeded")
	}
	// Many commands in flight on one connection.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 4096)
			for j := range 50 {
				off := int64((i*50+j)%10000) * 4096
				var err error
				if j%2 == 0 {
					err = lun.ReadAt(ctx, p, off)
				} else {
					err = lun.WriteAt(ctx, p, off, false)
				}
				if err != nil {
					errs <- err
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
