package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator"
)

func init() {
	register(catFind, &cli.Command{
		Name:      "ls",
		Usage:     "list every target and every LUN behind a portal (or one target's LUNs), like iscsi-ls -s",
		UsageText: "lunbridge ls [--json] host[:port] | iscsi://host[:port][/target-iqn]\n   lunbridge ls --nvme [--json] host[:8009] | nvme+tcp://host[:port][/subsystem-nqn]",
		Description: `Discovers the targets (SendTargets), logs in to each, lists its LUNs
(REPORT LUNS) with type, vendor, product, size, block size and WWID.
Targets that refuse the login are listed with the reason and make the exit
code non-zero; the others are still listed.

Examples:
   lunbridge ls 127.0.0.1:3260
   lunbridge ls --json iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo
   LUNBRIDGE_CHAP_SECRET=... lunbridge ls --chap-user alice san1:3260

NVMe/TCP (--nvme, or an nvme+tcp:// URL): every NVM subsystem in the
discovery log of host[:8009] (or the one subsystem the URL names) with its
controller (model, serial, firmware, controller ID) and active namespaces
(size, block size, LBA format, NGUID/EUI-64, ANA group state on that
controller).
   lunbridge ls --nvme 10.0.0.5
   lunbridge ls --json nvme+tcp://10.0.0.5/nqn.2026-12.com.example:pool1`,
		Flags:  append(discoveryFlags(), &cli.BoolFlag{Name: "nvme", Usage: "list NVMe/TCP subsystems found through a discovery controller (port 8009 by default)"}),
		Action: lsAction,
	})
}

// lsTarget is the JSON schema of one target in `lunbridge ls --json`.
type lsTarget struct {
	Name    string             `json:"name"`
	Portal  string             `json:"portal"`
	Portals []discovery.Portal `json:"portals,omitempty"`
	Error   string             `json:"error,omitempty"`
	LUNs    []lsLUN            `json:"luns"`
}

type lsLUN struct {
	LUN        uint64 `json:"lun"`
	URL        string `json:"url"` // ready to paste: iscsi://portal/target/lun
	DeviceType string `json:"device_type"`
	Vendor     string `json:"vendor"`
	Product    string `json:"product"`
	SizeBytes  int64  `json:"size_bytes,omitempty"`
	BlockSize  int    `json:"block_size,omitempty"`
	WWID       string `json:"wwid,omitempty"`
	Serial     string `json:"serial,omitempty"`
	ReadOnly   bool   `json:"write_protected,omitempty"`
	Thin       bool   `json:"thin_provisioned,omitempty"`
	Error      string `json:"error,omitempty"`
}

func lsAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("ls takes one portal or URL (see lunbridge ls --help)")
	}
	if c.Bool("nvme") || strings.HasPrefix(c.Args().First(), nvmeScheme) {
		return nvmeLSAction(c, c.Args().First())
	}
	u, err := discovery.ParseURL(c.Args().First())
	if err != nil {
		return err
	}
	var targets []discovery.Target
	if u.Target != "" {
		targets = []discovery.Target{{Name: u.Target, Portals: []discovery.Portal{{Address: u.Portal, Tag: -1}}}}
	} else if _, targets, err = discoverTargets(c, c.Args().First()); err != nil {
		return err
	}
	var fe firstErr
	out := []lsTarget{}
	for _, t := range targets {
		portal := reachablePortal(c.Context, t, u.Portal)
		lt := lsTarget{Name: t.Name, Portal: portal, Portals: t.Portals, LUNs: []lsLUN{}}
		tu := *u
		tu.Target, tu.Portal = t.Name, portal
		if err := listLUNs(c, &tu, &lt, u.Target == ""); err != nil {
			lt.Error = err.Error()
			fe.add(err)
		}
		out = append(out, lt)
	}
	if c.Bool("json") {
		if err := printJSON(os.Stdout, out); err != nil {
			return err
		}
	} else {
		printLS(out)
	}
	if fe.err != nil {
		return withCode(exitCode(fe.err), fmt.Errorf("some targets could not be listed: %w", fe.err))
	}
	return nil
}

// listLUNs logs in to one target and lists its LUNs. When every target of
// a portal is listed (anyTarget), CHAP credentials are meant for the targets
// that ask for them: a target that refuses one-way CHAP is tried once more
// without authentication (nothing secret is sent then).
func listLUNs(c *cli.Context, u *discovery.URL, lt *lsTarget, anyTarget bool) error {
	cfg, err := sessionConfig(c, u)
	if err != nil {
		return err
	}
	s, err := initiator.Dial(c.Context, cfg)
	if err != nil && anyTarget && cfg.CHAP != nil && cfg.CHAP.TargetSecret == "" && errors.Is(err, initiator.ErrAuth) {
		logrus.WithField("target", u.Target).Infof("CHAP refused (%v); trying without authentication", err)
		plain := cfg
		plain.CHAP = nil
		if s2, err2 := initiator.Dial(c.Context, plain); err2 == nil {
			s, err = s2, nil
		}
	}
	if err != nil {
		return authHint(err, cfg, "--chap-user and LUNBRIDGE_CHAP_SECRET or --chap-secret-file")
	}
	defer s.CloseContext(context.Background())
	luns, err := initiator.ReportLUNs(c.Context, s)
	if err != nil {
		return err
	}
	for _, n := range luns {
		e := lsLUN{LUN: n, URL: (&discovery.URL{Portal: u.Portal, Target: u.Target, LUN: n, HasLUN: true}).String()}
		inq, err := initiator.Inquiry(c.Context, s, n)
		if err != nil {
			e.Error = err.Error()
			lt.LUNs = append(lt.LUNs, e)
			continue
		}
		e.DeviceType, e.Vendor, e.Product = inq.DeviceType.String(), inq.Vendor, inq.Product
		if inq.DeviceType == 0 {
			l, err := initiator.OpenLUN(c.Context, s, n)
			if err != nil {
				e.Error = err.Error()
			} else {
				e.SizeBytes, e.BlockSize, e.WWID, e.Serial = l.Size(), l.BlockSize(), l.WWID(), l.Serial
				e.ReadOnly, e.Thin = l.WriteProtect, l.Thin()
			}
		}
		lt.LUNs = append(lt.LUNs, e)
	}
	return nil
}

func printLS(out []lsTarget) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "TARGET\tPORTAL\tLUN\tTYPE\tVENDOR\tPRODUCT\tSIZE\tBLOCK\tWWID\tURL")
	for _, t := range out {
		if t.Error != "" {
			fmt.Fprintf(w, "%s\t%s\t-\terror: %s\n", t.Name, t.Portal, t.Error)
			continue
		}
		for _, l := range t.LUNs {
			size, block := "-", "-"
			if l.SizeBytes > 0 {
				size, block = formatBytes(l.SizeBytes), fmt.Sprint(l.BlockSize)
			}
			if l.Error != "" {
				size = "error: " + l.Error
			}
			wwid := l.WWID
			if wwid == "" {
				wwid = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Portal, l.LUN, l.DeviceType, l.Vendor, l.Product, size, block, wwid, l.URL)
		}
	}
	w.Flush()
}
