package textgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	onnxruntime "github.com/yalue/onnxruntime_go"
)

const tol = 1e-4 // max |ORT − torch|

// TestEncoderMatchesTorch feeds the reference frames through Go's
// normalisation and encoder_model.onnx and compares with torch's output.
func TestEncoderMatchesTorch(t *testing.T) {
	c := openTiny(t)
	meta := expected(t)
	want, shape := refF32(t, meta, "encoder_hidden_states_f32.bin")
	in := refInputs(t, c)
	d := &decoding{c: c, batch: len(in)}
	defer d.release()
	if err := d.encode(in); err != nil {
		t.Fatal(err)
	}
	got := d.enc.(*onnxruntime.Tensor[float32])
	if diff := maxAbsDiff(t, encHidden, got.GetData(), got.GetShape(), want, shape); diff > tol {
		t.Fatalf("%s: max |ORT − torch| = %g > %g", EncoderFile, diff, tol)
	} else {
		t.Logf("%s: max |ORT − torch| = %g", EncoderFile, diff)
	}
}

// TestDecodersMatchTorch runs decoder_model.onnx and decoder_with_past_model.onnx
// on torch's saved inputs and compares logits and every present key/value.
func TestDecodersMatchTorch(t *testing.T) {
	c := openTiny(t)
	meta := expected(t)
	encData, encShape := refF32(t, meta, "encoder_hidden_states_f32.bin")
	enc, err := onnxruntime.NewTensor(onnxruntime.NewShape(encShape...), encData)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Destroy()

	var past []onnxruntime.Value // torch's decoder presents, fed to with_past
	for _, g := range []struct {
		prefix string
		sess   *onnxruntime.DynamicAdvancedSession
		file   string
	}{{"decoder", c.decoder, DecoderFile}, {"with_past", c.withPast, DecoderPastFile}} {
		t.Run(g.prefix, func(t *testing.T) {
			var ids [][]int64
			if err := json.Unmarshal(meta[g.prefix+".input_ids"], &ids); err != nil {
				t.Fatal(err)
			}
			var flat []int64
			for _, r := range ids {
				flat = append(flat, r...)
			}
			idsT, err := onnxruntime.NewTensor(onnxruntime.NewShape(int64(len(ids)), int64(len(ids[0]))), flat)
			if err != nil {
				t.Fatal(err)
			}
			defer idsT.Destroy()
			ins := []onnxruntime.Value{idsT, enc}
			if g.prefix == "with_past" {
				if len(past) != 2*c.layers {
					t.Fatal("decoder subtest did not provide the past")
				}
				ins = append(ins, past...)
			}
			outs := make([]onnxruntime.Value, 1+2*c.layers)
			if err := g.sess.Run(ins, outs); err != nil {
				t.Fatalf("%s: %v", g.file, err)
			}
			defer destroyAll(outs)
			names := []string{outLogits}
			for l := range c.layers {
				names = append(names, presentName(l, "key"), presentName(l, "value"))
			}
			for i, name := range names {
				want, shape := refF32(t, meta, fmt.Sprintf("%s.%s_f32.bin", g.prefix, name))
				got := outs[i].(*onnxruntime.Tensor[float32])
				diff := maxAbsDiff(t, name, got.GetData(), got.GetShape(), want, shape)
				if diff > tol {
					t.Errorf("%s %s: max |ORT − torch| = %g > %g", g.file, name, diff, tol)
				}
				if g.prefix == "decoder" && i > 0 {
					pt, err := onnxruntime.NewTensor(onnxruntime.NewShape(shape...), want)
					if err != nil {
						t.Fatal(err)
					}
					past = append(past, pt)
				}
			}
		})
	}
	destroyAll(past)
}

// TestGreedyMatchesTorch: Go's batched greedy decoding (with and without the
// KV cache) gives exactly torch's greedy tokens for the reference inputs.
func TestGreedyMatchesTorch(t *testing.T) {
	c := openTiny(t)
	var want [][]int64
	readJSONFile(t, filepath.Join(tinyDir, "expected", "greedy_tokens.json"), &want)
	in := refInputs(t, c)
	for _, noCache := range []bool{false, true} {
		caps, err := c.Caption(context.Background(), in, Sampling{NoCache: noCache})
		if err != nil {
			t.Fatal(err)
		}
		for i, row := range want {
			if end := slices.Index(row, c.b.eos); end >= 0 {
				row = row[:end+1] // torch pads finished rows; Go stops at EOS
			}
			if !slices.Equal(caps[i].Tokens, row) {
				t.Errorf("noCache=%v input %d: tokens %v, torch %v", noCache, i, caps[i].Tokens, row)
			}
			if caps[i].Text != c.Tokenizer().Decode(row) {
				t.Errorf("input %d: text %q, want %q", i, caps[i].Text, c.Tokenizer().Decode(row))
			}
		}
	}
}

// TestKVCacheEqualsNoCache decodes several inputs, as one batch and one by
// one, greedy and sampled, with and without the KV cache: all agree token
// for token.
func TestKVCacheEqualsNoCache(t *testing.T) {
	c := openTiny(t)
	in := randomInputs(c, 6, 7)
	ctx := context.Background()
	stoppedEarly := false
	for _, s := range []Sampling{{}, {Temperature: 1.2, TopK: 8, TopP: 0.95, Seed: 3}} {
		cached, err := c.Caption(ctx, in, s)
		if err != nil {
			t.Fatal(err)
		}
		nc := s
		nc.NoCache = true
		uncached, err := c.Caption(ctx, in, nc)
		if err != nil {
			t.Fatal(err)
		}
		for i := range in {
			if !slices.Equal(cached[i].Tokens, uncached[i].Tokens) {
				t.Errorf("%+v input %d: KV cache %v, no cache %v", s, i, cached[i].Tokens, uncached[i].Tokens)
			}
			if n := len(cached[i].Tokens); n == 0 || n > c.MaxTokens() {
				t.Errorf("input %d: %d tokens, want 1..%d", i, n, c.MaxTokens())
			}
			if slices.Contains(cached[i].Tokens, c.b.eos) {
				stoppedEarly = true
				if last := cached[i].Tokens[len(cached[i].Tokens)-1]; last != c.b.eos {
					t.Errorf("input %d: tokens %v continue after EOS", i, cached[i].Tokens)
				}
			}
			if cached[i].TimeToFirstToken <= 0 || cached[i].Duration < cached[i].TimeToFirstToken || cached[i].TokensPerSecond <= 0 {
				t.Errorf("input %d: timings ttft %v duration %v tokens/s %g", i, cached[i].TimeToFirstToken, cached[i].Duration, cached[i].TokensPerSecond)
			}
		}
		if s.Temperature == 0 {
			// Batched greedy rows equal each input decoded alone.
			for i := range in {
				one, err := c.Caption(ctx, in[i:i+1], Sampling{})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(one[0].Tokens, cached[i].Tokens) {
					t.Errorf("input %d alone: %v, in the batch: %v", i, one[0].Tokens, cached[i].Tokens)
				}
			}
		}
	}
	if !stoppedEarly {
		t.Error("no caption stopped at EOS; the test inputs no longer cover that case")
	}
}

func TestSamplingSeeded(t *testing.T) {
	c := openTiny(t)
	in := randomInputs(c, 3, 11)
	ctx := context.Background()
	tokens := func(s Sampling) [][]int64 {
		t.Helper()
		caps, err := c.Caption(ctx, in, s)
		if err != nil {
			t.Fatal(err)
		}
		var out [][]int64
		for _, cp := range caps {
			out = append(out, cp.Tokens)
		}
		return out
	}
	equal := func(a, b [][]int64) bool { return slices.EqualFunc(a, b, slices.Equal[[]int64]) }
	s := Sampling{Temperature: 1.5, Seed: 42}
	first := tokens(s)
	if again := tokens(s); !equal(first, again) {
		t.Fatalf("same seed: %v then %v", first, again)
	}
	differs := false
	for seed := int64(43); seed < 53 && !differs; seed++ {
		differs = !equal(first, tokens(Sampling{Temperature: 1.5, Seed: seed}))
	}
	if !differs {
		t.Error("10 other seeds all gave the tokens of seed 42; sampling ignores the seed")
	}
	// Top-k 1 and a tiny top-p leave only the most likely token a caption
	// can hold: no chance is left, whatever the seed.
	one := tokens(Sampling{Temperature: 2, TopK: 1, Seed: 5})
	for _, s := range []Sampling{{Temperature: 2, TopK: 1, Seed: 6}, {Temperature: 2, TopP: 1e-9, Seed: 5}, {Temperature: 0.5, TopP: 1e-9, Seed: 7}} {
		if got := tokens(s); !equal(got, one) {
			t.Errorf("%+v: %v, want %v (top-k 1, seed 5)", s, got, one)
		}
	}
}

func TestMaxTokens(t *testing.T) {
	c := openTiny(t)
	in := randomInputs(c, 4, 5)
	caps, err := c.Caption(context.Background(), in, Sampling{MaxTokens: 2, Temperature: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i, cp := range caps {
		if len(cp.Tokens) == 0 || len(cp.Tokens) > 2 {
			t.Errorf("input %d: %d tokens with MaxTokens 2", i, len(cp.Tokens))
		}
	}
	if _, err := c.Caption(context.Background(), in, Sampling{MaxTokens: 1000}); err == nil {
		t.Error("MaxTokens 1000 beyond the decoder positions: no error")
	}
}

func TestCaptionBadInput(t *testing.T) {
	c := openTiny(t)
	good := randomInputs(c, 1, 1)[0]
	ctx := context.Background()
	cases := map[string]struct {
		in   []Input
		s    Sampling
		want string
	}{
		"one frame short": {[]Input{{Frames: good.Frames[1:]}}, Sampling{}, "input 0 has 1 frames, the caption model takes the last 2"},
		"frame size":      {[]Input{good, {Frames: [][]byte{good.Frames[0], good.Frames[1][:100]}}}, Sampling{}, "input 1 frame 1 has 100 token bytes, want 27648"},
		"temperature":     {[]Input{good}, Sampling{Temperature: -1}, "temperature -1"},
		"top_p":           {[]Input{good}, Sampling{TopP: 1.5}, "top_p 1.5"},
		"top_k":           {[]Input{good}, Sampling{TopK: -2}, "top_k -2"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := c.Caption(ctx, tc.in, tc.s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Caption(cctx, []Input{good}, Sampling{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: error %v, want context.Canceled", err)
	}
	if caps, err := c.Caption(ctx, nil, Sampling{}); err != nil || len(caps) != 0 {
		t.Errorf("no inputs: %v, %v", caps, err)
	}
}

// TestSamplingNeverDrawsSpecialTokens: however flat a high temperature
// makes the distribution, a sampled caption holds no [PAD], [BOS] or
// [UNK] (it may end with [EOS]).
func TestSamplingNeverDrawsSpecialTokens(t *testing.T) {
	c := openTiny(t)
	in := randomInputs(c, 4, 3)
	never := []int64{c.b.tok.PadID, c.b.tok.BOSID, c.b.tok.UNKID}
	for seed := range int64(20) {
		caps, err := c.Caption(context.Background(), in, Sampling{Temperature: 50, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		for _, cp := range caps {
			for _, id := range cp.Tokens {
				if slices.Contains(never, id) {
					t.Fatalf("seed %d: caption tokens %v hold special token %d (pad/bos/unk %v)", seed, cp.Tokens, id, never)
				}
			}
		}
	}
}
