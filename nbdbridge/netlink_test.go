package nbdbridge

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
)

// The expected bytes below follow include/uapi/linux/netlink.h: struct
// nlattr { __u16 nla_len; __u16 nla_type; } in host order (little-endian
// here), payload padded to 4 bytes, NLA_F_NESTED = 0x8000 on nests; the
// attribute numbers and types follow nbd-netlink.h and nbd_attr_policy.

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	// Each line: hex groups, then an optional comment.
	var hx strings.Builder
	for _, line := range strings.Split(s, "\n") {
		for _, f := range strings.Fields(line) {
			if _, err := hex.DecodeString(f); err != nil {
				break
			}
			hx.WriteString(f)
		}
	}
	b, err := hex.DecodeString(hx.String())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func requireLittleEndian(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("expected bytes are written for a little-endian host")
	}
}

func TestEncodeConnect(t *testing.T) {
	requireLittleEndian(t)
	got, err := encodeConnect(nlConfig{
		Index: 3, Size: 1 << 30, BlockSize: 512, Timeout: 30 * time.Second,
		DeadConnTimeout: 60 * time.Second,
		ServerFlags:     uint64(FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagCanMultiConn),
		ClientFlags:     ClientFlagDisconnectOnClose,
		FDs:             []int{7, 9},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, `
		0800 0100 03000000                   INDEX u32 3
		0c00 0200 00000040 00000000          SIZE_BYTES u64 1 GiB
		0c00 0300 00020000 00000000          BLOCK_SIZE_BYTES u64 512
		0c00 0400 1e000000 00000000          TIMEOUT u64 30
		0c00 0500 2d010000 00000000          SERVER_FLAGS 0x12d
		0c00 0600 02000000 00000000          CLIENT_FLAGS DISCONNECT_ON_CLOSE
		1c00 0780                            SOCKETS (nested, 28 bytes)
		  0c00 0180                          SOCK_ITEM
		    0800 0100 07000000               SOCK_FD 7
		  0c00 0180                          SOCK_ITEM
		    0800 0100 09000000               SOCK_FD 9
		0c00 0800 3c000000 00000000          DEAD_CONN_TIMEOUT 60`)
	if !bytes.Equal(got, want) {
		t.Fatalf("CONNECT attributes\n got %x\nwant %x", got, want)
	}

	// Any free device: no INDEX; a backend string is NUL-terminated.
	got, err = encodeConnect(nlConfig{Index: -1, Size: 4096, BlockSize: 4096, FDs: []int{5}, Backend: "ab"})
	if err != nil {
		t.Fatal(err)
	}
	want = unhex(t, `
		0c00 0200 00100000 00000000
		0c00 0300 00100000 00000000
		0c00 0500 00000000 00000000
		0c00 0600 00000000 00000000
		1000 0780 0c00 0180 0800 0100 05000000
		0700 0a00 616200 00`)
	if !bytes.Equal(got, want) {
		t.Fatalf("CONNECT (any index)\n got %x\nwant %x", got, want)
	}
}

func TestEncodeReconfigureDisconnectStatus(t *testing.T) {
	requireLittleEndian(t)
	got, err := encodeReconfigure(nlConfig{Index: 0, FDs: []int{4}, DeadConnTimeout: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, `
		0800 0100 00000000
		0c00 0600 00000000 00000000
		1000 0780 0c00 0180 0800 0100 04000000
		0c00 0800 02000000 00000000`) // 1.5 s rounds up to 2
	if !bytes.Equal(got, want) {
		t.Fatalf("RECONFIGURE\n got %x\nwant %x", got, want)
	}
	got, _ = encodeIndex(12)
	if want := unhex(t, "0800 0100 0c000000"); !bytes.Equal(got, want) {
		t.Fatalf("DISCONNECT %x, want %x", got, want)
	}
	if got, _ := encodeIndex(-1); len(got) != 0 {
		t.Fatalf("STATUS(all) = %x, want no attributes", got)
	}
	// Generic netlink header: cmd, version, reserved u16.
	msg, err := genetlink.Message{Header: genetlink.Header{Command: nlCmdDisconnect, Version: genlVersion}}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{2, 1, 0, 0}; !bytes.Equal(msg, want) {
		t.Fatalf("genl header %x, want %x", msg, want)
	}
}

func TestDecodeStatusAndIndex(t *testing.T) {
	requireLittleEndian(t)
	// DEVICE_LIST{DEVICE_ITEM{INDEX u32, CONNECTED u8 (padded)}...}
	b := unhex(t, `
		2c00 0980
		  1400 0180 0800 0100 00000000 0500 0200 01000000
		  1400 0180 0800 0100 05000000 0500 0200 00000000`)
	got, err := decodeStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := []DeviceStatus{{0, true}, {5, false}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("status %+v, want %+v", got, want)
	}
	if idx, ok := decodeIndex(unhex(t, "0800 0100 07000000")); !ok || idx != 7 {
		t.Fatalf("decodeIndex = %d, %v", idx, ok)
	}
}

func TestIoctlSequence(t *testing.T) {
	// _IO(0xab, n) = 0xab<<8 | n (include/uapi/linux/nbd.h).
	for n, v := range []uintptr{ioctlSetSock, ioctlSetBlksize, ioctlSetSize, ioctlDoIt, ioctlClearSock,
		ioctlClearQue, ioctlPrintDebug, ioctlSetSizeBlocks, ioctlDisconnect, ioctlSetTimeout, ioctlSetFlags} {
		if v != 0xab<<8|uintptr(n) {
			t.Errorf("ioctl %d = %#x", n, v)
		}
	}
	got := ioctlSetup(1<<30, 4096, 0x12d, 30, []int{5, 6})
	want := []ioctlCall{
		{0xab01, 4096},           // NBD_SET_BLKSIZE
		{0xab07, 1 << 18},        // NBD_SET_SIZE_BLOCKS
		{0xab04, 0},              // NBD_CLEAR_SOCK
		{0xab0a, 0x12d},          // NBD_SET_FLAGS
		{0xab09, 30},             // NBD_SET_TIMEOUT
		{0xab00, 5}, {0xab00, 6}, // NBD_SET_SOCK per connection
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ioctl sequence %v, want %v", got, want)
	}
}

func TestParseDevice(t *testing.T) {
	for in, want := range map[string]int{"/dev/nbd0": 0, "/dev/nbd15": 15, "nbd3": 3} {
		if got, err := ParseDevice(in); err != nil || got != want {
			t.Errorf("ParseDevice(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"/dev/sda", "/dev/nbd", "/dev/nbd-1", "/dev/nbd01x", "/dev/nbd01"} {
		if _, err := ParseDevice(in); err == nil {
			t.Errorf("ParseDevice(%q) succeeded", in)
		}
	}
}

func TestAttachWithoutKernelNBD(t *testing.T) {
	// This machine's kernel has no nbd: Attach must fail cleanly, not hang.
	if _, err := Status(-1); err == nil {
		t.Skip("kernel has the nbd netlink family; the VM lab covers the real attach")
	}
	s := NewServer(newMemForTest(), DefaultOptions())
	_, err := s.Attach(t.Context(), 9999, AttachOptions{})
	if err == nil {
		t.Fatal("Attach to /dev/nbd9999 succeeded")
	}
	t.Log(err)
}
