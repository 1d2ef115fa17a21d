package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/nvmetcp"
	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// lsNVMeSubsystem is the JSON schema of one subsystem in
// `lunbridge ls --nvme --json`: the controller lunbridge connected to
// through one port, and the subsystem's active namespaces.
type lsNVMeSubsystem struct {
	Subsystem  string        `json:"subsystem_nqn"`
	Address    string        `json:"address"`
	PortID     uint16        `json:"port_id"`
	Error      string        `json:"error,omitempty"`
	Controller *lsNVMeCtrl   `json:"controller,omitempty"`
	Namespaces []lsNVMeNSRow `json:"namespaces"`
}

type lsNVMeCtrl struct {
	CntlID       uint16 `json:"controller_id"`
	Model        string `json:"model"`
	Serial       string `json:"serial"`
	Firmware     string `json:"firmware"`
	ANAReporting bool   `json:"ana_reporting"`
}

type lsNVMeNSRow struct {
	NSID      uint32 `json:"nsid"`
	URL       string `json:"url"`
	SizeBytes int64  `json:"size_bytes,omitempty"`
	BlockSize int    `json:"block_size,omitempty"`
	Blocks    uint64 `json:"blocks,omitempty"`
	LBAFormat int    `json:"lba_format"`
	NGUID     string `json:"nguid,omitempty"`
	EUI64     string `json:"eui64,omitempty"`
	WWID      string `json:"wwid,omitempty"`
	ANAGroup  uint32 `json:"ana_group,omitempty"`
	ANAState  string `json:"ana_state,omitempty"` // optimized, non-optimized, inaccessible, persistent-loss, change
	Error     string `json:"error,omitempty"`
}

// nvmeLSAction lists NVMe/TCP subsystems: every NVM subsystem of a
// discovery controller (host[:8009]), or the one an nvme+tcp:// URL names.
func nvmeLSAction(c *cli.Context, arg string) error {
	var subs []lsNVMeSubsystem
	if u, err := parseNVMeURL(arg); err == nil && u.SubNQN != "" && u.SubNQN != pdu.DiscoveryNQN {
		subs = []lsNVMeSubsystem{{Subsystem: u.SubNQN, Address: u.Addr}}
	} else {
		addr, cfg, err := nvmeDiscoveryConfig(c, arg)
		if err != nil {
			return err
		}
		entries, err := nvmetcp.Discover(c.Context, cfg)
		if err != nil {
			return fmt.Errorf("NVMe discovery at %s: %w", addr, err)
		}
		for _, e := range entries {
			if e.TrType != 3 || e.SubType != 2 {
				continue
			}
			host := e.TrAddr
			if host == "" || host == "0.0.0.0" || host == "::" {
				host, _, _ = net.SplitHostPort(addr)
			}
			subs = append(subs, lsNVMeSubsystem{Subsystem: e.SubNQN, Address: net.JoinHostPort(host, e.TrSvcID), PortID: e.PortID})
		}
	}
	var fe firstErr
	for i := range subs {
		subs[i].Namespaces = []lsNVMeNSRow{}
		if err := listNVMe(c, &subs[i]); err != nil {
			subs[i].Error = err.Error()
			fe.add(err)
		}
	}
	if subs == nil {
		subs = []lsNVMeSubsystem{}
	}
	if c.Bool("json") {
		if err := printJSON(os.Stdout, subs); err != nil {
			return err
		}
	} else {
		printNVMeLS(subs)
	}
	if fe.err != nil {
		return withCode(exitCode(fe.err), fmt.Errorf("some subsystems could not be listed: %w", fe.err))
	}
	return nil
}

// listNVMe connects to one subsystem (one I/O queue) and describes its
// controller and active namespaces with their ANA state on it.
func listNVMe(c *cli.Context, s *lsNVMeSubsystem) error {
	u := &nvmeURL{Addr: s.Address, SubNQN: s.Subsystem, Query: url.Values{}}
	cfg, err := nvmeConfig(c, u)
	if err != nil {
		return err
	}
	cfg.IOQueues, cfg.ReconnectTimeout = 1, -1
	ctrl, err := nvmetcp.Dial(c.Context, cfg)
	if err != nil {
		return err
	}
	defer ctrl.Close()
	ci := ctrl.Info()
	s.Controller = &lsNVMeCtrl{CntlID: ci.CntlID, Model: ci.Model, Serial: ci.Serial, Firmware: ci.Firmware,
		ANAReporting: ci.CMIC&pdu.CMICANA != 0}
	ids, err := ctrl.ActiveNamespaces(c.Context)
	if err != nil {
		return err
	}
	var ana *pdu.ANALog
	if s.Controller.ANAReporting {
		if l, err := ctrl.ANALog(c.Context); err == nil {
			ana = &l
		} else if !errors.Is(err, context.Canceled) {
			s.Error = "ANA log: " + err.Error()
		}
	}
	for _, id := range ids {
		r := lsNVMeNSRow{NSID: id, URL: fmt.Sprintf("%s%s/%s/%d", nvmeScheme, s.Address, s.Subsystem, id)}
		n, err := nvmetcp.OpenNamespace(c.Context, ctrl, id)
		if err != nil {
			r.Error = err.Error()
			s.Namespaces = append(s.Namespaces, r)
			continue
		}
		nid := n.Identify()
		r.SizeBytes, r.BlockSize, r.Blocks, r.LBAFormat, r.WWID = n.Size(), n.BlockSize(), nid.NSZE, nid.FormatIndex(), n.Identity().WWID
		if nid.NGUID != ([16]byte{}) {
			r.NGUID = hex.EncodeToString(nid.NGUID[:])
		}
		if nid.EUI64 != ([8]byte{}) {
			r.EUI64 = hex.EncodeToString(nid.EUI64[:])
		}
		if ana != nil && nid.ANAGRPID != 0 {
			r.ANAGroup = nid.ANAGRPID
			if g, ok := ana.Group(nid.ANAGRPID); ok {
				r.ANAState = g.State.String()
			}
		}
		n.Close()
		s.Namespaces = append(s.Namespaces, r)
	}
	return nil
}

func printNVMeLS(subs []lsNVMeSubsystem) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "SUBSYSTEM\tADDRESS\tCNTLID\tMODEL\tSERIAL\tNSID\tSIZE\tBLOCK\tLBAF\tNGUID/EUI64\tANA\tURL")
	for _, s := range subs {
		if s.Controller == nil {
			fmt.Fprintf(w, "%s\t%s\t-\terror: %s\n", s.Subsystem, s.Address, s.Error)
			continue
		}
		ctl := s.Controller
		if len(s.Namespaces) == 0 {
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t-\t(no active namespaces)\n", s.Subsystem, s.Address, ctl.CntlID, ctl.Model, ctl.Serial)
		}
		for _, n := range s.Namespaces {
			size, block, id := "-", "-", orDash(n.NGUID)
			if n.NGUID == "" && n.EUI64 != "" {
				id = n.EUI64
			}
			if n.SizeBytes > 0 {
				size, block = formatBytes(n.SizeBytes), fmt.Sprint(n.BlockSize)
			}
			if n.Error != "" {
				size = "error: " + n.Error
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Subsystem, s.Address, ctl.CntlID, ctl.Model,
				ctl.Serial, n.NSID, size, block, n.LBAFormat, id, orDash(n.ANAState), n.URL)
		}
	}
	w.Flush()
}
