package textgen

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/patchline/patchline/internal/hfbundle"
)

// The files of a caption bundle (Hugging Face / optimum encoder-decoder layout).
const (
	ConfigFile       = hfbundle.ConfigFile
	PreprocessorFile = hfbundle.PreprocessorFile
	TokenizerFile    = "tokenizer.json"
	EncoderFile      = "encoder_model.onnx"
	DecoderFile      = "decoder_model.onnx"
	DecoderPastFile  = "decoder_with_past_model.onnx"
)

// BundleFiles lists every file Open needs, in the order it checks them.
var BundleFiles = []string{ConfigFile, PreprocessorFile, TokenizerFile, EncoderFile, DecoderFile, DecoderPastFile}

// Graph input and output names (see ARCHITECTURE.md, "Caption decoding").
const (
	inPatchTokens = "patch_tokens"
	encHidden     = "encoder_hidden_states"
	inInputIDs    = "input_ids"
	outLogits     = "logits"
)

func presentName(layer int, kv string) string { return fmt.Sprintf("present.%d.%s", layer, kv) }
func pastName(layer int, kv string) string    { return fmt.Sprintf("past_key_values.%d.%s", layer, kv) }

// config is the part of config.json textgen reads.
type config struct {
	IsEncoderDecoder    bool   `json:"is_encoder_decoder"`
	VocabSize           *int   `json:"vocab_size"`
	BOSTokenID          *int64 `json:"bos_token_id"`
	EOSTokenID          *int64 `json:"eos_token_id"`
	PadTokenID          *int64 `json:"pad_token_id"`
	DecoderStartTokenID *int64 `json:"decoder_start_token_id"`
	MaxLength           int    `json:"max_length"`
	NumFrames           int    `json:"num_frames"`
	Decoder             struct {
		NumLayers    int `json:"num_layers"`
		NumHeads     int `json:"num_heads"`
		HeadDim      int `json:"head_dim"`
		HiddenSize   int `json:"hidden_size"`
		MaxPositions int `json:"max_positions"` // optional; 0 = max_length
	} `json:"decoder"`
}

// bundle is a validated caption bundle directory.
type bundle struct {
	dir    string
	cfg    config
	img    *hfbundle.Image // preprocessor_config.json
	tok    *Tokenizer
	vocab  int   // logits width = config vocab_size = tokenizer size
	start  int64 // decoder_start_token_id
	eos    int64
	pad    int64
	maxLen int // max generated tokens (excluding the start token)
	maxPos int // decoder positions (start token + generated)
	lut    [3][256]float32
}

func (b *bundle) path(name string) string { return filepath.Join(b.dir, name) }

// loadBundle checks that dir holds every bundle file and that config.json,
// preprocessor_config.json and tokenizer.json agree. Errors name the file
// and key at fault.
func loadBundle(dir string) (*bundle, error) {
	b := &bundle{dir: dir}
	st, err := os.Stat(dir)
	if err != nil {
		if wd, werr := os.Getwd(); werr == nil && !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("caption bundle %s (relative to the working directory %s): %w", dir, wd, err)
		}
		return nil, fmt.Errorf("caption bundle %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("caption bundle %s: not a directory", dir)
	}
	for _, name := range BundleFiles {
		if _, err := os.Stat(b.path(name)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("caption bundle %s: missing %s (a caption bundle needs %v)", dir, name, BundleFiles)
			}
			return nil, fmt.Errorf("caption bundle %s: %w", dir, err)
		}
	}
	hc, err := hfbundle.ReadConfig(dir, &b.cfg)
	if err != nil {
		return nil, fmt.Errorf("caption bundle %w", err)
	}
	if err := b.checkConfig(); err != nil {
		return nil, fmt.Errorf("caption bundle %s: %s: %w", dir, ConfigFile, err)
	}
	if b.img, err = hc.ReadPreprocessor(); err != nil {
		return nil, fmt.Errorf("caption bundle %w", err)
	}
	b.lut = b.img.LUT()
	if b.tok, err = LoadTokenizer(b.path(TokenizerFile)); err != nil {
		return nil, fmt.Errorf("caption bundle %s: %w", dir, err)
	}
	if err := b.checkTokenizer(); err != nil {
		return nil, fmt.Errorf("caption bundle %s: %w", dir, err)
	}
	return b, nil
}

func (b *bundle) checkConfig() error {
	c := &b.cfg
	if !c.IsEncoderDecoder {
		return errors.New("is_encoder_decoder is not true; not an encoder-decoder caption model")
	}
	if c.VocabSize == nil || *c.VocabSize <= 0 {
		return errors.New("vocab_size is missing or not positive")
	}
	b.vocab = *c.VocabSize
	for _, id := range []struct {
		key string
		v   *int64
	}{{"bos_token_id", c.BOSTokenID}, {"eos_token_id", c.EOSTokenID}, {"pad_token_id", c.PadTokenID}} {
		if id.v == nil {
			return fmt.Errorf("%s is missing", id.key)
		}
		if *id.v < 0 || *id.v >= int64(b.vocab) {
			return fmt.Errorf("%s is %d, outside the vocabulary 0..%d", id.key, *id.v, b.vocab-1)
		}
	}
	b.start, b.eos, b.pad = *c.BOSTokenID, *c.EOSTokenID, *c.PadTokenID
	if c.DecoderStartTokenID != nil {
		if *c.DecoderStartTokenID < 0 || *c.DecoderStartTokenID >= int64(b.vocab) {
			return fmt.Errorf("decoder_start_token_id is %d, outside the vocabulary 0..%d", *c.DecoderStartTokenID, b.vocab-1)
		}
		b.start = *c.DecoderStartTokenID
	}
	if c.MaxLength < 2 {
		return fmt.Errorf("max_length is %d, want >= 2 (the start token and at least one generated token)", c.MaxLength)
	}
	if c.NumFrames <= 0 {
		return fmt.Errorf("num_frames is %d, want >= 1", c.NumFrames)
	}
	d := c.Decoder
	if d.NumLayers <= 0 || d.NumHeads <= 0 || d.HeadDim <= 0 {
		return fmt.Errorf("decoder: num_layers %d, num_heads %d, head_dim %d: each must be >= 1", d.NumLayers, d.NumHeads, d.HeadDim)
	}
	if d.HiddenSize != 0 && d.HiddenSize != d.NumHeads*d.HeadDim {
		return fmt.Errorf("decoder: hidden_size %d != num_heads %d × head_dim %d", d.HiddenSize, d.NumHeads, d.HeadDim)
	}
	b.maxPos = c.MaxLength
	if d.MaxPositions > 0 {
		if d.MaxPositions < c.MaxLength {
			return fmt.Errorf("max_length %d exceeds decoder.max_positions %d", c.MaxLength, d.MaxPositions)
		}
		b.maxPos = d.MaxPositions
	}
	b.maxLen = c.MaxLength - 1
	return nil
}

// checkTokenizer cross-checks tokenizer.json against config.json.
func (b *bundle) checkTokenizer() error {
	if n := b.tok.VocabSize(); n != b.vocab {
		return fmt.Errorf("%s has %d tokens but %s vocab_size is %d", TokenizerFile, n, ConfigFile, b.vocab)
	}
	for _, id := range []struct {
		key, tok string
		cfg, got int64
	}{{"bos_token_id", "[BOS]", *b.cfg.BOSTokenID, b.tok.BOSID}, {"eos_token_id", "[EOS]", *b.cfg.EOSTokenID, b.tok.EOSID}, {"pad_token_id", "[PAD]", *b.cfg.PadTokenID, b.tok.PadID}} {
		if id.got >= 0 && id.got != id.cfg {
			return fmt.Errorf("%s maps %s to %d but %s %s is %d", TokenizerFile, id.tok, id.got, ConfigFile, id.key, id.cfg)
		}
	}
	return nil
}

func (b *bundle) numPatches() int {
	return (b.img.Width / b.img.PatchSize) * (b.img.Height / b.img.PatchSize)
}
func (b *bundle) tokenDim() int   { return b.img.PatchSize * b.img.PatchSize * 3 }
func (b *bundle) frameBytes() int { return b.img.Width * b.img.Height * 3 }

// graph is one ONNX file's declared inputs and outputs by name.
type graph struct {
	file string
	ins  map[string]onnxruntime.InputOutputInfo
	outs map[string]onnxruntime.InputOutputInfo
}

func readGraph(path string) (*graph, error) {
	ins, outs, err := onnxruntime.GetInputOutputInfo(path)
	if err != nil {
		return nil, fmt.Errorf("read graph %s: %w", path, err)
	}
	g := &graph{file: filepath.Base(path), ins: map[string]onnxruntime.InputOutputInfo{}, outs: map[string]onnxruntime.InputOutputInfo{}}
	for _, i := range ins {
		g.ins[i.Name] = i
	}
	for _, o := range outs {
		g.outs[o.Name] = o
	}
	return g, nil
}

// want checks that the graph has input (or output) name of element type dt
// and that each of its dimensions matches want (-1 in want = any; a
// dynamic dimension in the graph matches anything).
func (g *graph) want(output bool, name string, dt onnxruntime.TensorElementDataType, want ...int64) error {
	kind, m := "input", g.ins
	if output {
		kind, m = "output", g.outs
	}
	info, ok := m[name]
	if !ok {
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		return fmt.Errorf("%s has no %s %q (it has %v)", g.file, kind, name, names)
	}
	if info.DataType != dt {
		return fmt.Errorf("%s %s %q is %v, want %v", g.file, kind, name, info.DataType, dt)
	}
	dims := info.Dimensions
	if len(dims) != len(want) {
		return fmt.Errorf("%s %s %q has shape %v, want rank %d", g.file, kind, name, dims, len(want))
	}
	for i, w := range want {
		if w >= 0 && dims[i] > 0 && dims[i] != w {
			return fmt.Errorf("%s %s %q has shape %v, want dimension %d = %d", g.file, kind, name, dims, i, w)
		}
	}
	return nil
}

// dim returns dimension i of output name (-1 when dynamic or unknown).
func (g *graph) dim(name string, i int) int64 {
	if info, ok := g.outs[name]; ok && i < len(info.Dimensions) && info.Dimensions[i] > 0 {
		return info.Dimensions[i]
	}
	return -1
}
