package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// Live mirror management through the control socket of a running serve,
// attach or mount (protocol: control.go).

func controlSocketFlag(usage string) cli.Flag {
	return &cli.StringFlag{Name: "control-socket", Usage: usage, TakesFile: true}
}

// instanceNameFlag chooses the running instance (lunbridge status lists them).
func instanceNameFlag() cli.Flag {
	return &cli.StringFlag{Name: "name", Usage: "the running instance `NAME` (lunbridge status lists them; default: the only one running a mirror)"}
}

// mirrorSocket finds the control socket of the running mirror: the one
// --control-socket names, the instance --name names, else the only
// running instance with a mirror.
func mirrorSocket(c *cli.Context) (string, error) {
	if p := c.String("control-socket"); p != "" {
		if c.String("name") != "" {
			return "", usageErrorf("give --name or --control-socket, not both")
		}
		return p, nil
	}
	if n := c.String("name"); n != "" {
		return instanceSocket(n) // status.go
	}
	var mirrors, others []string
	for _, d := range listInstances() {
		if d.Mirror != nil {
			mirrors = append(mirrors, d.Name)
		} else {
			others = append(others, d.Name)
		}
	}
	switch len(mirrors) {
	case 1:
		return filepath.Join(runDir(), mirrors[0], instanceControlFile), nil
	case 0:
		if len(others) == 0 {
			return "", fmt.Errorf("no lunbridge serve, attach or mount is running (none found in %s)", runDir())
		}
		return "", fmt.Errorf("no running lunbridge runs a mirror (running: %s)", strings.Join(others, ", "))
	}
	return "", usageErrorf("%d running instances run a mirror: %s; choose one with --name NAME", len(mirrors), strings.Join(mirrors, ", "))
}

// mirrorManageCommand is `lunbridge mirror fail|remove|add LEG`.
func mirrorManageCommand(verb, usage string) *cli.Command {
	return &cli.Command{
		Name:      verb,
		Usage:     usage,
		UsageText: "lunbridge mirror " + verb + " [--name NAME | --control-socket PATH] [--json] A|B",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the answer as JSON"},
			instanceNameFlag(),
			controlSocketFlag("control socket `PATH` of the running serve/attach/mount (default: that of --name, see lunbridge status)"),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("mirror %s needs one leg, A or B", verb)
			}
			leg := strings.ToUpper(c.Args().First())
			if leg != "A" && leg != "B" {
				return usageErrorf("mirror %s: leg %q: want A or B", verb, c.Args().First())
			}
			path, err := mirrorSocket(c)
			if err != nil {
				return err
			}
			raw, err := controlRequest(path, "mirror "+verb+" "+leg, 2*time.Minute)
			if err != nil {
				return err
			}
			var r controlReply
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("control socket %s: %w", path, err)
			}
			if c.Bool("json") {
				if _, err := os.Stdout.Write(raw); err != nil {
					return err
				}
			} else if r.Mirror != nil {
				if err := printLiveMirror(os.Stdout, r.Mirror); err != nil {
					return err
				}
			}
			if !r.OK {
				return fmt.Errorf("mirror %s %s: %s", verb, leg, r.Error)
			}
			return nil
		},
	}
}

// mirrorStatusLive is `lunbridge mirror status` without URLs.
func mirrorStatusLive(c *cli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf("mirror status takes URL-A and URL-B, or --name/--control-socket, not both")
	}
	path, err := mirrorSocket(c)
	if err != nil {
		return err
	}
	raw, err := readControl(path)
	if err != nil {
		return err
	}
	var st controlStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if st.Mirror == nil && st.Async == nil {
		return fmt.Errorf("the lunbridge on %s runs no mirror (lunbridge status lists the running instances)", path)
	}
	if st.Mirror == nil {
		if c.Bool("json") {
			return printJSON(os.Stdout, map[string]any{"async": st.Async})
		}
		return printAsync(os.Stdout, st.Async)
	}
	st.Mirror.Async = st.Async
	if c.Bool("json") {
		return printJSON(os.Stdout, st.Mirror)
	}
	if err := printLiveMirror(os.Stdout, st.Mirror); err != nil {
		return err
	}
	if st.Async != nil {
		fmt.Fprintln(os.Stdout)
		return printAsync(os.Stdout, st.Async)
	}
	return nil
}
