package analyze

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/patchline/patchline/internal/testenv"
)

func repoRoot(t testing.TB) string { return testenv.RepoRoot(t) }

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }

// writeBundle writes a bundle.yaml into a fresh temp dir and returns the dir.
func writeBundle(t *testing.T, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, BundleFile), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// vitYAML is a valid classify descriptor pointing at the repository's
// vit-tiny ONNX file, with fields overridable by string replacement.
func vitYAML(t *testing.T) string {
	t.Helper()
	onnx := filepath.Join(repoRoot(t), "models", "vit-tiny", "model.onnx")
	return `name: vit-test
task: classify
onnx: ` + onnx + `
input:
  kind: patches
  name: patches
  width: 224
  height: 224
  patch_size: 16
  resize: stretch
  scale: 0.00392156862745098
  mean: [0.5, 0.5, 0.5]
  std: [0.5, 0.5, 0.5]
outputs:
  logits: logits
labels: [a, b, c, d, e, f, g, h, i, j]
top_k: 3
`
}

func TestLoadRepoBundles(t *testing.T) {
	root := repoRoot(t)
	b, err := LoadBundle(filepath.Join(root, "models", "vit-tiny"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Name != "vit-tiny" || b.Task != TaskClassify || b.NumPatches() != 196 || b.TokenDim() != 768 || len(b.Labels) != 10 || b.TopK != 5 {
		t.Errorf("vit-tiny bundle = %+v", b)
	}
	// The DEIMv2 descriptor only loads where the shared assets exist.
	if os.Getenv("PATCHLINE_REQUIRE_SHARED") == "" {
		if _, err := os.Stat(filepath.Join(root, "..", "shared", "assets")); err != nil {
			t.Logf("skipping deimv2-atto descriptor: ../shared/assets is absent")
			return
		}
	}
	d, err := LoadBundle(filepath.Join(root, "models", "deimv2-atto"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Task != TaskDetect || len(d.Labels) != 80 || d.Labels[0] != "person" || d.Labels[1] != "bicycle" || d.Threshold() != 0.5 || d.Outputs.BoxFormat != BoxXYXYInput {
		t.Errorf("deimv2-atto bundle = %+v", d)
	}
}

func TestLoadBundleErrors(t *testing.T) {
	cases := []struct {
		name, old, new, want string
	}{
		{"missing onnx file", "onnx: ", "onnx: nothere.onnx #", "onnx: model file nothere.onnx does not exist"},
		{"unknown key", "top_k: 3", "top_k: 3\ncolour: red", "field colour not found"},
		{"unknown nested key", "  resize: stretch", "  resize: stretch\n  mode: fast", "field mode not found"},
		{"bad task", "task: classify", "task: caption", `task: is "caption", want "classify", "detect" or "segment"`},
		{"segment without patch_logits", "task: classify", "task: segment", "outputs.patch_logits: is required for task segment"},
		{"bad kind", "kind: patches", "kind: voxels", `input.kind: is "voxels"`},
		{"patch does not divide", "patch_size: 16", "patch_size: 15", "input.patch_size: 15 does not divide"},
		{"bad resize", "resize: stretch", "resize: crop", `input.resize: is "crop"`},
		{"zero std", "std: [0.5, 0.5, 0.5]", "std: [0.5, 0, 0.5]", "input.std[1]"},
		{"short mean", "mean: [0.5, 0.5, 0.5]", "mean: [0.5]", "input.mean: has 1 values"},
		{"no labels", "labels: [a, b, c, d, e, f, g, h, i, j]", "", "labels: is required"},
		{"bad extra", "  std: [0.5, 0.5, 0.5]", "  std: [0.5, 0.5, 0.5]\n  extra:\n    - name: sizes\n      value: source_size", `input.extra[0].value: is "source_size"`},
		{"classify with boxes", "  logits: logits", "  logits: logits\n  boxes: boxes", "outputs.boxes: is only for task detect"},
		{"detect without scores", "task: classify", "task: detect", "outputs.pred_boxes: is required with outputs.logits"},
		{"bad threshold", "top_k: 3", "top_k: 3\nscore_threshold: 2", "score_threshold: is 2"},
		{"wrong type", "width: 224", "width: wide", "cannot unmarshal"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			y := vitYAML(t)
			if !strings.Contains(y, c.old) {
				t.Fatalf("test bug: %q not in descriptor", c.old)
			}
			dir := writeBundle(t, strings.Replace(y, c.old, c.new, 1))
			_, err := LoadBundle(dir)
			if err == nil {
				t.Fatalf("LoadBundle succeeded, want error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), filepath.Join(dir, BundleFile)) {
				t.Fatalf("err = %v\nwant it to name %s and contain %q", err, BundleFile, c.want)
			}
		})
	}
}

func TestLoadBundleMissingDescriptor(t *testing.T) {
	_, err := LoadBundle(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), BundleFile) {
		t.Fatalf("err = %v, want one naming %s", err, BundleFile)
	}
}

func TestLoadBundleRelativeONNX(t *testing.T) {
	dir := writeBundle(t, strings.Replace(vitYAML(t), "onnx: ", "onnx: sub/../model.onnx #", 1))
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.ONNXPath != filepath.Join(dir, "model.onnx") {
		t.Errorf("ONNXPath = %s", b.ONNXPath)
	}
}

func TestCheckDecode(t *testing.T) {
	b, err := LoadBundle(writeBundle(t, vitYAML(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.CheckDecode(224, 224, 16, "stretch"); err != nil {
		t.Fatal(err)
	}
	err = b.CheckDecode(320, 224, 8, "letterbox")
	for _, want := range []string{"width 320 != 224", "patch_size 8 != 16", `resize "letterbox" != "stretch"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "height 224") {
		t.Errorf("err = %v names height, which matches", err)
	}
}

// TestBundleKeysDocumented: the bundle.yaml reference in models/README.md
// and the doc comment on Bundle name exactly the keys the loader reads.
func TestBundleKeysDocumented(t *testing.T) {
	var want []string
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for f := range typ.Fields() {
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			want = append(want, tag)
			ft := f.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft)
			}
		}
	}
	walk(reflect.TypeFor[Bundle]())
	slices.Sort(want)
	want = slices.Compact(want)

	keyRE := regexp.MustCompile(`(?m)^\s*(?://\s*)?#?\s*(?:- )?([a-z_]+):`)
	keys := func(text string) []string {
		var ks []string
		for _, m := range keyRE.FindAllStringSubmatch(text, -1) {
			if m[1] != "pixels" && m[1] != "segment" { // headings in the comments, not keys
				ks = append(ks, m[1])
			}
		}
		slices.Sort(ks)
		return slices.Compact(ks)
	}
	readme, err := os.ReadFile("../models/README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, _ := strings.Cut(string(readme), "## bundle.yaml")
	_, block, _ = strings.Cut(block, "```yaml")
	block, _, _ = strings.Cut(block, "```")
	src, err := os.ReadFile("bundle.go")
	if err != nil {
		t.Fatal(err)
	}
	_, doc, _ := strings.Cut(string(src), "// The\n// descriptor")
	if doc == "" {
		_, doc, _ = strings.Cut(string(src), "// Bundle is a model bundle")
	}
	doc, _, _ = strings.Cut(doc, "type Bundle struct")
	for where, text := range map[string]string{"models/README.md": block, "the Bundle doc comment": doc} {
		if got := keys(text); !slices.Equal(got, want) {
			t.Errorf("%s documents keys %v,\nthe loader reads %v", where, got, want)
		}
	}
}
