package telemetry

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/patchline/patchline/internal/tick"
)

// seen holds when this process last counted a frame or annotation of each
// camera (tick.Mono, *atomic.Int64 by camera id), for Quiet.
var seen sync.Map

// Saw notes that a frame or annotation of camera was counted now.
func Saw(camera string) {
	now := tick.Mono()
	v, ok := seen.Load(camera)
	if !ok {
		v, _ = seen.LoadOrStore(camera, new(atomic.Int64))
	}
	v.(*atomic.Int64).Store(now)
}

// Quiet returns the cameras with series whose last frame or annotation
// came more than d ago: those of a camera that is not in the registry (frames
// published by hand, or by a process that has it no more) are forgotten
// from these by the registry watch, as a detach forgets them.
func Quiet(d time.Duration) []string {
	t := tick.Mono() - int64(d)
	var ids []string
	seen.Range(func(k, v any) bool {
		if v.(*atomic.Int64).Load() < t {
			ids = append(ids, k.(string))
		}
		return true
	})
	return ids
}
