package generate

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/patchline/patchline/internal/frame"
)

// windows keeps the last few frames of every camera seen on
// patchline.frames.*: bounded (size frames per camera), rebuilt from the live
// stream after a restart, forgotten when a camera has been silent for ttl.
type windows struct {
	size int
	ttl  time.Duration

	mu   sync.Mutex
	cams map[string]*camWindow
}

type camWindow struct {
	frames   []*frame.Frame // oldest first, len <= size
	lastSeen time.Time
}

func newWindows(size int, ttl time.Duration) *windows {
	return &windows{size: max(1, size), ttl: ttl, cams: map[string]*camWindow{}}
}

// add appends f to its camera's window and reports whether the camera is
// new (its window had expired or never was). A frame whose seq does not
// increase, or whose pts goes back (the camera restarted: seq goes on
// across a restart, its source's timestamps start again), or whose geometry
// differs from the window's starts the window again.
func (ws *windows) add(f *frame.Frame, now time.Time) (added bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.cams[f.Camera]
	if w == nil {
		added = true
		w = &camWindow{frames: make([]*frame.Frame, 0, ws.size)}
		ws.cams[f.Camera] = w
	}
	if n := len(w.frames); n > 0 {
		last := w.frames[n-1]
		if f.Seq <= last.Seq || f.PTS < last.PTS || f.Width != last.Width || f.Height != last.Height || f.Patch != last.Patch {
			w.frames = w.frames[:0]
		}
	}
	if len(w.frames) == ws.size {
		copy(w.frames, w.frames[1:])
		w.frames = w.frames[:ws.size-1]
	}
	w.frames = append(w.frames, f)
	w.lastSeen = now
	return added
}

// has reports whether camera has frames in its window.
func (ws *windows) has(camera string) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.cams[camera]
	return w != nil && len(w.frames) > 0
}

// forget drops camera's window.
func (ws *windows) forget(camera string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(ws.cams, camera)
}

// windowError says why a window cannot serve a request; reason is one of
// the Reason* codes.
type windowError struct {
	reason string
	msg    string
}

func (e *windowError) Error() string { return e.msg }

// last returns the camera's last n frames, oldest first. Fewer frames than n,
// or a camera never seen (or silent past ttl), is a *windowError.
func (ws *windows) last(camera string, n int, now time.Time) ([]*frame.Frame, error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.cams[camera]
	if w == nil || (ws.ttl > 0 && now.Sub(w.lastSeen) > ws.ttl) {
		return nil, &windowError{ReasonUnknownCamera, fmt.Sprintf("camera %q: no frames seen (unknown camera, or silent for over %s)", camera, ws.ttl)}
	}
	if len(w.frames) < n {
		return nil, &windowError{ReasonNotEnoughFrames, fmt.Sprintf("camera %q: %d frames so far, the model needs the last %d", camera, len(w.frames), n)}
	}
	return slices.Clone(w.frames[len(w.frames)-n:]), nil
}

// cameras lists the cameras with a live window.
func (ws *windows) cameras(now time.Time) []string {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	var out []string
	for id, w := range ws.cams {
		if ws.ttl <= 0 || now.Sub(w.lastSeen) <= ws.ttl {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// expire forgets cameras silent for longer than ttl, and returns them.
func (ws *windows) expire(now time.Time) (gone []string) {
	if ws.ttl <= 0 {
		return nil
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for id, w := range ws.cams {
		if now.Sub(w.lastSeen) > ws.ttl {
			delete(ws.cams, id)
			gone = append(gone, id)
		}
	}
	return gone
}
