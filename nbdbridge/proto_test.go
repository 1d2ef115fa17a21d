package nbdbridge

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// rawClient speaks NBD by hand over net.Pipe for behaviours real clients
// never show.
type rawClient struct {
	t    testing.TB
	nc   net.Conn
	br   *bufio.Reader
	done chan error
	srv  *Server
}

func newRawClient(t testing.TB, dev blockdev.Device, opts Options) *rawClient {
	t.Helper()
	s := NewServer(dev, opts)
	cli, srv := net.Pipe()
	c := &rawClient{t: t, nc: cli, br: bufio.NewReader(cli), done: make(chan error, 1), srv: s}
	go func() { c.done <- s.ServeConn(context.Background(), srv) }()
	cli.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { cli.Close() })
	return c
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("client write: %v", err)
	}
}

func (c *rawClient) read(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("client read %d: %v", n, err)
	}
	return b
}

// greet reads the greeting and sends client flags.
func (c *rawClient) greet() {
	c.t.Helper()
	g := c.read(18)
	if binary.BigEndian.Uint64(g) != nbdMagic || binary.BigEndian.Uint64(g[8:]) != optMagic ||
		binary.BigEndian.Uint16(g[16:]) != flagFixedNewstyle|flagNoZeroes {
		c.t.Fatalf("bad greeting %x", g)
	}
	c.write([]byte{0, 0, 0, 3})
}

func optBytes(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// optReply reads one option reply: type and data.
func (c *rawClient) optReply(opt uint32) (uint32, []byte) {
	c.t.Helper()
	h := c.read(20)
	if binary.BigEndian.Uint64(h) != optReplyMagic || binary.BigEndian.Uint32(h[8:]) != opt {
		c.t.Fatalf("bad option reply %x", h)
	}
	return binary.BigEndian.Uint32(h[12:]), c.read(int(binary.BigEndian.Uint32(h[16:])))
}

// goExport sends NBD_OPT_GO for the default export and reads to the ACK.
func (c *rawClient) goExport(structured bool) {
	c.t.Helper()
	if structured {
		c.write(optBytes(optStructuredReply, nil))
		if typ, _ := c.optReply(optStructuredReply); typ != repAck {
			c.t.Fatalf("STRUCTURED_REPLY answered %#x", typ)
		}
	}
	c.write(optBytes(optGo, []byte{0, 0, 0, 0, 0, 0}))
	for {
		typ, _ := c.optReply(optGo)
		if typ == repAck {
			return
		}
		if typ != repInfo {
			c.t.Fatalf("GO answered %#x", typ)
		}
	}
}

func reqBytes(flags, typ uint16, cookie, off uint64, n uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, requestMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, n)
}

// simpleReply reads a simple reply header: errno and cookie.
func (c *rawClient) simpleReply() (uint32, uint64) {
	c.t.Helper()
	h := c.read(16)
	if m := binary.BigEndian.Uint32(h); m != simpleMagic {
		c.t.Fatalf("reply magic %#x", m)
	}
	return binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint64(h[8:])
}

// waitServer asserts the server goroutine returns.
func (c *rawClient) waitServer() error {
	c.t.Helper()
	select {
	case err := <-c.done:
		return err
	case <-time.After(10 * time.Second):
		c.t.Fatal("server did not return")
		return nil
	}
}

func TestOversizedOption(t *testing.T) {
	c := newRawClient(t, blockdevtest.NewMem(1<<20, 512), DefaultOptions())
	c.greet()
	// 1 MiB of option data: drained, answered NBD_REP_ERR_TOO_BIG.
	c.write(optBytes(0x1234, make([]byte, 1<<20)))
	if typ, _ := c.optReply(0x1234); typ != repErrTooBig {
		t.Fatalf("1 MiB option answered %#x", typ)
	}
	// Still in sync: an unknown small option gets ERR_UNSUP.
	c.write(optBytes(0x99, []byte("x")))
	if typ, _ := c.optReply(0x99); typ != repErrUnsup {
		t.Fatalf("unknown option answered %#x", typ)
	}
	// A claimed 4 GiB option: the server hangs up without allocating it.
	h := binary.BigEndian.AppendUint64(nil, optMagic)
	h = binary.BigEndian.AppendUint32(h, optGo)
	h = binary.BigEndian.AppendUint32(h, 0xffffffff)
	c.write(h)
	if err := c.waitServer(); err == nil {
		t.Fatal("server accepted a 4 GiB option")
	}
}

func TestMalformedOptions(t *testing.T) {
	c := newRawClient(t, blockdevtest.NewMem(1<<20, 512), DefaultOptions())
	c.greet()
	for _, tc := range []struct {
		opt  uint32
		data []byte
		want uint32
	}{
		{optGo, []byte{0, 0, 0, 9, 0, 0}, repErrInvalid},                                // name longer than data
		{optInfo, []byte{0, 0, 0, 0, 0, 2, 0, 3}, repErrInvalid},                        // 2 requests, 1 present
		{optInfo, []byte{0, 0, 0, 1, 'x', 0, 0}, repErrUnknown},                         // unknown export
		{optSetMetaContext, []byte{0, 0, 0, 0, 0, 0, 0, 0}, repErrInvalid},              // before STRUCTURED_REPLY
		{optStructuredReply, []byte{1}, repErrInvalid},                                  // takes no data
		{optList, []byte{1}, repErrInvalid},                                             // takes no data
		{optListMetaContext, []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9}, repErrInvalid}, // query past end
		{optStartTLS, nil, repErrUnsup},
	} {
		c.write(optBytes(tc.opt, tc.data))
		if typ, _ := c.optReply(tc.opt); typ != tc.want {
			t.Errorf("option %d %x answered %#x, want %#x", tc.opt, tc.data, typ, tc.want)
		}
	}
	c.goExport(false)
	c.write(reqBytes(0, cmdDisc, 1, 0, 0))
	if err := c.waitServer(); err != nil {
		t.Fatalf("server after DISC: %v", err)
	}
}

func TestRequestErrors(t *testing.T) {
	dev := blockdevtest.NewMem(1<<20, 512)
	opts := DefaultOptions()
	opts.MaxRequest = 64 << 10
	c := newRawClient(t, dev, opts)
	c.greet()
	c.goExport(false)
	for i, tc := range []struct {
		flags, typ uint16
		off        uint64
		n          uint32
		payload    int
		want       uint32
	}{
		{0, cmdRead, 0, 128 << 10, 0, errOverflow},          // larger than the advertised max
		{0, cmdWrite, 0, 128 << 10, 128 << 10, errOverflow}, // payload drained
		{0, cmdRead, 1 << 20, 512, 0, errInval},             // beyond the end
		{0, cmdRead, 1<<20 - 512, 1024, 0, errInval},        // straddles the end
		{0, cmdWrite, 1 << 20, 512, 512, errNoSpc},          // write beyond the end
		{0, cmdWriteZeroes, 1<<20 - 512, 4096, 0, errNoSpc},
		{0, cmdTrim, 0xffffffffffffff00, 512, 0, errInval},      // offset overflow
		{0, cmdRead, 100, 512, 0, errInval},                     // unaligned
		{0, cmdWrite, 0, 100, 100, errInval},                    // unaligned, drained
		{0, cmdBlockStatus, 0, 512, 0, errInval},                // no meta context
		{cmdFlagFastZero, cmdWriteZeroes, 0, 512, 0, errNotSup}, // never fast
		{0, 42, 0, 0, 0, errInval},                              // unknown command
		{0, cmdTrim, 0, 1 << 20, 0, 0},                          // trims may exceed max payload
		{0, cmdWriteZeroes, 0, 1 << 20, 0, 0},
		{0, cmdCache, 0, 4096, 0, 0},
		{0, cmdFlush, 0, 0, 0, 0},
	} {
		c.write(append(reqBytes(tc.flags, tc.typ, uint64(i), tc.off, tc.n), make([]byte, tc.payload)...))
		errno, cookie := c.simpleReply()
		if cookie != uint64(i) || errno != tc.want {
			t.Errorf("case %d: errno %d cookie %d, want %d", i, errno, cookie, tc.want)
		}
	}
	if st := c.srv.Stats(); st.Read.Errors != 4 || st.Unknown.Errors != 1 {
		t.Errorf("stats %+v", st)
	}
	c.write(reqBytes(0, cmdDisc, 99, 0, 0))
	c.waitServer()
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	dev := blockdevtest.NewMem(1<<20, 512)
	dev.SetReadOnly(true)
	c := newRawClient(t, dev, DefaultOptions())
	c.greet()
	c.goExport(false)
	c.write(append(reqBytes(0, cmdWrite, 1, 0, 512), make([]byte, 512)...))
	c.write(reqBytes(0, cmdTrim, 2, 0, 512))
	c.write(reqBytes(0, cmdWriteZeroes, 3, 0, 512))
	for i := 0; i < 3; i++ {
		if errno, _ := c.simpleReply(); errno != errPerm {
			t.Fatalf("write on read-only export: errno %d", errno)
		}
	}
}

func TestRequestsAfterDisc(t *testing.T) {
	dev := blockdevtest.NewMem(1<<20, 512)
	c := newRawClient(t, dev, DefaultOptions())
	c.greet()
	c.goExport(false)
	b := reqBytes(0, cmdRead, 1, 0, 4096)
	b = append(b, reqBytes(0, cmdDisc, 2, 0, 0)...)
	b = append(b, reqBytes(0, cmdRead, 3, 0, 4096)...) // never answered
	go c.nc.Write(b)
	errno, cookie := c.simpleReply()
	if errno != 0 || cookie != 1 {
		t.Fatalf("read before DISC: %d %d", errno, cookie)
	}
	c.read(4096)
	if err := c.waitServer(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.br.ReadByte(); err == nil {
		t.Fatal("server answered after DISC")
	}
}

func TestAbruptCloseMidRequest(t *testing.T) {
	dev := blockdevtest.NewMem(1<<20, 512)
	c := newRawClient(t, dev, DefaultOptions())
	c.greet()
	c.goExport(true)
	// A WRITE whose payload stops half-way.
	c.write(append(reqBytes(0, cmdWrite, 1, 0, 64<<10), make([]byte, 1000)...))
	c.nc.Close()
	err := c.waitServer()
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("server: %v, want an unexpected EOF", err)
	}
	// And half a header.
	c = newRawClient(t, dev, DefaultOptions())
	c.greet()
	c.goExport(false)
	c.write(reqBytes(0, cmdRead, 1, 0, 512)[:10])
	c.nc.Close()
	c.waitServer()
}

// 1000 pipelined requests, over a device that blocks and over one that
// completes through callbacks (blockdev.AsyncIO, as a LUN does).
func TestPipelined1000(t *testing.T) {
	t.Run("blocking", func(t *testing.T) { testPipelined1000(t, blockdevtest.NewMem(4<<20, 512)) })
	t.Run("async", func(t *testing.T) { testPipelined1000(t, &blockdevtest.Async{Mem: blockdevtest.NewMem(4<<20, 512)}) })
}

func testPipelined1000(t *testing.T, dev blockdev.Device) {
	opts := DefaultOptions()
	opts.MaxInFlight = 16
	opts.MaxInFlightBytes = 64 << 10
	opts.MaxRequest = 64 << 10
	c := newRawClient(t, dev, opts)
	c.greet()
	c.goExport(true)
	const n = 1000
	go func() {
		var b []byte
		for i := 0; i < n; i++ {
			off := uint64(i%512) * 4096
			if i%2 == 0 {
				b = append(b, reqBytes(cmdFlagFUA, cmdWrite, uint64(i), off, 4096)...)
				p := make([]byte, 4096)
				for j := range p {
					p[j] = byte(i)
				}
				b = append(b, p...)
			} else {
				b = append(b, reqBytes(cmdFlagDF, cmdRead, uint64(i), off, 4096)...)
			}
		}
		c.nc.Write(b)
	}()
	seen := make(map[uint64]bool)
	for len(seen) < n {
		h := c.read(4)
		switch binary.BigEndian.Uint32(h) {
		case simpleMagic:
			r := c.read(12)
			if e := binary.BigEndian.Uint32(r); e != 0 {
				t.Fatalf("errno %d", e)
			}
			seen[binary.BigEndian.Uint64(r[4:])] = true
		case structuredMagic:
			r := c.read(16)
			flags, typ := binary.BigEndian.Uint16(r), binary.BigEndian.Uint16(r[2:])
			cookie, l := binary.BigEndian.Uint64(r[4:]), binary.BigEndian.Uint32(r[12:])
			if flags != replyFlagDone || typ != replyOffsetData || l != 8+4096 {
				t.Fatalf("chunk flags %d type %d len %d", flags, typ, l)
			}
			p := c.read(int(l))
			if binary.BigEndian.Uint64(p) != uint64(cookie%512)*4096 {
				t.Fatalf("chunk offset %d for cookie %d", binary.BigEndian.Uint64(p), cookie)
			}
			seen[cookie] = true
		default:
			t.Fatalf("bad magic %x", h)
		}
	}
	c.write(reqBytes(0, cmdDisc, 0, 0, 0))
	if err := c.waitServer(); err != nil {
		t.Fatal(err)
	}
	if st := c.srv.Stats(); st.Read.Requests != n/2 || st.Write.Requests != n/2 || st.Write.Bytes != n/2*4096 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBlockStatusReplies(t *testing.T) {
	dev := blockdevtest.NewMem(1<<20, 512)
	dev.WriteAt(context.Background(), make([]byte, 4096), 8192, false)
	c := newRawClient(t, dev, DefaultOptions())
	c.greet()
	c.write(optBytes(optStructuredReply, nil))
	c.optReply(optStructuredReply)
	q := []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, byte(len(metaBaseAllocation))}
	c.write(optBytes(optSetMetaContext, append(q, metaBaseAllocation...)))
	typ, data := c.optReply(optSetMetaContext)
	if typ != repMetaContext || binary.BigEndian.Uint32(data) != metaAllocationID || string(data[4:]) != metaBaseAllocation {
		t.Fatalf("SET_META_CONTEXT: %#x %q", typ, data)
	}
	if typ, _ := c.optReply(optSetMetaContext); typ != repAck {
		t.Fatal("no ACK")
	}
	c.goExport(false)
	status := func(flags uint16, off uint64, n uint32) [][2]uint32 {
		c.write(reqBytes(flags, cmdBlockStatus, 7, off, n))
		h := c.read(20)
		if binary.BigEndian.Uint16(h[6:]) != replyBlockStatus || binary.BigEndian.Uint16(h[4:]) != replyFlagDone {
			t.Fatalf("chunk %x", h)
		}
		p := c.read(int(binary.BigEndian.Uint32(h[16:])))
		var out [][2]uint32
		for i := 4; i < len(p); i += 8 {
			out = append(out, [2]uint32{binary.BigEndian.Uint32(p[i:]), binary.BigEndian.Uint32(p[i+4:])})
		}
		return out
	}
	got := status(0, 0, 1<<20)
	want := [][2]uint32{{8192, 3}, {4096, 0}, {1<<20 - 12288, 3}}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("extents %v, want %v", got, want)
	}
	if got := status(cmdFlagReqOne, 4096, 8192); len(got) != 1 || got[0] != [2]uint32{4096, 3} {
		t.Fatalf("REQ_ONE extents %v", got)
	}
}

func TestExportNameFallback(t *testing.T) {
	for _, noZeroes := range []bool{true, false} {
		dev := blockdevtest.NewMem(1<<20, 512)
		c := newRawClient(t, dev, DefaultOptions())
		c.read(18)
		if noZeroes {
			c.write([]byte{0, 0, 0, 3})
		} else {
			c.write([]byte{0, 0, 0, 1})
		}
		// nbd-client: GO without info requests is fine too, but old clients
		// send EXPORT_NAME.
		c.write(optBytes(optExportName, nil))
		n := 10
		if !noZeroes {
			n += 124
		}
		b := c.read(n)
		if binary.BigEndian.Uint64(b) != 1<<20 || binary.BigEndian.Uint16(b[8:])&FlagHasFlags == 0 {
			t.Fatalf("EXPORT_NAME reply %x", b[:10])
		}
		c.write(reqBytes(0, cmdFlush, 5, 0, 0))
		if errno, cookie := c.simpleReply(); errno != 0 || cookie != 5 {
			t.Fatal("flush failed")
		}
		c.write(reqBytes(0, cmdDisc, 6, 0, 0))
		if err := c.waitServer(); err != nil {
			t.Fatal(err)
		}
	}
	// Unknown export name: EXPORT_NAME cannot fail, the server hangs up.
	c := newRawClient(t, blockdevtest.NewMem(1<<20, 512), DefaultOptions())
	c.greet()
	c.write(optBytes(optExportName, []byte("nope")))
	if err := c.waitServer(); err == nil {
		t.Fatal("unknown export accepted")
	}
}

// A failed I/O on the non-blocking path gets its NBD error (EIO for a
// medium error, ENOSPC for a full thin pool) and the connection goes on.
func TestAsyncErrors(t *testing.T) {
	dev := &blockdevtest.Async{Mem: blockdevtest.NewMem(1<<20, 512), Fail: func(write bool, off int64) error {
		switch {
		case off == 4096 && !write:
			return fmt.Errorf("read: %w", blockdev.ErrMedium)
		case off == 8192 && write:
			return fmt.Errorf("write: %w", blockdev.ErrNoSpace)
		}
		return nil
	}}
	c := newRawClient(t, dev, DefaultOptions())
	c.greet()
	c.goExport(false)
	c.write(reqBytes(0, cmdRead, 1, 4096, 512))
	if e, cookie := c.simpleReply(); e != errIO || cookie != 1 {
		t.Errorf("failed read: errno %d cookie %d, want EIO", e, cookie)
	}
	c.write(append(reqBytes(0, cmdWrite, 2, 8192, 512), make([]byte, 512)...))
	if e, cookie := c.simpleReply(); e != errNoSpc || cookie != 2 {
		t.Errorf("failed write: errno %d cookie %d, want ENOSPC", e, cookie)
	}
	c.write(reqBytes(0, cmdRead, 3, 0, 512))
	if e, cookie := c.simpleReply(); e != 0 || cookie != 3 {
		t.Errorf("read after the failures: errno %d cookie %d", e, cookie)
	}
	c.read(512)
	c.write(reqBytes(0, cmdDisc, 0, 0, 0))
	if err := c.waitServer(); err != nil {
		t.Fatal(err)
	}
}
