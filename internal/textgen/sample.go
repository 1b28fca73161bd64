package textgen

import (
	"math"
	"math/rand"
	"slices"
)

// sample picks a token id from one row of logits. Temperature 0 is greedy
// (the highest logit; the lowest id on a tie), exactly the model's choice
// (the one torch makes). Otherwise the tokens a caption cannot hold
// ([PAD], [BOS], [UNK]: a trained model gives them next to no probability,
// which a high temperature flattens into draws) are taken out, the logits
// divided by the temperature, cut to the TopK most likely tokens,
// softmaxed, cut to the smallest set whose probability reaches TopP, and
// one token is drawn with rng. Ties are ordered by id, so a seed gives the
// same tokens.
func (c *Captioner) sample(logits []float32, s Sampling, rng *rand.Rand) int {
	if s.Temperature == 0 {
		return argmax(logits)
	}
	n := len(logits)
	c.order = grow(c.order, n)
	c.scores = grow(c.scores, n)
	for i := range c.order {
		c.order[i] = i
		c.scores[i] = float64(logits[i]) / s.Temperature
	}
	never := 0
	for _, id := range []int64{c.b.tok.PadID, c.b.tok.BOSID, c.b.tok.UNKID} {
		if id >= 0 && int(id) < n && id != c.b.tok.EOSID && !math.IsInf(c.scores[id], -1) {
			c.scores[id] = math.Inf(-1)
			never++
		}
	}
	sc := c.scores
	slices.SortStableFunc(c.order, func(a, b int) int {
		switch {
		case sc[a] > sc[b]:
			return -1
		case sc[a] < sc[b]:
			return 1
		}
		return 0
	})
	keep := max(n-never, 1) // the never-tokens sort last
	if s.TopK > 0 && s.TopK < keep {
		keep = s.TopK
	}
	order := c.order[:keep]
	// Softmax over the kept tokens, most likely first.
	top := sc[order[0]]
	probs := make([]float64, keep)
	var sum float64
	for i, id := range order {
		probs[i] = math.Exp(sc[id] - top)
		sum += probs[i]
	}
	if s.TopP > 0 && s.TopP < 1 {
		var cum float64
		for i := range probs {
			cum += probs[i] / sum
			if cum >= s.TopP {
				keep = i + 1
				break
			}
		}
		probs = probs[:keep]
		sum = 0
		for _, p := range probs {
			sum += p
		}
	}
	u := rng.Float64() * sum
	for i, p := range probs {
		u -= p
		if u < 0 {
			return order[i]
		}
	}
	return order[len(probs)-1]
}

func argmax(xs []float32) int {
	best := 0
	for i, x := range xs {
		if x > xs[best] {
			best = i
		}
	}
	return best
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
