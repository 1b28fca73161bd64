package hfbundle

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// bundle writes config.json and preprocessor_config.json (when not "") into
// a temporary directory.
func bundle(t *testing.T, config, pre string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{ConfigFile: config, PreprocessorFile: pre} {
		if content == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const goodPre = `{"do_resize": true, "size": {"height": 96, "width": 64}, "resample": 2, "do_rescale": true,
 "rescale_factor": 0.00392156862745098, "do_normalize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.25, 0.5], "patch_size": 8}`

func TestReadPreprocessor(t *testing.T) {
	dir := bundle(t, `{"model_type": "x", "num_frames": 3, "patchline": {"name": "m", "task": "framegen", "input": "patch_tokens", "extra_key": 1}}`, goodPre)
	var own struct {
		NumFrames int `json:"num_frames"`
	}
	c, err := ReadConfig(dir, &own)
	if err != nil {
		t.Fatal(err)
	}
	if own.NumFrames != 3 || !c.HasPatchline() {
		t.Fatalf("num_frames %d, patchline %q", own.NumFrames, c.Patchline)
	}
	var pl struct {
		Patchline
		Threshold float64 `json:"threshold"`
	}
	if err := c.DecodePatchline(&pl, false); err != nil {
		t.Fatal(err)
	}
	if pl.Name != "m" || pl.Task != "framegen" || pl.Input != "patch_tokens" {
		t.Errorf("patchline = %+v", pl)
	}
	if err := c.DecodePatchline(&pl, true); err == nil || !strings.Contains(err.Error(), `patchline: unknown field "extra_key"`) {
		t.Errorf("strict decode: err = %v, want unknown field", err)
	}
	if r, err := c.CheckResize(pl.Patchline); err != nil || r != "stretch" {
		t.Errorf("CheckResize(\"\") = %q, %v; want stretch", r, err)
	}
	if _, err := c.CheckResize(Patchline{Resize: "crop"}); err == nil || !strings.Contains(err.Error(), `config.json: patchline.resize: is "crop"`) {
		t.Errorf("CheckResize(crop) = %v", err)
	}
	im, err := c.ReadPreprocessor()
	if err != nil {
		t.Fatal(err)
	}
	if im.Width != 64 || im.Height != 96 || im.PatchSize != 8 || im.Scale != 1.0/255 || !slices.Equal(im.Std, []float64{0.5, 0.25, 0.5}) {
		t.Errorf("image = %+v", im)
	}
	lut := im.LUT()
	for _, c := range []struct {
		ch, v int
		want  float64
	}{{0, 0, -1}, {0, 255, 1}, {1, 255, 2}, {2, 51, (0.2 - 0.5) / 0.5}} {
		if math.Abs(float64(lut[c.ch][c.v])-c.want) > 1e-6 {
			t.Errorf("lut[%d][%d] = %v, want %v", c.ch, c.v, lut[c.ch][c.v], c.want)
		}
	}
}

// A plain transformers vision export: size as a number, no rescale keys
// (x/255 applies), patch_size only in config.json.
func TestReadPreprocessorDefaults(t *testing.T) {
	dir := bundle(t, `{"image_size": 64, "patch_size": 16, "num_channels": 3}`,
		`{"do_normalize": true, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "size": 64}`)
	c, err := ReadConfig(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HasPatchline() {
		t.Error("HasPatchline = true without a patchline object")
	}
	im, err := c.ReadPreprocessor()
	if err != nil {
		t.Fatal(err)
	}
	if im.Width != 64 || im.Height != 64 || im.PatchSize != 16 || im.Scale != 1.0/255 {
		t.Errorf("image = %+v", im)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name, config, pre string
		file, want        string
	}{
		{"no config", "", goodPre, ConfigFile, "no such file"},
		{"no preprocessor", `{}`, "", PreprocessorFile, "no such file"},
		{"bad json", "{\n  \"a\": 1,,\n}", goodPre, ConfigFile, "line 2: invalid JSON"},
		{"not an object", `[1]`, goodPre, ConfigFile, "line 1: is a JSON array, want an object"},
		{"wrong type", `{}`, `{"image_mean": "imagenet"}`, PreprocessorFile, "image_mean: is a JSON string, want a list of numbers"},
		{"own key wrong type", `{"num_frames": "three"}`, goodPre, ConfigFile, "num_frames: is a JSON string, want an integer"},
		{"grey", `{"num_channels": 1}`, goodPre, ConfigFile, "num_channels: is 1"},
		{"bad image_size", `{"image_size": "big"}`, goodPre, ConfigFile, `image_size: is "big", want a number`},
		{"no size", `{}`, `{"patch_size": 8}`, PreprocessorFile, "size: is required"},
		{"size vs image_size", `{"image_size": 32}`, goodPre, PreprocessorFile, "size: 64x96 disagrees with config.json image_size 32x32"},
		{"shortest edge", `{}`, `{"size": {"shortest_edge": 224}, "patch_size": 8}`, PreprocessorFile, `size: {"shortest_edge": 224}`},
		{"too big", `{}`, `{"size": 100000, "patch_size": 8}`, PreprocessorFile, "size: 100000x100000, want each side 1.."},
		{"no resize", `{}`, `{"size": 64, "patch_size": 8, "do_resize": false}`, PreprocessorFile, "do_resize: is false"},
		{"center crop", `{}`, `{"size": 64, "patch_size": 8, "do_center_crop": true}`, PreprocessorFile, "do_center_crop: is true"},
		{"pad", `{}`, `{"size": 64, "patch_size": 8, "do_pad": true}`, PreprocessorFile, "do_pad: is true"},
		{"resample", `{}`, `{"size": 64, "patch_size": 8, "resample": 9}`, PreprocessorFile, "resample: is 9"},
		{"patch sizes disagree", `{"patch_size": 16}`, goodPre, PreprocessorFile, "patch_size: 8 disagrees with config.json patch_size 16"},
		{"no patch size", `{}`, `{"size": 64}`, PreprocessorFile, "patch_size: is required"},
		{"patch does not divide", `{}`, `{"size": 64, "patch_size": 24}`, PreprocessorFile, "patch_size: 24 does not divide size 64x64"},
		{"bad rescale", `{}`, `{"size": 64, "patch_size": 8, "rescale_factor": -1}`, PreprocessorFile, "rescale_factor: is -1"},
		{"short mean", `{}`, `{"size": 64, "patch_size": 8, "image_mean": [0.5], "image_std": [1, 1, 1]}`, PreprocessorFile, "image_mean: has 1 values, want 3"},
		{"zero std", `{}`, `{"size": 64, "patch_size": 8, "image_mean": [0, 0, 0], "image_std": [1, 0, 1]}`, PreprocessorFile, "image_std[1]: is 0"},
		{"negative std", `{}`, `{"size": 64, "patch_size": 8, "image_mean": [0, 0, 0], "image_std": [1, 1, -2]}`, PreprocessorFile, "image_std[2]: is -2, want > 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := bundle(t, c.config, c.pre)
			var own struct {
				NumFrames int `json:"num_frames"`
			}
			cfg, err := ReadConfig(dir, &own)
			if err == nil {
				_, err = cfg.ReadPreprocessor()
			}
			if err == nil {
				t.Fatalf("no error, want one containing %q", c.want)
			}
			if prefix := dir + ": " + c.file + ": "; !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v\nwant it to start %q and contain %q", err, prefix, c.want)
			}
		})
	}
}

// Normalisation off: raw 0..255 values.
func TestNoRescaleNoNormalize(t *testing.T) {
	dir := bundle(t, `{}`, `{"size": [32, 48], "patch_size": 16, "do_rescale": false, "do_normalize": false, "image_std": [0, 0, 0]}`)
	c, err := ReadConfig(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	im, err := c.ReadPreprocessor()
	if err != nil {
		t.Fatal(err)
	}
	if im.Width != 48 || im.Height != 32 || im.Scale != 1 || im.LUT()[1][200] != 200 {
		t.Errorf("image = %+v", im)
	}
}
