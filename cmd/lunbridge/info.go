package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/initiator"
)

func init() {
	register(catFind, &cli.Command{
		Name:      "info",
		Usage:     "show one LUN in detail: identity, size, block size, provisioning, limits",
		UsageText: "lunbridge info [--json] iscsi://[user@]host[:port]/target-iqn/lun | nvme+tcp://host[:port]/subsystem-nqn/nsid",
		Description: `Logs in, identifies the LUN (INQUIRY, VPD pages, READ CAPACITY, MODE SENSE)
and logs out. Nothing is written.

Examples:
   lunbridge info iscsi://127.0.0.1:3260/iqn.2026-11.org.lunbridge:demo/1
   lunbridge info --json iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1 | jq .size_bytes
   LUNBRIDGE_CHAP_SECRET=... lunbridge info iscsi://user@san1/iqn.2001-04.com.example:disk/0
   lunbridge info nvme+tcp://10.0.0.5/nqn.2026-12.com.example:pool1/1`,
		Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON (schema in README, \"info\")"}},
		Action: infoAction,
	})
}

// lunInfo is the JSON schema of `lunbridge info --json` (stable; see README).
type lunInfo struct {
	URL              string         `json:"url"`
	Target           string         `json:"target"`
	LUN              uint64         `json:"lun"`
	Vendor           string         `json:"vendor"`
	Product          string         `json:"product"`
	Revision         string         `json:"revision"`
	DeviceType       string         `json:"device_type"`
	Serial           string         `json:"serial"`
	WWID             string         `json:"wwid"`
	SizeBytes        int64          `json:"size_bytes"`
	BlockSize        int            `json:"block_size"`
	Blocks           uint64         `json:"blocks"`
	PhysicalBlock    uint64         `json:"physical_block_size"`
	ThinProvisioned  bool           `json:"thin_provisioned"`
	UnmapSupported   bool           `json:"unmap_supported"`
	WriteSameUnmap   bool           `json:"write_same_unmap"`
	ReadZeroesUnmap  bool           `json:"unmapped_reads_zero"`
	WriteProtected   bool           `json:"write_protected"`
	NonRotating      bool           `json:"non_rotating"`
	MaxTransferBytes int            `json:"max_transfer_bytes"`
	Session          sessionSummary `json:"session"`
}

type sessionSummary struct {
	ISID              string `json:"isid"`
	TSIH              uint16 `json:"tsih"`
	TargetAlias       string `json:"target_alias,omitempty"`
	PortalGroupTag    int    `json:"portal_group_tag"`
	HeaderDigest      bool   `json:"header_digest"`
	DataDigest        bool   `json:"data_digest"`
	MaxRecvDSL        int    `json:"max_recv_data_segment_length"`
	MaxXmitDSL        int    `json:"max_xmit_data_segment_length"`
	FirstBurstLength  int    `json:"first_burst_length"`
	MaxBurstLength    int    `json:"max_burst_length"`
	InitialR2T        bool   `json:"initial_r2t"`
	ImmediateData     bool   `json:"immediate_data"`
	MaxOutstandingR2T int    `json:"max_outstanding_r2t"`
	// ErrorRecoveryLevel is the negotiated level (the minimum of --erl
	// and the target's).
	ErrorRecoveryLevel int `json:"error_recovery_level"`
}

func summarizeSession(s *initiator.Session) sessionSummary {
	p := s.Params()
	id := s.ISID()
	return sessionSummary{
		ISID: fmt.Sprintf("%x", id[:]), TSIH: s.TSIH(), TargetAlias: p.TargetAlias, PortalGroupTag: p.TargetPortalGroupTag,
		HeaderDigest: p.HeaderDigest, DataDigest: p.DataDigest, MaxRecvDSL: p.MaxRecvDSL, MaxXmitDSL: p.MaxXmitDSL,
		FirstBurstLength: p.FirstBurstLength, MaxBurstLength: p.MaxBurstLength, InitialR2T: p.InitialR2T,
		ImmediateData: p.ImmediateData, MaxOutstandingR2T: p.MaxOutstandingR2T,
		ErrorRecoveryLevel: p.ErrorRecoveryLvl,
	}
}

func describeLUN(url string, l *initiator.LUN) lunInfo {
	return lunInfo{
		URL: url, Target: l.Session().Config().TargetName, LUN: l.Number(),
		Vendor: l.Inquiry.Vendor, Product: l.Inquiry.Product, Revision: l.Inquiry.Revision,
		DeviceType: l.Inquiry.DeviceType.String(), Serial: l.Serial, WWID: l.WWID(),
		SizeBytes: l.Size(), BlockSize: l.BlockSize(), Blocks: l.Capacity.Blocks(),
		PhysicalBlock:   l.Capacity.PhysicalBlockLength(),
		ThinProvisioned: l.Thin(), UnmapSupported: l.HasProv && l.Provisioning.LBPU,
		WriteSameUnmap: l.HasProv && l.Provisioning.LBPWS, ReadZeroesUnmap: l.Capacity.LBPRZ || (l.HasProv && l.Provisioning.LBPRZ != 0),
		WriteProtected: l.WriteProtect, NonRotating: l.Rotation == 1, MaxTransferBytes: l.MaxTransfer(),
		Session: summarizeSession(l.Session()),
	}
}

func infoAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("info takes one URL (see lunbridge info --help)")
	}
	if raw := expandDevice(c.Args().First()); strings.HasPrefix(raw, nvmeScheme) {
		return nvmeInfoAction(c, raw)
	}
	l, err := openLUNHandle(c, c.Args().First())
	if err != nil {
		return err
	}
	defer l.Close()
	u := redactedURL(c.Args().First())
	info := describeLUN(u, l)
	if c.Bool("json") {
		return printJSON(os.Stdout, info)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	fmt.Fprintf(w, "URL:\t%s\n", info.URL)
	fmt.Fprintf(w, "Vendor / product:\t%s %s (rev %s)\n", info.Vendor, info.Product, info.Revision)
	fmt.Fprintf(w, "Serial:\t%s\n", info.Serial)
	fmt.Fprintf(w, "WWID:\t%s\n", info.WWID)
	fmt.Fprintf(w, "Size:\t%s (%d bytes, %d blocks)\n", formatBytes(info.SizeBytes), info.SizeBytes, info.Blocks)
	fmt.Fprintf(w, "Block size:\t%d logical, %d physical\n", info.BlockSize, info.PhysicalBlock)
	fmt.Fprintf(w, "Provisioning:\t%s\n", provisioning(info))
	fmt.Fprintf(w, "Write-protected:\t%s\n", yn(info.WriteProtected))
	fmt.Fprintf(w, "Max transfer:\t%s per command\n", formatBytes(int64(info.MaxTransferBytes)))
	s := info.Session
	fmt.Fprintf(w, "Session:\tISID %s TSIH %d, digests header=%s data=%s, bursts %s/%s, InitialR2T=%s ImmediateData=%s, ERL %d\n",
		s.ISID, s.TSIH, yn(s.HeaderDigest), yn(s.DataDigest), formatBytes(int64(s.FirstBurstLength)), formatBytes(int64(s.MaxBurstLength)), yn(s.InitialR2T), yn(s.ImmediateData), s.ErrorRecoveryLevel)
	return w.Flush()
}

func provisioning(i lunInfo) string {
	if !i.ThinProvisioned {
		return "thick"
	}
	var caps []string
	if i.UnmapSupported {
		caps = append(caps, "UNMAP")
	}
	if i.WriteSameUnmap {
		caps = append(caps, "WRITE SAME+UNMAP")
	}
	if i.ReadZeroesUnmap {
		caps = append(caps, "unmapped blocks read zero")
	}
	if len(caps) == 0 {
		return "thin"
	}
	return "thin (" + strings.Join(caps, ", ") + ")"
}

// redactedURL prints a URL argument without any secret it carries.
func redactedURL(raw string) string {
	if u, err := discoveryParse(raw); err == nil {
		return u.String()
	}
	return raw
}
