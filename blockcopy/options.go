package blockcopy

import (
	"errors"
	"time"
)

// Defaults used when the corresponding Options field is zero.
const (
	DefaultWorkers          = 8
	DefaultChunkSize        = 1 << 20
	DefaultProgressInterval = 200 * time.Millisecond
	// maxZeroTask bounds one merged zero range (hole) handed to a sink.
	maxZeroTask = 64 << 20
	// extentWindow is how much the planner asks Extenter for at once.
	extentWindow = 1 << 30
)

// MaxTransferer is implemented by devices that advertise an optimal (and
// maximum) transfer length in bytes, such as an iSCSI LUN from its Block
// Limits VPD page. The engine never issues a larger read or write, and
// uses it as the chunk size when it is below the 1 MiB default.
type MaxTransferer interface {
	MaxTransfer() int
}

// Options tune a copy. The zero value is usable.
type Options struct {
	// Workers is the number of I/Os in flight (default 8).
	Workers int
	// ChunkSize is the unit of every read and write, a multiple of the
	// block size (default: 1 MiB, or the device's MaxTransfer when smaller).
	ChunkSize int
	// Offset and Length select a range of the source device (pull, copy,
	// verify) or where on the device the image lands (push; Length is
	// ignored there). Length 0 means "to the end". Both must be multiples of
	// the block size.
	Offset, Length int64
	// RateLimit caps data bytes moved per second (holes are free); 0 means
	// unlimited.
	RateLimit int64
	// Checksum computes a checksum of the whole image: ChecksumAlgo
	// ChecksumSHA256 (the default: sha256sum's) or ChecksumBlkhash
	// (blksum's: per-block SHA-256, holes nearly free, block digests
	// computed by every worker).
	Checksum     bool
	ChecksumAlgo string
	// Progress, when set, is called from one goroutine at most every
	// ProgressInterval (default 200ms) and once at the end.
	Progress         func(Progress)
	ProgressInterval time.Duration
	// Discard lets zero ranges written to a device be unmapped
	// (WriteZeroes with mayTrim).
	Discard bool
}

// Progress is a snapshot of a running copy.
type Progress struct {
	Done    int64 // bytes of the range completed, contiguous from its start
	Total   int64 // bytes in the range; 0 when unknown (stream push)
	Holes   int64 // bytes found zero (holes or zero chunks) and not moved as data
	Read    int64 // bytes read from the source
	Written int64 // bytes written to the destination
	Elapsed time.Duration
}

// Result summarizes a finished (or interrupted) copy.
type Result struct {
	Total        int64 // bytes in the range (for a stream push: bytes in the image)
	Done         int64 // bytes completed in order from the start of the range
	Resumed      int64 // bytes taken over from an earlier interrupted pull
	BytesRead    int64
	BytesWritten int64
	HoleBytes    int64
	DirectBytes  int64  // of BytesWritten, written to a file with O_DIRECT
	SHA256       string // hex; set with ChecksumAlgo sha256 only
	Checksum     string // hex; empty without Options.Checksum
	ChecksumAlgo string // ChecksumSHA256 or ChecksumBlkhash
	Elapsed      time.Duration
}

// MBPerSec is the throughput over the part of the range done in this run.
func (r *Result) MBPerSec() float64 {
	s := r.Elapsed.Seconds()
	if s <= 0 {
		return 0
	}
	return float64(r.Done-r.Resumed) / s / 1e6
}

// Errors returned by the engine; wrapped with detail.
var (
	ErrTooLarge       = errors.New("blockcopy: image larger than the device")
	ErrExists         = errors.New("blockcopy: output file exists and is not empty")
	ErrInvalidOutput  = errors.New("blockcopy: output cannot take this copy")
	ErrNoResumeState  = errors.New("blockcopy: no resume state")
	ErrResumeMismatch = errors.New("blockcopy: resume state does not match")
	ErrUnaligned      = errors.New("blockcopy: offset, length or chunk size not a multiple of the block size")
)
