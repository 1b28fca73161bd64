package analyze

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/testenv"
)

// The Hugging Face layout test bundles, made by
// models/train/make_test_bundles.py (random weights, fixed seed).
const (
	segmentTiny = "segment-tiny" // scene-vit's interface, task segment
	vitHFTiny   = "vit-hf-tiny"  // an optimum-style ViT classifier export
)

func testBundleDir(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(repoRoot(t), "analyze", "testdata", name)
}

// copyBundle copies a test bundle (without expected/) into a temp dir, so a
// test can break one file.
func copyBundle(t *testing.T, name string) string {
	t.Helper()
	src := testBundleDir(t, name)
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{HFConfigFile, HFPreprocessorFile, HFModelFile} {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// editJSON rewrites dir/file through edit on its decoded object.
func editJSON(t *testing.T, dir, file string, edit func(m map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, file)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if data, err = json.MarshalIndent(m, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func patchline(m map[string]any) map[string]any { return m["patchline"].(map[string]any) }

func names(n int, f func(int) string) map[string]any {
	m := map[string]any{}
	for i := range n {
		m[itoa(i)] = f(i)
	}
	return m
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestLoadHFBundles(t *testing.T) {
	s, err := LoadBundle(testBundleDir(t, segmentTiny))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "segment-tiny" || s.Task != TaskSegment || s.HF == nil || !s.HF.Patchline {
		t.Errorf("segment bundle = %+v", s)
	}
	in := s.Input
	if in.Kind != InputPatches || in.Name != "patch_tokens" || in.Width != 96 || in.Height != 96 || in.PatchSize != 8 ||
		in.Resize != frame.ResizeStretch || math.Abs(in.Scale-1.0/255) > 1e-15 || !slices.Equal(in.Mean, []float64{0.5, 0.5, 0.5}) || !slices.Equal(in.Std, []float64{0.5, 0.5, 0.5}) {
		t.Errorf("segment input = %+v", in)
	}
	if s.NumPatches() != 144 || s.TokenDim() != 192 || len(s.Labels) != 13 || s.Labels[0] != "background" || s.Labels[1] != "red circle" ||
		len(s.SceneLabels) != 12 || s.SceneLabels[11] != "yellow triangle" || s.Threshold() != 0 {
		t.Errorf("segment labels = %q, scene %q, threshold %v", s.Labels, s.SceneLabels, s.Threshold())
	}
	if s.Outputs != (BundleOutputs{PatchLogits: "patch_logits", SceneLogits: "scene_logits"}) {
		t.Errorf("segment outputs = %+v", s.Outputs)
	}
	if s.ONNXPath != filepath.Join(testBundleDir(t, segmentTiny), "model.onnx") || s.Path != filepath.Join(testBundleDir(t, segmentTiny), HFConfigFile) {
		t.Errorf("segment paths = %s, %s", s.ONNXPath, s.Path)
	}

	v, err := LoadBundle(testBundleDir(t, vitHFTiny))
	if err != nil {
		t.Fatal(err)
	}
	if v.Name != "vit-hf-tiny" || v.Task != TaskClassify || v.HF == nil || v.HF.Patchline || v.TopK != 5 || v.Outputs != (BundleOutputs{Logits: "logits"}) {
		t.Errorf("optimum bundle = %+v", v)
	}
	in = v.Input
	if in.Kind != InputPixels || in.Name != "pixel_values" || in.Width != 64 || in.Height != 64 || in.PatchSize != 16 || in.Resize != frame.ResizeStretch ||
		!slices.Equal(in.Mean, []float64{0.485, 0.456, 0.406}) || !slices.Equal(in.Std, []float64{0.229, 0.224, 0.225}) {
		t.Errorf("optimum input = %+v", in)
	}
	if !slices.Equal(v.Labels, []string{"tabby cat", "golden retriever", "school bus", "espresso", "volcano"}) {
		t.Errorf("optimum labels = %q", v.Labels)
	}
}

// A bundle.yaml next to config.json wins: the descriptor is patchline's.
func TestLoadBundlePrefersYAML(t *testing.T) {
	dir := copyBundle(t, vitHFTiny)
	if err := os.WriteFile(filepath.Join(dir, BundleFile), []byte(strings.Replace(vitYAML(t), "name: vit-test", "name: from-yaml", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Name != "from-yaml" || b.HF != nil {
		t.Errorf("bundle = %+v, want the bundle.yaml one", b)
	}
}

func TestLoadHFErrors(t *testing.T) {
	type edit struct {
		file string
		fn   func(m map[string]any)
	}
	cfg := func(fn func(m map[string]any)) edit { return edit{HFConfigFile, fn} }
	pre := func(fn func(m map[string]any)) edit { return edit{HFPreprocessorFile, fn} }
	cases := []struct {
		name, bundle string
		edit         edit
		raw          map[string]string // file → content
		remove       string
		file, want   string // the error names file and contains want
	}{
		{name: "no preprocessor", bundle: vitHFTiny, remove: HFPreprocessorFile, file: HFPreprocessorFile, want: "no such file"},
		{name: "no model", bundle: segmentTiny, remove: HFModelFile, file: HFModelFile, want: "no such file"},
		{name: "other onnx missing", bundle: segmentTiny, edit: cfg(func(m map[string]any) { patchline(m)["onnx"] = "scene.onnx" }), file: "scene.onnx", want: "no such file"},
		{name: "bad json", bundle: vitHFTiny, raw: map[string]string{HFConfigFile: "{\n  \"id2label\": {\"0\": \"cat\"},\n  \"image_size\": 64,,\n}"}, file: HFConfigFile, want: "line 3: invalid JSON"},
		{name: "truncated json", bundle: vitHFTiny, raw: map[string]string{HFPreprocessorFile: `{"size": {"height": 64`}, file: HFPreprocessorFile, want: "invalid JSON: unexpected end of JSON input"},
		{name: "not an object", bundle: vitHFTiny, raw: map[string]string{HFConfigFile: `["vit"]`}, file: HFConfigFile, want: "line 1: is a JSON array, want an object"},
		{name: "wrong type", bundle: vitHFTiny, edit: pre(func(m map[string]any) { m["image_mean"] = "imagenet" }), file: HFPreprocessorFile, want: "image_mean: is a JSON string, want a list of numbers"},
		{name: "bad image_size", bundle: vitHFTiny, edit: cfg(func(m map[string]any) { m["image_size"] = "big" }), file: HFConfigFile, want: `image_size: is "big", want a number`},
		{name: "no id2label", bundle: vitHFTiny, edit: cfg(func(m map[string]any) { delete(m, "id2label"); delete(m, "label2id") }), file: HFConfigFile, want: "id2label: is required"},
		{name: "id2label gap", bundle: vitHFTiny, edit: cfg(func(m map[string]any) {
			m["id2label"] = map[string]any{"0": "a", "1": "b", "3": "d"}
			delete(m, "label2id")
		}), file: HFConfigFile, want: `id2label: key "3" is not a class id 0..2`},
		{name: "id2label key", bundle: vitHFTiny, edit: cfg(func(m map[string]any) { m["id2label"].(map[string]any)["x"] = "y" }), file: HFConfigFile, want: `id2label: key "x" is not a class id`},
		{name: "label2id disagrees", bundle: vitHFTiny, edit: cfg(func(m map[string]any) { m["label2id"].(map[string]any)["volcano"] = 1 }), file: HFConfigFile, want: `label2id: "volcano" → 1 disagrees with id2label`},
		{name: "size vs image_size", bundle: vitHFTiny, edit: cfg(func(m map[string]any) { m["image_size"] = 32 }), file: HFPreprocessorFile,
			want: "size: 64x64 disagrees with config.json image_size 32x32"},
		{name: "no size", bundle: vitHFTiny, edit: pre(func(m map[string]any) { delete(m, "size") }), raw: nil, file: "", want: ""}, // falls back to image_size: loads
		{name: "shortest edge", bundle: vitHFTiny, edit: pre(func(m map[string]any) { m["size"] = map[string]any{"shortest_edge": 224} }), file: HFPreprocessorFile, want: `size: {"shortest_edge": 224}`},
		{name: "patch sizes disagree", bundle: segmentTiny, edit: pre(func(m map[string]any) { m["patch_size"] = 16 }), file: HFPreprocessorFile, want: "patch_size: 16 disagrees with config.json patch_size 8"},
		{name: "patch does not divide", bundle: vitHFTiny, edit: cfg(func(m map[string]any) { m["patch_size"] = 24 }), file: HFPreprocessorFile, want: "patch_size: 24 does not divide size 64x64"},
		{name: "no patch size", bundle: vitHFTiny, edit: cfg(func(m map[string]any) { delete(m, "patch_size") }), file: HFPreprocessorFile, want: "patch_size: is required"},
		{name: "center crop", bundle: vitHFTiny, edit: pre(func(m map[string]any) { m["do_center_crop"] = true }), file: HFPreprocessorFile, want: "do_center_crop: is true"},
		{name: "no resize", bundle: vitHFTiny, edit: pre(func(m map[string]any) { m["do_resize"] = false }), file: HFPreprocessorFile, want: "do_resize: is false"},
		{name: "short mean", bundle: vitHFTiny, edit: pre(func(m map[string]any) { m["image_mean"] = []any{0.5} }), file: HFPreprocessorFile, want: "image_mean: has 1 values, want 3"},
		{name: "zero std", bundle: vitHFTiny, edit: pre(func(m map[string]any) { m["image_std"] = []any{0.2, 0, 0.2} }), file: HFPreprocessorFile, want: "image_std[1]: is 0"},
		{name: "bad rescale", bundle: vitHFTiny, edit: pre(func(m map[string]any) { m["rescale_factor"] = -1 }), file: HFPreprocessorFile, want: "rescale_factor: is -1"},
		{name: "grey model", bundle: vitHFTiny, edit: cfg(func(m map[string]any) { m["num_channels"] = 1 }), file: HFConfigFile, want: "num_channels: is 1"},
		{name: "captioner", bundle: vitHFTiny, edit: cfg(func(m map[string]any) { m["architectures"] = []any{"VisionEncoderDecoderModel"} }), file: HFConfigFile,
			want: "architectures [VisionEncoderDecoderModel] has no *ForImageClassification"},
		{name: "encoder-decoder", bundle: vitHFTiny, edit: cfg(func(m map[string]any) { m["is_encoder_decoder"] = true }), file: HFConfigFile, want: "is_encoder_decoder: true"},
		{name: "unknown patchline key", bundle: segmentTiny, edit: cfg(func(m map[string]any) { patchline(m)["colour"] = "red" }), file: HFConfigFile, want: `patchline: unknown field "colour"`},
		{name: "patchline wrong type", bundle: segmentTiny, edit: cfg(func(m map[string]any) { patchline(m)["top_k"] = "five" }), file: HFConfigFile, want: "top_k: is a JSON string, want an integer"},
		{name: "generate task", bundle: segmentTiny, edit: cfg(func(m map[string]any) { patchline(m)["task"] = "caption" }), file: HFConfigFile, want: `patchline.task: is "caption"; the analyze stage runs segment, classify or detect`},
		{name: "no task", bundle: segmentTiny, edit: cfg(func(m map[string]any) { delete(patchline(m), "task") }), file: HFConfigFile, want: "patchline.task: is required"},
		{name: "bad input", bundle: segmentTiny, edit: cfg(func(m map[string]any) { patchline(m)["input"] = "voxels" }), file: HFConfigFile, want: `patchline.input: is "voxels"`},
		{name: "bad resize", bundle: segmentTiny, edit: cfg(func(m map[string]any) { patchline(m)["resize"] = "crop" }), file: HFConfigFile, want: `patchline.resize: is "crop"`},
		{name: "scene labels without output", bundle: segmentTiny, edit: cfg(func(m map[string]any) { patchline(m)["outputs"] = map[string]any{"patch_logits": "patch_logits"} }), file: HFConfigFile,
			want: `outputs.scene_logits ("") and scene_id2label (12 names) go together`},
		{name: "scene id gap", bundle: segmentTiny, edit: cfg(func(m map[string]any) { delete(patchline(m)["scene_id2label"].(map[string]any), "0") }), file: HFConfigFile,
			want: `patchline.scene_id2label: key "11" is not a class id 0..10`},
		{name: "classify output on segment", bundle: segmentTiny, edit: cfg(func(m map[string]any) { patchline(m)["outputs"].(map[string]any)["logits"] = "logits" }), file: HFConfigFile,
			want: "outputs.logits: is not an output of task segment"},
		{name: "segment with one label", bundle: segmentTiny, edit: cfg(func(m map[string]any) {
			m["id2label"] = map[string]any{"0": "background"}
			delete(m, "label2id")
		}), file: HFConfigFile, want: "labels: has 1 names; segment needs background"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyBundle(t, c.bundle)
			if c.edit.fn != nil {
				editJSON(t, dir, c.edit.file, c.edit.fn)
			}
			for f, content := range c.raw {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if c.remove != "" {
				if err := os.Remove(filepath.Join(dir, c.remove)); err != nil {
					t.Fatal(err)
				}
			}
			b, err := LoadBundle(dir)
			if c.want == "" {
				if err != nil {
					t.Fatalf("LoadBundle: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadBundle succeeded (%+v), want an error containing %q", b, c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), c.file) {
				t.Fatalf("err = %v\nwant it to name %s and %s and contain %q", err, dir, c.file, c.want)
			}
		})
	}
}

// The older ViTFeatureExtractor file of many hub models (e.g.
// google/vit-base-patch16-224): size as a number, no do_rescale keys (the
// transformers defaults, x/255, apply).
func TestLoadHFFeatureExtractorFormat(t *testing.T) {
	dir := copyBundle(t, vitHFTiny)
	legacy := `{"do_normalize": true, "do_resize": true, "feature_extractor_type": "ViTFeatureExtractor",
  "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 2, "size": 64}`
	if err := os.WriteFile(filepath.Join(dir, HFPreprocessorFile), []byte(legacy), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := LoadBundle(testBundleDir(t, vitHFTiny))
	if err != nil {
		t.Fatal(err)
	}
	if b.Input.Width != 64 || b.Input.Height != 64 || b.Input.PatchSize != 16 || math.Abs(b.Input.Scale-want.Input.Scale) > 1e-15 ||
		!slices.Equal(b.Input.Mean, want.Input.Mean) || !slices.Equal(b.Input.Std, want.Input.Std) {
		t.Errorf("legacy input = %+v, want %+v", b.Input, want.Input)
	}
	// do_rescale/do_normalize false: raw 0..255 values.
	editJSON(t, dir, HFPreprocessorFile, func(m map[string]any) { m["do_rescale"], m["do_normalize"] = false, false })
	if b, err = LoadBundle(dir); err != nil {
		t.Fatal(err)
	}
	if b.Input.Scale != 1 || !slices.Equal(b.Input.Mean, []float64{0, 0, 0}) || !slices.Equal(b.Input.Std, []float64{1, 1, 1}) {
		t.Errorf("no rescale/normalize input = %+v", b.Input)
	}
}

// The message format the issue asks for: "<dir as given>: <file>: <problem>".
func TestLoadHFMissingFileMessage(t *testing.T) {
	dir := copyBundle(t, vitHFTiny)
	if err := os.Remove(filepath.Join(dir, HFPreprocessorFile)); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Dir(dir))
	_, err := LoadBundle(vitHFTiny)
	if err == nil || !strings.HasPrefix(err.Error(), vitHFTiny+": preprocessor_config.json: no such file") {
		t.Fatalf("err = %v", err)
	}
	if _, err := LoadBundle("nothere"); err == nil || !strings.Contains(err.Error(), "bundle nothere: not a directory") {
		t.Errorf("missing dir: err = %v", err)
	}
	if _, err := LoadBundle(t.TempDir()); err == nil || !strings.Contains(err.Error(), "neither bundle.yaml nor config.json") {
		t.Errorf("empty dir: err = %v", err)
	}
}

func TestCheckDecodeHF(t *testing.T) {
	b, err := LoadBundle(testBundleDir(t, segmentTiny))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.CheckDecode(96, 96, 8, "stretch"); err != nil {
		t.Fatal(err)
	}
	_, err = OpenModel(b, ModelOptions{Width: 224, Height: 224, PatchSize: 16, Resize: "stretch"})
	for _, want := range []string{"decode config does not match model bundle segment-tiny", HFConfigFile + " + " + HFPreprocessorFile,
		"width 224 != 96, height 224 != 96, patch_size 16 != 8", "come from preprocessor_config.json size/patch_size"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
}

func TestOpenHFGraphMismatch(t *testing.T) {
	requireORT(t)
	cases := []struct {
		name, bundle string
		file         string
		edit         func(m map[string]any)
		opts         ModelOptions
		want         string
	}{
		{"id2label vs logits", vitHFTiny, HFConfigFile, func(m map[string]any) {
			m["id2label"] = names(3, func(i int) string { return "c" + itoa(i) })
			delete(m, "label2id")
		}, hfViTOptions(), `graph output "logits" has shape [-1 5], bundle expects [B 3]: dim 1 (classes (len(id2label) in config.json)) is 5, want 3`},
		{"size vs graph", vitHFTiny, "both", func(m map[string]any) {
			if _, ok := m["size"]; ok {
				m["size"] = map[string]any{"height": 96, "width": 64}
			} else {
				m["image_size"] = []any{96, 64}
			}
		}, ModelOptions{Width: 64, Height: 96, PatchSize: 16, Resize: "stretch"},
			`graph input "pixel_values" has shape [-1 3 64 64], bundle expects [B 3 96 64]: dim 2 (height from preprocessor_config.json) is 64, want 96`},
		{"patch size vs graph", segmentTiny, "both", func(m map[string]any) { m["patch_size"] = 16 }, ModelOptions{Width: 96, Height: 96, PatchSize: 16, Resize: "stretch"},
			"dim 1 (patches N = (96/16)*(96/16) from preprocessor_config.json) is 144, want 36; dim 2 (token P*P*3 = 16*16*3 from preprocessor_config.json) is 192, want 768"},
		{"id2label vs patch_logits", segmentTiny, HFConfigFile, func(m map[string]any) {
			m["id2label"] = names(5, func(i int) string { return "c" + itoa(i) })
			delete(m, "label2id")
		}, segmentOptions(), `graph output "patch_logits" has shape [-1 144 13], bundle expects [B 144 5]: dim 2 (classes (len(id2label) in config.json)) is 13, want 5`},
		{"scene_id2label vs scene_logits", segmentTiny, HFConfigFile, func(m map[string]any) {
			patchline(m)["scene_id2label"] = names(3, func(i int) string { return "s" + itoa(i) })
		}, segmentOptions(), `graph output "scene_logits" has shape [-1 12], bundle expects [B 3]: dim 1 (scene classes (len(scene_id2label) in config.json)) is 12, want 3`},
		{"output name", segmentTiny, HFConfigFile, func(m map[string]any) {
			patchline(m)["outputs"].(map[string]any)["patch_logits"] = "masks"
		}, segmentOptions(), `config.json patchline.outputs.patch_logits "masks" is not a graph output (graph outputs: patch_logits, scene_logits)`},
		{"input kind", segmentTiny, HFConfigFile, func(m map[string]any) {
			patchline(m)["input"] = "pixel_values"
		}, segmentOptions(), `config.json patchline.input "pixel_values" is not a graph input (graph inputs: patch_tokens)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyBundle(t, c.bundle)
			for _, f := range []string{HFConfigFile, HFPreprocessorFile} {
				if c.file == f || c.file == "both" {
					editJSON(t, dir, f, c.edit)
				}
			}
			b, err := LoadBundle(dir)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(dir, HFConfigFile) + " + " + HFPreprocessorFile; b.Descriptor() != want {
				t.Fatalf("Descriptor() = %s, want %s", b.Descriptor(), want)
			}
			requireOpenError(t, b, c.opts, c.want)
		})
	}
}

func hfViTOptions() ModelOptions {
	return ModelOptions{Threads: 1, Width: 64, Height: 64, PatchSize: 16, Resize: frame.ResizeStretch}
}

func segmentOptions() ModelOptions {
	return ModelOptions{Threads: 1, Width: 96, Height: 96, PatchSize: 8, Resize: frame.ResizeStretch}
}

func openTestBundle(t testing.TB, name string, opts ModelOptions) *Model {
	t.Helper()
	requireORT(t)
	b, err := LoadBundle(testBundleDir(t, name))
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenModel(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// expectedFrames loads a test bundle's expected/tokens_u8.bin as frames
// (source 160x120, stretched) and the torch outputs named in outputs.
func expectedFrames(t testing.TB, m *Model, outputs ...string) ([]*frame.Frame, [][]float32) {
	t.Helper()
	dir := filepath.Join(m.Bundle().Dir, "expected")
	tokens, err := os.ReadFile(filepath.Join(dir, "tokens_u8.bin"))
	if err != nil {
		t.Fatal(err)
	}
	in := m.Bundle().Input
	per := in.Width * in.Height * 3
	if len(tokens) != 2*per {
		t.Fatalf("%s: %d bytes, want %d; rerun models/train/make_test_bundles.py", dir, len(tokens), 2*per)
	}
	var frames []*frame.Frame
	for i := range 2 {
		frames = append(frames, &frame.Frame{
			Camera: "test", Seq: uint64(i + 1), SourceW: 160, SourceH: 120,
			Width: in.Width, Height: in.Height, Patch: in.PatchSize, Resize: frame.ResizeStretch,
			Transform: frame.Stretch(160, 120, in.Width, in.Height),
			Tokens:    tokens[i*per : (i+1)*per],
		})
	}
	var outs [][]float32
	for _, name := range outputs {
		outs = append(outs, testenv.ReadF32(t, filepath.Join(dir, name+"_f32.bin")))
	}
	return frames, outs
}

// requireClose fails unless got and want (ORT and torch) agree within 1e-4.
func requireClose(t testing.TB, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: ORT gave %d values, torch %d", what, len(got), len(want))
	}
	worst := 0.0
	for i := range want {
		d := math.Abs(float64(got[i] - want[i]))
		if !(d <= 1e-4) {
			t.Errorf("%s[%d]: ORT %v, torch %v (|diff| %.2g > 1e-4)", what, i, got[i], want[i], d)
		}
		worst = max(worst, d)
	}
	t.Logf("%s: max |ORT - torch| = %.2g over %d values", what, worst, len(want))
}

// An optimum-style ViT export (pixel_values, ImageNet mean/std) through the
// same OpenModel/Run path: frames are untokenized to CHW and normalised per
// channel from preprocessor_config.json.
func TestHFViTMatchesTorch(t *testing.T) {
	m := openTestBundle(t, vitHFTiny, hfViTOptions())
	frames, want := expectedFrames(t, m, "logits")
	outs, err := m.forward(frames)
	defer destroyAll(outs)
	if err != nil {
		t.Fatal(err)
	}
	requireClose(t, "logits", outs[0].(*onnxruntime.Tensor[float32]).GetData(), want[0])

	res, err := m.Run(frames)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		probs := make([]float64, 5)
		softmax(probs, want[0][i*5:(i+1)*5])
		best := 0
		for c := range probs {
			if probs[c] > probs[best] {
				best = c
			}
		}
		if len(r.Labels) != 5 || r.Labels[0].ClassID != best || r.Labels[0].Label != m.Bundle().Labels[best] || math.Abs(r.Labels[0].Score-probs[best]) > 1e-5 || r.Patches != nil {
			t.Errorf("frame %d: labels %+v, torch top-1 %d (%q) p=%v", i, r.Labels, best, m.Bundle().Labels[best], probs[best])
		}
	}
}
