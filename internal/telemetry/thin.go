package telemetry

import "sync"

// Thinned reports whether the nth time (counted from 1) something happens
// that can repeat without end (garbage on a subject, retries through an
// outage, a model that always fails) gets a log line: the 1st, 2nd, 4th,
// 8th… With n in the line, the log shows how big a flood is without being
// flooded by it.
func Thinned[T ~int | ~int64 | ~uint64](n T) bool { return n > 0 && n&(n-1) == 0 }

// Counts counts occurrences by key (a camera and a message, say) for
// Thinned. Past maxCountKeys keys it starts over, so that a stream of
// distinct keys cannot grow it. The zero value is ready to use, and it is
// safe for concurrent use.
type Counts struct {
	mu sync.Mutex
	n  map[string]uint64
}

const maxCountKeys = 1024

// Add counts one more of key and returns its count.
func (c *Counts) Add(key string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil || len(c.n) >= maxCountKeys {
		c.n = map[string]uint64{}
	}
	c.n[key]++
	return c.n[key]
}

// Reset forgets every count.
func (c *Counts) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = nil
}
