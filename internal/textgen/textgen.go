// Package textgen decodes captions from a caption model bundle (a vision
// encoder plus a GPT-style causal decoder exported as three ONNX graphs and a
// Hugging Face tokenizer.json) with ONNX Runtime: the encoder runs once, the
// decoder runs token by token with its past keys/values fed back (KV cache),
// greedy or sampled, several inputs decoded together as one batch.
//
// A bundle directory holds (optimum's encoder-decoder layout):
//
//	config.json                   is_encoder_decoder, vocab_size, bos/eos/pad/decoder_start_token_id,
//	                              max_length, num_frames, decoder {num_layers, num_heads, head_dim, ...}
//	preprocessor_config.json      size, patch_size, rescale_factor, image_mean, image_std
//	tokenizer.json                Hugging Face tokenizers format
//	encoder_model.onnx            patch_tokens [B,F,N,P·P·3] -> encoder_hidden_states [B,N,D]
//	decoder_model.onnx            input_ids [B,T], encoder_hidden_states -> logits [B,T,V], present.{l}.key/.value [B,H,T,hd]
//	decoder_with_past_model.onnx  input_ids [B,1], encoder_hidden_states, past_key_values.{l}.key/.value [B,H,P,hd]
//	                              -> logits [B,1,V], present.{l}.key/.value [B,H,P+1,hd]
package textgen

import (
	"errors"
	"fmt"
	"sync"
	"time"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/patchline/patchline/internal/ort"
)

// Options configure Open.
type Options struct {
	Threads    int    // intra-op threads per ORT session; 0 = ONNX Runtime's default, within the CPUs the process may use
	ORTLibrary string // "" = internal/ort default resolution
}

// Sampling selects the decoding strategy.
type Sampling struct {
	Temperature float64 // 0 = greedy
	TopK        int     // 0 = off
	TopP        float64 // 0 or 1 = off
	Seed        int64   // sampling RNG seed; same seed → same tokens
	MaxTokens   int     // 0 = config max_length
	NoCache     bool    // decode without the KV cache (re-run decoder_model on the whole prefix each step)
}

// Input is one caption request: the last NumFrames() frames' uint8 patch
// tokens (frame.Tokenize layout), oldest first.
type Input struct{ Frames [][]byte }

// Caption is one decoded caption.
type Caption struct {
	Text   string  // human-readable text (special tokens dropped)
	Tokens []int64 // generated ids, without the start token; ends with EOS when the model stopped itself
	// TimeToFirstToken is the time from the Caption call to the batch's
	// first generated token (encoder and first decoder step included).
	TimeToFirstToken time.Duration
	// Duration is the time from the Caption call to this caption's last token.
	Duration time.Duration
	// TokensPerSecond is len(Tokens) / Duration.
	TokensPerSecond float64
}

// Captioner holds the ORT sessions of one caption bundle. Caption may be
// called from several goroutines; calls are serialised.
type Captioner struct {
	b                   *bundle
	layers, heads, hdim int

	mu       sync.Mutex
	encoder  *onnxruntime.DynamicAdvancedSession
	decoder  *onnxruntime.DynamicAdvancedSession
	withPast *onnxruntime.DynamicAdvancedSession

	// Reused between calls of the same batch size.
	pix    []float32
	pixT   *onnxruntime.Tensor[float32]
	ids    []int64
	idsT   *onnxruntime.Tensor[int64]
	tensB  int
	scores []float64
	order  []int
}

// Open loads the caption bundle in dir: it checks that every file is there,
// that config.json, preprocessor_config.json and tokenizer.json agree, and
// that the three graphs have the inputs and outputs (names, types, shapes)
// the bundle describes, then opens one ORT session per graph.
func Open(dir string, opts Options) (*Captioner, error) {
	if opts.Threads < 0 {
		return nil, fmt.Errorf("textgen: threads is %d, want >= 0", opts.Threads)
	}
	b, err := loadBundle(dir)
	if err != nil {
		return nil, fmt.Errorf("textgen: %w", err)
	}
	if err := ort.Init(opts.ORTLibrary); err != nil {
		return nil, fmt.Errorf("textgen: %w", err)
	}
	d := b.cfg.Decoder
	c := &Captioner{b: b, layers: d.NumLayers, heads: d.NumHeads, hdim: d.HeadDim}
	if err := c.checkGraphs(); err != nil {
		return nil, fmt.Errorf("textgen: caption bundle %s: %w", dir, err)
	}
	presents := []string{outLogits}
	pasts := []string{inInputIDs, encHidden}
	for l := range c.layers {
		presents = append(presents, presentName(l, "key"), presentName(l, "value"))
		pasts = append(pasts, pastName(l, "key"), pastName(l, "value"))
	}
	for _, s := range []struct {
		sess      **onnxruntime.DynamicAdvancedSession
		file      string
		ins, outs []string
	}{
		{&c.encoder, EncoderFile, []string{inPatchTokens}, []string{encHidden}},
		{&c.decoder, DecoderFile, []string{inInputIDs, encHidden}, presents},
		{&c.withPast, DecoderPastFile, pasts, presents},
	} {
		*s.sess, err = ort.NewSession(b.path(s.file), s.ins, s.outs, opts.Threads, true)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("textgen: %w", err)
		}
	}
	return c, nil
}

func (c *Captioner) checkGraphs() error {
	b := c.b
	const f32, i64 = onnxruntime.TensorElementDataTypeFloat, onnxruntime.TensorElementDataTypeInt64
	n := int64(b.numPatches())
	enc, err := readGraph(b.path(EncoderFile))
	if err != nil {
		return err
	}
	if err := enc.want(false, inPatchTokens, f32, -1, int64(b.cfg.NumFrames), n, int64(b.tokenDim())); err != nil {
		return fmt.Errorf("%w (%s num_frames %d, %s %s)", err, ConfigFile, b.cfg.NumFrames, PreprocessorFile, b.img)
	}
	if err := enc.want(true, encHidden, f32, -1, -1, -1); err != nil {
		return err
	}
	encDim := enc.dim(encHidden, 2)
	h, hd := int64(c.heads), int64(c.hdim)
	for _, g := range []struct {
		file string
		past bool
	}{{DecoderFile, false}, {DecoderPastFile, true}} {
		dec, err := readGraph(b.path(g.file))
		if err != nil {
			return err
		}
		t := int64(-1)
		if g.past {
			t = 1
		}
		if err := dec.want(false, inInputIDs, i64, -1, t); err != nil {
			return err
		}
		if err := dec.want(false, encHidden, f32, -1, -1, encDim); err != nil {
			return fmt.Errorf("%w (%s outputs width %d)", err, EncoderFile, encDim)
		}
		if err := dec.want(true, outLogits, f32, -1, t, -1); err != nil {
			return err
		}
		if w := dec.dim(outLogits, 2); w > 0 && w != int64(b.vocab) {
			return fmt.Errorf("%s logits are %d wide but %s has %d tokens (%s vocab_size %d)",
				g.file, w, TokenizerFile, b.tok.VocabSize(), ConfigFile, b.vocab)
		}
		for l := range c.layers {
			for _, kv := range []string{"key", "value"} {
				if err := dec.want(true, presentName(l, kv), f32, -1, h, -1, hd); err != nil {
					return fmt.Errorf("%w (%s decoder: num_layers %d, num_heads %d, head_dim %d)", err, ConfigFile, c.layers, h, hd)
				}
				if g.past {
					if err := dec.want(false, pastName(l, kv), f32, -1, h, -1, hd); err != nil {
						return fmt.Errorf("%w (%s decoder: num_layers %d, num_heads %d, head_dim %d)", err, ConfigFile, c.layers, h, hd)
					}
				}
			}
		}
		if _, extra := dec.outs[presentName(c.layers, "key")]; extra {
			return fmt.Errorf("%s has more than %s decoder.num_layers %d layers of present keys", g.file, ConfigFile, c.layers)
		}
	}
	return nil
}

// NumFrames is the number of frames one Input must carry (config.json num_frames).
func (c *Captioner) NumFrames() int { return c.b.cfg.NumFrames }

// Grid returns the model input size and patch size (preprocessor_config.json).
func (c *Captioner) Grid() (width, height, patch int) {
	return c.b.img.Width, c.b.img.Height, c.b.img.PatchSize
}

// Tokenizer returns the bundle's tokenizer.
func (c *Captioner) Tokenizer() *Tokenizer { return c.b.tok }

// MaxTokens is the default and the largest Sampling.MaxTokens: config.json
// max_length minus the start token.
func (c *Captioner) MaxTokens() int { return c.b.maxLen }

// TokenLimit is the most tokens a caption may be asked for (Sampling's
// MaxTokens): the decoder's positions less the start token.
func (c *Captioner) TokenLimit() int { return c.b.maxPos - 1 }

// Close releases the ORT sessions. The Captioner must not be used afterwards.
func (c *Captioner) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, s := range []**onnxruntime.DynamicAdvancedSession{&c.encoder, &c.decoder, &c.withPast} {
		if *s != nil {
			errs = append(errs, (*s).Destroy())
			*s = nil
		}
	}
	c.dropTensors()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("textgen: close: %w", err)
	}
	return nil
}

func (c *Captioner) dropTensors() {
	if c.pixT != nil {
		_ = c.pixT.Destroy()
		c.pixT = nil
	}
	if c.idsT != nil {
		_ = c.idsT.Destroy()
		c.idsT = nil
	}
	c.tensB = 0
}
