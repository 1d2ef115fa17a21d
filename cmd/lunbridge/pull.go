package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockcopy"
	"github.com/lunbridge/lunbridge/blockdev"
)

func init() {
	register(catCopy, &cli.Command{
		Name:      "pull",
		Usage:     "copy a LUN to an image file or to stdout (backup)",
		UsageText: "lunbridge pull [options] URL FILE|-",
		Description: `Reads the whole LUN (or --offset/--length of it) with many reads in flight and
writes it to FILE, keeping holes: ranges the target reports unmapped and
all-zero chunks are not written, so FILE is sparse. With - the image goes to
stdout, strictly in order, zeroes included (pipe it to a compressor).

A checksum of the image goes to FILE.blksum: the blkhash of blksum and
nbdcopy --blkhash (SHA-256 of every 64 KiB block, holes from a precomputed
digest, the block digests combined in order), computed on every core while
the data moves, so it costs little beside the copy; "blksum FILE" prints
the same line. --checksum sha256 writes FILE.sha256 for "sha256sum -c"
instead (one core, every byte hashed), --checksum none neither.
"lunbridge verify URL FILE.blksum" checks a LUN against either file.

A pull to a file is resumable: FILE.lunbridge-resume records how far it got
(synced every few seconds). After Ctrl-C, a kill or a lost target, rerun the
same command with --resume; it re-reads the last chunk before the resume
point, refuses if the LUN changed, and still produces the whole-image
checksum. An existing non-empty FILE is never overwritten without --force;
neither is a block device or a character device (other than /dev/null).
A FIFO is written in order like stdout (no --resume, no checksum file).

On a disk-backed file system (ext4, xfs, btrfs...) the bulk of FILE is
written with O_DIRECT, like dd oflag=direct or qemu-img -t none: no second
copy through the page cache, no page cache filled with a backup, and FILE
is fsynced before pull exits. --buffered writes through the page cache.

--json prints a summary at the end (bytes_read, bytes_written, holes_bytes,
direct_bytes, seconds, mb_per_s, blkhash or sha256, checksum_algo, file) on stdout, or on stderr when the image goes
to stdout. A progress line is drawn on stderr when it is a terminal (or with
--progress). SIGINT/SIGTERM stop the pull cleanly (exit 130).

Examples:
   lunbridge pull iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1 backup.img
   lunbridge pull --resume iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1 backup.img
   lunbridge pull --rate-limit 50M --json iscsi://san1/iqn.2001-05.com.example:db/0 db.img
   lunbridge pull iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1 - | zstd > backup.img.zst
   lunbridge pull --offset 1M --length 64M file:///dev/shm/disk.img part.img
   lunbridge pull --mirror-leg iscsi://san2/iqn.2001-04.com.example:b/0 backup.img   # after mirror split B

--mirror-leg reads URL as one leg of a lunbridge mirror: only the mirrored
data (the exported size its metadata records), not the metadata at the LUN's
end, and nothing is written to the leg, so it runs beside the serve that owns
the mirror. Split the leg off first (lunbridge mirror split B): a leg still
written gives an image mixing older and newer writes (a warning says so).`,
		Flags: append(append(copyFlags(), withoutFlag(deviceFlags(), "force")...),
			&cli.StringFlag{Name: "length", Usage: "copy this many bytes from --offset (default: to the end)"},
			checksumFlag(),
			&cli.BoolFlag{Name: "resume", Usage: "continue an interrupted pull from FILE.lunbridge-resume"},
			&cli.BoolFlag{Name: "force", Usage: "overwrite an existing non-empty FILE, or a block/character device FILE"},
			&cli.BoolFlag{Name: "buffered", Usage: "write FILE through the page cache only (default: O_DIRECT for the aligned bulk where the file system has it; never on tmpfs)"},
			&cli.BoolFlag{Name: "mirror-leg", Usage: "URL is one leg of a mirror (e.g. split off with mirror split): copy the mirrored data only (the exported size in its metadata), writing nothing to it, also while the mirror runs"},
		),
		Action: pullAction,
	})
}

// pullOutputCheck keeps the promise that FILE is never overwritten
// without --force, for every kind of FILE:
//   - a regular file: refused when not empty (unless --force or --resume);
//   - a block device, or a character device other than the null device:
//     its content would be overwritten, so --force is needed (--resume
//     does not count: a device has no sidecar to resume from);
//   - the null device: nothing to lose, allowed;
//   - a FIFO or socket: nothing stored there to destroy, so no --force;
//     it is written strictly in order, like "-" (no --resume).
func pullOutputCheck(file string, force, resume bool) (blockcopy.OutputKind, error) {
	kind, st, err := blockcopy.ClassifyOutput(file)
	if err != nil {
		return kind, err
	}
	switch kind {
	case blockcopy.OutputRegular:
		if !force && !resume && st.Size() > 0 {
			return kind, usageErrorf("%s exists (%s); use --force to overwrite or --resume to continue", file, formatBytes(st.Size()))
		}
	case blockcopy.OutputDevice:
		if !force {
			what := "a character device"
			if st.Mode()&os.ModeCharDevice == 0 {
				what = "a block device"
				if f, err := os.Open(file); err == nil {
					if n, err := f.Seek(0, io.SeekEnd); err == nil {
						what += " (" + formatBytes(n) + ")"
					}
					f.Close()
				}
			}
			return kind, usageErrorf("%s is %s: pull would overwrite its content; add --force to write the image onto it", file, what)
		}
	case blockcopy.OutputStream:
		if resume {
			return kind, usageErrorf("%s is a FIFO or socket: --resume needs a regular FILE", file)
		}
	}
	return kind, nil
}

// sourceID names a device for resume checks: its WWID/serial when it has
// them, else the URL without its secrets (the sidecar is a file on disk),
// plus the size. A mirror has no identity of its own: its URL is leg A's.
func sourceID(d blockdev.Device, url string) string {
	if idr, ok := d.(blockdev.Identifier); ok {
		if id := idr.Identity(); id.WWID != "" || id.Serial != "" {
			return fmt.Sprintf("wwid=%s serial=%s size=%d block=%d", id.WWID, id.Serial, d.Size(), d.BlockSize())
		}
	}
	return fmt.Sprintf("url=%s size=%d block=%d", redactedURL(url), d.Size(), d.BlockSize())
}

func pullAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf("pull needs URL and FILE (or - for stdout), got %d arguments", c.NArg())
	}
	url, file := c.Args().Get(0), c.Args().Get(1)
	opts, err := copyOptions(c)
	if err != nil {
		return err
	}
	toStdout := file == "-"
	if toStdout && (c.Bool("resume") || c.Bool("force")) {
		return usageErrorf("--resume and --force need a FILE, not -")
	}
	if toStdout && isTerminal(os.Stdout) {
		return usageErrorf("refusing to write a raw image to a terminal; redirect stdout or give a FILE")
	}
	var stream *os.File // a FIFO or socket FILE, written in order like stdout
	if !toStdout {
		// Refuse before connecting to anything.
		kind, err := pullOutputCheck(file, c.Bool("force"), c.Bool("resume"))
		if err != nil {
			return err
		}
		if kind == blockcopy.OutputStream {
			if stream, err = os.OpenFile(file, os.O_WRONLY, 0); err != nil {
				return err
			}
			defer stream.Close()
		}
	}
	var dev blockdev.Device
	if c.Bool("mirror-leg") {
		dev, err = openMirrorLeg(c, url) // mirror.go
	} else {
		dev, err = openMain(c, url, true)
	}
	if err != nil {
		return err
	}
	defer dev.Close()

	bar := newProgress(c, "pull")
	opts.Progress = bar.callback()
	ctx := c.Context
	var res *blockcopy.Result
	if toStdout {
		res, err = blockcopy.ToWriter(ctx, dev, os.Stdout, opts)
	} else if stream != nil {
		res, err = blockcopy.ToWriter(ctx, dev, stream, opts)
	} else {
		res, err = blockcopy.PullFile(ctx, dev, file, blockcopy.PullOptions{
			Options:      opts,
			SourceID:     sourceID(dev, url),
			Resume:       c.Bool("resume"),
			Force:        c.Bool("force"),
			ChecksumFile: opts.Checksum,
			Buffered:     c.Bool("buffered"),
		})
	}
	bar.done()
	if err != nil {
		return copyError(ctx, err, res, file, !toStdout && stream == nil)
	}
	if c.Bool("json") {
		w := os.Stdout
		if toStdout {
			w = os.Stderr // stdout carries the image
		}
		return printJSON(w, summarize(res, file, url))
	}
	return nil
}

// copyError maps an engine error to an exit code and a readable note.
func copyError(ctx context.Context, err error, res *blockcopy.Result, file string, resumable bool) error {
	switch {
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		note := "interrupted"
		if res != nil {
			note = fmt.Sprintf("interrupted at %s of %s", formatBytes(res.Done), formatBytes(res.Total))
		}
		if resumable {
			note += "; rerun with --resume to continue"
		}
		return withCode(ExitInterrupted, errors.New(note))
	case errors.Is(err, blockcopy.ErrExists), errors.Is(err, blockcopy.ErrNoResumeState),
		errors.Is(err, blockcopy.ErrUnaligned), errors.Is(err, blockdev.ErrOutOfRange):
		return withCode(ExitUsage, err)
	}
	if resumable && res != nil && res.Done > 0 {
		return fmt.Errorf("%w (progress saved in %s%s; rerun with --resume)", err, file, blockcopy.ResumeSuffix)
	}
	return err
}
