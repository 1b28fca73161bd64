package generate

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/testenv"
)

const tinyFramegen = "testdata/tiny-framegen"

func openTiny(t testing.TB) *Framegen {
	t.Helper()
	g, err := OpenFramegen(tinyFramegen, ModelOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// expectedWindows reads the exporter's test windows and torch's outputs.
func expectedWindows(t testing.TB, g *Framegen) (tokens [][][]byte, want []float32) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(tinyFramegen, "expected", "tokens_u8.bin"))
	if err != nil {
		t.Fatal(err)
	}
	per := g.NumPatches() * g.TokenDim()
	k := g.NumFrames()
	if len(raw)%(k*per) != 0 {
		t.Fatalf("tokens_u8.bin has %d bytes, not a multiple of %d", len(raw), k*per)
	}
	for b := 0; b < len(raw)/(k*per); b++ {
		var win [][]byte
		for i := range k {
			off := (b*k + i) * per
			win = append(win, raw[off:off+per])
		}
		tokens = append(tokens, win)
	}
	f, err := os.ReadFile(filepath.Join(tinyFramegen, "expected", "next_tokens_f32.bin"))
	if err != nil {
		t.Fatal(err)
	}
	want = make([]float32, len(f)/4)
	if err := binary.Read(bytes.NewReader(f), binary.LittleEndian, want); err != nil {
		t.Fatal(err)
	}
	return tokens, want
}

// TestFramegenMatchesTorch feeds the exporter's windows through our
// normalisation and ONNX Runtime and checks both outputs against torch's:
// the uint8 prediction equals torch's output denormalised (±1 for rounding),
// and every per-patch score equals, within 1e-4, the MSE computed here in
// float64 from torch's raw output against a known frame.
func TestFramegenMatchesTorch(t *testing.T) {
	g := openTiny(t)
	wins, want := expectedWindows(t, g)
	per := g.NumPatches() * g.TokenDim()
	if len(want) != len(wins)*per {
		t.Fatalf("expected output has %d values, want %d", len(want), len(wins)*per)
	}
	var ins []FramegenInput
	for _, w := range wins {
		// Score against the last context frame: a known, non-trivial target.
		ins = append(ins, FramegenInput{Context: w, Actual: w[len(w)-1]})
	}
	res, err := g.Run(ins)
	if err != nil {
		t.Fatal(err)
	}
	for b, r := range res {
		torch := want[b*per : (b+1)*per]
		wantNext := g.denormalise(torch)
		diff := 0
		for j := range wantNext {
			if d := int(wantNext[j]) - int(r.Next[j]); d < -1 || d > 1 {
				diff++
			}
		}
		if diff > 0 {
			t.Errorf("window %d: %d predicted bytes differ from torch's by more than 1", b, diff)
		}
		actual := wins[b][len(wins[b])-1]
		d := g.TokenDim()
		best := 0.0
		for n := range g.NumPatches() {
			var sum float64
			for j := n * d; j < (n+1)*d; j++ {
				x := (float64(actual[j])/255 - 0.5) / 0.5
				e := float64(torch[j]) - x
				sum += e * e
			}
			mse := sum / float64(d)
			best = max(best, mse)
			if math.Abs(mse-r.PatchScores[n]) > 1e-4 {
				t.Fatalf("window %d patch %d: score %v, torch-based %v", b, n, r.PatchScores[n], mse)
			}
		}
		if math.Abs(best-r.Score) > 1e-4 {
			t.Errorf("window %d: score %v, want max %v", b, r.Score, best)
		}
		if r.Score <= 0 {
			t.Errorf("window %d: score %v, want > 0 for a moving scene", b, r.Score)
		}
	}
}

func TestFramegenPNGRoundTrip(t *testing.T) {
	g := openTiny(t)
	wins, _ := expectedWindows(t, g)
	b, err := g.PNG(wins[0][0])
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	w, h, p := g.Grid()
	if img.Bounds().Dx() != w || img.Bounds().Dy() != h {
		t.Fatalf("png is %v, want %dx%d", img.Bounds(), w, h)
	}
	// Pixel (x,y) sits in patch (x/p, y/p) at ((y%p)*p + x%p)*3.
	for _, xy := range [][2]int{{0, 0}, {w - 1, h - 1}, {37, 41}} {
		x, y := xy[0], xy[1]
		n := (y/p)*(w/p) + x/p
		off := n*g.TokenDim() + ((y%p)*p+x%p)*3
		r, gg, bb, _ := img.At(x, y).RGBA()
		got := [3]byte{byte(r >> 8), byte(gg >> 8), byte(bb >> 8)}
		want := [3]byte{wins[0][0][off], wins[0][0][off+1], wins[0][0][off+2]}
		if got != want {
			t.Errorf("pixel (%d,%d) = %v, tokens say %v", x, y, got, want)
		}
	}
}

// copyBundle copies the tiny bundle and lets edit change config.json.
func copyBundle(t testing.TB, edit func(cfg map[string]any)) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"model.onnx", "preprocessor_config.json", "config.json"} {
		b, err := os.ReadFile(filepath.Join(tinyFramegen, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "config.json" && edit != nil {
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			edit(m)
			if b, err = json.Marshal(m); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestFramegenBadBundles(t *testing.T) {
	cases := []struct {
		name string
		dir  func(t *testing.T) string
		want []string
	}{
		{"missing model", func(t *testing.T) string {
			d := copyBundle(t, nil)
			_ = os.Remove(filepath.Join(d, "model.onnx"))
			return d
		}, []string{"model.onnx", "no such file"}},
		{"no threshold", func(t *testing.T) string {
			return copyBundle(t, func(c map[string]any) { delete(c["patchline"].(map[string]any), "anomaly_threshold") })
		}, []string{"config.json", "patchline.anomaly_threshold is missing"}},
		{"wrong task", func(t *testing.T) string {
			return copyBundle(t, func(c map[string]any) { c["patchline"].(map[string]any)["task"] = "caption" })
		}, []string{"config.json", `patchline.task is "caption", want "framegen"`}},
		{"num_frames disagrees with the graph", func(t *testing.T) string {
			return copyBundle(t, func(c map[string]any) { c["num_frames"] = 4 })
		}, []string{"model.onnx", `input "patch_tokens"`, "dim 1 is 3, want 4"}},
		{"malformed config", func(t *testing.T) string {
			d := copyBundle(t, nil)
			_ = os.WriteFile(filepath.Join(d, "config.json"), []byte("{"), 0o644)
			return d
		}, []string{"config.json", "unexpected end of JSON"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := OpenFramegen(c.dir(t), ModelOptions{})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestFramegenRunChecksInput(t *testing.T) {
	g := openTiny(t)
	wins, _ := expectedWindows(t, g)
	if _, err := g.Run([]FramegenInput{{Context: wins[0][:1]}}); err == nil || !strings.Contains(err.Error(), "1 context frames, want 3") {
		t.Errorf("short window: %v", err)
	}
	bad := [][]byte{wins[0][0], wins[0][1], wins[0][2][:10]}
	if _, err := g.Run([]FramegenInput{{Context: bad}}); err == nil || !strings.Contains(err.Error(), "10 token bytes") {
		t.Errorf("short frame: %v", err)
	}
}

func TestTopMean(t *testing.T) {
	v := []float64{0.1, 0.9, 0.3, 0.7, 0.5}
	for _, c := range []struct {
		k    int
		want float64
	}{{1, 0.9}, {2, 0.8}, {4, 0.6}, {9, 0.5}, {0, 0.9}} {
		if got := topMean(v, c.k); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("topMean(k=%d) = %v, want %v", c.k, got, c.want)
		}
	}
	if v[0] != 0.1 {
		t.Error("topMean reordered its input")
	}
}

// TestThreadsOption checks generate.threads by its effect: ONNX Runtime
// starts threads-1 intra-op workers for each session, so the models opened
// with 3 threads have at least 2 more threads per model than with 1.
func TestThreadsOption(t *testing.T) {
	started := func(threads int) int {
		cfg := config.Default()
		cfg.Decode.Width, cfg.Decode.Height, cfg.Decode.PatchSize = 96, 96, 8
		cfg.Generate.FramegenModel, cfg.Generate.CaptionModel, cfg.Generate.Threads = tinyFramegen, tinyCaption, threads
		before := testenv.OSThreads(t)
		m, err := OpenModels(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		return testenv.OSThreads(t) - before
	}
	one, three := started(1), started(3)
	if three < one+2*2 {
		t.Errorf("threads 3 started %d threads, threads 1 started %d; want at least 4 more (2 per model)", three, one)
	}
}
