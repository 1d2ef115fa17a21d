package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// Live mirror management through the control socket of a running serve,
// attach or mount (protocol: control.go).

func controlSocketFlag(usage string) cli.Flag {
	return &cli.StringFlag{Name: "control-socket", Value: defaultControlSocket, Usage: usage, TakesFile: true}
}

// mirrorManageCommand is `lunbridge mirror fail|remove|add LEG`.
func mirrorManageCommand(verb, usage string) *cli.Command {
	return &cli.Command{
		Name:      verb,
		Usage:     usage,
		UsageText: "lunbridge mirror " + verb + " [--control-socket PATH] [--json] A|B",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the answer as JSON"},
			controlSocketFlag("control socket `PATH` of the running serve/attach/mount"),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("mirror %s needs one leg, A or B", verb)
			}
			leg := strings.ToUpper(c.Args().First())
			if leg != "A" && leg != "B" {
				return usageErrorf("mirror %s: leg %q: want A or B", verb, c.Args().First())
			}
			raw, err := controlRequest(c.String("control-socket"), "mirror "+verb+" "+leg, 2*time.Minute)
			if err != nil {
				return err
			}
			var r controlReply
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("control socket %s: %w", c.String("control-socket"), err)
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
		return usageErrorf("mirror status takes URL-A and URL-B, or --control-socket, not both")
	}
	path := c.String("control-socket")
	raw, err := readControl(path)
	if err != nil {
		return err
	}
	var st controlStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if st.Mirror == nil && st.Async == nil {
		return fmt.Errorf("the lunbridge on %s runs no mirror", path)
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
