package nvmetcp

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// DefaultPort is the IANA port of NVMe/TCP I/O controllers, DiscoveryPort
// the one of discovery controllers.
const (
	DefaultPort   = "4420"
	DiscoveryPort = "8009"
)

// Config describes one association with a controller.
type Config struct {
	// Addr is host[:port] (DefaultPort when none).
	Addr string
	// SubNQN is the subsystem NQN (pdu.DiscoveryNQN for discovery).
	SubNQN string
	// HostNQN and HostID identify this host; a reconnect uses the same.
	// Empty: DefaultHostNQN / an ID derived from it.
	HostNQN string
	HostID  [16]byte
	// IOQueues is the number of I/O queues (TCP connections) to ask for
	// (default 2); QueueDepth the commands in flight on each (default 64,
	// lowered to what CAP.MQES and MAXCMD allow).
	IOQueues   int
	QueueDepth int
	// HeaderDigest and DataDigest ask for CRC32C digests.
	HeaderDigest, DataDigest bool
	// KeepAlive is the keep-alive timeout (KATO) given in Connect; a Keep
	// Alive command goes out every KeepAlive/2. Default 5 s (the Linux
	// host's NVME_DEFAULT_KATO), so a reconnect holds writes 11 s; negative:
	// none. It also bounds the write fence after a reconnect (fence.go):
	// write-class commands wait until 2×KeepAlive + 1 s after the old
	// association was reset; without a keep-alive timeout nothing bounds
	// the old association and they fail after a reconnect.
	KeepAlive time.Duration
	// CommandTimeout bounds one command; on expiry the queue's connection
	// is closed and the controller reconnected (default 30 s).
	CommandTimeout time.Duration
	// ReconnectTimeout is how long a command waits for the association to
	// come back after a connection fails, retrying (default 30 s;
	// negative: fail at once). A write-class command whose write fence
	// would end later fails at once with blockdev.ErrUnavailable.
	ReconnectTimeout time.Duration
	// NoReconnect: once a connection fails the controller stays down
	// (every command fails with ErrConnection) and Done is closed; the
	// multipath layer, not the controller, decides what happens next.
	NoReconnect bool
	// MaxTransfer caps the bytes per Read/Write command (default 1 MiB,
	// lowered to the controller's MDTS).
	MaxTransfer int
	// Dial opens a TCP connection (default net.Dialer).
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *logrus.Entry
}

func (c *Config) setDefaults() error {
	if c.Addr == "" {
		return errors.New("nvmetcp: no address")
	}
	c.Addr = withPort(c.Addr, DefaultPort)
	if c.SubNQN == "" {
		return errors.New("nvmetcp: no subsystem NQN")
	}
	if len(c.SubNQN) > 223 {
		return fmt.Errorf("nvmetcp: subsystem NQN of %d bytes (at most 223)", len(c.SubNQN))
	}
	if c.HostNQN == "" {
		c.HostNQN = DefaultHostNQN()
	}
	if c.HostID == ([16]byte{}) {
		c.HostID = HostIDFor(c.HostNQN)
	}
	if c.IOQueues <= 0 {
		c.IOQueues = 2
	}
	c.IOQueues = min(c.IOQueues, 64)
	if c.QueueDepth <= 0 {
		c.QueueDepth = 64
	}
	c.QueueDepth = min(c.QueueDepth, 1024)
	if c.KeepAlive == 0 {
		c.KeepAlive = 5 * time.Second
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = 30 * time.Second
	}
	if c.ReconnectTimeout == 0 {
		c.ReconnectTimeout = 30 * time.Second
	}
	if c.MaxTransfer <= 0 {
		c.MaxTransfer = 1 << 20
	}
	if c.Dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}
		c.Dial = d.DialContext
	}
	if c.Logger == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		c.Logger = logrus.NewEntry(l)
	}
	return nil
}

// withPort adds port to an address without one.
func withPort(addr, port string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), port)
}

// DefaultHostNQN is nvme-cli's host NQN (/etc/nvme/hostnqn) when the host
// has one, else a stable UUID-form NQN derived from the machine ID (or the
// host name), so reconnects and restarts present the same host.
func DefaultHostNQN() string {
	if b, err := os.ReadFile("/etc/nvme/hostnqn"); err == nil {
		if s := strings.TrimSpace(string(b)); strings.HasPrefix(s, "nqn.") {
			return s
		}
	}
	seed := ""
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		seed = strings.TrimSpace(string(b))
	}
	if seed == "" {
		seed, _ = os.Hostname()
	}
	return "nqn.2014-08.org.nvmexpress:uuid:" + formatUUID(stableUUID("lunbridge-hostnqn-v1", seed))
}

// HostIDFor returns the host ID of hostNQN: /etc/nvme/hostid when it goes
// with the system host NQN, the UUID of a uuid-form NQN, else a UUID
// derived from the NQN.
func HostIDFor(hostNQN string) [16]byte {
	if b, err := os.ReadFile("/etc/nvme/hostnqn"); err == nil && strings.TrimSpace(string(b)) == hostNQN {
		if b, err := os.ReadFile("/etc/nvme/hostid"); err == nil {
			if id, ok := parseUUID(strings.TrimSpace(string(b))); ok {
				return id
			}
		}
	}
	if _, u, ok := strings.Cut(hostNQN, ":uuid:"); ok {
		if id, ok := parseUUID(u); ok {
			return id
		}
	}
	return stableUUID("lunbridge-hostid-v1", hostNQN)
}

func stableUUID(domain, seed string) [16]byte {
	s := sha256.Sum256([]byte(domain + "\x00" + seed))
	var id [16]byte
	copy(id[:], s[:])
	id[6] = id[6]&0x0f | 0x50 // name-based version 5 layout
	id[8] = id[8]&0x3f | 0x80
	return id
}

func formatUUID(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func parseUUID(s string) ([16]byte, bool) {
	var id [16]byte
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 {
		return id, false
	}
	for i := range 16 {
		var v byte
		if _, err := fmt.Sscanf(h[2*i:2*i+2], "%02x", &v); err != nil {
			return id, false
		}
		id[i] = v
	}
	return id, true
}

// Errors.
var (
	// ErrConnection wraps every failure of a queue's connection: the
	// command may or may not have run.
	ErrConnection = errors.New("nvmetcp: connection failed")
	ErrTimeout    = errors.New("nvmetcp: command timed out")
	ErrProtocol   = errors.New("nvmetcp: protocol error")
)

// StatusError is a command that completed with a non-zero status.
type StatusError struct {
	Op      string
	Status  pdu.Status
	Fabrics bool // a Fabrics command: SCT 1 codes are Connect's
}

func (e *StatusError) Error() string {
	if e.Fabrics {
		return fmt.Sprintf("nvmetcp: %s: %s", e.Op, e.Status.FabricsString())
	}
	return fmt.Sprintf("nvmetcp: %s: %v", e.Op, e.Status)
}

// TermError is a C2HTermReq: the controller ended the connection.
type TermError struct{ FES uint16 }

func (e *TermError) Error() string {
	names := map[uint16]string{1: "invalid PDU header field", 2: "PDU sequence error",
		3: "header digest error", 4: "data transfer out of range", 5: "data transfer limit exceeded",
		6: "unsupported parameter"}
	return fmt.Sprintf("nvmetcp: controller terminated the connection: %s (FES %#x)", names[e.FES], e.FES)
}
