package main

import (
	"context"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
)

// reopenMu serializes leg reopens: legReplacementTimeout is process-wide.
var reopenMu sync.Mutex

// legReopener is the mirror's Options.Reopen for serve, attach and mount:
// it opens leg i again through the same URLs (one, or several as
// multipath) with the same flags and the same short replacement timeout
// as at assembly, dialling under ctx (cancelled when the mirror closes).
func legReopener(c *cli.Context, urls [2][]string) func(context.Context, int) (blockdev.Device, error) {
	lt := legTimeout()
	return func(ctx context.Context, i int) (blockdev.Device, error) {
		cc := *c
		cc.Context = ctx
		reopenMu.Lock()
		defer reopenMu.Unlock()
		if lt > 0 {
			legReplacementTimeout.Store(int64(lt))
			defer legReplacementTimeout.Store(0)
		}
		return openLeg(&cc, urls[i], false)
	}
}
