package blockcheck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Target is what a workload client drives: a blockdev.Device, an NBD
// connection, a file on a FUSE mount.
type Target interface {
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	Flush(ctx context.Context) error
	Close() error
}

// Breakable is implemented by targets that can become unusable (a dead
// NBD connection); the client then opens a new one.
type Breakable interface {
	Broken() bool
}

// Config is a workload.
type Config struct {
	Blocks    int64         // checked space [0, Blocks) in BlockSize units; default 256
	Clients   int           // concurrent clients; default 4
	MaxBlocks int64         // largest I/O in blocks; default 8
	Duration  time.Duration // how long clients issue operations
	Seed      uint64
	// Percentages of operations (the rest are writes); FUAPct is the share
	// of writes sent with FUA.
	ReadPct, FlushPct, FUAPct int
	// Round splits a long run into rounds of this length (default: one
	// round), each with its own history, so memory stays bounded: each
	// round is checked and dropped, the next starts from its final
	// content (History.Next).
	Round time.Duration
	// OpTimeout bounds each operation (default 90 s); an operation that
	// times out is recorded as Unknown.
	OpTimeout time.Duration
	// Open gives client i its target (i = -1: the final read).
	Open func(ctx context.Context, client int) (Target, error)
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

func (c *Config) defaults() {
	if c.Blocks == 0 {
		c.Blocks = 256
	}
	if c.Clients == 0 {
		c.Clients = 4
	}
	if c.MaxBlocks == 0 {
		c.MaxBlocks = 8
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 90 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// Run drives the workload for cfg.Duration, in rounds of cfg.Round, and
// hands each round's history to done (call Check there). In each round
// inject runs beside the clients (its context ends when the clients
// should stop: it must heal every fault before it returns); then the
// whole space is read back as the round's final content. The error is a
// setup or final-read failure, never an anomaly.
func Run(ctx context.Context, cfg Config, inject func(ctx context.Context, h *History), done func(h *History)) error {
	cfg.defaults()
	round := cfg.Round
	if round <= 0 || round > cfg.Duration {
		round = cfg.Duration
	}
	h := NewHistory(cfg.Blocks)
	for left := cfg.Duration; ; {
		d := min(round, left)
		if left-d < round/4 {
			d = left // no stub of a last round
		}
		err := runRound(ctx, cfg, h, d, inject)
		done(h)
		left -= d
		if err != nil || left <= 0 || ctx.Err() != nil {
			return err
		}
		h = h.Next()
	}
}

func runRound(ctx context.Context, cfg Config, h *History, d time.Duration, inject func(ctx context.Context, h *History)) error {
	runCtx, stop := context.WithTimeout(ctx, d)
	defer stop()
	var wg sync.WaitGroup
	injDone := make(chan struct{})
	go func() {
		defer close(injDone)
		if inject != nil {
			inject(runCtx, h)
		}
	}()
	errs := make(chan error, cfg.Clients)
	for i := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := client(runCtx, ctx, cfg, h, i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	stop()
	<-injDone
	close(errs)
	for err := range errs {
		return err
	}
	return finalRead(ctx, cfg, h)
}

// client runs one client until runCtx ends; ctx bounds the last operation.
func client(runCtx, ctx context.Context, cfg Config, h *History, id int) error {
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(id)+1))
	var t Target
	defer func() {
		if t != nil {
			t.Close()
		}
	}()
	buf := make([]byte, cfg.MaxBlocks*BlockSize)
	var seq uint32
	for runCtx.Err() == nil {
		if t == nil {
			var err error
			t, err = openRetry(runCtx, cfg, id)
			if err != nil {
				if runCtx.Err() != nil {
					return nil
				}
				return err
			}
		}
		seq++
		o := &Op{ID: h.NewID(), Client: uint32(id), Seq: seq}
		p := rng.IntN(100)
		switch {
		case p < cfg.FlushPct:
			o.Kind = Flush
		case p < cfg.FlushPct+cfg.ReadPct:
			o.Kind = Read
		default:
			o.Kind = Write
			o.FUA = rng.IntN(100) < cfg.FUAPct
		}
		if o.Kind != Flush {
			o.N = 1 + rng.Int64N(cfg.MaxBlocks)
			o.LBA = rng.Int64N(cfg.Blocks - o.N + 1)
		}
		b := buf[:o.N*BlockSize]
		if o.Kind == Write {
			for i := range o.N {
				Encode(b[i*BlockSize:(i+1)*BlockSize], Header{Client: o.Client, Seq: o.Seq, Op: o.ID, LBA: uint64(o.LBA + i)})
			}
		}
		opCtx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
		o.Invoke = h.Now()
		var err error
		switch o.Kind {
		case Write:
			err = t.WriteAt(opCtx, b, o.LBA*BlockSize, o.FUA)
		case Read:
			err = t.ReadAt(opCtx, b, o.LBA*BlockSize)
		case Flush:
			err = t.Flush(opCtx)
		}
		o.Complete = h.Now()
		cancel()
		if err != nil {
			o.Result, o.Err = Failed, err.Error()
			bt, ok := t.(Breakable)
			if errors.Is(err, context.DeadlineExceeded) || (ok && bt.Broken()) {
				o.Result = Unknown
			}
			if ok && bt.Broken() {
				t.Close()
				t = nil
			}
		} else if o.Kind == Read {
			o.Seen = make([]Seen, o.N)
			for i := range o.N {
				hd, st := Decode(b[i*BlockSize : (i+1)*BlockSize])
				o.Seen[i] = Seen{State: st, H: hd}
			}
		}
		h.Add(o)
		if err != nil {
			// Do not spin on a dead device.
			select {
			case <-runCtx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// openRetry opens a client's target, retrying for as long as ctx allows.
func openRetry(ctx context.Context, cfg Config, id int) (Target, error) {
	var last error
	for {
		t, err := cfg.Open(ctx, id)
		if err == nil {
			return t, nil
		}
		if last == nil || last.Error() != err.Error() {
			cfg.Logf("client %d: open: %v", id, err)
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open client %d: %w", id, last)
		case <-time.After(time.Duration(100+rand.IntN(400)) * time.Millisecond):
		}
	}
}

// finalRead reads the whole space once every fault is healed, retrying
// failed reads for up to two minutes.
func finalRead(ctx context.Context, cfg Config, h *History) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	t, err := openRetry(ctx, cfg, -1)
	if err != nil {
		return err
	}
	defer func() {
		if t != nil {
			t.Close()
		}
	}()
	at := h.Now()
	seen := make([]Seen, cfg.Blocks)
	buf := make([]byte, 64*BlockSize)
	for lba := int64(0); lba < cfg.Blocks; {
		n := min(64, cfg.Blocks-lba)
		b := buf[:n*BlockSize]
		if err := t.ReadAt(ctx, b, lba*BlockSize); err != nil {
			cfg.Logf("final read at block %d: %v (retrying)", lba, err)
			if bt, ok := t.(Breakable); ok && bt.Broken() {
				t.Close()
				if t, err = openRetry(ctx, cfg, -1); err != nil {
					return err
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("final read at block %d: %w", lba, err)
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		for i := range n {
			hd, st := Decode(b[i*BlockSize : (i+1)*BlockSize])
			seen[lba+i] = Seen{State: st, H: hd}
		}
		lba += n
	}
	h.SetFinal(seen, at)
	return nil
}
