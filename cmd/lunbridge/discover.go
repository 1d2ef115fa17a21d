package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator"
)

func discoveryFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "json", Usage: "print JSON (schema in docs/cli.md)"},
		&cli.StringFlag{Name: "discovery-chap-user", Usage: "CHAP user `NAME` for the discovery session (separate from the targets' CHAP)", EnvVars: []string{"LUNBRIDGE_DISCOVERY_CHAP_USER"}},
		&cli.StringFlag{Name: "discovery-chap-secret-file", Usage: "read the discovery CHAP secret from `FILE` (or set LUNBRIDGE_DISCOVERY_CHAP_SECRET)", TakesFile: true},
		&cli.StringFlag{Name: "discovery-target-chap-user", Usage: "mutual discovery CHAP: the user `NAME` the portal must answer with", EnvVars: []string{"LUNBRIDGE_DISCOVERY_TARGET_CHAP_USER"}},
		&cli.StringFlag{Name: "discovery-target-chap-secret-file", Usage: "mutual discovery CHAP: read the portal's secret from `FILE` (or set LUNBRIDGE_DISCOVERY_TARGET_CHAP_SECRET)", TakesFile: true},
	}
}

func init() {
	register(catFind, &cli.Command{
		Name:      "discover",
		Usage:     "list the targets a portal offers and their portals (SendTargets), like iscsiadm -m discovery -t st",
		UsageText: "lunbridge discover [--json] [--discovery-chap-user NAME] host[:port] | iscsi://host[:port]\n   lunbridge discover --nvme [--json] host[:8009]",
		Description: `Opens a discovery session on the portal, asks SendTargets=All, prints every
target with its portals (address and portal group tag) and logs out.
Link-local and unspecified portal addresses are skipped with a warning.
Discovery CHAP is configured apart from the targets' CHAP (--discovery-*).

Examples:
   lunbridge discover 127.0.0.1:3260
   lunbridge discover --json '[::1]:3260' | jq -r '.[].name'
   LUNBRIDGE_DISCOVERY_CHAP_SECRET=... lunbridge discover --discovery-chap-user disc san1.example.com
   lunbridge discover --nvme 10.0.0.5:8009     # NVMe/TCP: the discovery log page`,
		Flags:  append(discoveryFlags(), &cli.BoolFlag{Name: "nvme", Usage: "ask an NVMe/TCP discovery controller (port 8009 by default) for its discovery log page instead of an iSCSI portal"}),
		Action: discoverAction,
	})
}

// discoveryConfig builds the configuration of a discovery session.
func discoveryConfig(c *cli.Context, u *discovery.URL) (initiator.Config, error) {
	du := *u
	du.Target, du.User, du.Secret, du.TargetUser, du.TargetSecret = "", "", "", "", ""
	cfg, err := sessionConfig(c, &du)
	if err != nil {
		return cfg, err
	}
	cfg.CHAP = nil
	user := flagOrConfig(c, "discovery-chap-user")
	tuser := flagOrConfig(c, "discovery-target-chap-user")
	if user == "" && tuser != "" {
		return cfg, usageErrorf("--discovery-target-chap-user needs --discovery-chap-user too (mutual CHAP is both ways)")
	}
	if user != "" {
		secret, err := readSecret("LUNBRIDGE_DISCOVERY_CHAP_SECRET", "discovery-chap-secret-file", c)
		if err != nil {
			return cfg, err
		}
		if secret == "" {
			return cfg, usageErrorf("--discovery-chap-user needs a secret: LUNBRIDGE_DISCOVERY_CHAP_SECRET or --discovery-chap-secret-file")
		}
		cfg.CHAP = &initiator.CHAP{User: user, Secret: secret, AllowShortSecret: c.Bool("allow-short-secret")}
		if tuser != "" {
			tsecret, err := readSecret("LUNBRIDGE_DISCOVERY_TARGET_CHAP_SECRET", "discovery-target-chap-secret-file", c)
			if err != nil {
				return cfg, err
			}
			if tsecret == "" {
				return cfg, usageErrorf("--discovery-target-chap-user needs the portal's secret: LUNBRIDGE_DISCOVERY_TARGET_CHAP_SECRET or --discovery-target-chap-secret-file")
			}
			cfg.CHAP.TargetUser, cfg.CHAP.TargetSecret = tuser, tsecret
		}
	}
	return cfg, nil
}

func discoverTargets(c *cli.Context, arg string) (*discovery.URL, []discovery.Target, error) {
	u, err := discovery.ParseURL(arg)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := discoveryConfig(c, u)
	if err != nil {
		return nil, nil, err
	}
	targets, err := discovery.SendTargets(c.Context, cfg, "All")
	if err != nil {
		return nil, nil, fmt.Errorf("discovery at %s: %w", u.Portal, authHint(err, cfg, "--discovery-chap-user and LUNBRIDGE_DISCOVERY_CHAP_SECRET or --discovery-chap-secret-file"))
	}
	return u, targets, nil
}

func discoverAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("discover takes one portal (see lunbridge discover --help)")
	}
	if c.Bool("nvme") || strings.HasPrefix(c.Args().First(), nvmeScheme) {
		return nvmeDiscoverAction(c, c.Args().First())
	}
	_, targets, err := discoverTargets(c, c.Args().First())
	if err != nil {
		return err
	}
	if targets == nil {
		targets = []discovery.Target{}
	}
	if c.Bool("json") {
		out := make([]discoverTarget, 0, len(targets))
		for _, t := range targets {
			dt := discoverTarget{Name: t.Name, Portals: []discoverPortal{}}
			for _, p := range t.Portals {
				dt.Portals = append(dt.Portals, discoverPortal{Portal: p, URL: targetURL(p.Address, t.Name)})
			}
			out = append(out, dt)
		}
		return printJSON(os.Stdout, out)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "TARGET\tPORTAL\tTPGT\tURL")
	for _, t := range targets {
		if len(t.Portals) == 0 {
			fmt.Fprintf(w, "%s\t-\t-\t-\n", t.Name)
		}
		for _, p := range t.Portals {
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", t.Name, p.Address, p.Tag, targetURL(p.Address, t.Name))
		}
	}
	return w.Flush()
}

// reachablePortal picks the first advertised portal that accepts a TCP
// connection, else the portal discovery itself used (targets such as LIO in
// a VM advertise addresses only they can reach).
func reachablePortal(ctx context.Context, t discovery.Target, fallback string) string {
	for _, p := range t.Portals {
		if p.Address == fallback {
			return fallback
		}
	}
	for _, p := range t.Portals {
		d := net.Dialer{Timeout: 2 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", p.Address)
		if err == nil {
			conn.Close()
			return p.Address
		}
		logrus.WithField("target", t.Name).Infof("skipping unreachable portal %s: %v", p.Address, err)
	}
	return fallback
}

// firstErr keeps the first error for the exit code while listing goes on.
type firstErr struct{ err error }

func (f *firstErr) add(err error) {
	if f.err == nil && err != nil && !errors.Is(err, context.Canceled) {
		f.err = err
	}
}

// discoverTarget is one target of `discover --json`: its portals, each with
// the URL that names the target through it (add /LUN for a LUN; lunbridge
// ls lists them).
type discoverTarget struct {
	Name    string           `json:"name"`
	Portals []discoverPortal `json:"portals"`
}

type discoverPortal struct {
	discovery.Portal
	URL string `json:"url"`
}

// targetURL names target through portal: iscsi://portal/target.
func targetURL(portal, target string) string {
	return (&discovery.URL{Portal: portal, Target: target}).String()
}
