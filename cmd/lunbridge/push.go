package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockcopy"
	"github.com/lunbridge/lunbridge/blockdev"
)

func init() {
	register(catCopy, &cli.Command{
		Name:      "push",
		Usage:     "write an image file or stdin to a LUN (restore)",
		UsageText: "lunbridge push [options] FILE|- URL",
		Description: `Overwrites the LUN (from --offset) with the image. Holes of FILE and all-zero
chunks are sent as WRITE SAME zeroes instead of data (--discard also lets the
target unmap them); the push ends with SYNCHRONIZE CACHE.

Before any data moves it refuses an image larger than the LUN and a
read-only LUN. On a terminal it asks for confirmation; elsewhere it needs
--yes. With - the image is read from stdin (then --yes is required, and an
oversized stream is only detected when the LUN is full).

Examples:
   lunbridge push backup.img iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1
   zstd -dc backup.img.zst | lunbridge push --yes - iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1
   lunbridge push --yes --discard --json disk.img file:///dev/shm/restore.img`,
		Flags: append(append(copyFlags(), deviceFlags()...),
			checksumFlag(),
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask before overwriting the LUN"},
			&cli.BoolFlag{Name: "discard", Usage: "zero ranges may be unmapped on the target (WRITE SAME with UNMAP)"},
		),
		Action: pushAction,
	})
}

func pushAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf("push needs FILE (or - for stdin) and URL, got %d arguments", c.NArg())
	}
	file, url := c.Args().Get(0), c.Args().Get(1)
	opts, err := copyOptions(c)
	if err != nil {
		return err
	}
	opts.Discard = c.Bool("discard")
	fromStdin := file == "-"
	if fromStdin && !c.Bool("yes") {
		return usageErrorf("push from stdin needs --yes (stdin carries the image, nobody can confirm)")
	}

	var img *os.File
	size := int64(-1)
	if fromStdin {
		img = os.Stdin
	} else {
		if img, err = os.Open(file); err != nil {
			return err
		}
		defer img.Close()
		st, err := img.Stat()
		if err != nil {
			return err
		}
		if st.Mode().IsRegular() {
			size = st.Size()
		} else if st.Mode()&os.ModeDevice != 0 {
			if size, err = img.Seek(0, io.SeekEnd); err != nil {
				return err
			}
		}
	}

	dev, err := openMain(c, url, false)
	if err != nil {
		return err
	}
	defer dev.Close()
	if r, ok := dev.(blockdev.ReadOnlyer); ok && r.ReadOnly() {
		return fmt.Errorf("%s is read-only; nothing written", url)
	}
	if size >= 0 && opts.Offset+size > dev.Size() {
		return fmt.Errorf("image %s is %d bytes, larger than %s (%d bytes from offset %d); nothing written",
			file, size, url, dev.Size()-opts.Offset, opts.Offset)
	}
	n := dev.Size() - opts.Offset
	if size >= 0 {
		n = size
	}
	if err := confirm(c.Bool("yes"), fmt.Sprintf("overwrite LUN %s (%s, %d bytes)?", redactedURL(url), formatBytes(n), n),
		fmt.Sprintf("refusing to overwrite %s without --yes (no terminal to ask on)", redactedURL(url))); err != nil {
		return err
	}

	bar := newProgress(c, "push")
	opts.Progress = bar.callback()
	ctx := c.Context
	var res *blockcopy.Result
	if size >= 0 {
		res, err = blockcopy.PushFile(ctx, img, dev, opts)
	} else {
		res, err = blockcopy.PushReader(ctx, bufio.NewReaderSize(img, 1<<20), dev, opts)
	}
	bar.done()
	if err != nil {
		return copyError(ctx, err, res, file, false)
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, summarize(res, file, url))
	}
	return nil
}
