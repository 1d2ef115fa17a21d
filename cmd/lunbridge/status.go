package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/multipath"
)

func init() {
	register(catExpose, &cli.Command{
		Name:      "status",
		Usage:     "show the paths of a running serve/attach/mount (like multipath -ll)",
		UsageText: "lunbridge status [--json] [--socket PATH]",
		Description: `Reads the status a running serve, attach or mount publishes on its control
socket: the LUN's identity, the path selector, and per path the portal, ISID,
state (active, standby, failed, reinstating), ALUA state, I/O in flight,
completed I/Os and bytes, errors, failovers and the last error.

Examples:
   lunbridge status
   lunbridge status --json --socket /run/lunbridge/disk1.sock | jq '.paths[].state'`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the status as JSON"},
			&cli.StringFlag{Name: "socket", Value: defaultControlSocket, Usage: "control socket `PATH` of the running command", TakesFile: true},
		},
		Action: statusAction,
	})
}

func statusAction(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageErrorf("status takes no arguments")
	}
	raw, err := readControl(c.String("socket"))
	if err != nil {
		return err
	}
	if c.Bool("json") {
		_, err := os.Stdout.Write(raw)
		return err
	}
	var st multipath.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("control socket %s: %w", c.String("socket"), err)
	}
	return printStatus(os.Stdout, st)
}

func readControl(path string) ([]byte, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("no running lunbridge serve/attach/mount on %s: %w", path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return io.ReadAll(conn)
}

func printStatus(w io.Writer, st multipath.Status) error {
	id := st.Identity
	fmt.Fprintf(w, "%s (serial %s) size=%d block=%d%s\n", id.WWID, id.Serial, id.Size, id.Block, map[bool]string{true: " read-only"}[st.ReadOnly])
	fmt.Fprintf(w, "policy=%s failback=%s no-path-timeout=%s check-interval=%s queued=%d failovers=%d last-failover=%dms fences=%d reinstated/%d reset\n",
		st.Policy, st.Failback, st.NoPathTimeout, st.CheckInterval, st.Queued, st.Failovers, st.LastFailoverMs, st.FencesReinstated, st.FencesReset)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tPORTAL\tTPGT\tISID\tTSIH\tSTATE\tALUA\tIN-FLIGHT\tIOS\tBYTES\tERRORS\tFAILOVERS\tLAST ERROR")
	for _, p := range st.Paths {
		alua := p.ALUA
		if alua == "" {
			alua = "-"
		}
		last := p.LastError
		if last == "" {
			last = "-"
		}
		last = strings.ReplaceAll(last, "\n", " ")
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n",
			p.Index, p.Portal, p.TPGT, p.ISID, p.TSIH, p.State, alua, p.InFlight, p.IOs, p.Bytes, p.Errors, p.Failovers, last)
	}
	return tw.Flush()
}
