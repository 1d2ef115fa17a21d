package main

import (
	"context"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
)

// reopenMu serializes leg reopens: legReplacementTimeout is process-wide.
var reopenMu sync.Mutex

// legSet is how a running mirror's legs are opened again: the URLs of each
// leg (one, or several as multipath), the command's flags, and the short
// replacement timeout legs had at assembly. Automatic re-add reopens a leg
// through it; mirror replace points a leg at another LUN (mirrorreplace.go).
// It holds only what the process was given (a URL may carry a CHAP
// secret): nothing is written anywhere.
type legSet struct {
	c       *cli.Context
	timeout time.Duration
	mu      sync.Mutex
	urls    [2][]string
}

func newLegSet(c *cli.Context, urls [2][]string) *legSet {
	return &legSet{c: c, timeout: legTimeout(), urls: urls}
}

// get returns leg i's URLs.
func (ls *legSet) get(i int) []string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.urls[i]
}

// set makes urls leg i's URLs from now on.
func (ls *legSet) set(i int, urls []string) {
	ls.mu.Lock()
	ls.urls[i] = urls
	ls.mu.Unlock()
}

// open opens urls as a leg with the same flags and the same replacement
// timeout as at assembly, dialling under ctx.
func (ls *legSet) open(ctx context.Context, urls []string) (blockdev.Device, error) {
	cc := *ls.c
	cc.Context = ctx
	reopenMu.Lock()
	defer reopenMu.Unlock()
	if ls.timeout > 0 {
		legReplacementTimeout.Store(int64(ls.timeout))
		defer legReplacementTimeout.Store(0)
	}
	return openLeg(&cc, urls, false)
}

// reopen is the mirror's Options.Reopen for serve, attach and mount: it
// opens leg i again through its current URLs, dialling under ctx
// (cancelled when the mirror closes).
func (ls *legSet) reopen(ctx context.Context, i int) (blockdev.Device, error) {
	return ls.open(ctx, ls.get(i))
}
