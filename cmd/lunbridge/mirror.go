package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

func init() {
	exitClassifiers = append(exitClassifiers, func(err error) (int, bool) {
		switch {
		case errors.Is(err, mirror.ErrSplitBrain), errors.Is(err, mirror.ErrMismatch),
			errors.Is(err, mirror.ErrNotInSync), errors.Is(err, mirror.ErrHasMetadata), errors.Is(err, mirror.ErrOwned):
			return ExitFailure, true
		case errors.Is(err, errMirrorDiffers):
			return ExitMismatch, true
		}
		return 0, false
	})
	register(catExpose, &cli.Command{
		Name:      "mirror",
		Usage:     "software RAID-1 across two LUNs: create, status, check, resync",
		UsageText: "lunbridge mirror create|status|check|resync [options] URL-A URL-B",
		Description: `A mirror keeps two LUNs (legs A and B, usually on two independent targets)
identical. Its metadata (superblock + write-intent bitmap) sits at the END of
each leg, so either leg alone is a plain image of the disk. serve, attach,
mount, pull and bench use a mirror with --mirror URL-B.

Examples:
   lunbridge mirror create --assume-clean iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0
   lunbridge serve --mirror iscsi://san2/iqn.2001-04.com.example:b/0 iscsi://san1/iqn.2001-04.com.example:a/1
   lunbridge mirror status --json iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0
   lunbridge mirror check --repair iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0`,
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "initialize a new mirror on two LUNs (overwrites their last megabytes)",
				UsageText: "lunbridge mirror create [--assume-clean] [--chunk 4M] [--yes] URL-A URL-B",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "assume-clean", Usage: "skip the initial full sync (both LUNs fresh and zeroed)"},
					&cli.StringFlag{Name: "chunk", Value: "4M", Usage: "write-intent bitmap granularity"},
					&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "overwrite existing mirror metadata"},
					&cli.StringFlag{Name: "resync-rate", Usage: "cap the initial sync at this many bytes/s (e.g. 100M)"},
				},
				Action: mirrorCreate,
			},
			{
				Name:      "status",
				Usage:     "show both legs' metadata (like mdadm --detail) without assembling",
				UsageText: "lunbridge mirror status [--json] URL-A URL-B",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action:    mirrorStatus,
			},
			{
				Name:      "check",
				Usage:     "scrub: compare both legs chunk by chunk (exit 6 when they differ)",
				UsageText: "lunbridge mirror check [--repair] [--json] URL-A URL-B",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "repair", Usage: "rewrite differing chunks on leg B from leg A"},
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
					ownerForceFlag(), reserveFlag(),
				},
				Action: mirrorCheck,
			},
			{
				Name:      "resync",
				Usage:     "assemble, resync in the foreground with progress, close",
				UsageText: "lunbridge mirror resync [--prefer A|B] [--resync-rate 100M] URL-A URL-B",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "prefer", Usage: "only on split brain (both legs written without each other): keep this leg (A or B), fully resync the other. Ignored otherwise; refused for a stale leg"},
					&cli.StringFlag{Name: "resync-rate", Usage: "cap resync traffic at this many bytes/s (e.g. 100M)"},
					&cli.BoolFlag{Name: "json", Usage: "print the final status as JSON"},
					ownerForceFlag(), reserveFlag(),
				},
				Action: mirrorResync,
			},
		},
	})
}

var errMirrorDiffers = errors.New("mirror legs differ")

// MirrorFlags tune openMirrorLegs.
type MirrorFlags struct {
	ReadOnly   bool
	Prefer     string
	ResyncRate int64
	Force      bool // take over from an owner on another host
	Reserve    bool // fence the legs with a persistent reservation
}

// reserveFlag is --reserve of the commands that assemble a mirror.
func reserveFlag() cli.Flag {
	return &cli.BoolFlag{Name: "reserve", Value: true, Usage: "with a mirror: hold a SCSI persistent reservation (Write Exclusive – Registrants Only) on each leg while assembled, so no other initiator can write it (a leg without support is used unfenced, with a warning); --reserve=false to skip"}
}

// ownerForceFlag is --force of the commands that assemble a mirror.
func ownerForceFlag() cli.Flag {
	return &cli.BoolFlag{Name: "force", Usage: "with a mirror: take it over although its metadata names a running owner on another host (refused when the owner runs on this host)"}
}

func mirrorLogger() *logrus.Entry { return logrus.WithField("component", "mirror") }

func openLegs(c *cli.Context, a, b string, readOnly, allowMissing bool) (blockdev.Device, blockdev.Device, error) {
	return openLegPaths(c, []string{a}, []string{b}, readOnly, allowMissing)
}

// openLegPaths opens both legs, each through one URL or several
// (multipath); with allowMissing one leg may be unreachable (degraded).
func openLegPaths(c *cli.Context, a, b []string, readOnly, allowMissing bool) (blockdev.Device, blockdev.Device, error) {
	da, errA := openLeg(c, a, readOnly)
	db, errB := openLeg(c, b, readOnly)
	switch {
	case errA == nil && errB == nil:
		return da, db, nil
	case errA != nil && errB != nil:
		return nil, nil, fmt.Errorf("leg A: %w; leg B: %v", errA, errB)
	case !allowMissing:
		if da != nil {
			da.Close()
		}
		if db != nil {
			db.Close()
		}
		return nil, nil, errors.Join(errA, errB)
	case errA != nil:
		mirrorLogger().WithError(errA).Warn("leg A unavailable: degraded")
		return nil, db, nil
	default:
		mirrorLogger().WithError(errB).Warn("leg B unavailable: degraded")
		return da, nil, nil
	}
}

func assembleMirror(c *cli.Context, a, b string, opts MirrorFlags) (*mirror.Mirror, error) {
	return assembleMirrorPaths(c, []string{a}, []string{b}, opts)
}

// assembleMirrorPaths assembles a mirror whose legs may each be multipath.
func assembleMirrorPaths(c *cli.Context, a, b []string, opts MirrorFlags) (*mirror.Mirror, error) {
	da, db, err := openLegPaths(c, a, b, false, true)
	if err != nil {
		return nil, err
	}
	m, err := mirror.Assemble(c.Context, da, db, mirror.AssembleOptions{
		Options: mirror.Options{ResyncRate: opts.ResyncRate, Logger: mirrorLogger(), Reserve: opts.Reserve},
		Prefer:  opts.Prefer,
		Force:   opts.Force,
	})
	if err != nil {
		for _, d := range []blockdev.Device{da, db} {
			if d != nil {
				d.Close()
			}
		}
		return nil, err
	}
	return m, nil
}

func twoURLs(c *cli.Context) (string, string, error) {
	if c.NArg() != 2 {
		return "", "", usageErrorf("mirror %s needs URL-A and URL-B, got %d arguments", c.Command.Name, c.NArg())
	}
	return c.Args().Get(0), c.Args().Get(1), nil
}

func rateFlag(c *cli.Context) (int64, error) {
	s := c.String("resync-rate")
	if s == "" {
		return 0, nil
	}
	n, err := parseSize(strings.TrimSuffix(s, "/s"))
	if err != nil {
		return 0, usageErrorf("--resync-rate: %v", err)
	}
	return n, nil
}

func mirrorCreate(c *cli.Context) error {
	a, b, err := twoURLs(c)
	if err != nil {
		return err
	}
	chunk, err := parseSize(c.String("chunk"))
	if err != nil {
		return usageErrorf("--chunk: %v", err)
	}
	rate, err := rateFlag(c)
	if err != nil {
		return err
	}
	da, db, err := openLegs(c, a, b, false, false)
	if err != nil {
		return err
	}
	m, err := mirror.Create(c.Context, da, db, mirror.CreateOptions{
		Options:     mirror.Options{ResyncRate: rate, Logger: mirrorLogger()},
		ChunkSize:   chunk,
		AssumeClean: c.Bool("assume-clean"),
		Force:       c.Bool("yes"),
	})
	if err != nil {
		da.Close()
		db.Close()
		if errors.Is(err, mirror.ErrHasMetadata) {
			return fmt.Errorf("%w (pass --yes to overwrite)", err)
		}
		return err
	}
	if !c.Bool("assume-clean") {
		if err := waitWithProgress(c, m); err != nil {
			m.Close()
			return err
		}
	}
	st := m.Status()
	if err := m.Close(); err != nil {
		return err
	}
	fmt.Printf("mirror %s created: %s exported, chunk %s, legs A and B in sync\n", st.Mirror, formatBytes(st.Size), formatBytes(st.ChunkSize))
	return nil
}

func waitWithProgress(c *cli.Context, m *mirror.Mirror) error {
	tty := isTerminal(os.Stderr)
	err := m.WaitResync(c.Context, time.Second, func(s mirror.Status) {
		if s.Resync == nil {
			return
		}
		r := s.Resync
		line := fmt.Sprintf("resync %s of leg %s: %d/%d chunks (%.1f%%), %s copied, %.1f MB/s",
			r.Mode, r.Target, r.DoneChunks, r.TotalChunks, r.Percent, formatBytes(s.BytesResynced), r.MBPerSec)
		if tty {
			fmt.Fprintf(os.Stderr, "\r%s\033[K", line)
		} else {
			fmt.Fprintln(os.Stderr, line)
		}
	})
	if tty {
		fmt.Fprintln(os.Stderr)
	}
	return err
}

func mirrorStatus(c *cli.Context) error {
	a, b, err := twoURLs(c)
	if err != nil {
		return err
	}
	da, db, err := openLegs(c, a, b, true, true)
	if err != nil {
		return err
	}
	for _, d := range []blockdev.Device{da, db} {
		if d != nil {
			defer d.Close()
		}
	}
	st, err := mirror.Inspect(c.Context, da, db)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, st)
	}
	printMirrorStatus(st)
	return nil
}

func printMirrorStatus(st mirror.Status) {
	fmt.Printf("        Mirror : %s\n", st.Mirror)
	fmt.Printf("         State : %s\n", st.State)
	fmt.Printf("    Array Size : %s (%d bytes)\n", formatBytes(st.Size), st.Size)
	fmt.Printf("    Chunk Size : %s (%d chunks)\n", formatBytes(st.ChunkSize), st.Chunks)
	fmt.Printf("    Generation : %d (%s)\n", st.Generation, st.GenerationTime.Format(time.RFC3339))
	fmt.Printf("  Dirty Chunks : %d\n", st.DirtyChunks)
	if st.Verdict != "" {
		fmt.Printf("      Assembly : %s\n", st.Verdict)
	}
	if o := st.Owner; o != nil {
		fmt.Printf("     In use by : %s pid %d since %s (machine-id %s)\n", o.Host, o.PID, time.Unix(0, o.Since).Format(time.RFC3339), o.HostID)
	}
	if st.Resync != nil {
		fmt.Printf("        Resync : %s of leg %s, %.1f%% (%s copied, %.1f MB/s)\n", st.Resync.Mode, st.Resync.Target, st.Resync.Percent, formatBytes(st.BytesResynced), st.Resync.MBPerSec)
	}
	fmt.Println()
	fmt.Println("   Leg  State          Generation  Updated                    In-sync  Dirty  UUID")
	for _, l := range st.Legs {
		upd := "-"
		if !l.Updated.IsZero() {
			upd = l.Updated.Format(time.RFC3339)
		}
		fmt.Printf("   %-3s  %-13s  %10d  %-25s  %-7s  %5d  %s\n", l.Name, l.State, l.Generation, upd, strings.Join(l.InSync, ","), l.Dirty, l.UUID)
		if l.Error != "" {
			fmt.Printf("        error: %s\n", l.Error)
		}
	}
}

func mirrorCheck(c *cli.Context) error {
	a, b, err := twoURLs(c)
	if err != nil {
		return err
	}
	m, err := assembleMirror(c, a, b, MirrorFlags{Force: c.Bool("force"), Reserve: c.Bool("reserve")})
	if err != nil {
		return err
	}
	if err := waitWithProgress(c, m); err != nil {
		m.Close()
		return err
	}
	res, err := m.Check(c.Context, c.Bool("repair"))
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if err := printJSON(os.Stdout, res); err != nil {
			return err
		}
	} else {
		fmt.Printf("compared %d chunks (%s per leg) in %v: %d differing chunks, %d differing blocks",
			res.Chunks, formatBytes(res.BytesCompared), res.Elapsed.Round(time.Millisecond), res.Mismatches, res.MismatchBlocks)
		if len(res.FirstOffsets) > 0 {
			fmt.Printf(", first at offsets %v", res.FirstOffsets)
		}
		if res.Repaired > 0 {
			fmt.Printf("; %d chunks repaired from leg A", res.Repaired)
		}
		fmt.Println()
	}
	if res.Mismatches > 0 && res.Repaired < res.Mismatches {
		return withCode(ExitMismatch, errMirrorDiffers)
	}
	return nil
}

func mirrorResync(c *cli.Context) error {
	a, b, err := twoURLs(c)
	if err != nil {
		return err
	}
	rate, err := rateFlag(c)
	if err != nil {
		return err
	}
	m, err := assembleMirror(c, a, b, MirrorFlags{Prefer: c.String("prefer"), ResyncRate: rate, Force: c.Bool("force"), Reserve: c.Bool("reserve")})
	if err != nil {
		return err
	}
	werr := waitWithProgress(c, m)
	st := m.Status()
	if err := m.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return werr
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, st)
	}
	fmt.Printf("mirror %s: %s; %s resynced\n", st.Mirror, st.State, formatBytes(st.BytesResynced))
	return nil
}
