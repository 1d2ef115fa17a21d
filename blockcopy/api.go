package blockcopy

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/lunbridge/lunbridge/blockdev"
)

// rangeOf validates Offset/Length against d.
func rangeOf(d blockdev.Device, o Options) (start, end int64, err error) {
	bs := int64(d.BlockSize())
	start = o.Offset
	end = d.Size()
	if o.Length > 0 {
		end = start + o.Length
	}
	if start < 0 || start%bs != 0 || end%bs != 0 {
		return 0, 0, fmt.Errorf("%w: offset %d, length %d, block size %d", ErrUnaligned, o.Offset, o.Length, bs)
	}
	if start > d.Size() || end > d.Size() {
		return 0, 0, fmt.Errorf("blockcopy: range [%d, %d) beyond the device end %d: %w", start, end, d.Size(), blockdev.ErrOutOfRange)
	}
	return start, end, nil
}

func maxTransfer(d blockdev.Device) int {
	if m, ok := d.(MaxTransferer); ok && m.MaxTransfer() > 0 {
		return m.MaxTransfer() / d.BlockSize() * d.BlockSize()
	}
	return 0
}

func checkWritable(d blockdev.Device) error {
	if r, ok := d.(blockdev.ReadOnlyer); ok && r.ReadOnly() {
		return fmt.Errorf("blockcopy: refusing to write: %w", blockdev.ErrReadOnly)
	}
	return nil
}

// ToWriter streams the selected range of src to w, strictly in order; holes
// are written as zeroes.
func ToWriter(ctx context.Context, src blockdev.Device, w io.Writer, opts Options) (*Result, error) {
	start, end, err := rangeOf(src, opts)
	if err != nil {
		return nil, err
	}
	e := &engine{src: newDeviceSource(src), start: start, end: end, snk: &streamSink{w: w}}
	if err := e.setup(opts, src.BlockSize(), maxTransfer(src)); err != nil {
		return nil, err
	}
	err = e.run(ctx)
	return &e.res, err
}

// ToFile copies the selected range of src into f from file offset 0. f may
// hold old data: zero ranges are punched (or written as zeroes where the
// file system cannot punch). A regular file is sized to the range.
// PullFile is the resumable, path-based variant.
func ToFile(ctx context.Context, src blockdev.Device, f *os.File, opts Options) (*Result, error) {
	start, end, err := rangeOf(src, opts)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		if err := f.Truncate(end - start); err != nil {
			return nil, err
		}
	}
	e := &engine{src: newDeviceSource(src), start: start, end: end, snk: &fileSink{f: f, delta: -start, punch: true}}
	if err := e.setup(opts, src.BlockSize(), maxTransfer(src)); err != nil {
		return nil, err
	}
	err = e.run(ctx)
	return &e.res, err
}

// Copy copies the selected range of src to the same offsets of dst and
// flushes dst. Zero ranges become WriteZeroes on dst.
func Copy(ctx context.Context, src, dst blockdev.Device, opts Options) (*Result, error) {
	start, end, err := rangeOf(src, opts)
	if err != nil {
		return nil, err
	}
	if err := checkWritable(dst); err != nil {
		return nil, err
	}
	if end > dst.Size() {
		return nil, fmt.Errorf("%w: range ends at %d, device has %d bytes", ErrTooLarge, end, dst.Size())
	}
	bs := max(src.BlockSize(), dst.BlockSize())
	if start%int64(bs) != 0 || end%int64(bs) != 0 {
		return nil, ErrUnaligned
	}
	mx := maxTransfer(src)
	if m := maxTransfer(dst); m > 0 && (mx == 0 || m < mx) {
		mx = m
	}
	e := &engine{src: newDeviceSource(src), start: start, end: end, snk: newDeviceSink(dst, 0, opts.Discard)}
	if err := e.setup(opts, bs, mx); err != nil {
		return nil, err
	}
	if err := e.run(ctx); err != nil {
		return &e.res, err
	}
	return &e.res, dst.Flush(ctx)
}

// PushFile restores the image in f onto dst at Options.Offset (Length is
// ignored) and flushes dst. Holes of f and all-zero chunks become
// WriteZeroes (unmapping allowed with Options.Discard). It refuses, before
// writing anything, a read-only device and an image that does not fit. An
// image whose size is not a multiple of the block size is padded with
// zeroes; the checksum covers the image only.
func PushFile(ctx context.Context, f *os.File, dst blockdev.Device, opts Options) (*Result, error) {
	if err := checkWritable(dst); err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if !st.Mode().IsRegular() {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	bs := int64(dst.BlockSize())
	padded := (size + bs - 1) / bs * bs
	if opts.Offset < 0 || opts.Offset%bs != 0 {
		return nil, ErrUnaligned
	}
	if opts.Offset+padded > dst.Size() {
		return nil, fmt.Errorf("%w: image is %d bytes, device has %d bytes from offset %d", ErrTooLarge, size, dst.Size()-opts.Offset, opts.Offset)
	}
	e := &engine{
		src: &fileSource{f: f, size: size}, start: 0, end: padded, hashEnd: size,
		snk: newDeviceSink(dst, opts.Offset, opts.Discard),
	}
	if err := e.setup(opts, int(bs), maxTransfer(dst)); err != nil {
		return nil, err
	}
	if err := e.run(ctx); err != nil {
		return &e.res, err
	}
	e.res.Total = size
	return &e.res, dst.Flush(ctx)
}

// PushReader restores an image read sequentially from r (a pipe) onto dst
// at Options.Offset and flushes dst. The image size is unknown up front: an
// image larger than the device fails with ErrTooLarge once the device is
// full (the part that fit has been written).
func PushReader(ctx context.Context, r io.Reader, dst blockdev.Device, opts Options) (*Result, error) {
	if err := checkWritable(dst); err != nil {
		return nil, err
	}
	bs := int64(dst.BlockSize())
	if opts.Offset < 0 || opts.Offset%bs != 0 || opts.Offset > dst.Size() {
		return nil, ErrUnaligned
	}
	e := &engine{stream: r, start: 0, end: dst.Size() - opts.Offset, snk: newDeviceSink(dst, opts.Offset, opts.Discard)}
	if err := e.setup(opts, int(bs), maxTransfer(dst)); err != nil {
		return nil, err
	}
	if err := e.run(ctx); err != nil {
		return &e.res, err
	}
	return &e.res, dst.Flush(ctx)
}

// VerifyOptions tune Verify.
type VerifyOptions struct {
	Options
	// MaxDiffs is how many differing offsets to report (default 10).
	MaxDiffs int
}

// VerifyResult reports a comparison.
type VerifyResult struct {
	Result
	Equal      bool
	DeviceSize int64   // bytes in the compared device range
	FileSize   int64   // bytes in the file
	DiffBytes  int64   // differing bytes within the common length
	DiffBlocks int64   // differing device blocks
	FirstDiffs []int64 // device offsets of the first differing byte of the first differing blocks
}

// Verify compares the selected range of dev with f (file offset 0 = range
// start). Holes on both sides compare without I/O; a hole against data is
// compared with zeroes. A size difference makes the result unequal; the
// common length is still compared.
func Verify(ctx context.Context, dev blockdev.Device, f *os.File, o VerifyOptions) (*VerifyResult, error) {
	start, end, err := rangeOf(dev, o.Options)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	fsize := st.Size()
	if !st.Mode().IsRegular() {
		if fsize, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	bs := int64(dev.BlockSize())
	common := min(end-start, (fsize+bs-1)/bs*bs)
	if o.MaxDiffs <= 0 {
		o.MaxDiffs = 10
	}
	e := &engine{src: newDeviceSource(dev), start: start, end: start + common, compare: true, maxDiffs: o.MaxDiffs}
	if err := e.setup(o.Options, int(bs), maxTransfer(dev)); err != nil {
		return nil, err
	}
	e.snk = &compareSink{f: &fileSource{f: f, size: fsize}, delta: -start, bs: int(bs), maxDiffs: o.MaxDiffs, chunk: e.chunk}
	err = e.run(ctx)
	vr := &VerifyResult{
		Result:     e.res,
		DeviceSize: end - start,
		FileSize:   fsize,
		DiffBytes:  e.diffs.bytes,
		DiffBlocks: e.diffs.blocks,
		FirstDiffs: e.diffs.first,
	}
	vr.Equal = err == nil && vr.DiffBytes == 0 && fsize == end-start
	return vr, err
}
