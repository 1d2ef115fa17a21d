package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockcopy"
)

func init() {
	register(catCopy, &cli.Command{
		Name:      "verify",
		Usage:     "compare a LUN with an image file",
		UsageText: "lunbridge verify [options] URL FILE",
		Description: `Reads the LUN (or --offset/--length of it) and FILE side by side. Ranges that
are holes on both sides compare without any I/O; a hole against data is
compared with zeroes. Prints the number of differing bytes and blocks and the
first differing offsets (device offsets). Exit status 0 when identical, 6 when
they differ (sizes included).

With FILE.blksum or FILE.sha256 (the checksum file pull writes) instead of
an image, the LUN is read and its checksum compared with the file's: a
backup's checksum checks the LUN without the backup at hand.

Examples:
   lunbridge verify iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1 backup.img
   lunbridge verify iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1 backup.img.blksum
   lunbridge verify --json --max-diffs 100 file:///dev/shm/disk.img copy.img`,
		Flags: append(append(copyFlags(), deviceFlags()...),
			&cli.StringFlag{Name: "length", Usage: "compare this many bytes from --offset (default: to the end)"},
			&cli.IntFlag{Name: "max-diffs", Value: 10, Usage: "report at most this many differing offsets"},
		),
		Action: verifyAction,
	})
}

// verifySummary is the --json output of verify.
type verifySummary struct {
	Equal      bool    `json:"equal"`
	DeviceSize int64   `json:"device_bytes"`
	FileSize   int64   `json:"file_bytes"`
	DiffBytes  int64   `json:"diff_bytes"`
	DiffBlocks int64   `json:"diff_blocks"`
	FirstDiffs []int64 `json:"first_diffs"`
	BytesRead  int64   `json:"bytes_read"`
	HolesBytes int64   `json:"holes_bytes"`
	Seconds    float64 `json:"seconds"`
	File       string  `json:"file"`
	Device     string  `json:"device"`
}

func verifyAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf("verify needs URL and FILE, got %d arguments", c.NArg())
	}
	url, file := c.Args().Get(0), c.Args().Get(1)
	opts, err := copyOptions(c)
	if err != nil {
		return err
	}
	if strings.HasSuffix(file, ".blksum") || strings.HasSuffix(file, ".sha256") {
		return verifyChecksum(c, url, file, opts)
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	dev, err := openMain(c, url, true)
	if err != nil {
		return err
	}
	defer dev.Close()

	bar := newProgress(c, "verify")
	opts.Progress = bar.callback()
	vr, err := blockcopy.Verify(c.Context, dev, f, blockcopy.VerifyOptions{Options: opts, MaxDiffs: c.Int("max-diffs")})
	bar.done()
	if err != nil {
		var res *blockcopy.Result
		if vr != nil {
			res = &vr.Result
		}
		return copyError(c.Context, err, res, file, false)
	}
	if c.Bool("json") {
		s := verifySummary{
			Equal: vr.Equal, DeviceSize: vr.DeviceSize, FileSize: vr.FileSize,
			DiffBytes: vr.DiffBytes, DiffBlocks: vr.DiffBlocks, FirstDiffs: vr.FirstDiffs,
			BytesRead: vr.BytesRead, HolesBytes: vr.HoleBytes, Seconds: vr.Elapsed.Seconds(),
			File: file, Device: url,
		}
		if s.FirstDiffs == nil {
			s.FirstDiffs = []int64{}
		}
		if err := printJSON(os.Stdout, s); err != nil {
			return err
		}
	} else if vr.Equal {
		fmt.Printf("identical: %s (%d bytes)\n", formatBytes(vr.DeviceSize), vr.DeviceSize)
	} else {
		if vr.DeviceSize != vr.FileSize {
			fmt.Printf("size differs: device range %s (%d bytes), file %s (%d bytes)\n", formatBytes(vr.DeviceSize), vr.DeviceSize, formatBytes(vr.FileSize), vr.FileSize)
		}
		if vr.DiffBytes > 0 {
			offs := make([]string, len(vr.FirstDiffs))
			for i, o := range vr.FirstDiffs {
				offs[i] = fmt.Sprintf("%d (0x%x)", o, o)
			}
			fmt.Printf("differ: %s (%d bytes) in %d blocks\nfirst differing offsets: %s\n", formatBytes(vr.DiffBytes), vr.DiffBytes, vr.DiffBlocks, strings.Join(offs, ", "))
		}
	}
	if !vr.Equal {
		return withCode(ExitMismatch, fmt.Errorf("%s and %s differ: %s in %d blocks", redactedURL(url), file, formatBytes(vr.DiffBytes), vr.DiffBlocks))
	}
	return nil
}

// checksumVerifySummary is the --json output of verify against a checksum file.
type checksumVerifySummary struct {
	Equal        bool    `json:"equal"`
	ChecksumAlgo string  `json:"checksum_algo"`
	Expected     string  `json:"expected"`
	Actual       string  `json:"actual"`
	DeviceSize   int64   `json:"device_bytes"`
	BytesRead    int64   `json:"bytes_read"`
	HolesBytes   int64   `json:"holes_bytes"`
	Seconds      float64 `json:"seconds"`
	File         string  `json:"file"`
	Device       string  `json:"device"`
}

// verifyChecksum reads the LUN's range, computes the checksum named by the
// checksum file and compares.
func verifyChecksum(c *cli.Context, url, file string, opts blockcopy.Options) error {
	algo, want, _, err := blockcopy.ParseChecksumFile(file)
	if err != nil {
		return usageErrorf("%v", err)
	}
	dev, err := openMain(c, url, true)
	if err != nil {
		return err
	}
	defer dev.Close()
	opts.Checksum, opts.ChecksumAlgo = true, algo
	bar := newProgress(c, "verify")
	opts.Progress = bar.callback()
	res, err := blockcopy.ToWriter(c.Context, dev, io.Discard, opts)
	bar.done()
	if err != nil {
		return copyError(c.Context, err, res, file, false)
	}
	equal := res.Checksum == want
	if c.Bool("json") {
		if err := printJSON(os.Stdout, checksumVerifySummary{
			Equal: equal, ChecksumAlgo: algo, Expected: want, Actual: res.Checksum,
			DeviceSize: res.Total, BytesRead: res.BytesRead, HolesBytes: res.HoleBytes,
			Seconds: res.Elapsed.Seconds(), File: file, Device: url,
		}); err != nil {
			return err
		}
	} else if equal {
		fmt.Printf("identical: %s (%d bytes), %s %s\n", formatBytes(res.Total), res.Total, algo, want)
	} else {
		fmt.Printf("differ: %s of the LUN is %s, %s says %s\n", algo, res.Checksum, file, want)
	}
	if !equal {
		return withCode(ExitMismatch, fmt.Errorf("%s does not match %s (%s %s, want %s)", redactedURL(url), file, algo, res.Checksum, want))
	}
	return nil
}
