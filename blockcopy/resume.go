package blockcopy

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

// ResumeSuffix names the sidecar state file of a pull: FILE + ResumeSuffix.
const ResumeSuffix = ".lunbridge-resume"

// DefaultCheckpointInterval is how often a pull to a file makes its
// progress durable (fdatasync of the file, then the sidecar).
const DefaultCheckpointInterval = 2 * time.Second

// resumeState is the sidecar: everything before Offset+Done is on disk
// (synced before the sidecar was written) and SHA256State is the hash of
// exactly those bytes.
type resumeState struct {
	Version     int       `json:"version"`
	Source      string    `json:"source"`
	Size        int64     `json:"size"`   // source device size
	Offset      int64     `json:"offset"` // range start on the source
	Length      int64     `json:"length"` // range length = file size
	Chunk       int       `json:"chunk"`
	Done        int64     `json:"done"`                   // contiguous watermark, from Offset
	SHA256State []byte    `json:"sha256_state,omitempty"` // the hash state (any algorithm)
	HashAlgo    string    `json:"hash_algo,omitempty"`    // "" is sha256
	Updated     time.Time `json:"updated"`
}

// PullOptions tune PullFile.
type PullOptions struct {
	Options
	// SourceID names the source (e.g. the LUN's WWID and size); a resume
	// refuses a sidecar written for another source.
	SourceID string
	// Resume continues an interrupted pull from its sidecar. Without a
	// sidecar, an empty or missing file is pulled from the start.
	Resume bool
	// Force overwrites an existing non-empty file.
	Force bool
	// ChecksumFile writes FILE.sha256 (sha256sum format) or, with the
	// blkhash, FILE.blksum (blksum's output line after a comment naming
	// the algorithm and block size) after a complete pull; needs
	// Options.Checksum.
	ChecksumFile bool
	// CheckpointInterval (default 2s) bounds the work lost to a crash.
	CheckpointInterval time.Duration
	// Buffered writes the file through the page cache only. By default
	// the aligned bulk of the data goes out with O_DIRECT where the file
	// system supports it (not tmpfs): one copy less per byte, no page
	// cache filled with a backup nobody reads back, and the data already
	// on the device when the final fsync runs.
	Buffered bool
}

// PullFile copies the selected range of src into the file at path, keeping
// a sidecar (path + ResumeSuffix) so that an interrupted pull — cancelled,
// failed or killed — continues with Resume. The file is sized to the range
// first, so holes of the source stay holes (trailing ones too). After a
// complete pull the sidecar is removed and, with ChecksumFile, path.sha256
// written (for a regular file). An existing path that is not a regular
// file is written only with Force (a block or character device) or not
// at all (a FIFO: use ToWriter); the null device needs nothing. On error the Result tells how far the pull got.
func PullFile(ctx context.Context, src blockdev.Device, path string, o PullOptions) (*Result, error) {
	start, end, err := rangeOf(src, o.Options)
	if err != nil {
		return nil, err
	}
	length := end - start
	side := path + ResumeSuffix
	// "Never overwritten without Force" holds for devices too, not only
	// for regular files.
	if _, err := checkOutput(path, o.Force); err != nil {
		return nil, err
	}

	st, statErr := os.Stat(path)
	exists := statErr == nil
	regular := !exists || st.Mode().IsRegular()
	nonEmpty := exists && regular && st.Size() > 0

	var rs *resumeState
	if o.Resume && regular {
		rs, err = loadResume(side)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if rs == nil && nonEmpty && !o.Force {
			return nil, fmt.Errorf("%w: %s is not empty and %s does not exist (complete already? use --force to pull again)", ErrNoResumeState, path, side)
		}
	}
	if rs == nil && nonEmpty && !o.Force {
		return nil, fmt.Errorf("%w: %s (%d bytes)", ErrExists, path, st.Size())
	}

	e := &engine{src: newDeviceSource(src), start: start, end: end}
	if err := e.setup(o.Options, src.BlockSize(), maxTransfer(src)); err != nil {
		return nil, err
	}
	// 0600: the image is a copy of a whole disk (keys, password hashes,
	// databases), for its owner only whatever the umask.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	if rs != nil {
		if err := e.takeOver(ctx, rs, f, src, o.SourceID); err != nil {
			return nil, err
		}
	}
	sink := &fileSink{f: f, delta: -start, punch: !regular}
	if regular && !o.Buffered {
		sink.direct, sink.align = openDirect(path)
	}
	sink.memWrites = regular && runtime.GOMAXPROCS(0) >= 2 && inMemory(f)
	defer sink.close()
	e.snk = sink
	if regular {
		// Everything past the watermark becomes a hole again: chunks that
		// were written out of order before the interruption are dropped.
		if err := f.Truncate(e.from - start); err != nil {
			return nil, err
		}
		if err := f.Truncate(length); err != nil {
			return nil, err
		}
		state := &resumeState{Version: 1, Source: o.SourceID, Size: src.Size(), Offset: start, Length: length, Chunk: e.chunk}
		e.checkpointEvery = o.CheckpointInterval
		if e.checkpointEvery <= 0 {
			e.checkpointEvery = DefaultCheckpointInterval
		}
		e.checkpoint = func() error { return e.saveResume(f, side, state) }
		if err := e.checkpoint(); err != nil {
			return nil, err
		}
	}

	runErr := e.run(ctx)
	res := &e.res
	res.DirectBytes = sink.directBytes.Load()
	if runErr != nil {
		if e.checkpoint != nil {
			if err := e.checkpoint(); err != nil {
				return res, fmt.Errorf("%w (and saving the resume state failed: %v)", runErr, err)
			}
		}
		return res, fmt.Errorf("blockcopy: pull interrupted at %d of %d bytes: %w", res.Done, res.Total, runErr)
	}
	if err := f.Sync(); err != nil && regular {
		return res, err
	}
	if err := f.Close(); err != nil {
		return res, err
	}
	if regular {
		if err := os.Remove(side); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, err
		}
	}
	if o.ChecksumFile && res.Checksum != "" && regular { // no sidecar beside a device in /dev
		name, body := ChecksumFileFor(path, res)
		if err := writeFileSync(name, body); err != nil {
			return res, err
		}
	}
	return res, nil
}

// takeOver checks a sidecar against the source and the file, re-reads the
// chunk before the watermark from both sides, and restores the hash.
func (e *engine) takeOver(ctx context.Context, rs *resumeState, f *os.File, src blockdev.Device, id string) error {
	length := e.end - e.start
	switch {
	case rs.Version != 1:
		return fmt.Errorf("%w: unknown version %d", ErrResumeMismatch, rs.Version)
	case rs.Source != id:
		return fmt.Errorf("%w: the sidecar is for source %q, not %q", ErrResumeMismatch, rs.Source, id)
	case rs.Size != src.Size():
		return fmt.Errorf("%w: source size was %d, is %d", ErrResumeMismatch, rs.Size, src.Size())
	case rs.Offset != e.start || rs.Length != length:
		return fmt.Errorf("%w: the sidecar covers [%d, +%d), not [%d, +%d)", ErrResumeMismatch, rs.Offset, rs.Length, e.start, length)
	case rs.Done < 0 || rs.Done > length || rs.Done%int64(e.bs) != 0:
		return fmt.Errorf("%w: bad watermark %d", ErrResumeMismatch, rs.Done)
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < rs.Done {
		return fmt.Errorf("%w: the file has %d bytes, the sidecar says %d are done", ErrResumeMismatch, st.Size(), rs.Done)
	}
	if tail := min(rs.Done, int64(e.chunk)); tail > 0 {
		a := make([]byte, tail)
		b := make([]byte, tail)
		if err := src.ReadAt(ctx, a, e.start+rs.Done-tail); err != nil {
			return err
		}
		if _, err := f.ReadAt(b, rs.Done-tail); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("%w: the %d bytes before the resume point (%d) differ between the source and the file", ErrResumeMismatch, tail, rs.Done)
		}
	}
	if e.hash != nil {
		if len(rs.SHA256State) > 0 && rs.HashAlgo == e.hashAlgo() {
			if err := e.hash.(encoding.BinaryUnmarshaler).UnmarshalBinary(rs.SHA256State); err != nil {
				return fmt.Errorf("%w: hash state: %v", ErrResumeMismatch, err)
			}
		} else if err := hashFilePrefix(ctx, e.hash, f, rs.Done); err != nil {
			return err
		}
	}
	e.from = e.start + rs.Done
	e.watermark = e.from
	e.res.Resumed = rs.Done
	return nil
}

// saveResume makes the file durable up to the watermark, then records it.
func (e *engine) saveResume(f *os.File, side string, state *resumeState) error {
	if err := f.Sync(); err != nil {
		return err
	}
	state.Done = e.watermark - e.start
	state.Updated = time.Now().UTC()
	state.SHA256State = nil
	state.HashAlgo = ""
	if e.blk != nil {
		state.HashAlgo = ChecksumBlkhash
	}
	if e.hash != nil {
		b, err := e.hash.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return err
		}
		state.SHA256State = b
	}
	js, err := json.MarshalIndent(state, "", "  ")
	if err != nil {
		return err
	}
	return writeFileSync(side, append(js, '\n'))
}

func loadResume(side string) (*resumeState, error) {
	b, err := os.ReadFile(side)
	if err != nil {
		return nil, err
	}
	var rs resumeState
	if err := json.Unmarshal(b, &rs); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrResumeMismatch, side, err)
	}
	return &rs, nil
}

// writeFileSync replaces path atomically and durably, with a file of mode
// 0600 like the image it describes.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	os.Remove(tmp) // a stale one would keep its mode
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// hashFilePrefix hashes the first n bytes of f (a sidecar without hash state).
func hashFilePrefix(ctx context.Context, h io.Writer, f *os.File, n int64) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(n-off, int64(len(buf)))
		if _, err := f.ReadAt(buf[:k], off); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		h.Write(buf[:k])
		off += k
	}
	return nil
}

// ReadResume returns the watermark and total recorded in the sidecar of a
// pull to path (for a "rerun with --resume" note), or an error wrapping
// fs.ErrNotExist.
func ReadResume(path string) (done, total int64, err error) {
	rs, err := loadResume(path + ResumeSuffix)
	if err != nil {
		return 0, 0, err
	}
	return rs.Done, rs.Length, nil
}

// hashAlgo is the resume sidecar's name of the engine's hash ("" for sha256).
func (e *engine) hashAlgo() string {
	if e.blk != nil {
		return ChecksumBlkhash
	}
	return ""
}

// ChecksumFileFor returns the checksum file a pull to path writes, and its
// content: path.sha256 in sha256sum format (sha256sum -c checks it), or
// path.blksum with blksum's output line after a comment naming the
// algorithm and block size (blksum FILE prints the same line).
func ChecksumFileFor(path string, res *Result) (string, []byte) {
	base := filepath.Base(path)
	if res.ChecksumAlgo == ChecksumBlkhash {
		return path + ".blksum", []byte(fmt.Sprintf("# blkhash sha256 block-size %d (blksum %s prints the line below)\n%s  %s\n",
			BlkhashBlockSize, base, res.Checksum, base))
	}
	return path + ".sha256", []byte(fmt.Sprintf("%s  %s\n", res.Checksum, base))
}
