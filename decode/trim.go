package decode

/*
#include <malloc.h>
*/
import "C"

import (
	"runtime/debug"
	"sync/atomic"
	"time"
)

// trimDelay is how long after a camera stops the C heap is trimmed: a
// burst of stops (cameras detached together) shares one trim.
const trimDelay = 2 * time.Second

var trimScheduled atomic.Bool

// scheduleTrim hands what stopped cameras freed back to the system soon.
// A process that had decoded 300 cameras stayed at 1.2 GB for minutes
// after they were all detached: the Go heap keeps its garbage until the
// next collection, which at GOGC=400 and little allocating comes only with
// the runtime's two-minute forced one, and FFmpeg and OpenCV free a
// camera's decoder and images into glibc's per-thread arenas, which keep
// them. So: collect and return the Go heap (debug.FreeOSMemory), then
// return what is free in every C arena (malloc_trim).
func scheduleTrim() {
	if trimScheduled.CompareAndSwap(false, true) {
		time.AfterFunc(trimDelay, func() {
			trimScheduled.Store(false)
			debug.FreeOSMemory()
			C.malloc_trim(0)
		})
	}
}
