package nbdbridge

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

type slowMem struct {
	*blockdevtest.Mem
	delay time.Duration
}

func (s slowMem) ReadAt(ctx context.Context, p []byte, off int64) error {
	time.Sleep(s.delay)
	return s.Mem.ReadAt(ctx, p, off)
}

// TestServeDrainsOnCancel: cancelling Serve's context answers the requests
// already in flight, then closes the connection and returns.
func TestServeDrainsOnCancel(t *testing.T) {
	dev := slowMem{blockdevtest.NewMem(1<<20, 512), 300 * time.Millisecond}
	s := NewServer(dev, DefaultOptions())
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l) }()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &rawClient{t: t, nc: nc, br: newReader(nc)}
	c.greet()
	c.goExport(false)
	const n = 8
	for i := 0; i < n; i++ {
		c.write(reqBytes(0, cmdRead, uint64(i), uint64(i)*4096, 4096))
	}
	time.Sleep(50 * time.Millisecond) // all 8 are in the device now
	cancel()
	for i := 0; i < n; i++ {
		errno, _ := c.simpleReply()
		if errno != 0 {
			t.Fatalf("errno %d", errno)
		}
		c.read(4096)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after draining")
	}
	var b [1]byte
	if _, err := c.br.Read(b[:]); err != io.EOF {
		t.Fatalf("connection not closed after drain: %v", err)
	}
}
