package synth

import "math"

// rng is a counter-based random source: every draw is a hash of the seed,
// a stream (an object, or the scene), a frame and a purpose. No state
// carries from frame to frame, so the world at frame i never depends on
// the order frames were asked for.
type rng struct {
	key uint64
	n   uint64 // draws so far, for the sequential helpers
}

func newRNG(seed int64, stream, frame int) rng {
	k := mix(uint64(seed) ^ 0x9e3779b97f4a7c15)
	k = mix(k ^ uint64(int64(stream)))
	k = mix(k ^ uint64(int64(frame))<<1)
	return rng{key: k}
}

// mix is splitmix64's finaliser.
func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// at is the draw for a purpose, uniform in [0, 1).
func (r rng) at(purpose int) float64 {
	return float64(mix(r.key^uint64(purpose)*0xd1b54a32d192ed03)>>11) / (1 << 53)
}

// float is the next sequential draw, uniform in [0, 1).
func (r *rng) float() float64 {
	r.n++
	return r.at(int(r.n) + 1<<20)
}

// intn is the next sequential draw, uniform in 0..n-1.
func (r *rng) intn(n int) int {
	return min(n-1, int(math.Floor(r.float()*float64(n))))
}

// perm is a seeded permutation of 0..n-1.
func (r *rng) perm(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := r.intn(i + 1)
		p[i], p[j] = p[j], p[i]
	}
	return p
}
