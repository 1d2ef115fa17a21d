package main

import (
	"encoding/json"
	"fmt"
	"io"
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
		Usage:     "show the paths and mirror of a running serve/attach/mount (like multipath -ll, mdadm --detail)",
		UsageText: "lunbridge status [--json] [--socket PATH]",
		Description: `Reads the status a running serve, attach or mount publishes on its control
socket: the LUN's identity, the path selector, and per path the portal, ISID,
state (active, standby, failed, reinstating), ALUA state, I/O in flight,
completed I/Os and bytes, errors, failovers and the last error. For a mirror
(--mirror): its state, generation, dirty chunks, resync progress and per leg
the state, automatic re-add (next attempt, why it is held) and the leg's
paths when it is multipath.

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
	var st controlStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("control socket %s: %w", c.String("socket"), err)
	}
	if st.Status != nil {
		if err := printStatus(os.Stdout, *st.Status); err != nil {
			return err
		}
	}
	if st.Mirror != nil {
		return printLiveMirror(os.Stdout, st.Mirror)
	}
	return nil
}

func readControl(path string) ([]byte, error) {
	return controlRequest(path, "status", 10*time.Second)
}

// printLiveMirror prints a running mirror (control socket), like mdadm
// --detail, then each multipath leg's paths.
func printLiveMirror(w io.Writer, v *mirrorView) error {
	st := v.Status
	fmt.Fprintf(w, "mirror %s state=%s size=%d chunk=%d chunks=%d generation=%d dirty=%d resynced=%d\n",
		st.Mirror, st.State, st.Size, st.ChunkSize, st.Chunks, st.Generation, st.DirtyChunks, st.BytesResynced)
	if r := st.Resync; r != nil {
		fmt.Fprintf(w, "resync %s of leg %s: %d/%d chunks (%.1f%%), %.1f MB/s, %v\n",
			r.Mode, r.Target, r.DoneChunks, r.TotalChunks, r.Percent, r.MBPerSec, r.Elapsed.Round(time.Millisecond))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LEG\tSTATE\tRE-ADDS\tNEXT PROBE\tHELD\tWWID\tUUID\tLAST ERROR")
	for _, l := range v.Legs {
		next := "-"
		if !l.NextProbe.IsZero() {
			next = time.Until(l.NextProbe).Round(100 * time.Millisecond).String()
		}
		last := l.Error
		if l.LastProbeError != "" {
			last = l.LastProbeError
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", l.Name, l.State, l.ReAdds, next, dash(l.Held), dash(l.WWID), l.UUID, dash(strings.ReplaceAll(last, "\n", " ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range v.Legs {
		if l.State == "split" {
			fmt.Fprintf(w, "leg %s split since %s (%s ago): a frozen image of the mirror's %d bytes; read it with lunbridge pull --mirror-leg URL-%s FILE, resync it with lunbridge mirror rejoin %s\n",
				l.Name, l.SplitSince.UTC().Format(time.RFC3339), time.Since(l.SplitSince).Round(time.Second), st.Size, l.Name, l.Name)
		}
	}
	for _, l := range v.Legs {
		if l.Paths != nil {
			fmt.Fprintf(w, "\nleg %s: ", l.Name)
			if err := printStatus(w, *l.Paths); err != nil {
				return err
			}
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
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
