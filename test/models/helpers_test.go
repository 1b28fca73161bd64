// Package models measures patchline's own model bundles (models/scene-vit,
// models/caption, models/framegen) on held-out synthetic-world seeds
// (1..999; training used 100000 and up), with real OpenCV preprocessing and
// real ONNX Runtime, and checks each ONNX export against the torch outputs
// saved when it was exported.
package models

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/patchline/patchline/decode"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/ort"
	"github.com/patchline/patchline/internal/synth"
	"github.com/patchline/patchline/internal/testenv"
)

// The model input of patchline's own models.
const (
	side  = 96
	patch = 8
	grid  = side / patch
	nTok  = grid * grid
	dTok  = patch * patch * 3
	per   = side * side * 3
)

func modelDir(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(testenv.RepoRoot(t), "models", name)
}

func modelDecode() config.Decode {
	d := config.Default().Decode
	d.Width, d.Height, d.PatchSize, d.Resize = side, side, patch, frame.ResizeStretch
	return d
}

// world renders a synthetic scene exactly as the decode stage feeds models.
type world struct {
	scene *synth.Scene
	pre   *decode.Preprocessor
	rgb   []byte
	pix   []byte
}

func newWorld(t testing.TB, url string) *world {
	t.Helper()
	s, err := synth.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Params()
	pre, err := decode.NewPreprocessor(modelDecode())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pre.Close() })
	return &world{scene: s, pre: pre, rgb: make([]byte, s.FrameSize()), pix: make([]byte, p.Width*p.Height)}
}

// tokens returns frame i's patch tokens, its per-patch classes and truth.
func (w *world) tokens(t testing.TB, i int) ([]byte, []byte, synth.Truth) {
	t.Helper()
	tr, err := w.scene.RenderClasses(w.rgb, w.pix, i)
	if err != nil {
		t.Fatal(err)
	}
	p := w.scene.Params()
	model, _, err := w.pre.FromRGB(w.rgb, p.Width, p.Height)
	if err != nil {
		t.Fatal(err)
	}
	tok := make([]byte, per)
	if err := frame.Tokenize(tok, model, side, side, patch); err != nil {
		t.Fatal(err)
	}
	cls := make([]byte, nTok)
	if err := synth.PatchClasses(cls, w.pix, p.Width, p.Height, grid, grid); err != nil {
		t.Fatal(err)
	}
	return tok, cls, tr
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// normalise is preprocessor_config.json's (u8/255 − 0.5)/0.5.
func normalise(tokens []byte) []float32 {
	out := make([]float32, len(tokens))
	for i, v := range tokens {
		out[i] = (float32(v)/255 - 0.5) / 0.5
	}
	return out
}

// runONNX runs one graph on float32 inputs and returns its float32 outputs.
func runONNX(t testing.TB, path string, inputs []string, shapes [][]int64, data [][]float32, outputs []string) [][]float32 {
	t.Helper()
	lib, err := ort.ResolveLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	if err := ort.Init(lib); err != nil {
		t.Fatal(err)
	}
	sess, err := onnxruntime.NewDynamicAdvancedSession(path, inputs, outputs, nil)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer sess.Destroy()
	ins := make([]onnxruntime.Value, len(inputs))
	for i := range inputs {
		v, err := onnxruntime.NewTensor(onnxruntime.NewShape(shapes[i]...), data[i])
		if err != nil {
			t.Fatal(err)
		}
		defer v.Destroy()
		ins[i] = v
	}
	outs := make([]onnxruntime.Value, len(outputs))
	if err := sess.Run(ins, outs); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	res := make([][]float32, len(outs))
	for i, o := range outs {
		res[i] = append([]float32(nil), o.(*onnxruntime.Tensor[float32]).GetData()...)
		o.Destroy()
	}
	return res
}

func maxAbsDiff(t testing.TB, what string, got, want []float32) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	d := 0.0
	for i := range got {
		d = math.Max(d, math.Abs(float64(got[i]-want[i])))
	}
	return d
}

// auroc is the probability that a random positive scores above a random
// negative, ties counting half.
func auroc(pos, neg []float64) float64 {
	if len(pos) == 0 || len(neg) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, p := range pos {
		for _, n := range neg {
			switch {
			case p > n:
				s++
			case p == n:
				s += 0.5
			}
		}
	}
	return s / float64(len(pos)*len(neg))
}

func iou(a, b [4]float64) float64 {
	ix := math.Max(0, math.Min(a[2], b[2])-math.Max(a[0], b[0]))
	iy := math.Max(0, math.Min(a[3], b[3])-math.Max(a[1], b[1]))
	inter := ix * iy
	union := (a[2]-a[0])*(a[3]-a[1]) + (b[2]-b[0])*(b[3]-b[1]) - inter
	if union <= 0 {
		return 0
	}
	return inter / union
}
