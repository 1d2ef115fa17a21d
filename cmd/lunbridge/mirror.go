package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockcopy"
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
		UsageText: "lunbridge mirror create|status|check|resync [options] URL-A URL-B\n   lunbridge mirror status|fail|remove|add|split|rejoin [--name NAME | --control-socket PATH] [LEG]\n   lunbridge mirror replace [--name NAME | --control-socket PATH] LEG URL",
		Description: `A mirror keeps two LUNs (legs A and B, usually on two independent targets)
identical. Its metadata (superblock + write-intent bitmap) sits at the END of
each leg, so either leg alone is a plain image of the disk. serve, attach,
mount, pull and bench use a mirror with --mirror URL-B.

Examples:
   lunbridge mirror create --assume-clean iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0
   lunbridge serve --mirror iscsi://san2/iqn.2001-04.com.example:b/0 iscsi://san1/iqn.2001-04.com.example:a/1
   lunbridge mirror status --json iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0
   lunbridge mirror check --repair iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0
   lunbridge mirror status                  # the mirror of the running serve/attach/mount
   lunbridge mirror fail B; lunbridge mirror remove B; lunbridge mirror add B
   lunbridge mirror split B; lunbridge pull --mirror-leg iscsi://san2/iqn.2001-04.com.example:b/0 backup.img; lunbridge mirror rejoin B
   lunbridge mirror fail B; lunbridge mirror replace B iscsi://san3/iqn.2001-04.com.example:c/0

A running serve, attach or mount re-adds a failed leg by itself: it reopens the
leg (after --readd-interval, doubling up to --readd-max-interval) and, when it is
the same LUN (same mirror metadata and WWID), resyncs only the chunks written
while it was away. A leg that comes back as another disk is refused and left
alone until "mirror add".`,
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "initialize a new mirror on two LUNs (overwrites their last megabytes and, unless --assume-clean, all of leg B)",
				UsageText: "lunbridge mirror create [--assume-clean [--force]] [--chunk 4M] [--yes] URL-A URL-B",
				Description: `Writes mirror metadata (superblock + write-intent bitmap) to the last
megabytes of both LUNs; the mirror exports what is left before them. Then
leg B is overwritten with leg A's content (the initial sync, in the
background of this command, with progress): leg A is the one whose data
is kept, so the order of the URLs matters.

Before writing anything it shows both legs (URL, vendor, product, serial,
WWID, size), what it recognises on them (GPT or MBR partition table,
ext2/3/4, XFS, LVM2, an existing lunbridge mirror) and what will be
overwritten, and asks. Without a terminal it needs --yes (else exit 2,
nothing written). The same LUN as both legs (same URL or same WWID) is
always refused.

--assume-clean skips the initial sync, which is only correct when the legs
already hold the same data: it is accepted when both LUNs report the whole
exported range unmapped (GET LBA STATUS, reading as zeroes; fresh thin
LUNs), else after a full compare of the legs (with progress on a
terminal). Legs that differ are refused with exit 6 naming the first
differing offset. --force skips that proof.

Examples:
   lunbridge mirror create iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0
   lunbridge mirror create --yes --assume-clean iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0
   lunbridge mirror create --chunk 1M --resync-rate 100M file:///srv/a.img file:///srv/b.img`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "assume-clean", Usage: "skip the initial sync of leg B; accepted only when the legs are proven equal (both unmapped, or a full compare)"},
					&cli.BoolFlag{Name: "force", Usage: "with --assume-clean: do not prove the legs equal (if they differ, the mirror returns either leg's data)"},
					&cli.StringFlag{Name: "chunk", Value: "4M", Usage: "write-intent bitmap granularity"},
					&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask before overwriting (needed without a terminal); existing mirror metadata is replaced too"},
					&cli.StringFlag{Name: "resync-rate", Usage: "cap the initial sync at this many bytes/s (e.g. 100M)"},
				},
				Action: mirrorCreate,
			},
			{
				Name:      "status",
				Usage:     "show both legs' metadata (like mdadm --detail) without assembling, or a running mirror's status",
				UsageText: "lunbridge mirror status [--json] URL-A URL-B\n   lunbridge mirror status [--json] [--name NAME | --control-socket PATH]\n   lunbridge mirror status [--json] --async URL",
				Description: `With URL-A and URL-B: reads both legs' metadata read-only, without
assembling (like mdadm --examine/--detail), beside a running owner too:
each leg's generation, in-sync view, dirty chunks and last update, the
owner using the mirror, and what an assembly would do (clean, resync of a
stale leg, split brain).

Without URLs: asks the running serve, attach or mount (the only instance
running a mirror, or --name NAME, or --control-socket PATH) for its
mirror's live status: each leg's state (in-sync, resyncing, failed,
removed, split), the resync's mode and progress (incremental, full, crash,
replace), automatic re-add attempts, each multipath leg's paths, and an
asynchronous (--mirror-async) leg's mode, lag and consistency.

With --async URL: reads the asynchronous leg's metadata without writing
(at a disaster-recovery site, before using it): is it a consistent image,
and of when.

Examples:
   lunbridge mirror status
   lunbridge mirror status --json --name db1
   lunbridge mirror status --async iscsi://dr-site/iqn.2001-04.com.example:dr/0
   lunbridge mirror status iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
					&cli.StringFlag{Name: "async", Usage: "read the metadata of the asynchronous (--mirror-async) leg at `URL` without writing: is it a consistent image, and of when"},
					instanceNameFlag(),
					controlSocketFlag("ask the running serve/attach/mount on this control socket `PATH` (without URLs the default is that of --name, or of the only running mirror)"),
				},
				Action: mirrorStatus,
			},
			withDescription(mirrorManageCommand("fail", "mark a leg of the running mirror failed (not re-added automatically until mirror add)"),
				`Takes a leg of the running serve/attach/mount's mirror out of service, as if
it had failed (like mdadm --fail): reads and writes go to the other leg
only, and the write-intent bitmap marks every chunk written from then on.
Automatic re-add leaves the leg alone until "mirror add". The last in-sync
leg is never failed. Then "mirror remove" closes its session, "mirror add"
brings it back (incremental resync) and "mirror replace" puts another LUN
in its place (full resync).

Examples:
   lunbridge mirror fail B
   lunbridge mirror fail --json --control-socket /run/lunbridge/db.sock A`),
			withDescription(mirrorManageCommand("remove", "close a failed leg's device in the running mirror (like mdadm --remove)"),
				`Closes the device (the iSCSI session) of a failed leg of the running
serve/attach/mount's mirror, like mdadm --remove, so its LUN can be taken
away, and holds it out of automatic re-add until "mirror add" or "mirror
replace". An active leg must be failed first ("mirror fail").

Examples:
   lunbridge mirror fail B; lunbridge mirror remove B
   lunbridge mirror remove --json B`),
			withDescription(mirrorManageCommand("add", "reopen a failed or removed leg of the running mirror now and re-add it (incremental resync)"),
				`Reopens a failed, removed or refused leg of the running serve/attach/mount's
mirror now through its URL (like mdadm --re-add) and lifts the hold on
automatic re-add. When it is the same leg (the mirror's metadata on it, the
WWID the mirror recorded), only the chunks written while it was away are
copied, with writes going on; "mirror status" shows the progress. A LUN
that comes back as another disk is refused: use "mirror replace" for a new
LUN.

Examples:
   lunbridge mirror add B
   lunbridge mirror add --json --control-socket /run/lunbridge/db.sock B`),
			withDescription(mirrorManageCommand("split", "split a leg off the running mirror at a write barrier: a frozen, consistent image for a backup"),
				`Stops writes to the leg at a write barrier: new writes wait, the writes in
flight end on both legs, both legs are flushed (SYNCHRONIZE CACHE), and the
leg leaves the mirror. It then holds every write acknowledged before the
split and none after it: a crash-consistent image of that instant, like an
array snapshot. Writes go on to the other leg; the write-intent bitmap marks
every chunk written from then on. Writes pause only for the barrier (the
writes in flight, two flushes, two metadata writes).

Both legs must be in sync (no resync running). Nothing writes the split leg
(data or metadata) until "mirror rejoin"; automatic re-add leaves it alone;
reads are served by the other leg. A persistent reservation (--reserve)
stays: other initiators may read the leg, not write it.

Read the image with "lunbridge pull --mirror-leg URL FILE" (the exported size
only, not the metadata at the LUN's end; nothing is written to the leg),
beside the running serve. "mirror status" shows the leg as "split" and since
when. A restart of the serve/attach/mount ends the split: the leg is resynced
incrementally at assembly, as by rejoin.

Examples:
   lunbridge mirror split B
   lunbridge pull --mirror-leg iscsi://san2/iqn.2001-04.com.example:b/0 backup.img
   lunbridge mirror rejoin B`),
			withDescription(mirrorManageCommand("rejoin", "reattach a split leg to the running mirror (copies only the chunks written since the split)"),
				`Reattaches a leg split off by "mirror split" and resyncs it incrementally:
only the chunks written since the split are copied from the other leg, with
writes going on. "mirror status" shows the progress; the leg is in-sync again
when the resync ends. Do not rejoin while a backup still reads the leg.

Examples:
   lunbridge mirror rejoin B
   lunbridge mirror rejoin --json B`),
			mirrorReplaceCommand(), // mirrorreplace.go
			{
				Name:      "check",
				Usage:     "scrub: compare both legs chunk by chunk (exit 6 when they differ)",
				UsageText: "lunbridge mirror check [--repair [--yes]] [--json] URL-A URL-B",
				Description: `Assembles the mirror (finishing any pending resync first), reads both legs
chunk by chunk and compares them. Exit 0 when they are equal, 6 when they
differ (the first differing offsets are printed).

--repair rewrites each differing chunk of leg B with leg A's data: leg A
is the source, whichever leg holds the right data. On a terminal it
compares first, shows the legs and the differences, and asks before
writing; without a terminal it needs --yes (else exit 2, nothing
written).

Examples:
   lunbridge mirror check iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0
   lunbridge mirror check --json iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0
   lunbridge mirror check --repair --yes iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "repair", Usage: "rewrite differing chunks on leg B from leg A (asks first; leg A is the source)"},
					&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "with --repair: do not ask (needed without a terminal)"},
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
					ownerForceFlag(), reserveFlag(),
				},
				Action: mirrorCheck,
			},
			{
				Name:      "resync",
				Usage:     "assemble, resync in the foreground with progress, close",
				UsageText: "lunbridge mirror resync [--prefer A|B [--yes]] [--resync-rate 100M] [--json] URL-A URL-B",
				Description: `Assembles the mirror, copies what the write-intent bitmap says is stale
(or all of a leg that was replaced) in the foreground with progress, and
closes it clean. Nothing is asked: only stale chunks are copied.

--prefer A|B is for a split brain (both legs written without each other):
the named leg is kept and the other is made equal to it, a full copy that
overwrites writes that reached only the other leg. On a terminal it shows
the legs and the mirror's state and asks; without a terminal it needs
--yes (else exit 2, nothing written). lunbridge mirror status shows both
legs' generations first.

Examples:
   lunbridge mirror resync iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0
   lunbridge mirror resync --resync-rate 100M --json iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0
   lunbridge mirror resync --prefer B --yes iscsi://san1/iqn.2001-04.com.example:a/1 iscsi://san2/iqn.2001-04.com.example:b/0`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "prefer", Usage: "only on split brain (both legs written without each other): keep this leg (A or B), fully resync the other (asks first). Ignored otherwise; refused for a stale leg"},
					&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "with --prefer: do not ask (needed without a terminal)"},
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

// withDescription sets the --help description of c.
func withDescription(c *cli.Command, desc string) *cli.Command {
	c.Description = desc
	return c
}

// openMirrorLeg opens url (plus --path URLs) read-only as one leg of a
// mirror, for pull --mirror-leg: a reader of the mirrored data only (the
// exported size the leg's metadata records), which writes nothing and may
// run beside the mirror's owner (mirror.OpenReadOnly with one leg).
func openMirrorLeg(c *cli.Context, url string) (blockdev.Device, error) {
	url, err := applyDevice(c, url)
	if err != nil {
		return nil, err
	}
	if err := checkDeviceFlags(c); err != nil {
		return nil, err
	}
	if len(c.StringSlice("mirror")) > 0 {
		return nil, usageErrorf("--mirror-leg reads one leg alone: give its URL without --mirror")
	}
	d, err := openLeg(c, append([]string{url}, c.StringSlice("path")...), true)
	if err != nil {
		return nil, err
	}
	r, err := mirror.OpenReadOnly(c.Context, d, nil, mirror.AssembleOptions{Options: mirror.Options{Logger: mirrorLogger()}})
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("%s: %w", redactedURL(url), err)
	}
	if at := r.SplitSince(); !at.IsZero() {
		logrusInfo("mirror: leg %s, split off at %s: reading its %s of mirrored data", r.Leg(), at.UTC().Format(time.RFC3339), formatBytes(r.Size()))
	} else {
		logrusInfo("mirror: leg %s alone: reading its %s of mirrored data", r.Leg(), formatBytes(r.Size()))
	}
	return r, nil
}

// MirrorFlags tune openMirrorLegs.
type MirrorFlags struct {
	ReadOnly   bool
	Prefer     string
	ResyncRate int64
	// Readd turns on automatic re-add of a failed leg (long-running
	// commands), reopening it every ProbeInterval doubling to
	// ProbeMaxInterval (0: the mirror package's defaults).
	Readd                           bool
	ProbeInterval, ProbeMaxInterval time.Duration
	Force                           bool // take over from an owner on another host
	Reserve                         bool // fence the legs with a persistent reservation
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
	mo := mirror.Options{ResyncRate: opts.ResyncRate, Logger: mirrorLogger(), Reserve: opts.Reserve}
	ls := newLegSet(c, [2][]string{a, b})
	if opts.Readd {
		mo.Reopen = ls.reopen
		mo.ProbeInterval, mo.ProbeMaxInterval = opts.ProbeInterval, opts.ProbeMaxInterval
	}
	m, err := mirror.Assemble(c.Context, da, db, mirror.AssembleOptions{
		Options: mo,
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
	mirrorLegSets.Store(m, ls)
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
	assumeClean := c.Bool("assume-clean")
	if c.Bool("force") && !assumeClean {
		return usageErrorf("--force only skips the proof that --assume-clean legs are equal; give --assume-clean too")
	}
	if sameLUNURLs(a, b) {
		return usageErrorf("%s is given as both legs: a mirror needs two different LUNs", redactedURL(a))
	}
	da, db, err := openLegs(c, a, b, false, false)
	if err != nil {
		return err
	}
	m, proof, err := createMirror(c, a, b, da, db, chunk, rate, assumeClean)
	if err != nil {
		da.Close()
		db.Close()
		return err
	}
	if !assumeClean {
		if err := waitWithProgress(c, m); err != nil {
			m.Close()
			return err
		}
	}
	st := m.Status()
	if err := m.Close(); err != nil {
		return err
	}
	if proof != "" {
		proof = " (--assume-clean: " + proof + ")"
	}
	fmt.Printf("mirror %s created: %s exported, chunk %s, legs A and B in sync%s\n", st.Mirror, formatBytes(st.Size), formatBytes(st.ChunkSize), proof)
	return nil
}

// createMirror shows what create will overwrite, gets confirmation (or
// --yes), proves --assume-clean legs equal (unless --force) and creates
// the mirror.
func createMirror(c *cli.Context, a, b string, da, db blockdev.Device, chunk, rate int64, assumeClean bool) (*mirror.Mirror, string, error) {
	ctx := c.Context
	if mirror.SameLUN(da, db) {
		return nil, "", usageErrorf("%s and %s are the same LUN (WWID %s): a mirror needs two different LUNs",
			redactedURL(a), redactedURL(b), legWWID(da))
	}
	g, err := mirror.PlanCreate(da, db, chunk)
	if err != nil {
		if errors.Is(err, blockdev.ErrInvalid) {
			return nil, "", usageErrorf("--chunk: %v", err)
		}
		return nil, "", err
	}
	la, lb := describeLeg(ctx, "A", a, da, true), describeLeg(ctx, "B", b, db, true)
	yes := c.Bool("yes")
	if !yes && !confirmIO.terminal() {
		fmt.Fprint(confirmIO.out, createPlanText(la, lb, g, assumeClean, "the legs must be proven equal first"))
		return nil, "", confirm(false, "", createRefusal(la, lb, g, assumeClean))
	}
	proof := ""
	if assumeClean {
		if proof, err = proveClean(c, la, lb, da, db, g.Exported); err != nil {
			return nil, "", err
		}
	}
	if !yes {
		fmt.Fprint(confirmIO.out, createPlanText(la, lb, g, assumeClean, proof))
		if err := confirm(false, "Create the mirror?", ""); err != nil {
			return nil, "", err
		}
	}
	// Confirmed (or --yes): existing mirror metadata, shown above, goes too.
	m, err := mirror.Create(ctx, da, db, mirror.CreateOptions{
		Options:     mirror.Options{ResyncRate: rate, Logger: mirrorLogger()},
		ChunkSize:   chunk,
		AssumeClean: assumeClean,
		Force:       true,
	})
	return m, proof, err
}

// proveClean accepts --assume-clean only for legs proven equal over the
// exported size: both unmapped (reading as zeroes) by allocation status,
// or a full compare. --force skips the proof.
func proveClean(c *cli.Context, la, lb legInfo, da, db blockdev.Device, n int64) (string, error) {
	if c.Bool("force") {
		logrus.Warnf("--force: leg B is NOT checked against leg A; if they differ, reads return either leg's data and a file system on the mirror is corrupted")
		return "NOT proven equal (--force)", nil
	}
	bar, start := newProgress(c, "compare"), time.Now()
	res, err := mirror.CompareLegs(c.Context, da, db, n, mirror.CompareOptions{Progress: func(done, total int64) {
		if bar != nil {
			bar.update(blockcopy.Progress{Done: done, Total: total, Read: done, Elapsed: time.Since(start)})
		}
	}})
	bar.done()
	switch {
	case errors.Is(err, mirror.ErrLegsDiffer):
		return "", withCode(ExitMismatch, fmt.Errorf("--assume-clean refused: leg B %s differs from leg A %s at offset %d (first differing block; %s compared): "+
			"with different legs, reads return either leg's data; run mirror create without --assume-clean to copy leg A onto leg B",
			lb.URL, la.URL, res.FirstDiff, formatBytes(res.Compared)))
	case err != nil:
		return "", err
	case res.Method == "unmapped":
		return fmt.Sprintf("proven equal: both legs report all %s unmapped and reading as zeroes", formatBytes(n)), nil
	default:
		return fmt.Sprintf("proven equal: all %s compared in %v", formatBytes(n), res.Elapsed.Round(time.Millisecond)), nil
	}
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
	if u := c.String("async"); u != "" {
		return asyncStatusOffline(c, u) // asyncleg.go
	}
	if c.IsSet("control-socket") || c.IsSet("name") || c.NArg() == 0 {
		return mirrorStatusLive(c) // mirrorctl.go
	}
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
	repair, yes := c.Bool("repair"), c.Bool("yes")
	ask := repair && !yes
	var legs []legInfo
	if ask {
		if !confirmIO.terminal() {
			return confirm(false, "", checkRefusal(a, b))
		}
		// Identify the legs before assembling: the mirror holds their
		// sessions (and ISIDs) until it closes.
		if legs, err = describeLegURLs(c, a, b); err != nil {
			return err
		}
	}
	m, err := assembleMirror(c, a, b, MirrorFlags{Force: c.Bool("force"), Reserve: c.Bool("reserve")})
	if err != nil {
		return err
	}
	if err := waitWithProgress(c, m); err != nil {
		m.Close()
		return err
	}
	declined := false
	var res mirror.CheckResult
	if ask {
		// Compare first, show what differs, ask, then repair.
		res, err = m.Check(c.Context, false)
		if err == nil && res.Mismatches > 0 {
			fmt.Fprint(confirmIO.out, checkRepairText(legs, res))
			if cerr := confirm(false, "Rewrite these chunks of leg B from leg A?", ""); cerr != nil {
				declined = true
				fmt.Fprintln(confirmIO.out, "not confirmed; nothing repaired")
			} else {
				res, err = m.Check(c.Context, true)
			}
		}
	} else {
		res, err = m.Check(c.Context, repair)
	}
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
	if res.Mismatches > 0 && (declined || res.Repaired < res.Mismatches) {
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
	if prefer := c.String("prefer"); prefer != "" {
		src, ok := map[string]int{"A": 0, "a": 0, "0": 0, "B": 1, "b": 1, "1": 1}[prefer]
		if !ok {
			return usageErrorf("--prefer %q: want A or B", prefer)
		}
		if err := confirmPrefer(c, a, b, src); err != nil {
			return err
		}
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
