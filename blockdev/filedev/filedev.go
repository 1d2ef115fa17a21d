// Package filedev exposes a regular file (or a block device node) as a
// blockdev.Device. lunbridge uses it for `file://` sources in the CLI and as a
// second, independent device in tests of the consumers.
package filedev

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/lunbridge/lunbridge/blockdev"
)

// File is a blockdev.Device backed by an *os.File.
type File struct {
	f        *os.File
	size     int64
	bs       int
	readOnly bool
}

var (
	_ blockdev.Device   = (*File)(nil)
	_ blockdev.Trimmer  = (*File)(nil)
	_ blockdev.Zeroer   = (*File)(nil)
	_ blockdev.Extenter = (*File)(nil)
)

// Open opens path as a device with the given block size. The file size must
// be a multiple of blockSize.
func Open(path string, blockSize int, readOnly bool) (*File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := st.Size()
	if st.Mode()&os.ModeDevice != 0 {
		size, err = f.Seek(0, 2)
		if err != nil {
			f.Close()
			return nil, err
		}
	}
	if blockSize <= 0 {
		blockSize = 512
	}
	if size%int64(blockSize) != 0 {
		f.Close()
		return nil, fmt.Errorf("filedev: %s: size %d is not a multiple of the block size %d", path, size, blockSize)
	}
	return &File{f: f, size: size, bs: blockSize, readOnly: readOnly}, nil
}

func (d *File) Size() int64    { return d.size }
func (d *File) BlockSize() int { return d.bs }
func (d *File) ReadOnly() bool { return d.readOnly }

func (d *File) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := blockdev.CheckRange(d, off, int64(len(p))); err != nil {
		return err
	}
	_, err := d.f.ReadAt(p, off)
	return err
}

func (d *File) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := blockdev.CheckRange(d, off, int64(len(p))); err != nil {
		return err
	}
	if d.readOnly {
		return blockdev.ErrReadOnly
	}
	if _, err := d.f.WriteAt(p, off); err != nil {
		return err
	}
	if fua {
		return unix.Fdatasync(int(d.f.Fd()))
	}
	return nil
}

func (d *File) Flush(ctx context.Context) error {
	if d.readOnly {
		return nil
	}
	return unix.Fdatasync(int(d.f.Fd()))
}

func (d *File) Close() error { return d.f.Close() }

func (d *File) Trim(ctx context.Context, off, n int64) error {
	if err := blockdev.CheckRange(d, off, n); err != nil {
		return err
	}
	if d.readOnly {
		return blockdev.ErrReadOnly
	}
	if n == 0 {
		return nil
	}
	return unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func (d *File) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	// Punching a hole in a regular file always reads back zeroes.
	return d.Trim(ctx, off, n)
}

// Extents uses SEEK_DATA/SEEK_HOLE.
func (d *File) Extents(ctx context.Context, off, n int64) ([]blockdev.Extent, error) {
	if err := blockdev.CheckRange(d, off, n); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, blockdev.ErrInvalid
	}
	end := off + n
	fd := int(d.f.Fd())
	var out []blockdev.Extent
	for pos := off; pos < end; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if err != nil || data >= end { // ENXIO: only a hole remains
			out = append(out, blockdev.Extent{Offset: pos, Length: end - pos, Flags: blockdev.ExtentHole | blockdev.ExtentZero})
			break
		}
		if data > pos {
			out = append(out, blockdev.Extent{Offset: pos, Length: data - pos, Flags: blockdev.ExtentHole | blockdev.ExtentZero})
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil || hole > end {
			hole = end
		}
		out = append(out, blockdev.Extent{Offset: data, Length: hole - data})
		pos = hole
	}
	return out, nil
}
