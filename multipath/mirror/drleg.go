package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev"
)

// The asynchronous (disaster-recovery) leg: Async wraps a primary Device
// (one LUN, a multipath set or a synchronous Mirror) and a remote one.
//
// A write is acknowledged once the primary has it. Its data is copied into
// a bounded in-memory journal, and the remote receives the journal IN
// ORDER, so at every instant the remote holds the primary's content after
// some prefix of the acknowledged writes: a crash-consistent image of a
// past instant, never a mix of older and newer writes. To keep a WAN link
// busy, journal entries are replayed several at a time, but an entry is
// started on the remote only once every entry acknowledged before it was
// issued has completed there (entry.dep), so whatever subset is on the
// remote is one a crash of the primary could have left. Overlapping writes
// are serialized by a range lock, so their journal order is the order the
// primary applied them.
//
// Flush and FUA: a Flush (or a FUA write) of the Async device returns once
// the primary made the data durable; it does NOT wait for the remote. It
// enters the journal as a replay point: the remote gets a SYNCHRONIZE
// CACHE at the same place in the order (a FUA write is replayed with FUA),
// and no later entry starts before it completed.
//
// The lag is the age of the oldest acknowledged write the remote lacks.
// MaxLag/MaxLagBytes bound it. OnLag "throttle" (the default) makes new
// writes wait while the journal is over its budget: MaxLagBytes and the
// bytes the link drained in half of MaxLag at its measured rate, and an
// oldest entry no older than half of MaxLag, so the lag stays under
// MaxLag. OnLag "pull-ahead" never waits: past the budget, the journal is
// dropped, the chunks it held and every chunk written since are marked in
// a bitmap and copied to the remote in the background (the remote is
// marked inconsistent in its metadata first), and the leg returns to
// journal mode, consistent again, when the copy has caught up — DRBD's
// congestion policy.
//
// While a copy runs (pull-ahead, re-add, first copy), writes to chunks
// already copied are still replicated through the journal (with throttle
// they wait for room in it, so the copy converges under any load the link
// can carry; with pull-ahead what does not fit is marked), and a chunk is
// copied only once no journal entry on it is outstanding. When no chunk
// is left the leg is in journal mode again, and consistent once every
// entry journaled before that point is on the remote.
//
// A remote that fails (or stalls: no progress for MaxLag while writes
// wait) never fails the application: the leg drops to bitmap mode and is
// reopened in the background like a synchronous leg (Reopen, with
// backoff), then resynced from the bitmap. The bitmap lives in memory; a
// clean Close saves it in the remote's metadata, and an assembly after a
// crash copies every chunk (the primary keeps no record of the writes the
// remote missed).

// Policies of AsyncOptions.OnLag.
const (
	OnLagThrottle  = "throttle"
	OnLagPullAhead = "pull-ahead"
)

// Defaults of AsyncOptions.
const (
	DefaultMaxLag        = 5 * time.Second
	DefaultMaxLagBytes   = 64 << 20
	DefaultMaxJournal    = 65536
	DefaultAsyncChunk    = 1 << 20
	asyncWindowEntries   = 32       // journal entries in flight on the remote
	asyncWindowBytes     = 16 << 20 // journal bytes in flight on the remote
	asyncResyncParallel  = 4        // chunks copied at once by a resync
	asyncMinBudget       = 1 << 20  // journal bytes before the link rate is known, and at least
	asyncMinEntries      = 64       // journal entries likewise
	asyncMetaInterval    = time.Second
	asyncCloseDrainLimit = 30 * time.Second
)

// Modes of the asynchronous leg (AsyncStatus.Mode).
const (
	AsyncJournal   = "journal"    // in order from the journal; consistent
	AsyncPullAhead = "pull-ahead" // over the lag bound: bitmap copy
	AsyncResync    = "resync"     // bitmap copy after a failure, a re-add or at start
	AsyncFailed    = "failed"     // remote gone; writes tracked in the bitmap
)

// AsyncOptions tune OpenAsync.
type AsyncOptions struct {
	// MaxLag bounds the age of the oldest write the remote lacks (the
	// recovery point objective), MaxLagBytes the journal's bytes and
	// MaxEntries its entries (defaults 5 s, 64 MiB, 65536).
	MaxLag      time.Duration
	MaxLagBytes int64
	MaxEntries  int
	// OnLag is OnLagThrottle (default) or OnLagPullAhead.
	OnLag string
	// ChunkSize is the bitmap granularity given to a new async leg
	// (default 1 MiB); an existing leg keeps its own.
	ChunkSize int64
	// ResyncRate caps the bitmap copy in bytes/s (0: unlimited).
	ResyncRate int64
	// Init makes a remote LUN without async-leg metadata the async leg of
	// this primary, copying everything to it (its content is overwritten),
	// and takes over one that belongs to another primary.
	Init bool
	// Reopen, when set, reopens a failed remote in the background (with
	// backoff from ProbeInterval up to ProbeMaxInterval); without it a
	// failed remote is retried on the same device.
	Reopen           func(ctx context.Context) (blockdev.Device, error)
	ProbeInterval    time.Duration
	ProbeMaxInterval time.Duration
	Logger           *logrus.Entry
}

// Async is a Device that writes through to a primary and replays to an
// asynchronous remote leg. It implements blockdev.Device, Trimmer, Zeroer.
type Async struct {
	log     *logrus.Entry
	opts    AsyncOptions
	primary blockdev.Device
	size    int64
	bs      int
	chunk   int64
	nchunks int64
	limit   *limiter

	rl rangeLock

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	remote  blockdev.Device
	hdr     asyncHeader // geometry and identity; the rest is filled per write
	slot    int         // next metadata slot
	metaMu  sync.Mutex  // one metadata write at a time

	mode           string
	consistent     bool      // the remote is a prefix image
	diskConsistent bool      // its metadata says so
	lostAt         time.Time // when the remote stopped being a current prefix (bitmap modes)
	epoch          uint64
	epochBase      uint64 // position of the epoch's first entry
	reason         string
	lastErr        error

	// The journal: positions [base, next) in q, [base, done) complete
	// (popped as soon as they are), issue the next to start.
	q        []*jentry
	base     uint64
	next     uint64
	issue    uint64
	jbytes   int64
	inflight int // replays started and not ended (any epoch)
	stale    int // of them, replays of a dropped journal
	// After a copy caught up the leg is in journal mode but consistent
	// only once the entries before consistentAt are on the remote.
	consistentAt uint64
	metaDue      bool
	infBytes     int64 // their bytes
	gen          uint64
	asOf         int64 // ack time of the newest entry of the complete prefix
	lastDone     time.Time
	replayed     int64   // journal bytes completed on the remote (rate estimate)
	replayedN    int64   // journal entries completed on the remote
	rate         float64 // measured bytes/s and entries/s of the replay
	rateN        float64
	rateAt       time.Time
	rateBytes    int64
	rateEntries  int64

	bitmap   bitset
	copying  int // chunks being copied by the resync
	copied   int64
	throttle time.Duration // total time writes waited

	probeDelay time.Duration
	probeNext  time.Time
	readds     int

	closing bool
	closed  bool
	bgCtx   context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

var (
	_ blockdev.Device  = (*Async)(nil)
	_ blockdev.Trimmer = (*Async)(nil)
	_ blockdev.Zeroer  = (*Async)(nil)
)

// OpenAsync attaches remote as the asynchronous leg of primary. A remote
// cleanly closed in sync starts in journal mode; one with a saved bitmap
// copies those chunks; one that was not closed cleanly (or is new, with
// Init) is copied in full, marked inconsistent until the copy ends. The
// exported size is the primary's, cut to what the remote holds beside its
// metadata. On success the Async owns both devices.
func OpenAsync(ctx context.Context, primary, remote blockdev.Device, o AsyncOptions) (*Async, error) {
	if primary == nil || remote == nil {
		return nil, fmt.Errorf("mirror: an asynchronous leg needs a primary and a remote: %w", blockdev.ErrInvalid)
	}
	if o.MaxLag <= 0 {
		o.MaxLag = DefaultMaxLag
	}
	if o.MaxLagBytes <= 0 {
		o.MaxLagBytes = DefaultMaxLagBytes
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxJournal
	}
	switch o.OnLag {
	case "":
		o.OnLag = OnLagThrottle
	case OnLagThrottle, OnLagPullAhead:
	default:
		return nil, fmt.Errorf("mirror: on-lag policy %q: want %s or %s: %w", o.OnLag, OnLagThrottle, OnLagPullAhead, blockdev.ErrInvalid)
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	o.ProbeMaxInterval = max(o.ProbeMaxInterval, o.ProbeInterval)
	if o.ProbeMaxInterval == o.ProbeInterval && o.ProbeInterval < DefaultProbeMaxInterval {
		o.ProbeMaxInterval = DefaultProbeMaxInterval
	}
	if err := writable(remote); err != nil {
		return nil, fmt.Errorf("mirror: asynchronous leg: %w", err)
	}
	if SameLUN(primary, remote) {
		return nil, fmt.Errorf("mirror: asynchronous leg: %w", ErrSameLUN)
	}
	a := &Async{opts: o, log: o.Logger, primary: primary, remote: remote, changed: make(chan struct{})}
	if a.log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		a.log = logrus.NewEntry(l)
	}
	a.limit = &limiter{rate: o.ResyncRate}
	a.bs = max(primary.BlockSize(), remote.BlockSize())
	h, err := readAsyncHeader(ctx, remote)
	switch {
	case err == nil && !o.Init:
		if w := wwidOf(primary); w != "" && h.PrimaryWWID != "" && w != h.PrimaryWWID {
			return nil, fmt.Errorf("%w (its primary is %s, this one %s); take it over with Init (--mirror-async-init), which copies everything", ErrAsyncMismatch, h.PrimaryWWID, w)
		}
		if h.BlockSize != a.bs {
			return nil, fmt.Errorf("%w: its block size is %d, the legs now need %d", ErrAsyncMismatch, h.BlockSize, a.bs)
		}
		a.hdr = *h
		a.slot = h.slot ^ 1
		a.chunk, a.size = h.Chunk, h.Exported
		if primary.Size() < a.size {
			return nil, fmt.Errorf("%w: it holds %d bytes, the primary has only %d", ErrAsyncMismatch, a.size, primary.Size())
		}
		a.nchunks = h.nchunks()
		a.bitmap = newBitset(a.nchunks)
		a.consistent = h.Flags&asyncConsistent != 0
		a.epoch = h.Epoch
		a.asOf = h.AsOf
		if h.Flags&asyncClean != 0 {
			copy(a.bitmap, h.bitmap)
			a.reason = fmt.Sprintf("clean, %d chunks to copy", a.bitmap.count())
		} else {
			a.bitmap.setAll(a.nchunks)
			a.reason = "not closed cleanly: every chunk is copied"
		}
	case err == nil || errors.Is(err, ErrAsyncNoMetadata):
		if !o.Init {
			return nil, fmt.Errorf("%w: make the LUN the asynchronous leg with Init (--mirror-async-init); its content is overwritten", err)
		}
		if _, merr := readHeader(ctx, remote); merr == nil {
			return nil, fmt.Errorf("mirror: asynchronous leg: the remote LUN is a leg of a synchronous mirror: %w", ErrHasMetadata)
		}
		a.chunk = o.ChunkSize
		if a.chunk == 0 {
			a.chunk = DefaultAsyncChunk
		}
		if a.chunk <= 0 || a.chunk%int64(a.bs) != 0 {
			return nil, fmt.Errorf("mirror: chunk size %d is not a multiple of the block size %d: %w", a.chunk, a.bs, blockdev.ErrInvalid)
		}
		unit, bmb, exp, gerr := geometry(remote.Size(), a.bs, a.chunk)
		if gerr != nil {
			return nil, gerr
		}
		a.size = min(exp, alignDown(primary.Size(), int64(a.bs)))
		a.hdr = asyncHeader{Leg: newUUID(), LegSize: remote.Size(), Exported: a.size, Chunk: a.chunk,
			BlockSize: a.bs, Unit: unit, BitmapBytes: bmb, Created: time.Now().UnixNano(), WWID: wwidOf(remote)}
		if h != nil {
			a.hdr.Events = h.Events
		}
		a.nchunks = a.hdr.nchunks()
		a.bitmap = newBitset(a.nchunks)
		a.bitmap.setAll(a.nchunks)
		a.reason = "new asynchronous leg: every chunk is copied"
	default:
		return nil, fmt.Errorf("mirror: asynchronous leg: %w", err)
	}
	a.hdr.PrimaryWWID = wwidOf(primary)
	if a.bitmap.count() == 0 && a.consistent {
		a.mode = AsyncJournal
	} else {
		a.mode = AsyncResync
		a.consistent = false
		a.lostAt = time.Now()
	}
	// Not clean from now on: a crash before Close copies everything.
	if err := a.writeMeta(ctx, false); err != nil {
		return nil, fmt.Errorf("mirror: asynchronous leg: write metadata: %w", err)
	}
	a.log.WithFields(logrus.Fields{"leg": a.hdr.Leg, "mode": a.mode, "size": a.size}).Info("mirror: asynchronous leg attached: " + a.reason)
	a.bgCtx, a.cancel = context.WithCancel(context.Background())
	a.lastDone = time.Now()
	a.wg.Add(1)
	go a.run()
	return a, nil
}

// writeMeta records the leg's state in its metadata (clean: Close).
func (a *Async) writeMeta(ctx context.Context, clean bool) error {
	a.metaMu.Lock()
	defer a.metaMu.Unlock()
	a.mu.Lock()
	h := a.hdr
	h.Events++
	h.Flags = 0
	if a.consistent {
		h.Flags |= asyncConsistent
	}
	if clean {
		h.Flags |= asyncClean
	}
	h.Epoch, h.Seq, h.AsOf = a.epoch, a.base-a.epochBase, a.asOf
	h.Updated = time.Now().UnixNano()
	bits := a.bitmap.clone()
	if clean {
		for _, e := range a.q {
			if !e.done {
				a.markLocked(bits, e)
			}
		}
	}
	slot, dev := a.slot, a.remote
	a.mu.Unlock()
	if err := writeAsyncSlot(context.WithoutCancel(ctx), dev, &h, bits, slot); err != nil {
		return err
	}
	a.mu.Lock()
	a.hdr.Events = h.Events
	a.diskConsistent = h.Flags&asyncConsistent != 0
	a.slot = slot ^ 1
	a.mu.Unlock()
	return nil
}

// notifyLocked wakes every waiter (throttled writers, the background loop).
func (a *Async) notifyLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// waitChange waits for a state change, at most d. a.mu held; it is
// released while waiting.
func (a *Async) waitChange(ctx context.Context, d time.Duration) error {
	ch := a.changed
	a.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	var err error
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	a.mu.Lock()
	return err
}

// run is the background loop: replay in journal mode, copy in bitmap
// modes, reopen when failed.
func (a *Async) run() {
	defer a.wg.Done()
	ctx := a.bgCtx
	tick := time.Now()
	var metaBase uint64
	for {
		a.mu.Lock()
		if ctx.Err() != nil {
			a.mu.Unlock()
			return
		}
		a.sampleRateLocked()
		switch a.mode {
		case AsyncJournal:
			started := a.startReplaysLocked(ctx)
			if a.metaDue || time.Since(tick) > asyncMetaInterval && a.base != metaBase {
				tick, metaBase, a.metaDue = time.Now(), a.base, false
				a.mu.Unlock()
				if err := a.writeMeta(ctx, false); err != nil {
					a.mu.Lock()
					a.failLocked(fmt.Errorf("metadata write: %w", err))
					a.mu.Unlock()
				}
				continue
			}
			if !started {
				a.waitChange(ctx, 100*time.Millisecond)
			}
			a.mu.Unlock()
		case AsyncFailed:
			if w := time.Until(a.probeNext); w > 0 {
				a.waitChange(ctx, w)
				a.mu.Unlock()
				continue
			}
			a.mu.Unlock()
			a.probe(ctx)
		default: // pull-ahead, resync
			if a.stale > 0 {
				// Replays of a dropped journal end first: none may
				// land after a chunk copy.
				a.waitChange(ctx, 100*time.Millisecond)
				a.mu.Unlock()
				continue
			}
			a.mu.Unlock()
			a.resyncPass(ctx)
		}
	}
}

// Close stops taking writes, lets the journal drain (a bounded time),
// records the leg's state in its metadata (clean, with the chunks still
// to copy) and closes both devices.
func (a *Async) Close() error {
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		return blockdev.ErrClosed
	}
	a.closing = true
	deadline := time.Now().Add(max(asyncCloseDrainLimit, 2*a.opts.MaxLag))
	for a.mode == AsyncJournal && len(a.q) > 0 && time.Now().Before(deadline) {
		a.waitChange(context.Background(), 100*time.Millisecond)
	}
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
	a.mu.Lock()
	for a.inflight > 0 {
		a.waitChange(context.Background(), 100*time.Millisecond)
	}
	if len(a.q) > 0 {
		// Closed before the journal drained: the remote is still the
		// prefix it was (consistent stays as it is); the chunks it lacks
		// are recorded for the next start.
		a.log.Warnf("mirror: asynchronous leg: closed with %d journal entries not replayed; their chunks are copied at the next start", len(a.q))
		a.discardJournalLocked()
	}
	live := a.mode != AsyncFailed
	remote := a.remote
	a.closed = true
	a.mu.Unlock()
	var err error
	if live {
		ctx := context.Background()
		if err = remote.Flush(ctx); err == nil {
			err = a.writeMeta(ctx, true)
		}
		if err != nil {
			a.log.WithError(err).Warn("mirror: asynchronous leg: final metadata not written; the next start copies every chunk")
			err = nil // the remote's trouble is not the application's
		}
	}
	remote.Close()
	return a.primary.Close()
}
