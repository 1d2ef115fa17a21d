package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev"
)

// Reader is a read-only view of a mirror for backups and checks (pull,
// verify, read-only bench): it reads from a leg holding a consistent copy
// and never writes a header or a bitmap, so it may run beside the owning
// assembly (a running serve) without the owner check refusing it.
type Reader struct {
	id    UUID
	devs  [maxLegs]blockdev.Device
	src   int    // leg read first
	alt   int    // leg that may serve chunks outside avoid, -1 none
	avoid bitset // chunks only src holds for sure
	size  int64
	chunk int64
	bs    int
	why   string
	split time.Time // the leg read was split off then (Mirror.Split); zero: not

	closed atomic.Bool
}

var (
	_ blockdev.Device     = (*Reader)(nil)
	_ blockdev.ReadOnlyer = (*Reader)(nil)
)

// OpenReadOnly reads the legs' metadata (either leg may be nil or
// unreachable) and returns a Reader of the mirror's content. It writes
// nothing: no owner record, no resync, no bitmap. A live owner is not an
// error (it is logged); a split brain needs opts.Prefer to choose the leg
// to read. The Reader closes the legs on Close; on error the caller keeps
// them.
func OpenReadOnly(ctx context.Context, a, b blockdev.Device, opts AssembleOptions) (*Reader, error) {
	log := opts.Logger
	if log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		log = logrus.NewEntry(l)
	}
	var hs [maxLegs]*header
	var devs [maxLegs]blockdev.Device
	for i, d := range []blockdev.Device{a, b} {
		if d == nil {
			continue
		}
		h, err := readHeader(ctx, d)
		if err != nil {
			if legFatal(err) && !errors.Is(err, ErrNoMetadata) && a != nil && b != nil {
				log.WithError(err).Warnf("mirror: leg %s unavailable, reading the other", legName(i))
				continue
			}
			return nil, fmt.Errorf("mirror: leg %s: %w", legName(i), err)
		}
		if hs[h.Index] != nil {
			return nil, fmt.Errorf("%w: both devices are leg %s of mirror %s", ErrMismatch, legName(h.Index), h.Mirror)
		}
		hs[h.Index], devs[h.Index] = h, d
	}
	if hs[0] == nil && hs[1] == nil {
		return nil, fmt.Errorf("mirror: no leg available: %w", blockdev.ErrUnavailable)
	}
	prefer := -1
	if opts.Prefer != "" {
		i, err := legIndex(opts.Prefer)
		if err != nil {
			return nil, err
		}
		prefer = i
	}
	for _, o := range activeOwners(hs) {
		log.Infof("mirror: in use by %s; reading without writing metadata", o)
	}
	p, err := plan(hs[0], hs[1], prefer)
	if err != nil {
		return nil, err
	}
	if p.preferNote != "" {
		log.Info("mirror: " + p.preferNote)
	}
	r := &Reader{id: p.ref.Mirror, devs: devs, alt: -1, size: p.ref.Exported, chunk: p.ref.Chunk, bs: p.ref.BlockSize}
	switch {
	case p.target >= 0:
		// The resync target holds only the chunks it is not owed.
		r.src, r.avoid = 1-p.target, p.need
		if devs[p.target] != nil && p.mode != "full" {
			r.alt = p.target
		}
	default:
		r.src = p.ref.Index
		if devs[r.src] == nil || p.inSync&(1<<r.src) == 0 {
			r.src = 1 - r.src
		}
		r.avoid = p.bitmap // dirty chunks may differ between the legs
		if o := 1 - r.src; devs[o] != nil && p.inSync&(1<<o) != 0 {
			r.alt = o
		}
	}
	if devs[r.src] == nil {
		return nil, fmt.Errorf("%w: the leg holding the consistent copy (%s) is missing", ErrNotInSync, legName(r.src))
	}
	if h := hs[r.src]; h.Flags&flagSplit != 0 {
		r.split = time.Unix(0, h.Updated)
		r.why = fmt.Sprintf("reading leg %s, split off at %s: a frozen image", legName(r.src), fmtTime(h.Updated))
	} else {
		r.why = fmt.Sprintf("reading leg %s (%s)", legName(r.src), p.why)
		if (hs[0] == nil || hs[1] == nil) && len(activeOwners(hs)) > 0 {
			// One leg of a running mirror, still written: the image read
			// may mix older and newer writes.
			log.Warnf("mirror: leg %s is in use and was not split off: it may change while it is read (split it first: lunbridge mirror split %s)", legName(r.src), legName(r.src))
		}
	}
	log.WithFields(logrus.Fields{"mirror": r.id, "plan": r.why}).Info("mirror opened read-only")
	return r, nil
}

// Leg is the leg reads go to first ("A" or "B").
func (r *Reader) Leg() string { return legName(r.src) }

// SplitSince is when the leg read was split off by Mirror.Split (its
// content is the mirror's at that instant); zero when it was not.
func (r *Reader) SplitSince() time.Time { return r.split }

// Size is the mirror's exported size.
func (r *Reader) Size() int64 { return r.size }

// BlockSize is the mirror's block size.
func (r *Reader) BlockSize() int { return r.bs }

// ReadOnly is always true.
func (r *Reader) ReadOnly() bool { return true }

// MaxTransfer is the smaller of the present legs' transfer limits.
func (r *Reader) MaxTransfer() int {
	mx := 0
	for _, d := range r.devs {
		if t, ok := d.(interface{ MaxTransfer() int }); ok && t.MaxTransfer() > 0 && (mx == 0 || t.MaxTransfer() < mx) {
			mx = t.MaxTransfer()
		}
	}
	return mx
}

// ReadAt reads from the consistent leg; a failed read is retried on the
// other leg when every chunk of the range is known equal on both.
func (r *Reader) ReadAt(ctx context.Context, p []byte, off int64) error {
	if r.closed.Load() {
		return blockdev.ErrClosed
	}
	n := int64(len(p))
	if err := blockdev.CheckRange(r, off, n); err != nil || n == 0 {
		return err
	}
	err := r.devs[r.src].ReadAt(ctx, p, off)
	if err == nil || r.alt < 0 || ctx.Err() != nil {
		return err
	}
	for c := off / r.chunk; c <= (off+n-1)/r.chunk; c++ {
		if r.avoid != nil && r.avoid.get(c) {
			return err
		}
	}
	if aerr := r.devs[r.alt].ReadAt(ctx, p, off); aerr != nil {
		return errors.Join(err, aerr)
	}
	return nil
}

// WriteAt fails: the Reader never writes.
func (r *Reader) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return fmt.Errorf("mirror: opened read-only: %w", blockdev.ErrReadOnly)
}

// Flush has nothing to do.
func (r *Reader) Flush(ctx context.Context) error {
	if r.closed.Load() {
		return blockdev.ErrClosed
	}
	return nil
}

// Close closes the legs.
func (r *Reader) Close() error {
	if r.closed.Swap(true) {
		return blockdev.ErrClosed
	}
	var err error
	for _, d := range r.devs {
		if d != nil {
			err = errors.Join(err, d.Close())
		}
	}
	return err
}
