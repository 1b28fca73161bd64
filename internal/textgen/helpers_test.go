package textgen

import (
	"encoding/json"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"testing"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/patchline/patchline/internal/testenv"
)

// tinyDir is the random-weight caption bundle written by testdata/make_tiny.py.
const tinyDir = "testdata/tiny"

func openTiny(t testing.TB) *Captioner {
	t.Helper()
	c, err := Open(tinyDir, Options{Threads: 1})
	if err != nil {
		t.Fatalf("Open(%s): %v (run scripts/fetch-onnxruntime.sh if the ONNX Runtime library is missing)", tinyDir, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// expected reads testdata/tiny/expected/meta.json.
func expected(t testing.TB) map[string]json.RawMessage {
	t.Helper()
	var meta map[string]json.RawMessage
	readJSONFile(t, filepath.Join(tinyDir, "expected", "meta.json"), &meta)
	return meta
}

func readJSONFile(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// refF32 reads expected/<name> (float32 little endian) and its shape from meta.
func refF32(t testing.TB, meta map[string]json.RawMessage, name string) ([]float32, []int64) {
	t.Helper()
	var shape []int64
	if err := json.Unmarshal(meta[name], &shape); err != nil {
		t.Fatalf("meta.json %s: %v", name, err)
	}
	out := testenv.ReadF32(t, filepath.Join(tinyDir, "expected", name))
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	if int64(len(out)) != n {
		t.Fatalf("%s: %d floats, shape %v", name, len(out), shape)
	}
	return out, shape
}

// refInputs returns the reference frames of expected/frames_u8.bin as Inputs.
func refInputs(t testing.TB, c *Captioner) []Input {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(tinyDir, "expected", "frames_u8.bin"))
	if err != nil {
		t.Fatal(err)
	}
	per := c.b.frameBytes()
	nf := c.NumFrames()
	if len(raw)%(per*nf) != 0 {
		t.Fatalf("frames_u8.bin is %d bytes, not a multiple of %d frames of %d", len(raw), nf, per)
	}
	var in []Input
	for off := 0; off < len(raw); off += per * nf {
		var x Input
		for j := range nf {
			x.Frames = append(x.Frames, raw[off+j*per:off+(j+1)*per])
		}
		in = append(in, x)
	}
	return in
}

// randomInputs makes n inputs like make_tiny.py's: a random colour per
// input, varied per patch, plus noise (so captions differ between inputs).
func randomInputs(c *Captioner, n int, seed int64) []Input {
	rng := rand.New(rand.NewSource(seed))
	per, nf := c.b.frameBytes(), c.NumFrames()
	patches, pix := c.b.numPatches(), c.b.tokenDim()/3
	clamp := func(v int) byte { return byte(max(0, min(255, v))) }
	in := make([]Input, n)
	for i := range in {
		base := [3]int{rng.Intn(256), rng.Intn(256), rng.Intn(256)}
		var patchBase [][3]int
		for range patches {
			patchBase = append(patchBase, [3]int{base[0] + rng.Intn(61) - 30, base[1] + rng.Intn(61) - 30, base[2] + rng.Intn(61) - 30})
		}
		for range nf {
			f := make([]byte, per)
			for p := range patches {
				for q := range pix {
					for ch := range 3 {
						f[(p*pix+q)*3+ch] = clamp(patchBase[p][ch] + rng.Intn(81) - 40)
					}
				}
			}
			in[i].Frames = append(in[i].Frames, f)
		}
	}
	return in
}

func maxAbsDiff(t testing.TB, name string, got []float32, gotShape onnxruntime.Shape, want []float32, wantShape []int64) float64 {
	t.Helper()
	if len(gotShape) != len(wantShape) {
		t.Fatalf("%s: ORT shape %v, torch %v", name, gotShape, wantShape)
	}
	for i := range wantShape {
		if gotShape[i] != wantShape[i] {
			t.Fatalf("%s: ORT shape %v, torch %v", name, gotShape, wantShape)
		}
	}
	var m float64
	for i := range want {
		m = math.Max(m, math.Abs(float64(got[i])-float64(want[i])))
	}
	return m
}

// copyBundle copies the tiny bundle into a temporary directory, leaving out
// the files named in skip, and returns the directory.
func copyBundle(t testing.TB, skip ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range BundleFiles {
		if slices.Contains(skip, name) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(tinyDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
