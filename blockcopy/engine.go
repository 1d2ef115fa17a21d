package blockcopy

import (
	"context"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"sync"
	"time"
)

// task is one unit of work: a data chunk or a run of zeroes.
type task struct {
	seq   int64
	off   int64 // source offset
	n     int64
	zero  bool   // reads as zeroes: no data moved
	hole  bool   // known zero before reading (extent or stream zero chunk)
	buf   []byte // chunk buffer (nil for zero tasks unless the sink needs one)
	read  bool   // buf already holds the data (stream sources)
	hashN int64  // bytes of the task that belong to the image (the rest is padding)

	// digests are the blkhash block digests of a data task, computed by
	// the worker (nil: the committer hashes the data itself).
	digests []byte

	// results, filled by the worker
	bytesRead, written, holes int64
	diff                      diffStat
	err                       error
}

// sink is where the engine puts data.
type sink interface {
	// write runs in a worker, out of order.
	write(ctx context.Context, t *task) error
	// commit runs in the committer, in order.
	commit(ctx context.Context, t *task) error
	// zeroNeedsBuf says whether zero tasks need a buffer in write.
	zeroNeedsBuf() bool
}

// engine runs one copy.
type engine struct {
	src     source    // random-access source, or nil with stream
	stream  io.Reader // sequential source (push from a stream)
	snk     sink
	start   int64 // first source offset of the range
	from    int64 // where this run starts (> start when resuming)
	end     int64 // end of the range (stream: limit, then end of the image)
	hashEnd int64 // source bytes at or past hashEnd are padding (0: none)
	bs      int
	chunk   int
	workers int
	bufSize int  // chunk, or 2*chunk when the sink compares
	compare bool // buffers hold the source chunk and the file's
	opts    Options
	limiter *limiter

	// committer state
	hash       hash.Hash
	blk        *blkHash // hash, when it is the blkhash (workers compute block digests)
	watermark  int64    // source offset up to which everything is committed
	res        Result
	startTime  time.Time
	lastReport time.Time

	// checkpoint, when set, is called by the committer every
	// checkpointEvery with the engine at a consistent watermark.
	checkpoint      func() error
	checkpointEvery time.Duration
	lastCheckpoint  time.Time

	// verify merging
	diffs    diffStat
	maxDiffs int
}

// setup normalizes options against the block size and a device MaxTransfer.
func (e *engine) setup(opts Options, bs int, maxXfer int) error {
	e.opts = opts
	e.bs = bs
	e.workers = opts.Workers
	if e.workers <= 0 {
		e.workers = DefaultWorkers
	}
	e.chunk = opts.ChunkSize
	if e.chunk <= 0 {
		// 1 MiB, or less when the device cannot take that much at once.
		// Not the device's maximum when it is larger: a target that
		// allocates a buffer per command (tgtd) serves 4 MiB reads ~40%
		// slower than 1 MiB ones, and 1 MiB already amortizes the
		// per-command cost.
		e.chunk = DefaultChunkSize
		if maxXfer > 0 && maxXfer < e.chunk {
			e.chunk = maxXfer
		}
	}
	if e.chunk < bs {
		e.chunk = bs
	}
	if e.chunk%bs != 0 {
		return ErrUnaligned
	}
	e.bufSize = e.chunk
	if e.compare {
		e.bufSize = 2 * e.chunk
	}
	e.limiter = newLimiter(opts.RateLimit, e.chunk)
	if opts.Checksum && e.hash == nil {
		h, err := newImageHash(opts.ChecksumAlgo)
		if err != nil {
			return err
		}
		e.hash = h
		e.blk, _ = h.(*blkHash)
	}
	if e.from < e.start {
		e.from = e.start
	}
	e.watermark = e.from
	e.res.Resumed = e.from - e.start
	return nil
}

// run copies; it returns the first error (ctx.Err() when cancelled).
func (e *engine) run(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	e.startTime = time.Now()
	e.lastReport = e.startTime
	e.lastCheckpoint = e.startTime

	nbuf := e.workers * 2
	pool := make(chan []byte, nbuf)
	for range nbuf {
		pool <- make([]byte, e.bufSize)
	}
	slots := make(chan struct{}, e.workers*4)
	work := make(chan *task)
	results := make(chan *task, e.workers*4)

	var planErr error
	go func() {
		defer close(work)
		if e.stream != nil {
			planErr = e.planStream(ctx, pool, slots, work)
		} else {
			planErr = e.plan(ctx, pool, slots, work)
		}
		if planErr != nil {
			cancel()
		}
	}()
	var wg sync.WaitGroup
	for range e.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				t.err = e.process(ctx, t)
				results <- t
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()

	var firstErr error
	pending := make(map[int64]*task)
	var next int64
	for t := range results {
		if t.err != nil && firstErr == nil {
			firstErr = t.err
			cancel()
		}
		pending[t.seq] = t
		for {
			t, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			if firstErr == nil {
				if err := e.commit(ctx, t); err != nil {
					firstErr = err
					cancel()
				}
			}
			if t.buf != nil {
				pool <- t.buf[:cap(t.buf)]
			}
			<-slots
		}
	}
	if planErr != nil && (firstErr == nil || errors.Is(firstErr, context.Canceled)) {
		firstErr = planErr
	}
	if firstErr != nil && parent.Err() != nil {
		// The caller's cancellation, not the errors it provoked in flight.
		firstErr = parent.Err()
	}
	e.res.Total = e.end - e.start
	e.res.Done = e.watermark - e.start
	e.res.Elapsed = time.Since(e.startTime)
	if e.hash != nil && firstErr == nil {
		e.res.Checksum = hex.EncodeToString(e.hash.Sum(nil))
		e.res.ChecksumAlgo = ChecksumSHA256
		if e.blk != nil {
			e.res.ChecksumAlgo = ChecksumBlkhash
		} else {
			e.res.SHA256 = e.res.Checksum
		}
	}
	e.report(true)
	return firstErr
}

// emit hands t to the workers, in order, after taking a window slot.
func (e *engine) emit(ctx context.Context, seq *int64, t *task, slots chan struct{}, work chan<- *task) error {
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	t.seq = *seq
	*seq++
	select {
	case work <- t:
		return nil
	case <-ctx.Done():
		<-slots
		return ctx.Err()
	}
}

func getBuf(ctx context.Context, pool chan []byte) ([]byte, error) {
	select {
	case b := <-pool:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// plan walks [start, end) on the chunk grid for a random-access source.
func (e *engine) plan(ctx context.Context, pool chan []byte, slots chan struct{}, work chan<- *task) error {
	var seq int64
	ext := newExtentCache(e.src, e.from, e.end)
	var pend *task // zero run being merged
	flush := func() error {
		if pend == nil {
			return nil
		}
		t := pend
		pend = nil
		t.hashN = e.hashLen(t.off, t.n)
		if e.snk.zeroNeedsBuf() {
			b, err := getBuf(ctx, pool)
			if err != nil {
				return err
			}
			t.buf = b
		}
		return e.emit(ctx, &seq, t, slots, work)
	}
	for off := e.from; off < e.end; {
		n := min(int64(e.chunk), e.end-off)
		z, err := ext.zero(ctx, off, n)
		if err != nil {
			return err
		}
		if z {
			if pend != nil && pend.n+n <= maxZeroTask {
				pend.n += n
			} else {
				if err := flush(); err != nil {
					return err
				}
				pend = &task{off: off, n: n, zero: true, hole: true}
			}
			off += n
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		b, err := getBuf(ctx, pool)
		if err != nil {
			return err
		}
		t := &task{off: off, n: n, buf: b[:n], hashN: e.hashLen(off, n)}
		if err := e.emit(ctx, &seq, t, slots, work); err != nil {
			return err
		}
		off += n
	}
	return flush()
}

// hashLen is how much of [off, off+n) is image rather than padding.
func (e *engine) hashLen(off, n int64) int64 {
	if e.hashEnd > 0 && off+n > e.hashEnd {
		return max(0, e.hashEnd-off)
	}
	return n
}

// planStream reads the stream sequentially into chunks (push from stdin).
// e.end is the most the device takes; the image length is found at EOF.
func (e *engine) planStream(ctx context.Context, pool chan []byte, slots chan struct{}, work chan<- *task) error {
	var seq int64
	off := e.from
	for {
		b, err := getBuf(ctx, pool)
		if err != nil {
			return err
		}
		b = b[:e.chunk]
		n, rerr := io.ReadFull(e.stream, b)
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			pool <- b
			return rerr
		}
		if n == 0 {
			pool <- b
			e.end = off
			return nil
		}
		if off+int64(n) > e.end {
			pool <- b
			return ErrTooLarge
		}
		padded := (n + e.bs - 1) / e.bs * e.bs
		clear(b[n:padded])
		t := &task{off: off, n: int64(padded), buf: b[:padded], read: true, hashN: int64(n)}
		if err := e.emit(ctx, &seq, t, slots, work); err != nil {
			return err
		}
		off += int64(padded)
		if n < e.chunk {
			e.end = off
			return nil
		}
	}
}

// process runs in a worker: read the chunk, detect zeroes, write it.
func (e *engine) process(ctx context.Context, t *task) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !t.zero {
		if !t.read {
			if err := e.limiter.wait(ctx, t.n); err != nil {
				return err
			}
			if err := e.src.readAt(ctx, t.buf, t.off); err != nil {
				return err
			}
			t.bytesRead = t.n
		} else {
			t.bytesRead = t.n
			if err := e.limiter.wait(ctx, t.n); err != nil {
				return err
			}
		}
		if isZero(t.buf) {
			t.zero = true
		} else if e.blk != nil {
			taskDigests(t, t.off-e.start)
		}
	}
	return e.snk.write(ctx, t)
}

// commit runs in order: sink commit, hash, counters, progress, checkpoint.
func (e *engine) commit(ctx context.Context, t *task) error {
	if err := e.snk.commit(ctx, t); err != nil {
		return err
	}
	if e.blk != nil {
		e.blk.addTask(t)
	} else if e.hash != nil {
		n := t.hashN
		if t.zero {
			hashZeros(e.hash, n)
		} else {
			e.hash.Write(t.buf[:n])
		}
	}
	e.res.BytesRead += t.bytesRead
	e.res.BytesWritten += t.written
	e.res.HoleBytes += t.holes
	e.watermark = t.off + t.n
	e.mergeDiff(&t.diff)
	now := time.Now()
	if e.checkpoint != nil && now.Sub(e.lastCheckpoint) >= e.checkpointEvery {
		e.lastCheckpoint = now
		if err := e.checkpoint(); err != nil {
			return err
		}
	}
	e.report(false)
	return nil
}

func (e *engine) report(final bool) {
	if e.opts.Progress == nil {
		return
	}
	now := time.Now()
	iv := e.opts.ProgressInterval
	if iv <= 0 {
		iv = DefaultProgressInterval
	}
	if !final && now.Sub(e.lastReport) < iv {
		return
	}
	e.lastReport = now
	var total int64
	if e.stream == nil || final {
		total = e.end - e.start // a stream's end is known once it is done
	}
	e.opts.Progress(Progress{
		Done:    e.watermark - e.start,
		Total:   total,
		Holes:   e.res.HoleBytes,
		Read:    e.res.BytesRead,
		Written: e.res.BytesWritten,
		Elapsed: now.Sub(e.startTime),
	})
}
