package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/nvmetcp"
	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// nvmeScheme prefixes NVMe/TCP device URLs.
const nvmeScheme = "nvme+tcp://"

func init() {
	openNVMe = openNVMeNamespace
	exitClassifiers = append(exitClassifiers, func(err error) (int, bool) {
		var se *nvmetcp.StatusError
		var te *nvmetcp.TermError
		switch {
		case errors.Is(err, errBadNVMeURL):
			return ExitUsage, true
		case errors.As(err, &se):
			if se.Status.SCT() == 1 {
				return ExitLogin, true // Connect refused
			}
			return ExitSCSI, true
		case errors.As(err, &te), errors.Is(err, nvmetcp.ErrConnection), errors.Is(err, nvmetcp.ErrProtocol):
			return ExitConnect, true
		}
		return 0, false
	})
}

var errBadNVMeURL = errors.New("bad NVMe/TCP URL")

// nvmeURL is a parsed nvme+tcp://host[:port]/subsystem-nqn[/nsid][?query].
type nvmeURL struct {
	Addr   string // host:port
	SubNQN string
	NSID   uint32
	HasNS  bool
	Query  url.Values
}

func (u *nvmeURL) String() string {
	s := nvmeScheme + u.Addr + "/" + u.SubNQN
	if u.HasNS {
		s += "/" + strconv.FormatUint(uint64(u.NSID), 10)
	}
	return s
}

// parseNVMeURL parses nvme+tcp://host[:4420]/subsystem-nqn[/nsid]; query
// keys: header_digest, data_digest (crc32c or none), queues (I/O queues),
// host_nqn.
func parseNVMeURL(raw string) (*nvmeURL, error) {
	rest, ok := strings.CutPrefix(raw, nvmeScheme)
	if !ok {
		return nil, fmt.Errorf("%w: %q does not start with %s", errBadNVMeURL, raw, nvmeScheme)
	}
	var query string
	rest, query, _ = strings.Cut(rest, "?")
	host, path, _ := strings.Cut(rest, "/")
	if host == "" {
		return nil, fmt.Errorf("%w: %q names no host: want nvme+tcp://host[:port]/subsystem-nqn/nsid", errBadNVMeURL, raw)
	}
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(strings.Trim(host, "[]"), nvmetcp.DefaultPort)
	}
	u := &nvmeURL{Addr: host}
	path = strings.TrimSuffix(path, "/")
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		n, err := strconv.ParseUint(path[i+1:], 10, 32)
		if err != nil || n == 0 || n == 0xffffffff {
			return nil, fmt.Errorf("%w: %q: namespace ID %q is not a number from 1 to 4294967294", errBadNVMeURL, raw, path[i+1:])
		}
		u.NSID, u.HasNS, path = uint32(n), true, path[:i]
	}
	if p, err := url.PathUnescape(path); err == nil {
		path = p
	}
	u.SubNQN = path
	if u.SubNQN != "" && !strings.HasPrefix(u.SubNQN, "nqn.") {
		return nil, fmt.Errorf("%w: %q: %q is not an NQN (nqn.yyyy-mm.reverse-domain:name)", errBadNVMeURL, raw, u.SubNQN)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", errBadNVMeURL, raw, err)
	}
	u.Query = q
	return u, nil
}

// nvmeConfig builds the host configuration: the URL's query, else the
// global flags shared with iSCSI (--timeout, --command-timeout,
// --replacement-timeout, --queue-depth, --header-digest, --data-digest).
func nvmeConfig(c *cli.Context, u *nvmeURL) (nvmetcp.Config, error) {
	cfg := nvmetcp.Config{Addr: u.Addr, SubNQN: u.SubNQN, HostNQN: os.Getenv("LUNBRIDGE_HOST_NQN"),
		Logger: logrus.NewEntry(logrus.StandardLogger()).WithField("nvme", u.Addr)}
	if v := u.Query.Get("host_nqn"); v != "" {
		cfg.HostNQN = v
	}
	wantCRC := func(key, flag string) (bool, error) {
		v := u.Query.Get(key)
		if v == "" {
			v = c.String(flag)
		}
		first, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(v)), ",")
		switch first {
		case "", "none":
			return false, nil
		case "crc32c":
			return true, nil
		}
		return false, usageErrorf("%s: %q is not None or CRC32C", key, v)
	}
	var err error
	if cfg.HeaderDigest, err = wantCRC("header_digest", "header-digest"); err != nil {
		return cfg, err
	}
	if cfg.DataDigest, err = wantCRC("data_digest", "data-digest"); err != nil {
		return cfg, err
	}
	if v := u.Query.Get("queues"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			return cfg, usageErrorf("queues=%s: want 1 to 64 I/O queues", v)
		}
		cfg.IOQueues = n
	}
	if c.IsSet("queue-depth") {
		cfg.QueueDepth = c.Int("queue-depth")
	}
	if d := c.Duration("command-timeout"); d > 0 {
		cfg.CommandTimeout = d
	}
	switch d := c.Duration("replacement-timeout"); {
	case legTimeout() > 0:
		cfg.ReconnectTimeout = legTimeout()
	case c.IsSet("replacement-timeout") && d == 0:
		cfg.ReconnectTimeout = -1
	case d < 0:
		cfg.ReconnectTimeout = 100 * 365 * 24 * time.Hour
	case d > 0:
		cfg.ReconnectTimeout = d
	}
	return cfg, nil
}

func dialNVMe(c *cli.Context, u *nvmeURL) (*nvmetcp.Controller, error) {
	cfg, err := nvmeConfig(c, u)
	if err != nil {
		return nil, err
	}
	ctx := c.Context
	if t := c.Duration("timeout"); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	ctrl, err := nvmetcp.Dial(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	return ctrl, nil
}

// openNVMeNamespace opens the namespace an nvme+tcp:// URL names.
func openNVMeNamespace(c *cli.Context, raw string, readOnly bool) (blockdev.Device, error) {
	return openNVMeHandle(c, raw)
}

func openNVMeHandle(c *cli.Context, raw string) (*nvmetcp.Namespace, error) {
	u, err := parseNVMeURL(expandDevice(raw))
	if err != nil {
		return nil, err
	}
	if u.SubNQN == "" {
		return nil, usageErrorf("%s names no subsystem: want nvme+tcp://host[:port]/subsystem-nqn/nsid (lunbridge discover --nvme %s lists them)", u, u.Addr)
	}
	if !u.HasNS {
		u.NSID, u.HasNS = 1, true
	}
	ctrl, err := dialNVMe(c, u)
	if err != nil {
		return nil, err
	}
	n, err := nvmetcp.OpenNamespace(c.Context, ctrl, u.NSID)
	if err != nil {
		ctrl.Close()
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	n.SetOwnsController(true)
	return n, nil
}

// nvmeInfo is the JSON schema of `lunbridge info --json` for an NVMe/TCP
// namespace.
type nvmeInfo struct {
	URL         string `json:"url"`
	Protocol    string `json:"protocol"` // "nvme-tcp"
	Subsystem   string `json:"subsystem_nqn"`
	HostNQN     string `json:"host_nqn"`
	NSID        uint32 `json:"nsid"`
	Model       string `json:"model"`
	Serial      string `json:"serial"`
	Firmware    string `json:"firmware"`
	CntlID      uint16 `json:"controller_id"`
	IOQueues    int    `json:"io_queues"`
	NGUID       string `json:"nguid,omitempty"`
	EUI64       string `json:"eui64,omitempty"`
	WWID        string `json:"wwid"`
	SizeBytes   int64  `json:"size_bytes"`
	BlockSize   int    `json:"block_size"`
	Blocks      uint64 `json:"blocks"`
	LBAFormat   int    `json:"lba_format"`
	Formats     []int  `json:"lba_formats"`
	Deallocate  bool   `json:"deallocate_supported"`
	WriteZeroes bool   `json:"write_zeroes_supported"`
	ReadZeroes  bool   `json:"deallocated_reads_zero"`
	VolatileWC  bool   `json:"volatile_write_cache"`
	ANAGroup    uint32 `json:"ana_group,omitempty"`
	ANAState    string `json:"ana_state,omitempty"` // on this controller: optimized, non-optimized, inaccessible, persistent-loss, change
}

func describeNVMe(url string, n *nvmetcp.Namespace) nvmeInfo {
	ctrl := n.Controller()
	ci, id := ctrl.Info(), n.Identify()
	info := nvmeInfo{URL: url, Protocol: "nvme-tcp", Subsystem: ctrl.Config().SubNQN, HostNQN: ctrl.Config().HostNQN,
		NSID: n.NSID(), Model: ci.Model, Serial: ci.Serial, Firmware: ci.Firmware, CntlID: ci.CntlID,
		IOQueues: ctrl.IOQueues(), WWID: n.Identity().WWID, SizeBytes: n.Size(), BlockSize: n.BlockSize(),
		Blocks: id.NSZE, LBAFormat: id.FormatIndex(), Formats: []int{},
		Deallocate: ci.ONCS&pdu.ONCSDSM != 0, WriteZeroes: ci.ONCS&pdu.ONCSWriteZeroes != 0,
		ReadZeroes: n.ReadZeroesAfterTrim(), VolatileWC: ci.VWC&1 != 0}
	if id.NGUID != ([16]byte{}) {
		info.NGUID = hex.EncodeToString(id.NGUID[:])
	}
	if id.EUI64 != ([8]byte{}) {
		info.EUI64 = hex.EncodeToString(id.EUI64[:])
	}
	for _, f := range id.Formats {
		info.Formats = append(info.Formats, 1<<f.DataShift)
	}
	return info
}

func nvmeInfoAction(c *cli.Context, raw string) error {
	n, err := openNVMeHandle(c, raw)
	if err != nil {
		return err
	}
	defer n.Close()
	info := describeNVMe(raw, n)
	if st, g, ok, err := n.ANAState(c.Context); ok && err == nil {
		info.ANAGroup, info.ANAState = g, st.String()
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, info)
	}
	yn := map[bool]string{true: "yes", false: "no"}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "URL:\t%s\n", info.URL)
	fmt.Fprintf(w, "Controller:\t%s (serial %s, firmware %s, controller ID %d, %d I/O queues)\n", info.Model, info.Serial, info.Firmware, info.CntlID, info.IOQueues)
	fmt.Fprintf(w, "Subsystem:\t%s\n", info.Subsystem)
	fmt.Fprintf(w, "Host NQN:\t%s\n", info.HostNQN)
	fmt.Fprintf(w, "Namespace:\t%d, NGUID %s, EUI-64 %s\n", info.NSID, orDash(info.NGUID), orDash(info.EUI64))
	fmt.Fprintf(w, "Size:\t%s (%d bytes, %d blocks)\n", formatBytes(info.SizeBytes), info.SizeBytes, info.Blocks)
	fmt.Fprintf(w, "LBA format:\t%d: %d-byte blocks (formats: %v)\n", info.LBAFormat, info.BlockSize, info.Formats)
	if info.ANAState != "" {
		fmt.Fprintf(w, "ANA:\tgroup %d %s on this controller\n", info.ANAGroup, info.ANAState)
	}
	fmt.Fprintf(w, "Deallocate:\t%s (reads zero after: %s), Write Zeroes: %s, volatile write cache: %s\n",
		yn[info.Deallocate], yn[info.ReadZeroes], yn[info.WriteZeroes], yn[info.VolatileWC])
	return w.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// nvmeDiscoverEntry is one record of `discover --nvme --json`.
type nvmeDiscoverEntry struct {
	Subsystem string `json:"subsystem_nqn"`
	Type      string `json:"type"` // "nvm" or "discovery"
	Address   string `json:"address"`
	PortID    uint16 `json:"port_id"`
	URL       string `json:"url"`
}

// nvmeDiscoveryConfig is the configuration for the discovery controller at
// arg (host[:8009], or an nvme+tcp:// URL whose path is ignored).
func nvmeDiscoveryConfig(c *cli.Context, arg string) (string, nvmetcp.Config, error) {
	addr := strings.TrimPrefix(arg, nvmeScheme)
	addr, _, _ = strings.Cut(addr, "/")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), nvmetcp.DiscoveryPort)
	}
	cfg, err := nvmeConfig(c, &nvmeURL{Addr: addr, SubNQN: pdu.DiscoveryNQN, Query: url.Values{}})
	return addr, cfg, err
}

func nvmeDiscoverAction(c *cli.Context, arg string) error {
	addr, cfg, err := nvmeDiscoveryConfig(c, arg)
	if err != nil {
		return err
	}
	ctx := c.Context
	if t := c.Duration("timeout"); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	entries, err := nvmetcp.Discover(ctx, cfg)
	if err != nil {
		return fmt.Errorf("NVMe discovery at %s: %w", addr, err)
	}
	out := []nvmeDiscoverEntry{}
	for _, e := range entries {
		if e.TrType != 3 { // TCP only
			continue
		}
		typ := "nvm"
		if e.SubType != 2 {
			typ = "discovery"
		}
		host := e.TrAddr
		if host == "" || host == "0.0.0.0" || host == "::" {
			host, _, _ = net.SplitHostPort(addr) // a wildcard address: where we asked
		}
		a := net.JoinHostPort(host, e.TrSvcID)
		d := nvmeDiscoverEntry{Subsystem: e.SubNQN, Type: typ, Address: a, PortID: e.PortID}
		if typ == "nvm" {
			d.URL = nvmeScheme + a + "/" + e.SubNQN
		}
		out = append(out, d)
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, out)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "SUBSYSTEM\tTYPE\tADDRESS\tPORT\tURL")
	for _, d := range out {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", d.Subsystem, d.Type, d.Address, d.PortID, orDash(d.URL))
	}
	return w.Flush()
}
