package decode

import "time"

// sampleSlack absorbs timestamp rounding: a frame this close before the next
// sample time still counts as crossing it.
const sampleSlack = 2 * time.Millisecond

// Sampler thins a stream to a target rate by presentation time. It keeps a
// frame when its pts crosses the next sample time, then advances the sample
// time by whole intervals, so the kept rate converges on the target without
// drifting. A pts that goes backwards (a new stream) restarts it. Kept
// frames are at least half an interval apart, so a variable-rate source
// that leaves a gap before a sample time does not give two frames in a row
// (one late for that sample time, one on time for the next).
type Sampler struct {
	interval time.Duration
	next     time.Duration
	last     time.Duration // the last kept frame's pts
	started  bool
}

// NewSampler samples at fps frames per second; fps ≤ 0 keeps every frame.
func NewSampler(fps float64) *Sampler {
	s := &Sampler{}
	if fps > 0 {
		s.interval = time.Duration(float64(time.Second) / fps)
	}
	return s
}

// Reset forgets the stream: the next frame is kept.
func (s *Sampler) Reset() { s.started = false }

// Keep reports whether the frame at pts is kept.
func (s *Sampler) Keep(pts time.Duration) bool {
	if s.interval <= 0 {
		return true
	}
	if !s.started || pts < s.next-2*s.interval {
		s.started = true
		s.next, s.last = pts+s.interval, pts
		return true
	}
	if pts+sampleSlack < s.next || pts-s.last < s.interval/2 {
		return false
	}
	s.last = pts
	s.next += s.interval
	if s.next+sampleSlack <= pts {
		// The source skipped past several sample times: resume on the grid.
		s.next += (pts - s.next + s.interval) / s.interval * s.interval
	}
	return true
}
