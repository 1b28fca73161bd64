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
