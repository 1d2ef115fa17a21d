package nbdbridge

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// FuzzServer feeds arbitrary bytes as a client stream (handshake, options,
// requests) into a server and asserts it neither panics nor hangs.
func FuzzServer(f *testing.F) {
	hello := []byte{0, 0, 0, 3}
	goOpt := optBytes(optGo, []byte{0, 0, 0, 0, 0, 0})
	sr := optBytes(optStructuredReply, nil)
	q := []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, byte(len(metaBaseAllocation))}
	meta := optBytes(optSetMetaContext, append(q, metaBaseAllocation...))
	seed := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	f.Add(seed(hello, goOpt, reqBytes(0, cmdRead, 1, 0, 512), reqBytes(0, cmdDisc, 2, 0, 0)))
	f.Add(seed(hello, sr, meta, goOpt, reqBytes(0, cmdBlockStatus, 1, 0, 65536), reqBytes(cmdFlagDF, cmdRead, 2, 512, 512)))
	f.Add(seed(hello, sr, goOpt, reqBytes(cmdFlagFUA, cmdWrite, 1, 0, 1024), make([]byte, 1024), reqBytes(0, cmdFlush, 2, 0, 0)))
	f.Add(seed(hello, optBytes(optList, nil), optBytes(optInfo, []byte{0, 0, 0, 0, 0, 1, 0, 3}), optBytes(optListMetaContext, []byte{0, 0, 0, 0, 0, 0, 0, 0}), optBytes(optAbort, nil)))
	f.Add(seed(hello, optBytes(optExportName, nil), reqBytes(0, cmdWriteZeroes, 1, 0, 1<<20), reqBytes(0, cmdTrim, 2, 4096, 4096)))
	f.Add(seed(hello, goOpt, reqBytes(0, cmdWrite, 1, 0, 0xffffffff)))
	f.Add([]byte{0, 0, 0, 3, 0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		dev := blockdevtest.NewMem(1<<20, 512)
		opts := DefaultOptions()
		opts.MaxRequest = 64 << 10
		opts.HandshakeTimeout = 2 * time.Second
		s := NewServer(dev, opts)
		cli, srv := net.Pipe()
		deadline := time.Now().Add(5 * time.Second)
		cli.SetDeadline(deadline)
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.ServeConn(context.Background(), srv)
		}()
		go io.Copy(io.Discard, cli) // a client that reads whatever comes
		cli.Write(data)
		cli.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("server did not return for input %x", data)
		}
	})
}
