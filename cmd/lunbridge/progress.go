package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/blockcopy"
)

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// copyFlags are shared by pull, push and verify.
func copyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "json", Usage: "print a JSON summary on stdout at the end"},
		&cli.BoolFlag{Name: "progress", Usage: "show progress on stderr even when it is not a terminal"},
		&cli.IntFlag{Name: "parallel", Value: blockcopy.DefaultWorkers, Usage: "I/Os in flight"},
		&cli.StringFlag{Name: "chunk", Usage: "bytes per I/O, e.g. 256k, 4M (default: 1M, or the device's maximum transfer when smaller)"},
		&cli.StringFlag{Name: "rate-limit", Usage: "cap data bytes per second, e.g. 50M (holes are free)"},
		&cli.StringFlag{Name: "offset", Usage: "start at this device offset, e.g. 1G (a multiple of the block size)"},
	}
}

func checksumFlag() cli.Flag {
	return &cli.StringFlag{Name: "checksum", Value: "blkhash", Usage: "blkhash|sha256|none: checksum of the image; blkhash is blksum's (per-block SHA-256, holes nearly free, computed on every core) in FILE.blksum, sha256 is sha256sum's in FILE.sha256"}
}

// copyOptions builds engine options from the shared flags.
func copyOptions(c *cli.Context) (blockcopy.Options, error) {
	var o blockcopy.Options
	o.Workers = c.Int("parallel")
	if o.Workers < 1 || o.Workers > 1024 {
		return o, usageErrorf("--parallel must be between 1 and 1024")
	}
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"rate-limit", &o.RateLimit}, {"offset", &o.Offset}, {"length", &o.Length}} {
		if !c.IsSet(f.name) {
			continue
		}
		v, err := parseSize(c.String(f.name))
		if err != nil {
			return o, usageErrorf("--%s: %v", f.name, err)
		}
		*f.dst = v
	}
	if c.IsSet("chunk") {
		v, err := parseSize(c.String("chunk"))
		if err != nil || v <= 0 || v > 64<<20 {
			return o, usageErrorf("--chunk: want a size between 512 and 64M, not %q", c.String("chunk"))
		}
		o.ChunkSize = int(v)
	}
	switch c.String("checksum") { // "" for commands without the flag
	case "blkhash":
		o.Checksum, o.ChecksumAlgo = true, blockcopy.ChecksumBlkhash
	case "sha256":
		o.Checksum, o.ChecksumAlgo = true, blockcopy.ChecksumSHA256
	case "none", "":
	default:
		return o, usageErrorf("--checksum must be blkhash, sha256 or none, not %q", c.String("checksum"))
	}
	return o, nil
}

// progressBar draws "done / total  pct  rate  ETA" on stderr.
type progressBar struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	verb    string
	last    time.Time
	drawn   bool
	lastLen int
}

// newProgress returns a progress callback, or nil when progress is off:
// on when stderr is a terminal or --progress is given.
func newProgress(c *cli.Context, verb string) *progressBar {
	tty := isTerminal(os.Stderr)
	if !tty && !c.Bool("progress") {
		return nil
	}
	return &progressBar{w: os.Stderr, tty: tty, verb: verb}
}

func (b *progressBar) callback() func(blockcopy.Progress) {
	if b == nil {
		return nil
	}
	return b.update
}

func (b *progressBar) update(p blockcopy.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if !b.tty && now.Sub(b.last) < time.Second && p.Done != p.Total {
		return // a line per second on a log file
	}
	b.last = now
	line := fmt.Sprintf("%s %s", b.verb, formatBytes(p.Done))
	rate := 0.0
	if s := p.Elapsed.Seconds(); s > 0 {
		rate = float64(p.Read+p.Holes) / s
	}
	if p.Total > 0 {
		line += fmt.Sprintf(" / %s %5.1f%%", formatBytes(p.Total), 100*float64(p.Done)/float64(p.Total))
	}
	line += fmt.Sprintf("  %s/s", formatBytes(int64(rate)))
	if p.Holes > 0 {
		line += fmt.Sprintf("  holes %s", formatBytes(p.Holes))
	}
	if p.Total > 0 && rate > 0 && p.Done < p.Total {
		eta := time.Duration(float64(p.Total-p.Done) / rate * float64(time.Second)).Round(time.Second)
		line += fmt.Sprintf("  ETA %v", eta)
	}
	if b.tty {
		pad := ""
		if n := b.lastLen - len(line); n > 0 {
			pad = fmt.Sprintf("%*s", n, "")
		}
		fmt.Fprintf(b.w, "\r%s%s", line, pad)
		b.lastLen = len(line)
		b.drawn = true
	} else {
		fmt.Fprintln(b.w, line)
	}
}

// done ends the bar's line.
func (b *progressBar) done() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty && b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
}

// copySummary is the --json output of pull and push.
type copySummary struct {
	BytesRead    int64   `json:"bytes_read"`
	BytesWritten int64   `json:"bytes_written"`
	HolesBytes   int64   `json:"holes_bytes"`
	DirectBytes  int64   `json:"direct_bytes,omitempty"`
	TotalBytes   int64   `json:"total_bytes"`
	ResumedBytes int64   `json:"resumed_bytes,omitempty"`
	Seconds      float64 `json:"seconds"`
	MBPerS       float64 `json:"mb_per_s"`
	SHA256       string  `json:"sha256,omitempty"`
	Blkhash      string  `json:"blkhash,omitempty"`
	ChecksumAlgo string  `json:"checksum_algo,omitempty"`
	File         string  `json:"file"`
	Device       string  `json:"device"`
}

func summarize(r *blockcopy.Result, file, dev string) copySummary {
	s := copySummary{
		BytesRead: r.BytesRead, BytesWritten: r.BytesWritten, HolesBytes: r.HoleBytes, DirectBytes: r.DirectBytes,
		TotalBytes: r.Total, ResumedBytes: r.Resumed,
		Seconds: r.Elapsed.Seconds(), MBPerS: r.MBPerSec(), SHA256: r.SHA256,
		ChecksumAlgo: r.ChecksumAlgo,
		File:         file, Device: dev,
	}
	if r.ChecksumAlgo == blockcopy.ChecksumBlkhash {
		s.Blkhash = r.Checksum
	}
	return s
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
