package analyze

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/hfbundle"
)

// Files of a Hugging Face layout bundle.
const (
	HFConfigFile       = hfbundle.ConfigFile
	HFPreprocessorFile = hfbundle.PreprocessorFile
	HFModelFile        = "model.onnx" // default; config.json "patchline": {"onnx": ...} overrides
)

// Graph input names of the two input kinds in the Hugging Face layout
// (config.json "patchline": {"input": ...}).
const (
	HFInputPatchTokens = "patch_tokens" // float [B,N,P·P·3], InputPatches
	HFInputPixelValues = "pixel_values" // float [B,3,H,W], InputPixels
)

// HFSource records that a bundle came from the Hugging Face layout and
// whether config.json had patchline's own "patchline" object (false: a
// plain transformers/optimum export, read as an image classifier).
type HFSource struct {
	Patchline bool
}

// hfConfig is the part of a transformers config.json only the analyze
// stage reads (hfbundle.Config has the shared keys). Other keys
// (hidden_size, torch_dtype, ...) are allowed and ignored, as in
// transformers.
type hfConfig struct {
	ModelType        string            `json:"model_type"`
	Architectures    []string          `json:"architectures"`
	ID2Label         map[string]string `json:"id2label"`
	Label2ID         map[string]int    `json:"label2id"`
	IsEncoderDecoder bool              `json:"is_encoder_decoder"`
}

// hfPatchline is config.json's "patchline" object. Unknown keys are errors.
type hfPatchline struct {
	hfbundle.Patchline
	InputName      string            `json:"input_name"`
	ONNX           string            `json:"onnx"`
	Outputs        *BundleOutputs    `json:"outputs"`
	Extra          []ExtraInput      `json:"extra"`
	SceneID2Label  map[string]string `json:"scene_id2label"`
	TopK           int               `json:"top_k"`
	ScoreThreshold *float64          `json:"score_threshold"`
	MinRegion      int               `json:"min_region_patches"`
}

// idNames turns a transformers id2label map ({"0": "cat", ...}) into a slice
// indexed by class id; the ids must be 0..n-1.
func idNames(m map[string]string) ([]string, error) {
	names := make([]string, len(m))
	seen := make([]bool, len(m))
	for k, v := range m {
		id, err := strconv.Atoi(k)
		if err != nil || id < 0 || id >= len(m) {
			return nil, fmt.Errorf("key %q is not a class id 0..%d (ids must be 0..n-1 for n labels)", k, len(m)-1)
		}
		if strings.TrimSpace(v) == "" {
			return nil, fmt.Errorf("%q is empty", k)
		}
		names[id], seen[id] = v, true
	}
	if i := slices.Index(seen, false); i >= 0 {
		return nil, fmt.Errorf("class id %q is missing", strconv.Itoa(i))
	}
	return names, nil
}

// loadHF maps a Hugging Face layout bundle onto Bundle:
//
//   - config.json: id2label (class names), image_size and patch_size
//     (cross-checked), and patchline's own "patchline" object with task,
//     input, resize, outputs, scene_id2label, ... When config.json has no
//     "patchline" object it is a plain transformers/optimum export and is
//     read as an image classifier: input pixel_values [B,3,H,W], output
//     logits [B,len(id2label)], resize stretch.
//   - preprocessor_config.json: size, do_rescale/rescale_factor,
//     do_normalize/image_mean/image_std, and patchline's patch_size (the
//     frame patch side; defaults to config.json patch_size).
//   - model.onnx (or "patchline": {"onnx": ...}).
//
// dir is the directory as the caller named it (for messages), absDir its
// absolute form.
func loadHF(dir, absDir string) (*Bundle, error) {
	var cfg hfConfig
	c, err := hfbundle.ReadConfig(dir, &cfg)
	if err != nil {
		return nil, err
	}
	cerr := c.Errorf

	// The "patchline" object, or the defaults of a plain classifier export.
	pl := hfPatchline{Patchline: hfbundle.Patchline{Task: TaskClassify, Input: HFInputPixelValues, Resize: frame.ResizeStretch}}
	own := c.HasPatchline()
	if own {
		var probe struct {
			Task string `json:"task"`
		}
		if err := json.Unmarshal(c.Patchline, &probe); err != nil {
			return nil, cerr("patchline: is not an object with a \"task\" string: %s", strings.TrimPrefix(err.Error(), "json: "))
		}
		switch probe.Task {
		case TaskSegment, TaskClassify, TaskDetect:
		case "":
			return nil, cerr("patchline.task: is required (%s, %s or %s)", TaskSegment, TaskClassify, TaskDetect)
		default:
			return nil, cerr("patchline.task: is %q; the analyze stage runs %s, %s or %s", probe.Task, TaskSegment, TaskClassify, TaskDetect)
		}
		pl = hfPatchline{}
		if err := c.DecodePatchline(&pl, true); err != nil {
			return nil, err
		}
		if pl.Input == "" {
			return nil, cerr("patchline.input: is required (%q or %q)", HFInputPatchTokens, HFInputPixelValues)
		}
	} else {
		if cfg.IsEncoderDecoder {
			return nil, cerr("is an encoder-decoder model (is_encoder_decoder: true) without a \"patchline\" object; the analyze stage loads a plain transformers export only as an image classifier")
		}
		if len(cfg.Architectures) > 0 && !slices.ContainsFunc(cfg.Architectures, func(a string) bool { return strings.HasSuffix(a, "ForImageClassification") }) {
			return nil, cerr("architectures %v has no *ForImageClassification and there is no \"patchline\" object saying what the model does; the analyze stage loads a plain transformers export only as an image classifier", cfg.Architectures)
		}
	}

	b := &Bundle{
		Name: pl.Name, Task: pl.Task, ONNX: pl.ONNX, Dir: absDir,
		Path: filepath.Join(absDir, HFConfigFile), HF: &HFSource{Patchline: own},
		TopK: pl.TopK, ScoreThreshold: pl.ScoreThreshold, MinRegion: pl.MinRegion,
	}
	if b.Name == "" {
		b.Name = filepath.Base(absDir)
	}

	// Labels.
	if len(cfg.ID2Label) == 0 {
		return nil, cerr("id2label: is required (class id → name, e.g. {\"0\": \"cat\", \"1\": \"dog\"})")
	}
	labels, err := idNames(cfg.ID2Label)
	if err != nil {
		return nil, cerr("id2label: %v", err)
	}
	b.Labels = labels
	for name, id := range cfg.Label2ID {
		if id < 0 || id >= len(labels) || labels[id] != name {
			return nil, cerr("label2id: %q → %d disagrees with id2label (%d labels)", name, id, len(labels))
		}
	}
	if pl.SceneID2Label != nil {
		if b.Task != TaskSegment {
			return nil, cerr("patchline.scene_id2label: is only for task %s", TaskSegment)
		}
		if b.SceneLabels, err = idNames(pl.SceneID2Label); err != nil {
			return nil, cerr("patchline.scene_id2label: %v", err)
		}
		if len(b.SceneLabels) == 0 {
			return nil, cerr("patchline.scene_id2label: is empty")
		}
	}

	// Outputs: the bundle.yaml keys, defaulting by task.
	if pl.Outputs != nil {
		b.Outputs = *pl.Outputs
	} else {
		switch b.Task {
		case TaskClassify:
			b.Outputs.Logits = "logits"
		case TaskSegment:
			b.Outputs.PatchLogits = "patch_logits"
			if len(b.SceneLabels) > 0 {
				b.Outputs.SceneLogits = "scene_logits"
			}
		default:
			return nil, cerr("patchline.outputs: is required for task %s (labels+boxes+scores or logits+pred_boxes)", b.Task)
		}
	}
	if b.Task == TaskSegment && (b.Outputs.SceneLogits != "") != (len(b.SceneLabels) > 0) {
		return nil, cerr("patchline: outputs.scene_logits (%q) and scene_id2label (%d names) go together", b.Outputs.SceneLogits, len(b.SceneLabels))
	}

	// Input.
	in := &b.Input
	switch pl.Input {
	case HFInputPatchTokens:
		in.Kind = InputPatches
	case HFInputPixelValues:
		in.Kind = InputPixels
	default:
		return nil, cerr("patchline.input: is %q, want %q (float [B,N,P*P*3]) or %q (float [B,3,H,W])", pl.Input, HFInputPatchTokens, HFInputPixelValues)
	}
	in.Name = pl.InputName
	if in.Name == "" {
		in.Name = pl.Input
	}
	if in.Resize, err = c.CheckResize(pl.Patchline); err != nil {
		return nil, err
	}
	in.Extra = pl.Extra

	// Size, patch size and normalisation: preprocessor_config.json,
	// cross-checked with config.json image_size and patch_size.
	img, err := c.ReadPreprocessor()
	if err != nil {
		return nil, err
	}
	in.Width, in.Height, in.PatchSize = img.Width, img.Height, img.PatchSize
	in.Scale, in.Mean, in.Std = img.Scale, img.Mean, img.Std

	// The ONNX file.
	if b.ONNX == "" {
		b.ONNX = HFModelFile
	}
	b.ONNXPath = b.ONNX
	if !filepath.IsAbs(b.ONNXPath) {
		b.ONNXPath = filepath.Join(absDir, b.ONNX)
	}
	if st, err := os.Stat(b.ONNXPath); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, hfbundle.Errorf(dir, b.ONNX, "no such file (the model graph; config.json \"patchline\": {\"onnx\": ...} names another)")
		}
		return nil, hfbundle.Errorf(dir, b.ONNX, "%v", err)
	} else if st.IsDir() {
		return nil, hfbundle.Errorf(dir, b.ONNX, "is a directory, not an .onnx file")
	}

	// Everything else (outputs per task, extra inputs, thresholds) is checked
	// as for bundle.yaml; such errors name config.json and the bundle.yaml key,
	// which is the key under "patchline".
	if err := b.validate(); err != nil {
		return nil, err
	}
	return b, nil
}

// inputSource says where the bundle's input size, patch and resize come
// from, for decode mismatch messages.
func (b *Bundle) inputSource() string {
	if b.HF == nil {
		return ""
	}
	return "; the bundle's come from " + HFPreprocessorFile + " size/patch_size and " + HFConfigFile + " patchline.resize"
}

// graphKey names a bundle setting for graph mismatch messages: the
// bundle.yaml key, or where the Hugging Face layout keeps it.
func (b *Bundle) graphKey(key string) string {
	if b.HF == nil {
		return key
	}
	switch {
	case key == "input.name" && b.HF.Patchline:
		return HFConfigFile + " patchline.input"
	case key == "input.name":
		return "input (a plain transformers export)"
	case strings.HasPrefix(key, "outputs.") && b.HF.Patchline:
		return HFConfigFile + " patchline." + key
	case strings.HasPrefix(key, "outputs."):
		return "output (a plain transformers export)"
	case strings.HasPrefix(key, "input.extra"):
		return HFConfigFile + " patchline." + strings.TrimPrefix(key, "input.")
	}
	return key
}

// labelsKey names where the class names come from, for messages.
func (b *Bundle) labelsKey(scene bool) string {
	switch {
	case b.HF != nil && scene:
		return "len(scene_id2label) in " + HFConfigFile
	case b.HF != nil:
		return "len(id2label) in " + HFConfigFile
	case scene:
		return "len(scene_labels)"
	}
	return "len(labels)"
}
