package generate

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/hfbundle"
	"github.com/patchline/patchline/internal/ort"
)

// Framegen graph tensor names (the models/framegen format).
const (
	framegenInput  = "patch_tokens" // float32 [B, K, N, P·P·3], oldest frame first, normalised
	framegenOutput = "next_tokens"  // float32 [B, N, P·P·3], the predicted next frame, normalised
)

// ModelOptions configure the ONNX Runtime sessions of the generate models.
type ModelOptions struct {
	Threads    int    // intra-op threads per session; 0 = ONNX Runtime's default, within the CPUs the process may use
	ORTLibrary string // "" = internal/ort default resolution
}

// Framegen runs a framegen bundle: from the last K frames' patch tokens it
// predicts the next frame; the per-patch squared error between prediction and
// the frame that really came is the anomaly heatmap.
//
// A bundle is a folder in the Hugging Face layout: model.onnx,
// config.json (num_frames, patchline.task "framegen",
// patchline.anomaly_threshold, patchline.anomaly_top_k,
// patchline.frame_interval_ms) and
// preprocessor_config.json (size,
// patch_size, rescale_factor, image_mean, image_std).
type Framegen struct {
	name      string
	dir       string
	k         int // context frames
	w, h, p   int
	threshold float64
	topK      int           // the frame score is the mean of the topK largest patch scores
	interval  time.Duration // between the frames it was trained on (source time); 0 = not said
	mean, std [3]float64
	scale     float64
	lut       [3][256]float32 // u8 → normalised, per channel

	mu   sync.RWMutex // Close vs Run
	sess *onnxruntime.DynamicAdvancedSession
}

// FramegenInput is one prediction: Context holds the K context frames'
// uint8 patch tokens, oldest first; Actual, if set, is the frame that really
// followed them, which the prediction is scored against.
type FramegenInput struct {
	Context [][]byte
	Actual  []byte
}

// FramegenResult is one prediction. Next is the predicted frame as uint8
// patch tokens (denormalised, clamped). With an Actual frame, PatchScores
// holds the mean squared error per patch (row-major over the grid, in
// normalised space) and Score the frame's anomaly score: the mean of its
// anomaly_top_k largest patch scores (default 1: the maximum).
type FramegenResult struct {
	Next        []byte
	PatchScores []float64
	Score       float64
}

// framegenConfig is the part of config.json only framegen reads
// (hfbundle.Config has the shared keys).
type framegenConfig struct {
	NumFrames int `json:"num_frames"`
}

// framegenPatchline is config.json's "patchline" object; keys framegen does
// not read (e.g. outputs) are allowed.
type framegenPatchline struct {
	hfbundle.Patchline
	AnomalyThreshold *float64 `json:"anomaly_threshold"`
	AnomalyTopK      *int     `json:"anomaly_top_k"`
	FrameIntervalMs  *float64 `json:"frame_interval_ms"`
}

// OpenFramegen loads the framegen bundle in dir and opens its ONNX Runtime
// session, after checking the descriptor and the graph's input and output
// shapes; every mismatch is an error naming the file and the value.
func OpenFramegen(dir string, opts ModelOptions) (*Framegen, error) {
	g, err := loadFramegen(dir)
	if err != nil {
		return nil, err
	}
	if err := ort.Init(opts.ORTLibrary); err != nil {
		return nil, fmt.Errorf("framegen: %w", err)
	}
	onnxPath := filepath.Join(dir, "model.onnx")
	ins, outs, err := onnxruntime.GetInputOutputInfo(onnxPath)
	if err != nil {
		return nil, fmt.Errorf("framegen: read graph %s: %w", onnxPath, err)
	}
	if err := g.checkGraph(onnxPath, ins, outs); err != nil {
		return nil, err
	}
	g.sess, err = ort.NewSession(onnxPath, []string{framegenInput}, []string{framegenOutput}, opts.Threads, true)
	if err != nil {
		return nil, fmt.Errorf("framegen: %w", err)
	}
	return g, nil
}

// loadFramegen reads and checks config.json and preprocessor_config.json.
// Every problem found is reported, each naming the file.
func loadFramegen(dir string) (*Framegen, error) {
	var fc framegenConfig
	c, err := hfbundle.ReadConfig(dir, &fc)
	if err != nil {
		return nil, fmt.Errorf("framegen bundle %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "model.onnx")); err != nil {
		return nil, fmt.Errorf("framegen bundle: %w", err)
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("framegen bundle %w", c.Errorf(format, args...)))
	}
	g := &Framegen{name: filepath.Base(filepath.Clean(dir)), dir: dir, k: fc.NumFrames}
	if !c.HasPatchline() {
		bad(`no "patchline" object (want {"task": "framegen", "anomaly_threshold": t, ...})`)
	} else {
		var pl framegenPatchline
		if err := c.DecodePatchline(&pl, false); err != nil {
			return nil, fmt.Errorf("framegen bundle %w", err)
		}
		if pl.Name != "" {
			g.name = pl.Name
		}
		if pl.Task != "framegen" {
			bad("patchline.task is %q, want \"framegen\"", pl.Task)
		}
		if pl.Input != "" && pl.Input != framegenInput {
			bad("patchline.input is %q, want %q", pl.Input, framegenInput)
		}
		if _, err := c.CheckResize(pl.Patchline); err != nil {
			errs = append(errs, fmt.Errorf("framegen bundle %w", err))
		}
		switch t := pl.AnomalyThreshold; {
		case t == nil:
			bad("patchline.anomaly_threshold is missing")
		case *t < 0 || math.IsNaN(*t) || math.IsInf(*t, 0):
			bad("patchline.anomaly_threshold is %v, want a number >= 0", *t)
		default:
			g.threshold = *t
		}
		g.topK = 1
		if k := pl.AnomalyTopK; k != nil {
			if *k < 1 {
				bad("patchline.anomaly_top_k is %d, want >= 1", *k)
			}
			g.topK = *k
		}
		if ms := pl.FrameIntervalMs; ms != nil {
			if !(*ms > 0 && *ms <= 60_000) {
				bad("patchline.frame_interval_ms is %v, want 0 < ms <= 60000", *ms)
			} else {
				g.interval = time.Duration(*ms * float64(time.Millisecond))
			}
		}
	}
	if fc.NumFrames < 1 || fc.NumFrames > 64 {
		bad("num_frames is %d, want 1..64", fc.NumFrames)
	}
	img, err := c.ReadPreprocessor()
	if err != nil {
		errs = append(errs, fmt.Errorf("framegen bundle %w", err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	g.w, g.h, g.p = img.Width, img.Height, img.PatchSize
	g.scale = img.Scale
	copy(g.mean[:], img.Mean)
	copy(g.std[:], img.Std)
	g.lut = img.LUT()
	return g, nil
}

func (g *Framegen) checkGraph(onnxPath string, ins, outs []onnxruntime.InputOutputInfo) error {
	n, d := int64(g.NumPatches()), int64(g.TokenDim())
	find := func(list []onnxruntime.InputOutputInfo, name string) (onnxruntime.InputOutputInfo, bool) {
		for _, io := range list {
			if io.Name == name {
				return io, true
			}
		}
		return onnxruntime.InputOutputInfo{}, false
	}
	check := func(role, name string, list []onnxruntime.InputOutputInfo, want []int64) error {
		info, ok := find(list, name)
		if !ok {
			return fmt.Errorf("framegen: %s has no %s %q", onnxPath, role, name)
		}
		if info.DataType != onnxruntime.TensorElementDataTypeFloat {
			return fmt.Errorf("framegen: %s: %s %q has element type %s, want float32", onnxPath, role, name, info.DataType)
		}
		dims := info.Dimensions
		if len(dims) != len(want) {
			return fmt.Errorf("framegen: %s: %s %q has shape %v, want %v (-1 = any)", onnxPath, role, name, dims, want)
		}
		for i, w := range want {
			if w >= 0 && dims[i] > 0 && dims[i] != w {
				return fmt.Errorf("framegen: %s: %s %q has shape %v, want %v (-1 = any): dim %d is %d, want %d (from config.json/preprocessor_config.json)",
					onnxPath, role, name, dims, want, i, dims[i], w)
			}
		}
		return nil
	}
	if err := check("input", framegenInput, ins, []int64{-1, int64(g.k), n, d}); err != nil {
		return err
	}
	return check("output", framegenOutput, outs, []int64{-1, n, d})
}

// Name is the bundle's model name.
func (g *Framegen) Name() string { return g.name }

// NumFrames is K, the number of context frames.
func (g *Framegen) NumFrames() int { return g.k }

// Grid returns the model input size and patch size.
func (g *Framegen) Grid() (width, height, patch int) { return g.w, g.h, g.p }

// NumPatches is the number of patches per frame.
func (g *Framegen) NumPatches() int { return (g.w / g.p) * (g.h / g.p) }

// TokenDim is the length of one patch token, P·P·3.
func (g *Framegen) TokenDim() int { return g.p * g.p * 3 }

// FrameInterval is the time between the frames the model was trained on
// (patchline.frame_interval_ms, in source time); 0 when the bundle does
// not say. Motion is learnt per interval: frames much further apart (a
// camera sampled at 1 fps for a model of 5) look like teleports.
func (g *Framegen) FrameInterval() time.Duration { return g.interval }

// Threshold is the bundle's anomaly threshold on the frame score.
func (g *Framegen) Threshold() float64 { return g.threshold }

// Close releases the session.
func (g *Framegen) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sess == nil {
		return nil
	}
	err := g.sess.Destroy()
	g.sess = nil
	return err
}

// Run predicts the next frame for each input, as one batch.
func (g *Framegen) Run(in []FramegenInput) ([]FramegenResult, error) {
	if len(in) == 0 {
		return nil, nil
	}
	per := g.w * g.h * 3
	x := make([]float32, len(in)*g.k*per)
	for i, it := range in {
		if len(it.Context) != g.k {
			return nil, fmt.Errorf("framegen: input %d has %d context frames, want %d", i, len(it.Context), g.k)
		}
		for j, f := range it.Context {
			if len(f) != per {
				return nil, fmt.Errorf("framegen: input %d frame %d has %d token bytes, want %d (%dx%d RGB)", i, j, len(f), per, g.w, g.h)
			}
			g.normalise(x[(i*g.k+j)*per:(i*g.k+j+1)*per], f)
		}
		if it.Actual != nil && len(it.Actual) != per {
			return nil, fmt.Errorf("framegen: input %d actual frame has %d token bytes, want %d", i, len(it.Actual), per)
		}
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.sess == nil {
		return nil, errors.New("framegen: model is closed")
	}
	t, err := onnxruntime.NewTensor(onnxruntime.NewShape(int64(len(in)), int64(g.k), int64(g.NumPatches()), int64(g.TokenDim())), x)
	if err != nil {
		return nil, fmt.Errorf("framegen: input tensor: %w", err)
	}
	defer func() { _ = t.Destroy() }()
	outs := []onnxruntime.Value{nil}
	if err := g.sess.Run([]onnxruntime.Value{t}, outs); err != nil {
		return nil, fmt.Errorf("framegen: onnxruntime: %w", err)
	}
	defer func() { _ = outs[0].Destroy() }()
	ot, ok := outs[0].(*onnxruntime.Tensor[float32])
	if !ok {
		return nil, fmt.Errorf("framegen: output %s is %T, want float32", framegenOutput, outs[0])
	}
	y := ot.GetData()
	if len(y) != len(in)*per {
		return nil, fmt.Errorf("framegen: output %s has shape %v, want [%d %d %d]", framegenOutput, ot.GetShape(), len(in), g.NumPatches(), g.TokenDim())
	}
	res := make([]FramegenResult, len(in))
	for i, it := range in {
		pred := y[i*per : (i+1)*per]
		res[i].Next = g.denormalise(pred)
		if it.Actual != nil {
			res[i].PatchScores, res[i].Score = g.heatmap(pred, it.Actual)
		}
	}
	return res, nil
}

// normalise writes (u8·scale − mean[c]) / std[c] for tokens into dst; the
// channel of token byte j is j%3 (frame.Tokenize layout).
func (g *Framegen) normalise(dst []float32, tokens []byte) {
	for j, v := range tokens {
		dst[j] = g.lut[j%3][v]
	}
}

// denormalise maps normalised values back to clamped, rounded uint8.
func (g *Framegen) denormalise(x []float32) []byte {
	out := make([]byte, len(x))
	for j, v := range x {
		c := j % 3
		u := (float64(v)*g.std[c] + g.mean[c]) / g.scale
		out[j] = uint8(math.Round(min(255, max(0, u))))
	}
	return out
}

// heatmap is the mean squared error per patch between the prediction and
// the actual frame, in normalised space, and the frame score: the mean of
// the topK largest.
func (g *Framegen) heatmap(pred []float32, actual []byte) ([]float64, float64) {
	d := g.TokenDim()
	scores := make([]float64, g.NumPatches())
	for n := range scores {
		var sum float64
		for j := n * d; j < (n+1)*d; j++ {
			e := float64(pred[j] - g.lut[j%3][actual[j]])
			sum += e * e
		}
		scores[n] = sum / float64(d)
	}
	return scores, topMean(scores, g.topK)
}

// topMean is the mean of the k largest values (all of them if fewer).
func topMean(v []float64, k int) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	k = min(max(k, 1), len(s))
	sum := 0.0
	for _, x := range s[len(s)-k:] {
		sum += x
	}
	return sum / float64(k)
}

// PNG encodes uint8 patch tokens at the model's grid as a PNG image.
func (g *Framegen) PNG(tokens []byte) ([]byte, error) {
	img := image.NewNRGBA(image.Rect(0, 0, g.w, g.h))
	rgb := make([]byte, g.w*g.h*3)
	if err := frame.Untokenize(rgb, tokens, g.w, g.h, g.p); err != nil {
		return nil, err
	}
	for i := range g.w * g.h {
		copy(img.Pix[4*i:4*i+3], rgb[3*i:3*i+3])
		img.Pix[4*i+3] = 255
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
