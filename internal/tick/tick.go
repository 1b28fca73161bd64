// Package tick runs periodic work.
package tick

import (
	"context"
	"time"
)

// Every calls f every interval, the first time one interval from now,
// until ctx is done or f returns false.
func Every(ctx context.Context, interval time.Duration, f func() bool) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A tick and ctx's end may both be ready, and select picks
			// either: f never runs once ctx is done.
			if ctx.Err() != nil || !f() {
				return
			}
		}
	}
}

// start is when the process began, with the monotonic clock reading that
// Mono counts from.
var start = time.Now()

// Mono returns the nanoseconds since the process started, by the
// monotonic clock: for deadlines and last-seen times kept in an atomic
// int64, which time.Now().UnixNano() (the wall clock) would move when the
// system clock is stepped.
func Mono() int64 { return int64(time.Since(start)) }
