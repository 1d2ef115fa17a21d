package blockcopy

import (
	"context"
	"sync"
	"time"
)

// limiter is a token bucket in bytes. wait reserves n bytes and sleeps until
// the bucket has paid for them (the balance may go negative, so large
// requests are charged exactly, not rounded to the burst).
type limiter struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
}

func newLimiter(rate int64, burst int) *limiter {
	if rate <= 0 {
		return nil
	}
	return &limiter{rate: float64(rate), burst: float64(burst), last: time.Now()}
}

func (l *limiter) wait(ctx context.Context, n int64) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	l.tokens -= float64(n)
	deficit := -l.tokens
	l.mu.Unlock()
	if deficit <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(deficit / l.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
