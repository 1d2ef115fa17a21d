package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// mirror replace (issue 20 item 4): a failed leg of a running mirror is
// replaced by another LUN, like mdadm --manage --replace/--add of a new
// disk. The control request is "mirror replace LEG URL [force]"; the
// running process opens URL with its own flags and secrets (config file,
// environment), and mirror.ReplaceLegWith does the checks, the fresh
// metadata and the full resync. From then on automatic re-add reopens the
// leg through URL.

// mirrorLegSets maps a running *mirror.Mirror to its *legSet.
var mirrorLegSets sync.Map

func legSetOf(m *mirror.Mirror) *legSet {
	if v, ok := mirrorLegSets.Load(m); ok {
		return v.(*legSet)
	}
	return nil
}

// replaceRequest answers the control request "mirror replace LEG URL [force]"
// (args: LEG URL [force]).
func (t *controlTarget) replaceRequest(ctx context.Context, args []string) any {
	force := len(args) == 3 && args[2] == "force"
	if force {
		args = args[:2]
	}
	if len(args) != 2 {
		return controlReply{Error: "want mirror replace A|B URL [force]"}
	}
	_, m := t.devices()
	if m == nil {
		return controlReply{Error: "this process runs no mirror"}
	}
	if err := replaceMirrorLeg(ctx, m, args[0], args[1], force); err != nil {
		return controlReply{Error: err.Error(), Mirror: viewMirror(m)}
	}
	return controlReply{OK: true, Mirror: viewMirror(m)}
}

// replaceMirrorLeg replaces leg (A or B) of the running mirror m by the LUN
// at url.
func replaceMirrorLeg(ctx context.Context, m *mirror.Mirror, leg, url string, force bool) error {
	i := map[string]int{"A": 0, "B": 1}[strings.ToUpper(leg)]
	if l := strings.ToUpper(leg); l != "A" && l != "B" {
		return fmt.Errorf("leg %q: want A or B", leg)
	}
	ls := legSetOf(m)
	if ls == nil {
		return errors.New("this mirror cannot open legs (not assembled from URLs)")
	}
	// The same URL as the surviving leg would log in with its session's
	// ISID and end that session (the mirror's last in-sync leg) before
	// any identity check could run.
	for _, u := range ls.get(1 - i) {
		if sameLUNURLs(u, url) {
			return fmt.Errorf("%s is leg %s's LUN: the new leg %s must be another LUN", redactedURL(url), legName(1-i), legName(i))
		}
	}
	err := m.ReplaceLegWith(ctx, legName(i), nil, mirror.ReplaceOptions{
		Force:     force,
		Open:      func(ctx context.Context) (blockdev.Device, error) { return ls.open(ctx, []string{url}) },
		Installed: func() { ls.set(i, []string{url}) },
	})
	if err != nil {
		return err
	}
	logrusInfo("mirror: leg %s replaced by %s: full resync from leg %s", legName(i), redactedURL(url), legName(1-i))
	return nil
}

func legName(i int) string { return string(rune('A' + i)) }

// mirrorReplaceCommand is `lunbridge mirror replace LEG URL`.
func mirrorReplaceCommand() *cli.Command {
	return &cli.Command{
		Name:      "replace",
		Usage:     "replace a failed leg of the running mirror by another LUN (full resync from the other leg)",
		UsageText: "lunbridge mirror replace [--force] [--wait] [--json] [--name NAME | --control-socket PATH] A|B URL",
		Description: `Replaces a leg of the running serve/attach/mount's mirror by another LUN,
like mdadm --manage --replace: the running process opens URL (with its own
flags, CHAP secrets and config file), checks it, writes fresh mirror
metadata to its end and copies all of the other leg onto it in the
background, with writes going on (they reach both legs). The leg is in-sync
when the copy ends ("mirror status" shows the progress, as "resync replace";
--wait waits for it). From then on the automatic re-add reopens the leg
through URL; the old LUN is closed and left as it was.

The leg must be failed first ("mirror fail LEG", or failed by itself,
removed, or split): replace never takes a healthy leg out. The other leg
must be in sync (it is the source of the copy).

Refused: the other leg's LUN (same URL or same WWID), a LUN smaller than the
mirror's exported size plus its metadata, a read-only LUN, and a LUN that
holds another mirror's metadata unless --force (never when that mirror runs
on this host). A refused LUN is closed; the leg stays failed.

Examples:
   lunbridge mirror fail B
   lunbridge mirror replace B iscsi://san3/iqn.2001-04.com.example:c/0
   lunbridge mirror replace --wait B iscsi://san3/iqn.2001-04.com.example:c/0
   lunbridge mirror status`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force", Usage: "overwrite another mirror's metadata on the new LUN (refused when that mirror runs on this host)"},
			&cli.BoolFlag{Name: "wait", Usage: "wait until the new leg is in sync, printing the progress"},
			&cli.BoolFlag{Name: "json", Usage: "print the answer as JSON"},
			instanceNameFlag(),
			controlSocketFlag("control socket `PATH` of the running serve/attach/mount (default: that of --name, see lunbridge status)"),
		},
		Action: mirrorReplace,
	}
}

func mirrorReplace(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf("mirror replace needs a leg (A or B) and the new LUN's URL")
	}
	leg := strings.ToUpper(c.Args().Get(0))
	if leg != "A" && leg != "B" {
		return usageErrorf("mirror replace: leg %q: want A or B", c.Args().Get(0))
	}
	url := c.Args().Get(1)
	if !strings.HasPrefix(url, "iscsi://") && !strings.HasPrefix(url, "file://") {
		return usageErrorf("mirror replace: %q is not a device URL: want iscsi://[user[%%secret]@]host[:port]/target-iqn/lun or file:///path", redactedURL(url))
	}
	if strings.ContainsAny(url, " \t\n") {
		return usageErrorf("mirror replace: the URL contains white space")
	}
	req := "mirror replace " + leg + " " + url
	if c.Bool("force") {
		req += " force"
	}
	path, err := mirrorSocket(c) // mirrorctl.go
	if err != nil {
		return err
	}
	raw, err := controlRequest(path, req, 2*time.Minute)
	if err != nil {
		return err
	}
	var r controlReply
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if !r.OK {
		if c.Bool("json") {
			os.Stdout.Write(raw)
		} else if r.Mirror != nil {
			printLiveMirror(os.Stdout, r.Mirror)
		}
		return fmt.Errorf("mirror replace %s: %s", leg, r.Error)
	}
	if c.Bool("wait") {
		v, err := waitLegInSync(path, leg)
		if err != nil {
			return err
		}
		r.Mirror = v
		if raw, err = json.MarshalIndent(r, "", "  "); err != nil {
			return err
		}
		raw = append(raw, '\n')
	}
	if c.Bool("json") {
		_, err := os.Stdout.Write(raw)
		return err
	}
	return printLiveMirror(os.Stdout, r.Mirror)
}

// waitLegInSync polls the running mirror until leg is in sync, printing
// the resync progress on stderr; a leg that fails meanwhile is an error.
func waitLegInSync(path, leg string) (*mirrorView, error) {
	last := time.Time{}
	for {
		raw, err := readControl(path)
		if err != nil {
			return nil, err
		}
		var st controlStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			return nil, fmt.Errorf("control socket %s: %w", path, err)
		}
		if st.Mirror == nil {
			return nil, fmt.Errorf("the lunbridge on %s runs no mirror", path)
		}
		l := st.Mirror.Legs[0]
		if leg == "B" {
			l = st.Mirror.Legs[1]
		}
		switch l.State {
		case "in-sync":
			return st.Mirror, nil
		case "resyncing":
		default:
			return st.Mirror, fmt.Errorf("mirror replace %s: the new leg is %s: %s", leg, l.State, dash(l.Error))
		}
		if r := st.Mirror.Resync; r != nil && time.Since(last) >= time.Second {
			fmt.Fprintf(os.Stderr, "resync %s of leg %s: %d/%d chunks (%.1f%%), %.1f MB/s\n", r.Mode, r.Target, r.DoneChunks, r.TotalChunks, r.Percent, r.MBPerSec)
			last = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
}
