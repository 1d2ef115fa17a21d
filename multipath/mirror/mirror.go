package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev"
)

// DefaultChunkSize is the bitmap granularity when CreateOptions.ChunkSize is 0.
const DefaultChunkSize = 4 << 20

// DefaultBitmapIdle is how long a chunk stays dirty after its last write.
const DefaultBitmapIdle = 5 * time.Second

// Options common to Create and Assemble.
type Options struct {
	// ResyncRate caps resync traffic in bytes per second (0: unlimited).
	ResyncRate int64
	// BitmapIdle is how long a chunk must be idle (and flushed on both
	// legs) before its bitmap bit is cleared (default 5 s).
	BitmapIdle time.Duration
	// Logger receives leg failures and resync progress; nil is silent.
	Logger *logrus.Entry

	// Reopen, when set, turns on automatic re-add (see readd.go): a failed
	// or missing leg is reopened in the background with it and, when the
	// device it returns carries the same identity (the leg's UUID in its
	// metadata, the WWID the mirror recorded), reattached with an
	// incremental resync. It must honour ctx (Close cancels it) and return
	// a new Device each time; the mirror closes the leg's old Device first.
	Reopen func(ctx context.Context, leg int) (blockdev.Device, error)
	// ProbeInterval is the first delay before reopening a failed leg
	// (default 1 s); it doubles after each failed attempt up to
	// ProbeMaxInterval (default 30 s).
	ProbeInterval    time.Duration
	ProbeMaxInterval time.Duration

	// Reserve fences the legs while the mirror is assembled: on every leg
	// that supports SPC-3 persistent reservations (blockdev.Reserver) the
	// assembly registers a key derived from its id and takes a Write
	// Exclusive – Registrants Only reservation, released at a clean
	// Close, so no other initiator can write the legs. A leg without
	// support is logged and used unfenced.
	Reserve bool

	env *hostEnv // owner lookups (tests replace them); nil: this host
}

// CreateOptions tune Create.
type CreateOptions struct {
	Options
	// ChunkSize is the bitmap granularity (default 4 MiB), a multiple of
	// the block size.
	ChunkSize int64
	// AssumeClean skips the initial full sync: the caller asserts that
	// the legs already hold the same data over the exported size
	// (PlanCreate). Prove it first with CompareLegs; legs that differ
	// return reads that flip between the legs.
	AssumeClean bool
	// Force overwrites existing mirror metadata on the legs.
	Force bool
}

// AssembleOptions tune Assemble.
type AssembleOptions struct {
	Options
	// Prefer names the leg ("A" or "B") whose content wins after a split
	// brain (both legs written without each other): the other leg is fully
	// resynced from it. It is used on a split brain only: a clean or
	// merely stale pair assembles as without it, and a preferred leg that
	// the other leg recorded dropping (the stale one) is refused, with the
	// reason logged, in favour of the up-to-date leg.
	Prefer string
	// Force takes over a mirror whose recorded owner runs on another host
	// (or cannot be checked). It is refused for an owner provably alive on
	// this host; an owner provably dead on this host is taken over
	// without it.
	Force bool
}

// leg is one instance of a leg: a reattached leg gets a new one, so an
// I/O that captured the old instance (under m.mu) can never fail the new.
// dev does not change for the life of an instance.
type leg struct {
	dev      blockdev.Device
	live     bool
	closed   bool // dev closed by the mirror (re-add, remove)
	err      error
	nextSlot int
	inflight atomic.Int64
	lastEnd  atomic.Int64
}

// Mirror is a RAID-1 Device over two legs. It implements blockdev.Device,
// Trimmer and Zeroer.
type Mirror struct {
	log  *logrus.Entry
	opts Options

	size, chunk, nchunks int64
	bs                   int
	unit, bitmapBytes    int64
	id                   UUID
	created              int64
	legUUID              [maxLegs]UUID
	legWWID              [maxLegs]string
	limit                *limiter

	rl rangeLock

	mu         sync.Mutex
	cond       *sync.Cond
	legs       [maxLegs]*leg
	inSync     uint32
	gen, genID uint64
	genTime    int64
	dropGen    uint64
	dropGenID  uint64
	events     uint64
	bitmap     bitset
	bitVer     []uint64
	need       bitset
	target     int // leg being resynced, -1 none
	mode       string
	lastTarget int // leg of the current or last resync
	checkpoint int64
	pendDrop   bool
	dirtyVer   uint64
	writtenVer uint64
	memberVer  uint64
	writing    bool
	inflight   []int32
	chunkSeq   []uint64
	chunkTime  []int64
	writeSeq   uint64
	flushedSeq uint64
	closed     bool
	owner      Owner         // recorded in every header until a clean Close
	reserved   [maxLegs]bool // legs holding our persistent reservation

	resyncTotal   int64 // chunks to copy in the current resync
	resyncDone    int64
	bytesResynced int64
	resyncStart   time.Time
	resyncElapsed time.Duration
	resyncRunning bool
	resyncWake    chan struct{}

	bgCtx    context.Context
	bgCancel context.CancelFunc
	wg       sync.WaitGroup

	asyncWrites atomic.Int64 // writes started on the legs through the non-blocking path

	// Write barrier of Split (split.go), m.mu: while barrier stands no
	// write starts (blocking or non-blocking path); writers counts the
	// writes past the barrier check that have not ended.
	barrier   bool
	writers   int
	splitHook func() // tests: runs inside the barrier, the writes drained
	// splitMark[i]: leg i's headers carry flagSplit (written once, inside
	// the barrier, as the split leg's last header).
	splitMark [maxLegs]bool

	probe     [maxLegs]probeState // automatic re-add, m.mu
	probeWake chan struct{}
	probeSem  chan struct{} // one reopen at a time (prober, AddLeg)
}

var (
	_ blockdev.Device  = (*Mirror)(nil)
	_ blockdev.Trimmer = (*Mirror)(nil)
	_ blockdev.Zeroer  = (*Mirror)(nil)
)

func newMirror(o Options) *Mirror {
	m := &Mirror{opts: o, log: o.Logger, target: -1}
	if m.opts.env == nil {
		m.opts.env = sysEnv
	}
	m.owner = m.opts.env.newOwner()
	if m.log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		m.log = logrus.NewEntry(l)
	}
	if m.opts.BitmapIdle <= 0 {
		m.opts.BitmapIdle = DefaultBitmapIdle
	}
	if m.opts.ProbeInterval <= 0 {
		m.opts.ProbeInterval = DefaultProbeInterval
	}
	if m.opts.ProbeMaxInterval <= 0 {
		m.opts.ProbeMaxInterval = DefaultProbeMaxInterval
	}
	m.opts.ProbeMaxInterval = max(m.opts.ProbeMaxInterval, m.opts.ProbeInterval)
	m.probeWake = make(chan struct{}, 1)
	m.probeSem = make(chan struct{}, 1)
	m.limit = &limiter{rate: o.ResyncRate}
	m.cond = sync.NewCond(&m.mu)
	m.bgCtx, m.bgCancel = context.WithCancel(context.Background())
	m.resyncWake = make(chan struct{}, 1)
	return m
}

func (m *Mirror) initChunks() {
	m.nchunks = (m.size + m.chunk - 1) / m.chunk
	m.bitmap = newBitset(m.nchunks)
	m.bitVer = make([]uint64, m.nchunks)
	m.inflight = make([]int32, m.nchunks)
	m.chunkSeq = make([]uint64, m.nchunks)
	m.chunkTime = make([]int64, m.nchunks)
}

func writable(d blockdev.Device) error {
	if r, ok := d.(blockdev.ReadOnlyer); ok && r.ReadOnly() {
		return fmt.Errorf("mirror: leg is read-only: %w", blockdev.ErrReadOnly)
	}
	return nil
}

// Create initializes a new mirror on a and b (leg A and leg B) and returns
// it assembled. Unless AssumeClean, B is fully synced from A in the
// background.
func Create(ctx context.Context, a, b blockdev.Device, opts CreateOptions) (*Mirror, error) {
	if a == nil || b == nil {
		return nil, fmt.Errorf("mirror: create needs two legs: %w", blockdev.ErrInvalid)
	}
	if SameLUN(a, b) {
		if w := wwidOf(a); w != "" {
			return nil, fmt.Errorf("%w (WWID %s)", ErrSameLUN, w)
		}
		return nil, ErrSameLUN
	}
	for _, d := range []blockdev.Device{a, b} {
		if err := writable(d); err != nil {
			return nil, err
		}
		if !opts.Force {
			if _, err := readHeader(ctx, d); err == nil {
				return nil, ErrHasMetadata
			}
		}
	}
	m := newMirror(opts.Options)
	m.bs = max(a.BlockSize(), b.BlockSize())
	m.chunk = opts.ChunkSize
	if m.chunk == 0 {
		m.chunk = DefaultChunkSize
	}
	if m.chunk <= 0 || m.chunk%int64(m.bs) != 0 {
		return nil, fmt.Errorf("mirror: chunk size %d is not a multiple of the block size %d: %w", m.chunk, m.bs, blockdev.ErrInvalid)
	}
	var err error
	m.unit, m.bitmapBytes, m.size, err = geometry(min(a.Size(), b.Size()), m.bs, m.chunk)
	if err != nil {
		return nil, err
	}
	m.initChunks()
	m.id = newUUID()
	m.created = time.Now().UnixNano()
	m.legUUID = [2]UUID{newUUID(), newUUID()}
	m.legWWID = [2]string{wwidOf(a), wwidOf(b)}
	m.legs = [2]*leg{{dev: a, live: true}, {dev: b, live: true}}
	m.gen, m.genID, m.genTime = 1, randID(), m.created
	if opts.AssumeClean {
		m.inSync = 3
	} else {
		m.inSync = 1
		m.bitmap.setAll(m.nchunks)
		m.startResyncLocked(1, m.bitmap.clone(), "full")
	}
	if err := m.reserveLegs(ctx, 0); err != nil {
		return nil, err
	}
	// Write both slots so no older metadata on the legs can win.
	for i := 0; i < 2; i++ {
		m.dirtyVer++
		if err := m.commitMeta(ctx, m.dirtyVer); err != nil {
			m.releaseLegs(ctx)
			return nil, err
		}
	}
	m.log.WithFields(logrus.Fields{"mirror": m.id, "size": m.size, "chunk": m.chunk}).Info("mirror created")
	m.start()
	return m, nil
}

// Assemble opens an existing mirror. b (or a) may be nil for a degraded
// start; the present leg must hold a consistent copy. A leg whose metadata
// cannot be read because it is unavailable is treated as missing.
func Assemble(ctx context.Context, a, b blockdev.Device, opts AssembleOptions) (*Mirror, error) {
	devs := []blockdev.Device{a, b}
	var hs []*header
	var ds []blockdev.Device
	for i, d := range devs {
		if d == nil {
			continue
		}
		h, err := readHeader(ctx, d)
		if err != nil {
			if legFatal(err) && !errors.Is(err, ErrNoMetadata) && (a != nil && b != nil) && len(hs) < 2 {
				// Unreachable leg: degraded start without it.
				if opts.Logger != nil {
					opts.Logger.WithError(err).Warnf("mirror: leg %s unavailable, assembling degraded", legName(i))
				}
				continue
			}
			return nil, fmt.Errorf("mirror: leg %s: %w", legName(i), err)
		}
		hs = append(hs, h)
		ds = append(ds, d)
	}
	if len(hs) == 0 {
		return nil, fmt.Errorf("mirror: no leg available: %w", blockdev.ErrUnavailable)
	}
	prefer := -1
	switch opts.Prefer {
	case "":
	case "A", "a", "0":
		prefer = 0
	case "B", "b", "1":
		prefer = 1
	default:
		return nil, fmt.Errorf("mirror: --prefer %q: want A or B: %w", opts.Prefer, blockdev.ErrInvalid)
	}
	var byIdx [2]*header
	var devIdx [2]blockdev.Device
	for i, h := range hs {
		if byIdx[h.Index] != nil {
			return nil, fmt.Errorf("%w: both devices are leg %s of mirror %s", ErrMismatch, legName(h.Index), h.Mirror)
		}
		byIdx[h.Index], devIdx[h.Index] = h, ds[i]
	}
	env := opts.env
	if env == nil {
		env = sysEnv
	}
	preempt, err := checkOwners(byIdx, env, opts.Force, func(msg string) {
		if opts.Logger != nil {
			opts.Logger.Warn(msg)
		}
	})
	if err != nil {
		return nil, err
	}
	p, err := plan(byIdx[0], byIdx[1], prefer)
	if err != nil {
		return nil, err
	}
	ref := p.ref
	m := newMirror(opts.Options)
	m.bs, m.chunk, m.size, m.unit, m.bitmapBytes = ref.BlockSize, ref.Chunk, ref.Exported, ref.Unit, ref.BitmapBytes
	m.initChunks()
	m.id, m.created = ref.Mirror, ref.Created
	for i, h := range byIdx {
		if h != nil {
			m.legUUID[i], m.legWWID[i] = h.Leg, h.WWID
			if w := wwidOf(devIdx[i]); w != "" && h.WWID != "" && w != h.WWID {
				m.log.Warnf("mirror: leg %s WWID changed from %s to %s", legName(i), h.WWID, w)
			}
			m.legs[i] = &leg{dev: devIdx[i], live: true, nextSlot: h.slot ^ 1}
		} else {
			m.legUUID[i], m.legWWID[i] = ref.Peer, ref.PeerWWID
			m.legs[i] = &leg{}
		}
		if d := devIdx[i]; d != nil {
			if err := writable(d); err != nil {
				return nil, fmt.Errorf("mirror: leg %s: %w", legName(i), err)
			}
		}
	}
	m.inSync, m.gen, m.genID, m.genTime = p.inSync, p.gen, p.genID, p.genTime
	m.dropGen, m.dropGenID = p.dropGen, p.dropGenID
	m.events = max(hsEvents(byIdx[0]), hsEvents(byIdx[1]))
	copy(m.bitmap, p.bitmap)
	m.checkpoint = int64(ref.Checkpoint)
	if p.target >= 0 {
		m.startResyncLocked(p.target, p.need, p.mode)
	}
	for i := range m.legs {
		if !m.legs[i].live && m.inSync&(1<<i) != 0 {
			m.pendDrop = true
		}
	}
	if p.preferRefused {
		m.log.Warn("mirror: " + p.preferNote)
	} else if p.preferNote != "" {
		m.log.Info("mirror: " + p.preferNote)
	}
	m.log.WithFields(logrus.Fields{"mirror": m.id, "plan": p.why, "assembly": fmt.Sprintf("%016x", m.owner.Assembly)}).Info("mirror assembled")
	if err := m.reserveLegs(ctx, preempt); err != nil {
		return nil, err
	}
	// The first commit records this assembly as the owner, also on a
	// degraded start (the membership it writes is the one read).
	m.dirtyVer++
	if err := m.commitMeta(ctx, m.dirtyVer); err != nil {
		m.releaseLegs(ctx)
		return nil, err
	}
	m.start()
	return m, nil
}

func hsEvents(h *header) uint64 {
	if h == nil {
		return 0
	}
	return h.Events
}

// assemblyPlan is what Assemble (and Inspect) decide from the headers.
type assemblyPlan struct {
	ref        *header
	inSync     uint32
	gen, genID uint64
	genTime    int64
	dropGen    uint64
	dropGenID  uint64
	bitmap     bitset
	need       bitset
	target     int
	mode       string // "", "incremental", "full", "crash"
	why        string
	// preferNote says why a Prefer was not applied; preferRefused when
	// the preferred leg is the stale one.
	preferNote    string
	preferRefused bool
}

func describe(i int, h *header) string {
	alone := ""
	if h.InSync&(1<<(1-i)) == 0 {
		alone = fmt.Sprintf(", written without leg %s since %s", legName(1-i), fmtTime(h.GenTime))
	}
	return fmt.Sprintf("leg %s: generation %d%s, last metadata update %s", legName(i), h.Gen, alone, fmtTime(h.Updated))
}

func plan(ha, hb *header, prefer int) (*assemblyPlan, error) {
	hs := [2]*header{ha, hb}
	p := &assemblyPlan{target: -1}
	if ha == nil || hb == nil {
		i := 0
		if ha == nil {
			i = 1
		}
		h := hs[i]
		if h.InSync&(1<<i) == 0 {
			return nil, fmt.Errorf("%w: leg %s was a resync target and cannot start alone (%s)", ErrNotInSync, legName(i), describe(i, h))
		}
		p.ref = h
		p.inSync, p.gen, p.genID, p.genTime = h.InSync, h.Gen, h.GenID, h.GenTime
		p.dropGen, p.dropGenID = h.DroppedGen, h.DroppedGenID
		p.bitmap = bitset(h.bitmap).clone()
		p.why = fmt.Sprintf("degraded: only leg %s present", legName(i))
		return p, nil
	}
	if ha.Mirror != hb.Mirror {
		return nil, fmt.Errorf("%w: leg A is in mirror %s, leg B in mirror %s", ErrMismatch, ha.Mirror, hb.Mirror)
	}
	if ha.Chunk != hb.Chunk || ha.Exported != hb.Exported || ha.BlockSize != hb.BlockSize || ha.Unit != hb.Unit || ha.BitmapBytes != hb.BitmapBytes {
		return nil, fmt.Errorf("%w: the legs disagree on the geometry", ErrMismatch)
	}
	n := ha.nchunks()
	all := newBitset(n)
	all.setAll(n)
	full := func(src int, why string) {
		h := hs[src]
		p.ref = h
		p.inSync = 1 << src
		p.gen, p.genID, p.genTime = h.Gen+1, randID(), time.Now().UnixNano()
		if h.Gen < hs[1-src].Gen {
			p.gen = hs[1-src].Gen + 1
		}
		p.dropGen, p.dropGenID = hs[1-src].Gen, hs[1-src].GenID
		p.bitmap = all.clone()
		p.need = all.clone()
		p.target = 1 - src
		p.mode = "full"
		p.why = why
	}
	same := ha.Gen == hb.Gen && ha.GenID == hb.GenID
	aLacksB := ha.InSync&2 == 0
	bLacksA := hb.InSync&1 == 0
	splitBrain := !same && aLacksB && bLacksA
	if prefer >= 0 {
		// Prefer settles a split brain and nothing else: a stale leg is
		// resynced from the up-to-date one whatever the preference, and a
		// clean pair is never fully resynced (review #1).
		t, o := hs[prefer], hs[1-prefer]
		switch {
		case t.Gen == o.DroppedGen && t.GenID == o.DroppedGenID:
			p.preferNote = fmt.Sprintf("preference for leg %s refused: leg %s dropped it at generation %d, so leg %s is stale and leg %s holds writes it lacks",
				legName(prefer), legName(1-prefer), t.Gen, legName(prefer), legName(1-prefer))
			p.preferRefused = true
		case !splitBrain:
			p.preferNote = fmt.Sprintf("preference for leg %s not used: the legs have not diverged (no split brain)", legName(prefer))
		case t.InSync&(1<<prefer) == 0:
			return nil, fmt.Errorf("%w: preferred leg %s was a resync target (%s)", ErrNotInSync, legName(prefer), describe(prefer, t))
		default:
			full(prefer, fmt.Sprintf("split brain, leg %s preferred: full resync of leg %s", legName(prefer), legName(1-prefer)))
			return p, nil
		}
	}
	switch {
	case same:
		p.ref = ha
		p.inSync, p.gen, p.genID, p.genTime = ha.InSync, ha.Gen, ha.GenID, ha.GenTime
		p.dropGen, p.dropGenID = ha.DroppedGen, ha.DroppedGenID
		p.bitmap = bitset(ha.bitmap).clone()
		p.bitmap.or(hb.bitmap)
		switch p.inSync {
		case 3:
			if p.bitmap.count() > 0 {
				p.target, p.mode = 1, "crash"
				p.why = fmt.Sprintf("unclean shutdown: %d dirty chunks resynced from leg A", p.bitmap.count())
			} else {
				p.why = "clean"
			}
		case 1, 2:
			src := 0
			if p.inSync == 2 {
				src = 1
				p.ref = hb
			}
			p.target, p.mode = 1-src, "incremental"
			p.why = fmt.Sprintf("resuming resync of leg %s: %d chunks", legName(1-src), p.bitmap.count())
		default:
			return nil, fmt.Errorf("%w: no leg is in sync", ErrNotInSync)
		}
		p.need = p.bitmap.clone()
		if p.target < 0 {
			p.need = nil
		}
		return p, nil
	case splitBrain:
		if p.preferRefused {
			return nil, fmt.Errorf("%w: %s; %s; %s", ErrSplitBrain, describe(0, ha), describe(1, hb), p.preferNote)
		}
		return nil, fmt.Errorf("%w: %s; %s. Choose the leg to keep with Prefer (--prefer A|B); the other leg is overwritten", ErrSplitBrain, describe(0, ha), describe(1, hb))
	case aLacksB || bLacksA:
		src := 0
		if bLacksA {
			src = 1
		}
		s, t := hs[src], hs[1-src]
		if t.Gen == s.DroppedGen && t.GenID == s.DroppedGenID {
			p.ref = s
			p.inSync, p.gen, p.genID, p.genTime = s.InSync, s.Gen, s.GenID, s.GenTime
			p.dropGen, p.dropGenID = s.DroppedGen, s.DroppedGenID
			p.bitmap = bitset(s.bitmap).clone()
			p.need = p.bitmap.clone()
			p.target, p.mode = 1-src, "incremental"
			p.why = fmt.Sprintf("leg %s stale since generation %d: incremental resync of %d chunks from leg %s", legName(1-src), t.Gen, p.bitmap.count(), legName(src))
			return p, nil
		}
		full(src, fmt.Sprintf("leg %s at generation %d is not the one leg %s dropped (%d): full resync", legName(1-src), t.Gen, legName(src), s.DroppedGen))
		return p, nil
	default:
		src := 0
		if hb.Gen > ha.Gen {
			src = 1
		}
		full(src, fmt.Sprintf("generations differ (%d vs %d): full resync of leg %s", ha.Gen, hb.Gen, legName(1-src)))
		return p, nil
	}
}

// startResyncLocked makes leg t the resync target for the chunks in need.
func (m *Mirror) startResyncLocked(t int, need bitset, mode string) {
	m.target, m.need, m.mode, m.lastTarget = t, need, mode, t
	m.resyncTotal = need.count()
	m.resyncDone = 0
	m.resyncStart = time.Now()
	m.resyncElapsed = 0
	m.checkpoint = 0
	select {
	case m.resyncWake <- struct{}{}:
	default:
	}
}

func (m *Mirror) start() {
	m.wg.Add(2)
	go m.resyncLoop()
	go m.cleaner()
	if m.opts.Reopen != nil {
		m.wg.Add(1)
		go m.prober()
	}
}

// headerFor builds leg i's header from the current state. m.mu held.
func (m *Mirror) headerFor(i int) *header {
	var flags uint32
	if m.splitMark[i] {
		flags |= flagSplit
	}
	return &header{
		Mirror: m.id, Leg: m.legUUID[i], Peer: m.legUUID[1-i], Index: i, Flags: flags,
		LegSize: m.legs[i].dev.Size(), Exported: m.size, Chunk: m.chunk, BlockSize: m.bs,
		Unit: m.unit, BitmapBytes: m.bitmapBytes, Events: m.events,
		Gen: m.gen, GenID: m.genID, GenTime: m.genTime, InSync: m.inSync,
		DroppedGen: m.dropGen, DroppedGenID: m.dropGenID, Checkpoint: uint64(m.checkpoint),
		ResyncTarget: int32(m.target), Created: m.created, WWID: m.legWWID[i], PeerWWID: m.legWWID[1-i],
		Updated: time.Now().UnixNano(), Owner: m.owner,
	}
}

// commitMeta returns once metadata version v (or newer) is durable on every
// live leg. Concurrent callers share one write (group commit).
func (m *Mirror) commitMeta(ctx context.Context, v uint64) error {
	return m.commitMetaFlags(ctx, v, 0)
}

func (m *Mirror) commitMetaFlags(ctx context.Context, v uint64, flags uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.writtenVer < v {
		if m.writing {
			m.cond.Wait()
			continue
		}
		m.writing = true
		ver := m.dirtyVer
		m.events++
		type job struct {
			i    int
			dev  blockdev.Device
			h    *header
			slot int
		}
		var jobs []job
		for i, l := range m.legs {
			if l.live {
				h := m.headerFor(i)
				h.Flags |= flags
				jobs = append(jobs, job{i, l.dev, h, l.nextSlot})
			}
		}
		bits := m.bitmap.clone()
		m.mu.Unlock()
		errs := make([]error, len(jobs))
		var wg sync.WaitGroup
		wctx := context.WithoutCancel(ctx)
		for k, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[k] = writeSlot(wctx, j.dev, j.h, bits, j.slot)
			}()
		}
		wg.Wait()
		m.mu.Lock()
		m.writing = false
		var fatal error
		ok := 0
		for k, j := range jobs {
			if errs[k] == nil {
				m.legs[j.i].nextSlot = j.slot ^ 1
				ok++
				continue
			}
			if err := m.failLegLocked(j.i, fmt.Errorf("metadata write: %w", errs[k])); err != nil {
				fatal = err
			}
		}
		if fatal == nil && ok > 0 {
			m.writtenVer = max(m.writtenVer, ver)
		}
		m.cond.Broadcast()
		if fatal != nil {
			return fatal
		}
		if ok == 0 {
			return fmt.Errorf("mirror: no live leg: %w", blockdev.ErrUnavailable)
		}
	}
	return nil
}

// failLegLocked takes leg i out of service. The last in-sync leg is never
// failed: ErrLastLeg (wrapping cause) comes back instead. m.mu held.
func (m *Mirror) failLegLocked(i int, cause error) error {
	l := m.legs[i]
	if !l.live {
		return nil
	}
	if m.inSync&(1<<i) != 0 {
		others := 0
		for j, o := range m.legs {
			if j != i && o.live && m.inSync&(1<<j) != 0 {
				others++
			}
		}
		if others == 0 {
			return fmt.Errorf("%w: leg %s: %w", ErrLastLeg, legName(i), cause)
		}
	}
	m.log.WithError(cause).Warnf("mirror: leg %s failed", legName(i))
	l.live = false
	l.err = cause
	m.scheduleProbeLocked(i)
	if m.target >= 0 {
		// Either the target failed (its bits stay in the bitmap) or, in
		// crash recovery, the source failed and the target's copy of the
		// dirty chunks is as good as any: both end the resync.
		m.target, m.need = -1, nil
		m.resyncElapsed = time.Since(m.resyncStart)
	}
	m.dropLocked(i)
	return nil
}

// dropLocked records durably (at the next commit) that leg i is stale.
func (m *Mirror) dropLocked(i int) {
	if m.inSync&(1<<i) != 0 {
		m.inSync &^= 1 << i
		m.dropGen, m.dropGenID = m.gen, m.genID
		m.gen++
		m.genID = randID()
		m.genTime = time.Now().UnixNano()
	}
	m.dirtyVer++
	m.memberVer = m.dirtyVer
}

// failInstLocked fails leg i only while l is still its current instance:
// an I/O that ended on a leg since reattached must not fail the new one.
func (m *Mirror) failInstLocked(l *leg, i int, cause error) error {
	if m.legs[i] != l {
		return nil
	}
	return m.failLegLocked(i, cause)
}

// FailLeg takes leg "A" or "B" out of service, as if it had failed (like
// mdadm --fail). Automatic re-add leaves it alone until AddLeg.
func (m *Mirror) FailLeg(ctx context.Context, name string) error {
	i, err := legIndex(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if err := m.failLegLocked(i, errors.New("failed by request")); err != nil {
		m.mu.Unlock()
		return err
	}
	m.probe[i].held = heldFailed
	v := m.memberVer
	m.mu.Unlock()
	return m.commitMeta(ctx, v)
}

func legIndex(name string) (int, error) {
	switch name {
	case "A", "a", "0":
		return 0, nil
	case "B", "b", "1":
		return 1, nil
	}
	return 0, fmt.Errorf("mirror: leg %q: want A or B: %w", name, blockdev.ErrInvalid)
}

// Size is the exported size: the smaller leg minus the metadata area.
func (m *Mirror) Size() int64 { return m.size }

// BlockSize is the larger of the legs' block sizes.
func (m *Mirror) BlockSize() int { return m.bs }

// ChunkSize is the bitmap granularity.
func (m *Mirror) ChunkSize() int64 { return m.chunk }

// MaxTransfer is the smaller of the legs' advertised transfer limits.
func (m *Mirror) MaxTransfer() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	mx := 0
	for _, l := range m.legs {
		if l.dev == nil {
			continue
		}
		if t, ok := l.dev.(interface{ MaxTransfer() int }); ok && t.MaxTransfer() > 0 && (mx == 0 || t.MaxTransfer() < mx) {
			mx = t.MaxTransfer()
		}
	}
	return mx
}

// halt stops background work without touching the legs (tests: simulated
// process death).
func (m *Mirror) halt() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.bgCancel()
	m.wg.Wait()
	if m.opts.env.exited != nil {
		m.opts.env.exited(m.owner.PID)
	}
}

// Close stops the resync, flushes the legs, writes clean metadata (an
// empty bitmap when both legs are in sync) and closes the legs.
func (m *Mirror) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return blockdev.ErrClosed
	}
	m.closed = true
	m.mu.Unlock()
	m.bgCancel()
	m.wg.Wait()
	ctx := context.Background()
	err := m.flush(ctx)
	m.mu.Lock()
	var flags uint32
	if err == nil && m.target < 0 && !m.pendDrop && m.allInSyncLocked() {
		for c := int64(0); c < m.nchunks; c++ {
			if m.inflight[c] == 0 {
				m.bitmap.clear(c)
			}
		}
		flags = flagClean
	}
	m.owner.Active = false // a clean Close hands the mirror back
	m.dirtyVer++
	v := m.dirtyVer
	m.mu.Unlock()
	if cerr := m.commitMetaFlags(ctx, v, flags); err == nil {
		err = cerr
	}
	m.releaseLegs(ctx)
	m.mu.Lock()
	type closing struct {
		dev  blockdev.Device
		live bool
	}
	var toClose []closing
	for _, l := range m.legs {
		if l.dev != nil && !l.closed {
			l.closed = true
			toClose = append(toClose, closing{l.dev, l.live})
		}
	}
	m.mu.Unlock()
	for _, l := range toClose {
		if cerr := l.dev.Close(); err == nil && l.live {
			err = cerr
		}
	}
	return err
}

func (m *Mirror) allInSyncLocked() bool {
	for i, l := range m.legs {
		if !l.live || m.inSync&(1<<i) == 0 {
			return false
		}
	}
	return true
}
