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

// jentry is one journal entry.
type jentry struct {
	pos   uint64
	kind  uint8 // jWrite, jZero, jFlush
	off   int64
	n     int64
	data  []byte
	fua   bool
	dep   uint64 // entries before this position complete first
	acked int64  // unix ns
	done  bool
	bytes int64 // accounted journal bytes
}

const (
	jWrite = iota
	jZero
	jFlush
)

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

func (a *Async) markLocked(bits bitset, e *jentry) {
	if e.kind == jFlush || e.n == 0 {
		return
	}
	for c := e.off / a.chunk; c <= (e.off+e.n-1)/a.chunk; c++ {
		bits.set(c)
	}
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

// Size is the exported size.
func (a *Async) Size() int64 { return a.size }

// BlockSize is the larger of the primary's and the remote's.
func (a *Async) BlockSize() int { return a.bs }

// MaxTransfer is the primary's transfer limit.
func (a *Async) MaxTransfer() int {
	if t, ok := a.primary.(interface{ MaxTransfer() int }); ok {
		return t.MaxTransfer()
	}
	return 0
}

// Primary is the device writes are acknowledged from (a *Mirror when the
// primary is a synchronous mirror).
func (a *Async) Primary() blockdev.Device { return a.primary }

func (a *Async) check(off, n int64) error {
	a.mu.Lock()
	closed := a.closing || a.closed
	a.mu.Unlock()
	if closed {
		return blockdev.ErrClosed
	}
	return blockdev.CheckRange(a, off, n)
}

// ReadAt reads from the primary.
func (a *Async) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := a.check(off, int64(len(p))); err != nil {
		return err
	}
	return a.primary.ReadAt(ctx, p, off)
}

// WriteAt writes p to the primary and journals it for the remote.
func (a *Async) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return a.write(ctx, jWrite, off, int64(len(p)), fua, p, func(ctx context.Context) error {
		return a.primary.WriteAt(ctx, p, off, fua)
	})
}

// WriteZeroes zeroes a range on the primary and journals it.
func (a *Async) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	return a.write(ctx, jZero, off, n, false, nil, func(ctx context.Context) error {
		return zeroLeg(ctx, a.primary, off, n, mayTrim)
	})
}

// Trim deallocates a range where the devices can; it reads back as zeroes
// on both afterwards.
func (a *Async) Trim(ctx context.Context, off, n int64) error {
	return a.WriteZeroes(ctx, off, n, true)
}

// Flush flushes the primary and journals a replay point (a SYNCHRONIZE
// CACHE of the remote at this place in the order). It does not wait for
// the remote.
func (a *Async) Flush(ctx context.Context) error {
	if err := a.check(0, 0); err != nil {
		return err
	}
	a.mu.Lock()
	dep := a.next
	a.mu.Unlock()
	if err := a.primary.Flush(ctx); err != nil {
		return err
	}
	a.mu.Lock()
	a.appendLocked(&jentry{kind: jFlush, dep: dep})
	a.mu.Unlock()
	return nil
}

func (a *Async) write(ctx context.Context, kind uint8, off, n int64, fua bool, p []byte, op func(context.Context) error) error {
	if err := a.check(off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := a.throttleWait(ctx, n); err != nil {
		return err
	}
	r, err := a.rl.lock(ctx, off, n)
	if err != nil {
		return err
	}
	defer a.rl.unlock(r)
	a.mu.Lock()
	dep := a.next
	a.mu.Unlock()
	e := &jentry{kind: kind, off: off, n: n, fua: fua, dep: dep}
	if kind == jWrite {
		// Copied before the primary write starts the clock: the caller
		// owns p again once we return.
		e.data = append([]byte(nil), p...)
	}
	if err := op(ctx); err != nil {
		// What the primary holds now is unknown: copy the range instead.
		a.mu.Lock()
		a.markLocked(a.bitmap, e)
		if a.mode == AsyncJournal {
			a.dropJournalLocked(AsyncResync, fmt.Sprintf("a primary write failed: %v", err))
		}
		a.mu.Unlock()
		return err
	}
	a.mu.Lock()
	a.appendLocked(e)
	a.mu.Unlock()
	return nil
}

// appendLocked journals e (journal mode) or marks its chunks. a.mu held.
func (a *Async) appendLocked(e *jentry) {
	switch a.mode {
	case AsyncJournal:
	case AsyncFailed:
		a.markLocked(a.bitmap, e)
		return
	default:
		// A copy is running: writes to chunks already copied are
		// replicated as they come, as long as the journal has room, so
		// the copy converges under writes; the rest is marked.
		if e.kind != jFlush && (a.dirtyLocked(e) || a.jbytes+e.n > a.budgetLocked() || len(a.q) >= a.opts.MaxEntries) {
			a.markLocked(a.bitmap, e)
			return
		}
	}
	e.pos = a.next
	a.next++
	e.acked = time.Now().UnixNano()
	e.bytes = int64(len(e.data)) + 64
	a.jbytes += e.bytes
	a.q = append(a.q, e)
	a.notifyLocked()
	a.startReplaysLocked(a.bgCtx)
}

// dirtyLocked reports whether a chunk of e is marked. a.mu held.
func (a *Async) dirtyLocked(e *jentry) bool {
	if e.n == 0 {
		return false
	}
	for c := e.off / a.chunk; c <= (e.off+e.n-1)/a.chunk; c++ {
		if a.bitmap.get(c) {
			return true
		}
	}
	return false
}

// pendingLocked reports whether a journal entry not yet on the remote
// overlaps [off, off+n). a.mu held.
func (a *Async) pendingLocked(off, n int64) bool {
	for _, e := range a.q {
		if !e.done && e.kind != jFlush && e.off < off+n && off < e.off+e.n {
			return true
		}
	}
	return false
}

// budgetLocked is the journal's byte budget: MaxLagBytes, and what the
// link drains in a quarter of MaxLag at its measured rate (1 MiB until
// it is measured). a.mu held.
func (a *Async) budgetLocked() int64 {
	b := min(a.opts.MaxLagBytes, asyncMinBudget)
	if a.rate > 0 {
		b = min(a.opts.MaxLagBytes, int64(a.rate*a.opts.MaxLag.Seconds()/4))
	}
	return max(b, min(a.opts.MaxLagBytes, asyncMinBudget))
}

// entryBudgetLocked bounds the journal's entries likewise: what the
// replay completes in a quarter of MaxLag at its measured entry rate
// (small writes are bound by the round trip, not by the bandwidth).
// a.mu held.
func (a *Async) entryBudgetLocked() int {
	n := asyncMinEntries
	if a.rateN > 0 {
		n = max(n, int(a.rateN*a.opts.MaxLag.Seconds()/4))
	}
	return min(n, a.opts.MaxEntries)
}

// overLocked reports whether journaling n more bytes would pass the lag
// bound. With throttle it applies during a copy too: the writes to
// chunks already copied are replicated through the journal, and the copy
// converges only if they do not outrun the link. a.mu held.
func (a *Async) overLocked(n int64) bool {
	switch {
	case len(a.q) == 0, a.mode == AsyncFailed:
		return false
	case a.mode != AsyncJournal && a.opts.OnLag != OnLagThrottle:
		// A copy with pull-ahead: what does not fit is marked.
		return false
	}
	if len(a.q) >= a.entryBudgetLocked() || a.jbytes+n > a.budgetLocked() {
		return true
	}
	return time.Since(time.Unix(0, a.q[0].acked)) > a.opts.MaxLag/2
}

// throttleWait applies the lag policy before a write of n bytes.
func (a *Async) throttleWait(ctx context.Context, n int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := time.Time{}
	for a.overLocked(n) {
		if a.opts.OnLag == OnLagPullAhead {
			a.dropJournalLocked(AsyncPullAhead, "lag bound reached")
			break
		}
		last := time.Unix(0, a.q[0].acked)
		if a.lastDone.After(last) {
			last = a.lastDone
		}
		if idle := time.Since(last); idle > a.opts.MaxLag {
			a.failLocked(fmt.Errorf("mirror: asynchronous leg stalled: no progress for %v", idle.Round(time.Millisecond)))
			break
		}
		if start.IsZero() {
			start = time.Now()
		}
		if err := a.waitChange(ctx, 50*time.Millisecond); err != nil {
			a.throttle += time.Since(start)
			return err
		}
	}
	if !start.IsZero() {
		a.throttle += time.Since(start)
	}
	return nil
}

// dropJournalLocked leaves journal mode for a bitmap mode: the chunks of
// every entry the remote does not have yet are marked, the journal
// discarded. a.mu held.
func (a *Async) dropJournalLocked(mode, why string) {
	a.discardJournalLocked()
	if a.mode == AsyncJournal {
		a.lostAt = time.Now()
	}
	if mode != AsyncFailed {
		// The copy that follows makes the remote a mix of old and new.
		a.consistent = false
	}
	if a.mode != mode {
		a.log.Warnf("mirror: asynchronous leg: %s: %s mode (%d chunks to copy)", why, mode, a.bitmap.count())
	}
	a.mode = mode
	a.reason = why
	a.gen++
	a.notifyLocked()
}

// discardJournalLocked marks the chunks of every entry not on the remote
// and empties the journal; replays still running become stale. a.mu held.
func (a *Async) discardJournalLocked() {
	for _, e := range a.q {
		if !e.done {
			a.markLocked(a.bitmap, e)
		}
	}
	a.q = nil
	a.jbytes = 0
	a.base, a.issue = a.next, a.next
	a.stale = a.inflight
}

// failLocked takes the remote out of service; it is probed again later.
// a.mu held.
func (a *Async) failLocked(err error) {
	if a.mode == AsyncFailed {
		return
	}
	a.lastErr = err
	a.log.WithError(err).Warn("mirror: asynchronous leg failed")
	a.dropJournalLocked(AsyncFailed, "remote failed")
	if a.probeDelay == 0 {
		a.probeDelay = a.opts.ProbeInterval
	}
	a.probeNext = time.Now().Add(a.probeDelay)
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

// sampleRateLocked updates the measured replay rates (bytes/s and
// entries/s while the journal was not empty). a.mu held.
func (a *Async) sampleRateLocked() {
	now := time.Now()
	if a.rateAt.IsZero() {
		a.rateAt, a.rateBytes, a.rateEntries = now, a.replayed, a.replayedN
		return
	}
	dt := now.Sub(a.rateAt)
	if dt < 200*time.Millisecond {
		return
	}
	d, dn := a.replayed-a.rateBytes, a.replayedN-a.rateEntries
	a.rateAt, a.rateBytes, a.rateEntries = now, a.replayed, a.replayedN
	if dn <= 0 || len(a.q) == 0 {
		return // idle or stalled: no sample
	}
	ewma := func(old *float64, v float64) {
		if *old == 0 {
			*old = v
		} else {
			*old = 0.7**old + 0.3*v
		}
	}
	ewma(&a.rate, float64(d)/dt.Seconds())
	ewma(&a.rateN, float64(dn)/dt.Seconds())
}

// startReplaysLocked starts every journal entry that may start now (its
// dependencies complete, the window not full); false when none. a.mu held.
func (a *Async) startReplaysLocked(ctx context.Context) bool {
	started := false
	for a.mode != AsyncFailed && a.issue < a.next && a.inflight < asyncWindowEntries && a.infBytes < asyncWindowBytes {
		e := a.q[a.issue-a.base]
		if e.dep > a.base {
			break
		}
		if e.kind == jFlush && a.base < e.pos {
			break
		}
		a.issue++
		a.inflight++
		a.infBytes += e.n
		started = true
		gen, dev := a.gen, a.remote
		go a.replay(ctx, e, gen, dev)
	}
	return started
}

// replay applies one journal entry to the remote.
func (a *Async) replay(ctx context.Context, e *jentry, gen uint64, dev blockdev.Device) {
	var err error
	switch e.kind {
	case jWrite:
		err = dev.WriteAt(ctx, e.data, e.off, e.fua)
	case jZero:
		err = zeroLeg(ctx, dev, e.off, e.n, true)
	case jFlush:
		err = dev.Flush(ctx)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inflight--
	a.infBytes -= e.n
	a.notifyLocked()
	if a.gen != gen {
		a.stale-- // the journal was dropped meanwhile
		return
	}
	if err != nil {
		if ctx.Err() == nil {
			a.failLocked(fmt.Errorf("replay: %w", err))
		} else {
			a.dropJournalLocked(AsyncResync, "closing")
		}
		return
	}
	e.done = true
	a.replayed += e.n
	a.replayedN++
	a.lastDone = time.Now()
	for len(a.q) > 0 && a.q[0].done {
		h := a.q[0]
		a.q[0] = nil
		a.q = a.q[1:]
		a.base++
		a.jbytes -= h.bytes
		a.asOf = h.acked
	}
	if len(a.q) == 0 {
		a.q = nil // let the backing array go
	}
	a.checkConsistentLocked()
	a.startReplaysLocked(ctx)
}

// checkConsistentLocked ends the catch-up of a copy: once every entry
// journaled before the copy ended is on the remote, the remote is the
// primary's content after a prefix of its writes again. a.mu held.
func (a *Async) checkConsistentLocked() {
	if a.mode != AsyncJournal || a.consistent || a.base < a.consistentAt {
		return
	}
	a.consistent = true
	a.epoch++
	a.epochBase = a.consistentAt
	a.asOf = time.Now().UnixNano()
	a.metaDue = true
	a.log.Info("mirror: asynchronous leg caught up: consistent, journal mode")
	a.notifyLocked()
}

// resyncPass copies the marked chunks to the remote, the remote marked
// inconsistent first; when none is left it returns to journal mode.
func (a *Async) resyncPass(ctx context.Context) {
	a.mu.Lock()
	a.consistent = false
	stale := a.diskConsistent
	a.mu.Unlock()
	if stale {
		if err := a.writeMeta(ctx, false); err != nil {
			a.mu.Lock()
			a.failLocked(fmt.Errorf("metadata write: %w", err))
			a.mu.Unlock()
			return
		}
	}
	var cursor int64
	for ctx.Err() == nil {
		a.mu.Lock()
		if a.mode == AsyncFailed || a.mode == AsyncJournal {
			a.mu.Unlock()
			return
		}
		var batch []int64
		for c := cursor; c < a.nchunks && len(batch) < asyncResyncParallel; c++ {
			if a.bitmap.get(c) {
				batch = append(batch, c)
			}
		}
		if len(batch) == 0 && cursor > 0 {
			cursor = 0
			a.mu.Unlock()
			continue
		}
		if len(batch) == 0 {
			a.mu.Unlock()
			a.catchUp(ctx)
			return
		}
		gen := a.gen
		a.mu.Unlock()
		cursor = batch[len(batch)-1] + 1
		errs := make([]error, len(batch))
		var wg sync.WaitGroup
		for k, c := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[k] = a.copyChunk(ctx, c)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil && ctx.Err() == nil {
				a.mu.Lock()
				if a.gen == gen {
					a.failLocked(fmt.Errorf("resync: %w", err))
				}
				a.mu.Unlock()
				return
			}
		}
	}
}

// copyChunk copies chunk c from the primary to the remote under the range
// lock (no write to it runs meanwhile; one that follows marks it again).
func (a *Async) copyChunk(ctx context.Context, c int64) error {
	off := c * a.chunk
	n := min(a.chunk, a.size-off)
	r, err := a.rl.lock(ctx, off, n)
	if err != nil {
		return err
	}
	defer a.rl.unlock(r)
	a.mu.Lock()
	// Journal entries on the chunk reach the remote first: none may land
	// after the copy (the range lock keeps new ones out meanwhile).
	for a.pendingLocked(off, n) && a.mode != AsyncFailed {
		if err := a.waitChange(ctx, 100*time.Millisecond); err != nil {
			a.mu.Unlock()
			return err
		}
	}
	if !a.bitmap.get(c) || a.mode == AsyncFailed {
		a.mu.Unlock()
		return nil
	}
	a.bitmap.clear(c)
	a.copying++
	dev := a.remote
	a.mu.Unlock()
	err = a.limit.wait(ctx, n)
	buf := make([]byte, n)
	if err == nil {
		if err = a.primary.ReadAt(ctx, buf, off); err != nil {
			err = fmt.Errorf("read primary: %w", err)
		} else {
			err = dev.WriteAt(ctx, buf, off, false)
		}
	}
	a.mu.Lock()
	a.copying--
	if err != nil {
		a.bitmap.set(c)
	} else {
		a.copied += n
		a.lastDone = time.Now()
	}
	a.notifyLocked()
	a.mu.Unlock()
	return err
}

// catchUp ends a resync: the remote is flushed and, when no chunk was
// marked meanwhile, the leg returns to journal mode, consistent as of now.
func (a *Async) catchUp(ctx context.Context) {
	a.mu.Lock()
	dev := a.remote
	a.mu.Unlock()
	if err := dev.Flush(ctx); err != nil {
		if ctx.Err() == nil {
			a.mu.Lock()
			a.failLocked(fmt.Errorf("flush: %w", err))
			a.mu.Unlock()
		}
		return
	}
	a.mu.Lock()
	if a.bitmap.count() > 0 || a.copying > 0 || (a.mode != AsyncPullAhead && a.mode != AsyncResync) {
		a.mu.Unlock()
		return
	}
	// Every acknowledged write is on the remote or in the journal (a
	// write still running holds its range and journals when it ends):
	// consistent once the entries journaled so far are replayed.
	a.mode = AsyncJournal
	a.reason = "caught up"
	a.consistentAt = a.next
	a.lastDone = time.Now()
	a.checkConsistentLocked()
	a.notifyLocked()
	a.mu.Unlock()
}

// probe makes one attempt to bring a failed remote back.
func (a *Async) probe(ctx context.Context) {
	a.mu.Lock()
	old, inflight := a.remote, a.inflight
	a.mu.Unlock()
	dev := old
	var err error
	if a.opts.Reopen != nil {
		// Outstanding replays fail once their device is closed.
		closeBounded(ctx, old)
		if inflight > 0 {
			err = errors.New("replays still outstanding")
		} else {
			ctx2, cancel := context.WithTimeout(ctx, probeTimeout)
			dev, err = a.opts.Reopen(ctx2)
			cancel()
			if err == nil && dev == nil {
				err = blockdev.ErrUnavailable
			}
		}
	} else if inflight > 0 {
		err = errors.New("replays still outstanding")
	}
	if err == nil {
		var h *asyncHeader
		if h, err = readAsyncHeader(ctx, dev); err == nil && (h.Leg != a.hdr.Leg || h.LegSize != a.hdr.LegSize) {
			err = fmt.Errorf("%w: the returning device is async leg %s, want %s", ErrAsyncMismatch, h.Leg, a.hdr.Leg)
		}
		if err == nil {
			if w := wwidOf(dev); w != "" && a.hdr.WWID != "" && w != a.hdr.WWID {
				err = fmt.Errorf("%w: the returning device has WWID %s, want %s", ErrAsyncMismatch, w, a.hdr.WWID)
			}
		}
		if err != nil && dev != old {
			dev.Close()
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ctx.Err() != nil {
		if err == nil && dev != old {
			a.remote = dev
		}
		return
	}
	if err != nil {
		a.lastErr = err
		a.probeDelay = min(2*a.probeDelay, a.opts.ProbeMaxInterval)
		a.probeNext = time.Now().Add(a.probeDelay)
		a.log.WithError(err).Debugf("mirror: asynchronous leg still unavailable, next attempt in %v", a.probeDelay)
		return
	}
	a.remote = dev
	a.readds++
	a.lastErr = nil
	a.probeDelay = 0
	a.mode = AsyncResync
	a.consistent = false
	a.reason = "re-added"
	a.gen++
	a.notifyLocked()
	a.log.Infof("mirror: asynchronous leg back: copying %d chunks", a.bitmap.count())
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

// AsyncStatus describes the asynchronous leg (mirror status, metrics).
type AsyncStatus struct {
	UUID       UUID    `json:"uuid"`
	WWID       string  `json:"wwid,omitempty"`
	Mode       string  `json:"mode"` // journal, pull-ahead, resync, failed
	Consistent bool    `json:"consistent"`
	Reason     string  `json:"reason,omitempty"`
	Error      string  `json:"error,omitempty"`
	OnLag      string  `json:"on_lag"`
	MaxLag     float64 `json:"max_lag_seconds"`
	MaxBytes   int64   `json:"max_lag_bytes"`
	// LagSeconds is the age of the oldest acknowledged write the remote
	// lacks (journal mode), or the time since it stopped being a current
	// consistent image (other modes); LagBytes what it lacks (journal
	// bytes, or marked chunks times the chunk size).
	LagSeconds     float64   `json:"lag_seconds"`
	LagBytes       int64     `json:"lag_bytes"`
	JournalEntries int       `json:"journal_entries"`
	Inflight       int       `json:"inflight"`
	DirtyChunks    int64     `json:"dirty_chunks"`
	ChunkSize      int64     `json:"chunk_size"`
	Epoch          uint64    `json:"epoch"`
	Sequence       uint64    `json:"sequence"` // writes of the epoch on the remote
	AsOf           time.Time `json:"as_of,omitzero"`
	RateBytes      float64   `json:"link_bytes_per_s"`
	ResyncedBytes  int64     `json:"resynced_bytes"`
	ThrottledNs    int64     `json:"throttled_ns"`
	ReAdds         int       `json:"re_adds,omitempty"`
}

// Status reports the asynchronous leg's mode, lag and journal.
func (a *Async) Status() AsyncStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := AsyncStatus{UUID: a.hdr.Leg, WWID: a.hdr.WWID, Mode: a.mode, Consistent: a.consistent, Reason: a.reason,
		OnLag: a.opts.OnLag, MaxLag: a.opts.MaxLag.Seconds(), MaxBytes: a.opts.MaxLagBytes,
		JournalEntries: len(a.q), Inflight: a.inflight, DirtyChunks: a.bitmap.count(), ChunkSize: a.chunk,
		Epoch: a.epoch, Sequence: a.base - a.epochBase, RateBytes: a.rate, ResyncedBytes: a.copied,
		ThrottledNs: int64(a.throttle), ReAdds: a.readds}
	if a.lastErr != nil {
		s.Error = a.lastErr.Error()
	}
	if a.asOf > 0 {
		s.AsOf = time.Unix(0, a.asOf)
	}
	if a.mode == AsyncJournal {
		if len(a.q) > 0 {
			s.LagSeconds = time.Since(time.Unix(0, a.q[0].acked)).Seconds()
		}
		s.LagBytes = a.jbytes
	} else {
		s.LagSeconds = time.Since(a.lostAt).Seconds()
		s.LagBytes = s.DirtyChunks*a.chunk + a.jbytes
	}
	return s
}
