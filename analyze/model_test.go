package analyze

import (
	"image"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	onnxruntime "github.com/yalue/onnxruntime_go"
	"gocv.io/x/gocv"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/ort"
	"github.com/patchline/patchline/internal/testenv"
)

// requireORT fails the test when the ONNX Runtime library is missing: it is a
// build prerequisite (scripts/fetch-onnxruntime.sh), not an optional asset.
func requireORT(t testing.TB) {
	t.Helper()
	if err := ort.Init(""); err != nil {
		t.Fatalf("%v (run scripts/fetch-onnxruntime.sh from the repository root)", err)
	}
}

// sharedAssets returns ../shared/assets relative to the repository root, or
// skips the test when it is absent.
func sharedAssets(t testing.TB) string { return testenv.SharedAssets(t) }

func vitOptions() ModelOptions {
	return ModelOptions{Threads: 1, Width: 224, Height: 224, PatchSize: 16, Resize: frame.ResizeStretch}
}

func openViT(t testing.TB) *Model {
	t.Helper()
	requireORT(t)
	b, err := LoadBundle(filepath.Join(repoRoot(t), "models", "vit-tiny"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenModel(b, vitOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// vitTestFrames loads the exported test tokens as frames, plus torch's logits.
func vitTestFrames(t testing.TB) ([]*frame.Frame, []float32) {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "models", "vit-tiny", "testdata")
	tokens, err := os.ReadFile(filepath.Join(dir, "tokens_u8.bin"))
	if err != nil {
		t.Fatal(err)
	}
	logits := testenv.ReadF32(t, filepath.Join(dir, "logits_f32.bin"))
	const per = 224 * 224 * 3
	if len(tokens) != 2*per || len(logits) != 2*10 {
		t.Fatalf("testdata sizes %d, %d; rerun models/train/export_vit.py", len(tokens), len(logits))
	}
	var frames []*frame.Frame
	for i := range 2 {
		frames = append(frames, &frame.Frame{
			Camera: "test", Seq: uint64(i), SourceW: 640, SourceH: 480,
			Width: 224, Height: 224, Patch: 16, Resize: frame.ResizeStretch,
			Transform: frame.Stretch(640, 480, 224, 224),
			Tokens:    tokens[i*per : (i+1)*per],
		})
	}
	return frames, logits
}

func TestViTMatchesTorch(t *testing.T) {
	m := openViT(t)
	frames, want := vitTestFrames(t)

	// Raw logits: ORT on Go-normalised tokens vs torch on numpy-normalised ones.
	outs, err := m.forward(frames)
	defer destroyAll(outs)
	if err != nil {
		t.Fatal(err)
	}
	got := outs[0].(*onnxruntime.Tensor[float32]).GetData()
	if len(got) != len(want) {
		t.Fatalf("got %d logits, want %d", len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); d > 1e-4 {
			t.Errorf("logit %d: ORT %v, torch %v (|diff| %.2g > 1e-4)", i, got[i], want[i], d)
		}
	}

	// Postprocessed: top-5 softmax labels, best first.
	res, err := m.Run(frames)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		probs := make([]float64, 10)
		softmax(probs, want[i*10:(i+1)*10])
		if len(r.Labels) != 5 || len(r.Detections) != 0 {
			t.Fatalf("frame %d: %d labels, %d detections; want 5, 0", i, len(r.Labels), len(r.Detections))
		}
		for k, l := range r.Labels {
			if k > 0 && l.Score > r.Labels[k-1].Score {
				t.Errorf("frame %d: labels not sorted: %+v", i, r.Labels)
			}
			if l.Label != m.Bundle().Labels[l.ClassID] || math.Abs(l.Score-probs[l.ClassID]) > 1e-5 {
				t.Errorf("frame %d label %d = %+v, torch softmax %v", i, k, l, probs[l.ClassID])
			}
		}
		for c, p := range probs {
			if p > r.Labels[0].Score+1e-6 {
				t.Errorf("frame %d: class %d has p=%v above top-1 %+v", i, c, p, r.Labels[0])
			}
		}
	}

	// Batch size varies between calls; results must not depend on it.
	one, err := m.Run(frames[1:])
	if err != nil {
		t.Fatal(err)
	}
	if one[0].Labels[0].ClassID != res[1].Labels[0].ClassID || math.Abs(one[0].Labels[0].Score-res[1].Labels[0].Score) > 1e-5 {
		t.Errorf("batch of 1 gives %+v, batch of 2 gave %+v", one[0].Labels[0], res[1].Labels[0])
	}
}

func TestRunRejectsForeignFrames(t *testing.T) {
	m := openViT(t)
	frames, _ := vitTestFrames(t)
	bad := *frames[1]
	bad.Width, bad.Height = 320, 320
	_, err := m.Run([]*frame.Frame{frames[0], &bad})
	if err == nil || !strings.Contains(err.Error(), "batch index 1") || !strings.Contains(err.Error(), "wants 224x224 patch 16 stretch") {
		t.Fatalf("err = %v, want a rejection of batch index 1", err)
	}
	bad = *frames[1]
	bad.Resize = frame.ResizeLetterbox
	if err := m.Accepts(&bad); err == nil {
		t.Error("Accepts took a letterboxed frame for a stretch model")
	}
	bad = *frames[1]
	bad.Tokens = bad.Tokens[:100]
	if err := m.Accepts(&bad); err == nil || !strings.Contains(err.Error(), "100 token bytes") {
		t.Errorf("Accepts(short payload) = %v", err)
	}
	if res, err := m.Run(nil); err != nil || res != nil {
		t.Errorf("Run(nil) = %v, %v", res, err)
	}
}

func TestOpenModelDecodeMismatch(t *testing.T) {
	b, err := LoadBundle(filepath.Join(repoRoot(t), "models", "vit-tiny"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		opts ModelOptions
		want string
	}{
		{ModelOptions{Width: 320, Height: 320, PatchSize: 16, Resize: "stretch"}, "width 320 != 224, height 320 != 224"},
		{ModelOptions{Width: 224, Height: 224, PatchSize: 8, Resize: "stretch"}, "patch_size 8 != 16"},
		{ModelOptions{Width: 224, Height: 224, PatchSize: 16, Resize: "letterbox"}, `resize "letterbox" != "stretch"`},
	} {
		_, err := OpenModel(b, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "decode config does not match model bundle vit-tiny") {
			t.Errorf("OpenModel(%+v) = %v, want %q", c.opts, err, c.want)
		}
	}
}

func TestOpenModelGraphMismatch(t *testing.T) {
	requireORT(t)
	cases := []struct {
		name, old, new string
		opts           ModelOptions
		want           string
	}{
		{"patch size", "patch_size: 16", "patch_size: 8",
			ModelOptions{Width: 224, Height: 224, PatchSize: 8, Resize: "stretch"},
			`graph input "patches" has shape [-1 196 768], bundle expects [B 784 192]: dim 1 (patches N = (224/8)*(224/8)) is 196, want 784; dim 2 (token P*P*3 = 8*8*3) is 768, want 192`},
		{"input size", "height: 224", "height: 320",
			ModelOptions{Width: 224, Height: 320, PatchSize: 16, Resize: "stretch"},
			"dim 1 (patches N = (224/16)*(320/16)) is 196, want 280"},
		{"pixels kind", "kind: patches", "kind: pixels", vitOptions(),
			`graph input "patches" has shape [-1 196 768] (rank 3), bundle expects [B 3 224 224] (rank 4)`},
		{"input name", "name: patches", "name: images", vitOptions(),
			`input.name "images" is not a graph input (graph inputs: patches)`},
		{"output name", "logits: logits", "logits: scores", vitOptions(),
			`outputs.logits "scores" is not a graph output (graph outputs: logits)`},
		{"label count", "labels: [a, b, c, d, e, f, g, h, i, j]", "labels: [a, b, c]", vitOptions(),
			`graph output "logits" has shape [-1 10], bundle expects [B 3]: dim 1 (classes (len(labels))) is 10, want 3`},
		{"unfed extra", "  std: [0.5, 0.5, 0.5]", "  std: [0.5, 0.5, 0.5]\n  extra:\n    - name: sizes\n      value: input_size", vitOptions(),
			`input.extra[0].name "sizes" is not a graph input`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := LoadBundle(writeBundle(t, strings.Replace(vitYAML(t), c.old, c.new, 1)))
			if err != nil {
				t.Fatal(err)
			}
			requireOpenError(t, b, c.opts, c.want)
		})
	}
}

// requireOpenError fails unless OpenModel refuses b with an error that
// contains want and names the bundle's descriptor.
func requireOpenError(t *testing.T, b *Bundle, opts ModelOptions, want string) {
	t.Helper()
	m, err := OpenModel(b, opts)
	if err == nil {
		_ = m.Close()
		t.Fatalf("OpenModel succeeded, want %q", want)
	}
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "does not match "+b.Descriptor()) {
		t.Fatalf("err = %v\nwant %q and %s", err, want, b.Descriptor())
	}
}

// sampleFrame decodes the DEIMv2 sample photo into a 320x320 stretch frame,
// as the decode stage would.
func sampleFrame(t testing.TB, assets string) *frame.Frame {
	t.Helper()
	path := filepath.Join(assets, "deimv2-atto", "sample.jpg")
	img := gocv.IMRead(path, gocv.IMReadColor)
	if img.Empty() {
		t.Fatalf("gocv cannot read %s", path)
	}
	defer img.Close()
	rgb := gocv.NewMat()
	defer rgb.Close()
	gocv.CvtColor(img, &rgb, gocv.ColorBGRToRGB)
	small := gocv.NewMat()
	defer small.Close()
	gocv.Resize(rgb, &small, image.Pt(320, 320), 0, 0, gocv.InterpolationLinear)
	tokens := make([]byte, 320*320*3)
	if err := frame.Tokenize(tokens, small.ToBytes(), 320, 320, 16); err != nil {
		t.Fatal(err)
	}
	return &frame.Frame{
		Camera: "sample", SourceW: img.Cols(), SourceH: img.Rows(),
		Width: 320, Height: 320, Patch: 16, Resize: frame.ResizeStretch,
		Transform: frame.Stretch(img.Cols(), img.Rows(), 320, 320),
		Tokens:    tokens,
	}
}

func openDEIMv2(t testing.TB) *Model {
	t.Helper()
	sharedAssets(t)
	requireORT(t)
	b, err := LoadBundle(filepath.Join(repoRoot(t), "models", "deimv2-atto"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenModel(b, ModelOptions{Width: 320, Height: 320, PatchSize: 16, Resize: frame.ResizeStretch})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestDEIMv2Sample(t *testing.T) {
	assets := sharedAssets(t)
	m := openDEIMv2(t)
	f := sampleFrame(t, assets)
	res, err := m.Run([]*frame.Frame{f, f, f})
	if err != nil {
		t.Fatal(err)
	}
	dets := res[0].Detections
	for _, d := range dets {
		t.Logf("%-12s %.3f box %.1f", d.Label, d.Score, d.Box)
	}
	best := map[string]float64{}
	for i, d := range dets {
		if d.Score < 0.5 {
			t.Errorf("detection %+v below score_threshold 0.5", d)
		}
		if i > 0 && d.Score > dets[i-1].Score {
			t.Errorf("detections not sorted by score")
		}
		b := d.Box
		if !(b[0] >= 0 && b[1] >= 0 && b[2] <= float64(f.SourceW) && b[3] <= float64(f.SourceH) && b[0] < b[2] && b[1] < b[3]) {
			t.Errorf("%s box %v is not inside the %dx%d image", d.Label, b, f.SourceW, f.SourceH)
		}
		if d.Label != m.Bundle().Labels[d.ClassID] {
			t.Errorf("detection %+v: label does not match class id", d)
		}
		best[d.Label] = max(best[d.Label], d.Score)
	}
	for _, want := range []string{"person", "bicycle"} {
		if best[want] < 0.5 {
			t.Errorf("no %s >= 0.5 in %v", want, best)
		}
	}
	// Every frame of the batch gets the same answer.
	for i := 1; i < len(res); i++ {
		if len(res[i].Detections) != len(dets) {
			t.Fatalf("frame %d: %d detections, frame 0 had %d", i, len(res[i].Detections), len(dets))
		}
		for j, d := range res[i].Detections {
			if d.ClassID != dets[j].ClassID || math.Abs(d.Score-dets[j].Score) > 1e-4 {
				t.Errorf("frame %d detection %d = %+v, frame 0 had %+v", i, j, d, dets[j])
			}
		}
	}
}

func BenchmarkViTBatch8(b *testing.B) {
	m := openViT(b)
	two, _ := vitTestFrames(b)
	frames := make([]*frame.Frame, 8)
	for i := range frames {
		frames[i] = two[i%2]
	}
	n := 0
	for b.Loop() {
		if _, err := m.Run(frames); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n*len(frames))/b.Elapsed().Seconds(), "frames/s")
}

func BenchmarkDEIMv2Batch4(b *testing.B) {
	assets := sharedAssets(b)
	m := openDEIMv2(b)
	f := sampleFrame(b, assets)
	frames := []*frame.Frame{f, f, f, f}
	n := 0
	for b.Loop() {
		if _, err := m.Run(frames); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n*len(frames))/b.Elapsed().Seconds(), "frames/s")
}

// TestThreadsOption checks analyze.threads by its effect: ONNX Runtime
// starts threads-1 intra-op workers for a session (the caller's thread is
// the last), so a model opened with 4 has at least 3 more threads than one
// opened with 1, which has none of its own.
func TestThreadsOption(t *testing.T) {
	requireORT(t)
	b, err := LoadBundle(filepath.Join(repoRoot(t), "models", "vit-tiny"))
	if err != nil {
		t.Fatal(err)
	}
	started := func(threads int) int {
		opts := OptionsFromConfig(config.Decode{Width: 224, Height: 224, PatchSize: 16, Resize: frame.ResizeStretch}, config.Analyze{Threads: threads})
		before := testenv.OSThreads(t)
		m, err := OpenModel(b, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		return testenv.OSThreads(t) - before
	}
	// The least of two: a Go thread the runtime starts meanwhile (another
	// goroutine runs while a cgo call holds its thread) counts too, once.
	one := min(started(1), started(1))
	four := started(4)
	if four < one+3 {
		t.Errorf("threads 4 started %d threads, threads 1 started %d; want at least 3 more", four, one)
	}
}
