package textgen

import (
	"context"
	"fmt"
	"math/rand"
	"time"

	onnxruntime "github.com/yalue/onnxruntime_go"
)

// Caption decodes all inputs together as one batch and returns one Caption
// per input, in order. The encoder runs once; decoder_model.onnx runs the
// first step on the start token, then decoder_with_past_model.onnx runs one
// token per step with the previous step's presents as its past (KV cache).
// With s.NoCache, decoder_model.onnx re-runs on the whole prefix each step
// instead (the reference the KV cache must match token for token). A row
// that has produced EOS is finished: it keeps being fed PAD, and what the
// model says for it is ignored. Decoding stops when every row is finished
// or after s.MaxTokens steps.
func (c *Captioner) Caption(ctx context.Context, in []Input, s Sampling) ([]Caption, error) {
	start := time.Now()
	maxTokens, err := c.checkSampling(s)
	if err != nil {
		return nil, err
	}
	if err := c.checkInputs(in); err != nil {
		return nil, err
	}
	if len(in) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("textgen: caption: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.encoder == nil {
		return nil, fmt.Errorf("textgen: caption: captioner is closed")
	}
	d := &decoding{c: c, s: s, batch: len(in), start: start, max: maxTokens}
	defer d.release()
	if err := d.run(ctx, in); err != nil {
		return nil, fmt.Errorf("textgen: caption %d inputs: %w", len(in), err)
	}
	out := make([]Caption, len(in))
	for i := range out {
		toks := d.tokens[i]
		out[i] = Caption{
			Text: c.b.tok.Decode(toks), Tokens: toks,
			TimeToFirstToken: d.ttft, Duration: d.done[i],
		}
		if secs := d.done[i].Seconds(); secs > 0 {
			out[i].TokensPerSecond = float64(len(toks)) / secs
		}
	}
	return out, nil
}

func (c *Captioner) checkSampling(s Sampling) (int, error) {
	switch {
	case s.Temperature < 0:
		return 0, fmt.Errorf("textgen: sampling temperature %g, want >= 0 (0 = greedy)", s.Temperature)
	case s.TopK < 0:
		return 0, fmt.Errorf("textgen: sampling top_k %d, want >= 0 (0 = off)", s.TopK)
	case s.TopP < 0 || s.TopP > 1:
		return 0, fmt.Errorf("textgen: sampling top_p %g, want 0..1 (0 or 1 = off)", s.TopP)
	case s.MaxTokens < 0:
		return 0, fmt.Errorf("textgen: max tokens %d, want >= 0 (0 = %s max_length)", s.MaxTokens, ConfigFile)
	case s.MaxTokens > c.TokenLimit():
		return 0, fmt.Errorf("textgen: max tokens %d exceeds the decoder's %d positions less the start token (%s)",
			s.MaxTokens, c.b.maxPos, ConfigFile)
	case s.MaxTokens == 0:
		return c.b.maxLen, nil
	}
	return s.MaxTokens, nil
}

func (c *Captioner) checkInputs(in []Input) error {
	nf, size := c.NumFrames(), c.b.frameBytes()
	for i, x := range in {
		if len(x.Frames) != nf {
			return fmt.Errorf("textgen: input %d has %d frames, the caption model takes the last %d (%s num_frames)",
				i, len(x.Frames), nf, ConfigFile)
		}
		for j, f := range x.Frames {
			if len(f) != size {
				w, h, p := c.Grid()
				return fmt.Errorf("textgen: input %d frame %d has %d token bytes, want %d (%dx%d RGB, patch %d)",
					i, j, len(f), size, w, h, p)
			}
		}
	}
	return nil
}

// decoding is the state of one Caption call.
type decoding struct {
	c     *Captioner
	s     Sampling
	batch int
	max   int
	start time.Time
	rng   *rand.Rand

	enc      onnxruntime.Value   // encoder_hidden_states, fed to every decoder step
	past     []onnxruntime.Value // the last step's presents (KV cache)
	prefix   [][]int64           // every row's ids so far, start token first (no-cache mode)
	tokens   [][]int64
	finished []bool
	done     []time.Duration
	ttft     time.Duration
}

func (d *decoding) release() {
	if d.enc != nil {
		_ = d.enc.Destroy()
	}
	destroyAll(d.past)
}

func (d *decoding) run(ctx context.Context, in []Input) error {
	c, b := d.c, d.batch
	d.rng = rand.New(rand.NewSource(d.s.Seed))
	d.tokens = make([][]int64, b)
	d.finished = make([]bool, b)
	d.done = make([]time.Duration, b)
	d.prefix = make([][]int64, b)
	for i := range d.prefix {
		d.prefix[i] = []int64{c.b.start}
	}
	if err := d.encode(in); err != nil {
		return err
	}
	next := make([]int64, b)
	for step := 0; step < d.max; step++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
		logits, err := d.step(step)
		if err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
		if err := d.choose(logits, next); err != nil {
			_ = logits.Destroy()
			return fmt.Errorf("step %d: %w", step, err)
		}
		_ = logits.Destroy()
		now := time.Since(d.start)
		if step == 0 {
			d.ttft = now
		}
		all := true
		for i, id := range next {
			if d.finished[i] {
				next[i] = c.b.pad
			} else {
				d.tokens[i] = append(d.tokens[i], id)
				d.done[i] = now
				d.finished[i] = id == c.b.eos
			}
			d.prefix[i] = append(d.prefix[i], next[i])
			all = all && d.finished[i]
		}
		if all {
			break
		}
	}
	return nil
}

// encode runs the encoder on the normalised frames.
func (d *decoding) encode(in []Input) error {
	c := d.c
	if err := c.tensors(d.batch); err != nil {
		return err
	}
	per := c.b.frameBytes()
	for i, x := range in {
		for j, f := range x.Frames {
			dst := c.pix[(i*len(x.Frames)+j)*per:][:per]
			for k, v := range f {
				dst[k] = c.b.lut[k%3][v]
			}
		}
	}
	out := []onnxruntime.Value{nil}
	if err := c.encoder.Run([]onnxruntime.Value{c.pixT}, out); err != nil {
		return fmt.Errorf("%s: %w", EncoderFile, err)
	}
	d.enc = out[0]
	return nil
}

// tensors (re)allocates the reused input tensors for batch size b.
func (c *Captioner) tensors(b int) error {
	if c.tensB == b {
		return nil
	}
	c.dropTensors()
	nf, n, td := c.NumFrames(), c.b.numPatches(), c.b.tokenDim()
	c.pix = make([]float32, b*nf*n*td)
	var err error
	c.pixT, err = onnxruntime.NewTensor(onnxruntime.NewShape(int64(b), int64(nf), int64(n), int64(td)), c.pix)
	if err != nil {
		return fmt.Errorf("%s input tensor: %w", inPatchTokens, err)
	}
	c.ids = make([]int64, b)
	c.idsT, err = onnxruntime.NewTensor(onnxruntime.NewShape(int64(b), 1), c.ids)
	if err != nil {
		c.dropTensors()
		return fmt.Errorf("%s input tensor: %w", inInputIDs, err)
	}
	c.tensB = b
	return nil
}

// step runs the decoder once and returns its logits (the caller destroys
// them). With the cache, it keeps the presents as the next step's past.
func (d *decoding) step(step int) (onnxruntime.Value, error) {
	c := d.c
	outs := make([]onnxruntime.Value, 1+2*c.layers)
	if d.s.NoCache || step == 0 {
		ids := c.idsT
		if t := len(d.prefix[0]); t > 1 {
			flat := make([]int64, 0, d.batch*t)
			for _, p := range d.prefix {
				flat = append(flat, p...)
			}
			var err error
			if ids, err = onnxruntime.NewTensor(onnxruntime.NewShape(int64(d.batch), int64(t)), flat); err != nil {
				return nil, fmt.Errorf("%s tensor: %w", inInputIDs, err)
			}
			defer func() { _ = ids.Destroy() }()
		} else {
			for i, p := range d.prefix {
				c.ids[i] = p[0]
			}
		}
		if err := c.decoder.Run([]onnxruntime.Value{ids, d.enc}, outs); err != nil {
			destroyAll(outs)
			return nil, fmt.Errorf("%s: %w", DecoderFile, err)
		}
	} else {
		for i, p := range d.prefix {
			c.ids[i] = p[len(p)-1]
		}
		ins := append([]onnxruntime.Value{c.idsT, d.enc}, d.past...)
		if err := c.withPast.Run(ins, outs); err != nil {
			destroyAll(outs)
			return nil, fmt.Errorf("%s: %w", DecoderPastFile, err)
		}
	}
	destroyAll(d.past)
	d.past = nil
	if d.s.NoCache {
		destroyAll(outs[1:])
	} else {
		d.past = outs[1:]
	}
	return outs[0], nil
}

// choose picks every row's next token from the last position's logits.
func (d *decoding) choose(v onnxruntime.Value, next []int64) error {
	c := d.c
	t, ok := v.(*onnxruntime.Tensor[float32])
	if !ok {
		return fmt.Errorf("%s is %T, want a float32 tensor", outLogits, v)
	}
	shape := t.GetShape()
	if len(shape) != 3 || int(shape[0]) != d.batch || shape[1] < 1 {
		return fmt.Errorf("%s has shape %v, want [%d, T, %d]", outLogits, shape, d.batch, c.b.vocab)
	}
	if int(shape[2]) != c.b.vocab {
		return fmt.Errorf("%s are %d wide but %s has %d tokens (%s vocab_size %d)",
			outLogits, shape[2], TokenizerFile, c.b.tok.VocabSize(), ConfigFile, c.b.vocab)
	}
	data := t.GetData()
	tl, vsz := int(shape[1]), int(shape[2])
	for i := range next {
		row := data[(i*tl+tl-1)*vsz:][:vsz]
		if d.finished[i] {
			next[i] = c.b.pad
			continue
		}
		next[i] = int64(c.sample(row, d.s, d.rng))
	}
	return nil
}

func destroyAll(vs []onnxruntime.Value) {
	for _, v := range vs {
		if v != nil {
			_ = v.Destroy()
		}
	}
}
