package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/multipath"
)

func init() {
	register(catExpose, &cli.Command{
		Name:      "status",
		Usage:     "list the running serve/attach/mount instances, or show one in detail (like iscsiadm -m session, multipath -ll, mdadm --detail)",
		ArgsUsage: "[NAME]",
		UsageText: "lunbridge status [--json]\n   lunbridge status [--json] NAME\n   lunbridge status [--json] --socket PATH",
		Description: `Every serve, attach and mount publishes its status on a control socket of
its own, RUNDIR/NAME/control.sock. RUNDIR is /run/lunbridge for root,
$XDG_RUNTIME_DIR/lunbridge for other users ($LUNBRIDGE_RUN_DIR overrides
it). NAME is --instance when given, else serve's --export-name, attach's
nbdN, mount's mount point name, the config file's [device] name, or the
target's last name part and the LUN (demo-1); while a running instance
holds a name, the next one gets NAME-2, NAME-3 and so on.

Without NAME, lists every running instance, one line each: name, command,
state (starting, ok, degraded: a path or mirror leg down or resyncing,
recovering: I/O waits for a session or path), size, pid, where it is
exposed (NBD URI, /dev/nbdN, the file in the FUSE mount) and its URLs
(without secrets). No instance running is not an error (exit 0).

With NAME, shows that instance in detail: its iSCSI sessions (target,
portal, ISID, TSIH, connections, negotiated MaxRecvDataSegmentLength,
digests, MaxBurstLength, FirstBurstLength, ImmediateData, InitialR2T,
ErrorRecoveryLevel), the multipath paths and their states, the mirror and
its legs, the NBD clients or kernel device or mount point, and I/O counters.
--json prints the same as JSON (docs/cli.md has the schema): an array of
instances, or one instance's object. --socket reads one control socket
directly (also of older lunbridge versions).

Examples:
   lunbridge status
   lunbridge status demo-1
   lunbridge status --json demo-1 | jq '.sessions[] | {portal, isid, tsih}'
   lunbridge status --json | jq -r '.[] | select(.state != "ok") | .name'`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.StringFlag{Name: "socket", Usage: "read the control socket at `PATH` instead of finding instances in RUNDIR", TakesFile: true},
		},
		Action: statusAction,
	})
}

func statusAction(c *cli.Context) error {
	if c.NArg() > 1 {
		return usageErrorf("status takes at most one instance NAME, got %d arguments", c.NArg())
	}
	if path := c.String("socket"); path != "" {
		if c.NArg() > 0 {
			return usageErrorf("status: give NAME or --socket, not both")
		}
		return statusOne(c, path)
	}
	if c.NArg() == 1 {
		path, err := instanceSocket(c.Args().First())
		if err != nil {
			return err
		}
		return statusOne(c, path)
	}
	list := listInstances()
	if c.Bool("json") {
		sums := make([]instanceSummary, 0, len(list))
		for _, d := range list {
			sums = append(sums, d.instanceSummary)
		}
		return printJSON(os.Stdout, sums)
	}
	if len(list) == 0 {
		fmt.Fprintf(os.Stdout, "no lunbridge serve, attach or mount is running (none found in %s)\n", runDir())
		return nil
	}
	return printInstances(os.Stdout, list)
}

// statusOne shows the instance on the control socket at path.
func statusOne(c *cli.Context, path string) error {
	raw, err := readControl(path)
	if err != nil {
		return err
	}
	var st controlStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if st.Instance == nil { // an older lunbridge: its document as it is
		if c.Bool("json") {
			_, err := os.Stdout.Write(raw)
			return err
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
	if c.Bool("json") {
		return printJSON(os.Stdout, st.Instance)
	}
	return printInstance(os.Stdout, st.Instance)
}

func readControl(path string) ([]byte, error) {
	return controlRequest(path, "status", 10*time.Second)
}

// instanceSocket is the control socket of the running instance name.
func instanceSocket(name string) (string, error) {
	if name == "" || name != instanceName(name) {
		return "", usageErrorf("status: %q is not an instance name", name)
	}
	path := filepath.Join(runDir(), name, instanceControlFile)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	var names []string
	for _, d := range listInstances() {
		names = append(names, d.Name)
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no instance %q: no lunbridge serve, attach or mount is running (none found in %s)", name, runDir())
	}
	return "", fmt.Errorf("no instance %q in %s; running: %s", name, runDir(), strings.Join(names, ", "))
}

// listInstances asks every control socket in RUNDIR for its status.
// Sockets nobody answers on (a killed process) are skipped; one that
// answers with an error is listed with state "unknown" and the error.
func listInstances() []*instanceDetail {
	dir := runDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []*instanceDetail
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name(), instanceControlFile)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		raw, err := controlRequest(path, "status", 5*time.Second)
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) {
			continue // stale: its process is gone
		}
		var st controlStatus
		if err == nil {
			err = json.Unmarshal(raw, &st)
		}
		d := st.Instance
		if err != nil || d == nil {
			d = &instanceDetail{instanceSummary: instanceSummary{Name: e.Name(), State: "unknown", ControlSocket: path}}
			if err != nil {
				d.Error = err.Error()
			} else {
				d.Error = "an older lunbridge: lunbridge status --socket " + path
			}
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// printInstances prints the list, one line per instance.
func printInstances(w io.Writer, list []*instanceDetail) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCOMMAND\tSTATE\tSIZE\tPID\tEXPOSED\tURL")
	for _, d := range list {
		size := "-"
		if d.Size > 0 {
			size = formatBytes(d.Size)
		}
		pid := "-"
		if d.PID > 0 {
			pid = strconv.Itoa(d.PID)
		}
		urls := strings.Join(d.URLs, " ")
		if d.Error != "" {
			urls = d.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, dash(d.Command), d.State, size, pid, dash(d.Exposed), dash(urls))
	}
	return tw.Flush()
}

// printInstance prints one instance in detail.
func printInstance(w io.Writer, d *instanceDetail) error {
	fmt.Fprintf(w, "%s: %s, pid %d, state %s, started %s\n", d.Name, d.Command, d.PID, d.State, d.Started.Local().Format(time.RFC3339))
	for _, u := range d.URLs {
		fmt.Fprintf(w, "  url        %s\n", u)
	}
	if d.Size > 0 {
		ro := ""
		if d.ReadOnly {
			ro = ", read-only"
		}
		fmt.Fprintf(w, "  size       %s (%d bytes), block %d%s\n", formatBytes(d.Size), d.Size, d.BlockSize, ro)
	}
	if d.WWID != "" || d.Serial != "" {
		fmt.Fprintf(w, "  identity   wwid %s, serial %s\n", dash(d.WWID), dash(d.Serial))
	}
	if v := d.NVMe; v != nil {
		fmt.Fprintf(w, "  nvme       %s %s nsid %d, cntlid %d: %d reconnects, %d write fences (keep-alive timeout), %d commands held\n",
			v.Address, v.SubNQN, v.NSID, v.CntlID, v.Reconnects, v.FencesKATO, v.FencedCommands)
	}
	if n := d.NBD; n != nil {
		fmt.Fprintf(w, "  nbd        %s (%d clients connected, %d since start, %d requests)\n", n.URI, n.Clients, n.ConnectionsTotal, n.RequestsCompleted)
	}
	if d.KernelDevice != "" {
		fmt.Fprintf(w, "  device     %s\n", d.KernelDevice)
	}
	if m := d.Mount; m != nil {
		fmt.Fprintf(w, "  mount      %s (file %s)\n", m.MountPoint, m.File)
	}
	if o := d.IO; o != nil {
		fmt.Fprintf(w, "  io         reads %d (%s), writes %d (%s), flushes %d, trims %d, write-zeroes %d, errors %d\n",
			o.Reads, formatBytes(o.ReadBytes), o.Writes, formatBytes(o.WriteBytes), o.Flushes, o.Trims, o.WriteZeroes, o.Errors)
	}
	if d.ControlSocket != "" {
		fmt.Fprintf(w, "  control    %s\n", d.ControlSocket)
	}
	if len(d.Sessions) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "LEG\tPATH\tPORTAL\tTARGET\tISID\tTSIH\tCONNS\tDIGESTS\tMRDSL/MXDSL\tBURST/FIRST\tIMM/R2T\tERL\tSTATE")
		for _, s := range d.Sessions {
			path := "-"
			if s.Path != nil {
				path = strconv.Itoa(*s.Path)
			}
			state := "logged-in"
			if s.Recovering {
				state = "recovering"
			}
			p := s.Params
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s/%s\t%d/%d\t%d/%d\t%s/%s\t%d\t%s\n",
				dash(s.Leg), path, s.Portal, s.Target, s.ISID, s.TSIH, s.Connections, p.HeaderDigest, p.DataDigest,
				p.MaxRecvDataSegmentLength, p.MaxXmitDataSegmentLength, p.MaxBurstLength, p.FirstBurstLength,
				yesNo(p.ImmediateData), yesNo(p.InitialR2T), p.ErrorRecoveryLevel, state)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if d.Multipath != nil {
		fmt.Fprintln(w)
		if err := printStatus(w, d.Multipath.status()); err != nil {
			return err
		}
	}
	if d.Mirror != nil {
		fmt.Fprintln(w)
		return printLiveMirror(w, d.Mirror)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
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
			if err := printStatus(w, l.Paths.status()); err != nil {
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
