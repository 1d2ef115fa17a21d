package nvmetcp

import (
	"context"
	"fmt"

	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// maxDiscoveryRecords bounds what a discovery controller can make us read.
const maxDiscoveryRecords = 1024

// Discover connects to the discovery controller at cfg.Addr (port 8009
// when none) and returns its discovery log page entries.
func Discover(ctx context.Context, cfg Config) ([]pdu.DiscoveryEntry, error) {
	cfg.SubNQN = pdu.DiscoveryNQN
	if cfg.Addr != "" {
		cfg.Addr = withPort(cfg.Addr, DiscoveryPort)
	}
	cfg.IOQueues = 1
	cfg.ReconnectTimeout = -1
	c, err := Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for range 3 {
		head := make([]byte, pdu.DiscoveryHeaderLen)
		if err := c.GetLogPage(ctx, pdu.LogDiscovery, 0, head); err != nil {
			return nil, err
		}
		gen, num, err := pdu.ParseDiscoveryHeader(head)
		if err != nil {
			return nil, err
		}
		if num == 0 {
			return nil, nil
		}
		if num > maxDiscoveryRecords {
			return nil, fmt.Errorf("nvmetcp: discovery log with %d records (at most %d read)", num, maxDiscoveryRecords)
		}
		buf := make([]byte, int(num)*pdu.DiscoveryEntryLen)
		for off := 0; off < len(buf); off += 64 << 10 {
			end := min(len(buf), off+64<<10)
			if err := c.GetLogPage(ctx, pdu.LogDiscovery, uint64(pdu.DiscoveryHeaderLen+off), buf[off:end]); err != nil {
				return nil, err
			}
		}
		// The log changed while we read it when GENCTR moved: read again.
		if err := c.GetLogPage(ctx, pdu.LogDiscovery, 0, head[:16]); err != nil {
			return nil, err
		}
		if gen2, _, _ := pdu.ParseDiscoveryHeader(head); gen2 == gen {
			return pdu.ParseDiscoveryEntries(buf), nil
		}
	}
	return nil, fmt.Errorf("nvmetcp: discovery log kept changing")
}
