package telemetry

import (
	"sync"
	"sync/atomic"
	"time"
)

// seen holds when this process last counted a frame or annotation of each
// camera (unix ns, *atomic.Int64 by camera id), for Quiet.
var seen sync.Map

// Saw notes that a frame or annotation of camera was counted now.
func Saw(camera string) {
	now := time.Now().UnixNano()
	v, ok := seen.Load(camera)
	if !ok {
		v, _ = seen.LoadOrStore(camera, new(atomic.Int64))
	}
	v.(*atomic.Int64).Store(now)
}

// Quiet returns the cameras with series whose last frame or annotation
// came before t: those of a camera that is not in the registry (frames
// published by hand, or by a process that has it no more) are forgotten
// from these by the registry watch, as a detach forgets them.
func Quiet(t time.Time) []string {
	var ids []string
	seen.Range(func(k, v any) bool {
		if v.(*atomic.Int64).Load() < t.UnixNano() {
			ids = append(ids, k.(string))
		}
		return true
	})
	return ids
}
