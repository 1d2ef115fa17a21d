package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator"
)

func discoveryFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "json", Usage: "print JSON (schema in README)"},
		&cli.StringFlag{Name: "discovery-chap-user", Usage: "CHAP user for the discovery session (separate from session CHAP)", EnvVars: []string{"LUNBRIDGE_DISCOVERY_CHAP_USER"}},
		&cli.StringFlag{Name: "discovery-chap-secret-file", Usage: "file holding the discovery CHAP secret (or set LUNBRIDGE_DISCOVERY_CHAP_SECRET)"},
	}
}

func init() {
	register(catFind, &cli.Command{
		Name:      "discover",
		Usage:     "list the targets and portals a portal knows (SendTargets), like iscsiadm -m discovery -t st",
		UsageText: "lunbridge discover [--json] host[:port] | iscsi://host[:port]",
		Description: `Opens a discovery session, asks SendTargets=All and logs out.

Examples:
   lunbridge discover 127.0.0.1:3260
   lunbridge discover --json iscsi://[::1]:3260 | jq -r '.[].name'
   LUNBRIDGE_DISCOVERY_CHAP_SECRET=... lunbridge discover --discovery-chap-user disc san1`,
		Flags:  discoveryFlags(),
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
	if user := c.String("discovery-chap-user"); user != "" {
		secret, err := readSecret("LUNBRIDGE_DISCOVERY_CHAP_SECRET", "discovery-chap-secret-file", c)
		if err != nil {
			return cfg, err
		}
		if secret == "" {
			return cfg, usageErrorf("--discovery-chap-user needs a secret: LUNBRIDGE_DISCOVERY_CHAP_SECRET or --discovery-chap-secret-file")
		}
		cfg.CHAP = &initiator.CHAP{User: user, Secret: secret, AllowShortSecret: c.Bool("allow-short-secret")}
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
		return nil, nil, fmt.Errorf("discovery at %s: %w", u.Portal, err)
	}
	return u, targets, nil
}

func discoverAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("discover takes one portal (see lunbridge discover --help)")
	}
	_, targets, err := discoverTargets(c, c.Args().First())
	if err != nil {
		return err
	}
	if targets == nil {
		targets = []discovery.Target{}
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, targets)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "TARGET\tPORTAL\tTPGT")
	for _, t := range targets {
		if len(t.Portals) == 0 {
			fmt.Fprintf(w, "%s\t-\t-\n", t.Name)
		}
		for _, p := range t.Portals {
			fmt.Fprintf(w, "%s\t%s\t%d\n", t.Name, p.Address, p.Tag)
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
		if conn, err := d.DialContext(ctx, "tcp", p.Address); err == nil {
			conn.Close()
			return p.Address
		}
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
