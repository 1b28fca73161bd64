// Package queue is the bounded, drop-oldest queue between a live stream and
// a slower consumer: when full, the oldest item is evicted and handed back so
// the caller can count the drop. Live frames are perishable; the newest win.
package queue

import (
	"context"
	"sync"
)

// Ring is a bounded FIFO that drops its oldest item when full. It is safe
// for concurrent use by many producers and consumers.
type Ring[T any] struct {
	mu     sync.Mutex
	items  []T
	head   int
	n      int
	notify chan struct{} // 1-buffered: "something was pushed"
}

// NewRing returns a ring holding at most size items (size ≥ 1).
func NewRing[T any](size int) *Ring[T] {
	if size < 1 {
		size = 1
	}
	return &Ring[T]{items: make([]T, size), notify: make(chan struct{}, 1)}
}

// Push appends v. When the ring is full it evicts and returns the oldest
// item with dropped = true.
func (r *Ring[T]) Push(v T) (old T, dropped bool) {
	r.mu.Lock()
	if r.n == len(r.items) {
		old, dropped = r.items[r.head], true
		var zero T
		r.items[r.head] = zero
		r.head = (r.head + 1) % len(r.items)
		r.n--
	}
	r.items[(r.head+r.n)%len(r.items)] = v
	r.n++
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return old, dropped
}

// TryPop removes and returns the oldest item, if any.
func (r *Ring[T]) TryPop() (v T, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return v, false
	}
	v = r.items[r.head]
	var zero T
	r.items[r.head] = zero
	r.head = (r.head + 1) % len(r.items)
	r.n--
	return v, true
}

// Pop blocks until an item is available or ctx is done.
func (r *Ring[T]) Pop(ctx context.Context) (T, error) {
	for {
		if v, ok := r.TryPop(); ok {
			return v, nil
		}
		select {
		case <-r.notify:
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
}

// Wait returns a channel that is signalled after a Push; use it with
// TryPop to wait for more items with a deadline.
func (r *Ring[T]) Wait() <-chan struct{} { return r.notify }

// Len is the number of queued items.
func (r *Ring[T]) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}
