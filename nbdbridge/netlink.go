package nbdbridge

import (
	"encoding/binary"
	"time"

	"github.com/mdlayher/netlink"
)

// Generic netlink family "nbd" (include/uapi/linux/nbd-netlink.h).
const (
	genlFamily  = "nbd"
	genlVersion = 1

	nlCmdConnect     = 1
	nlCmdDisconnect  = 2
	nlCmdReconfigure = 3
	nlCmdLinkDead    = 4
	nlCmdStatus      = 5

	nlAttrIndex             = 1 // u32
	nlAttrSizeBytes         = 2 // u64
	nlAttrBlockSizeBytes    = 3 // u64
	nlAttrTimeout           = 4 // u64, seconds
	nlAttrServerFlags       = 5 // u64
	nlAttrClientFlags       = 6 // u64
	nlAttrSockets           = 7 // nested: SOCK_ITEM{SOCK_FD}
	nlAttrDeadConnTimeout   = 8 // u64, seconds
	nlAttrDeviceList        = 9 // nested: DEVICE_ITEM{DEVICE_INDEX, DEVICE_CONNECTED}
	nlAttrBackendIdentifier = 10

	nlSockItem = 1
	nlSockFD   = 1 // u32

	nlDeviceItem      = 1
	nlDeviceIndex     = 1 // u32
	nlDeviceConnected = 2 // u8

	// Client flags (NBD_CFLAG_*).
	ClientFlagDestroyOnDisconnect = 1 << 0
	ClientFlagDisconnectOnClose   = 1 << 1
)

// nlConfig is what CONNECT and RECONFIGURE carry.
type nlConfig struct {
	Index           int // < 0: let the kernel pick (CONNECT only)
	Size            uint64
	BlockSize       uint64
	Timeout         time.Duration // 0: kernel default
	DeadConnTimeout time.Duration // 0: kernel default (none)
	ServerFlags     uint64
	ClientFlags     uint64
	FDs             []int
	Backend         string
}

// encodeConnect builds the attributes of NBD_CMD_CONNECT: INDEX (when
// chosen), SIZE_BYTES, BLOCK_SIZE_BYTES, TIMEOUT, SERVER_FLAGS, CLIENT_FLAGS,
// SOCKETS, DEAD_CONN_TIMEOUT, BACKEND_IDENTIFIER — in that order.
func encodeConnect(c nlConfig) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.NativeEndian
	if c.Index >= 0 {
		ae.Uint32(nlAttrIndex, uint32(c.Index))
	}
	ae.Uint64(nlAttrSizeBytes, c.Size)
	ae.Uint64(nlAttrBlockSizeBytes, c.BlockSize)
	if c.Timeout > 0 {
		ae.Uint64(nlAttrTimeout, seconds(c.Timeout))
	}
	ae.Uint64(nlAttrServerFlags, c.ServerFlags)
	ae.Uint64(nlAttrClientFlags, c.ClientFlags)
	encodeSockets(ae, c.FDs)
	if c.DeadConnTimeout > 0 {
		ae.Uint64(nlAttrDeadConnTimeout, seconds(c.DeadConnTimeout))
	}
	if c.Backend != "" {
		ae.String(nlAttrBackendIdentifier, c.Backend)
	}
	return ae.Encode()
}

// encodeReconfigure builds NBD_CMD_RECONFIGURE: INDEX, TIMEOUT,
// CLIENT_FLAGS, SOCKETS, DEAD_CONN_TIMEOUT. The kernel puts each socket in
// the place of a dead connection.
func encodeReconfigure(c nlConfig) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.NativeEndian
	ae.Uint32(nlAttrIndex, uint32(c.Index))
	if c.Timeout > 0 {
		ae.Uint64(nlAttrTimeout, seconds(c.Timeout))
	}
	ae.Uint64(nlAttrClientFlags, c.ClientFlags)
	encodeSockets(ae, c.FDs)
	if c.DeadConnTimeout > 0 {
		ae.Uint64(nlAttrDeadConnTimeout, seconds(c.DeadConnTimeout))
	}
	// A device connected with a backend identifier must be reconfigured
	// with the same one (Linux: "must specify backend", EINVAL).
	if c.Backend != "" {
		ae.String(nlAttrBackendIdentifier, c.Backend)
	}
	return ae.Encode()
}

func encodeSockets(ae *netlink.AttributeEncoder, fds []int) {
	ae.Nested(nlAttrSockets, func(ne *netlink.AttributeEncoder) error {
		for _, fd := range fds {
			ne.Nested(nlSockItem, func(ie *netlink.AttributeEncoder) error {
				ie.Uint32(nlSockFD, uint32(fd))
				return nil
			})
		}
		return nil
	})
}

// encodeIndex builds DISCONNECT and STATUS: just INDEX (STATUS without it
// lists every device).
func encodeIndex(index int) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.NativeEndian
	if index >= 0 {
		ae.Uint32(nlAttrIndex, uint32(index))
	}
	return ae.Encode()
}

// DeviceStatus is one entry of NBD_CMD_STATUS.
type DeviceStatus struct {
	Index     int
	Connected bool
}

// decodeStatus parses a STATUS reply: DEVICE_LIST{DEVICE_ITEM{INDEX, CONNECTED}...}.
func decodeStatus(b []byte) ([]DeviceStatus, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.NativeEndian
	var out []DeviceStatus
	for ad.Next() {
		if ad.Type() != nlAttrDeviceList {
			continue
		}
		ad.Nested(func(ld *netlink.AttributeDecoder) error {
			for ld.Next() {
				if ld.Type() != nlDeviceItem {
					continue
				}
				var d DeviceStatus
				ld.Nested(func(id *netlink.AttributeDecoder) error {
					for id.Next() {
						switch id.Type() {
						case nlDeviceIndex:
							d.Index = int(id.Uint32())
						case nlDeviceConnected:
							d.Connected = id.Uint8() != 0
						}
					}
					return nil
				})
				out = append(out, d)
			}
			return nil
		})
	}
	return out, ad.Err()
}

// decodeIndex finds NBD_ATTR_INDEX in a CONNECT reply.
func decodeIndex(b []byte) (int, bool) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return 0, false
	}
	ad.ByteOrder = binary.NativeEndian
	for ad.Next() {
		if ad.Type() == nlAttrIndex {
			return int(ad.Uint32()), true
		}
	}
	return 0, false
}

func seconds(d time.Duration) uint64 {
	s := uint64((d + time.Second - 1) / time.Second)
	if s == 0 {
		s = 1
	}
	return s
}
