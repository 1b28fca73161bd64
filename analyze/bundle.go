// Package analyze runs the model on batches of tokenized frames and publishes
// annotations. A model comes as a bundle (see Bundle): an ONNX file plus a
// descriptor saying how to feed it and how to read its outputs — either
// patchline's bundle.yaml or the Hugging Face layout (config.json +
// preprocessor_config.json, see hf.go).
package analyze

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/patchline/patchline/internal/frame"
)

// BundleFile is the descriptor's file name inside a bundle directory.
const BundleFile = "bundle.yaml"

// Tasks a bundle can declare.
const (
	TaskClassify = "classify"
	TaskDetect   = "detect"
	// TaskSegment reads per-patch class logits (class 0 = background) and
	// optional scene-level multi-label logits; see Model.segment.
	TaskSegment = "segment"
)

// Input kinds: how frames are turned into the model's main input tensor.
const (
	// InputPatches feeds the frame's patch tokens as float [B, N, P·P·3],
	// N = (W/P)·(H/P), in the frame payload's order.
	InputPatches = "patches"
	// InputPixels untokenizes the frame and feeds float [B, 3, H, W] (RGB, CHW).
	InputPixels = "pixels"
)

// ExtraInputSize is the one extra-input value: int64 [B, 2] holding the model
// input's (width, height), so detectors report boxes in input pixels.
const ExtraInputSize = "input_size"

// Box formats of detector outputs.
const (
	BoxXYXYInput  = "xyxy_input"  // x1,y1,x2,y2 in model-input pixels
	BoxXYXYNorm   = "xyxy_norm"   // x1,y1,x2,y2 normalised to [0,1] of the input
	BoxCXCYWHNorm = "cxcywh_norm" // centre x, centre y, width, height normalised (DETR)
)

// Score activations for DETR-style detectors that output raw class logits.
const (
	ActivationSigmoid = "sigmoid" // per-class sigmoid (RT-DETR, DEIM); score = max over classes
	ActivationSoftmax = "softmax" // softmax over classes; a last extra class is "no object" (DETR)
)

// Bundle is a model bundle: a directory holding bundle.yaml, which names an
// ONNX file and says how to feed and read it. The descriptor (all keys shown;
// unknown keys are errors):
//
//	name: vit-tiny            # model name carried in annotations
//	task: classify            # classify | detect | segment
//	onnx: model.onnx          # relative to the bundle dir (may lead outside it) or absolute
//	input:
//	  kind: patches           # patches: float [B,N,P*P*3] ; pixels: float [B,3,H,W]
//	  name: patches           # graph input name
//	  width: 224              # model input size; the decode config must match
//	  height: 224
//	  patch_size: 16          # frame patch side; must divide width and height
//	  resize: stretch         # stretch | letterbox, as the model was trained
//	  scale: 0.00392156862745098  # value = (u8*scale - mean[c]) / std[c]
//	  mean: [0.5, 0.5, 0.5]   # per RGB channel; default 0
//	  std: [0.5, 0.5, 0.5]    # per RGB channel; default 1
//	  extra:                  # further graph inputs, filled per frame
//	    - name: orig_target_sizes
//	      value: input_size   # int64 [B,2] = (width, height) of the model input
//	outputs:
//	  logits: logits          # classify: float [B,C]; detect (DETR): float [B,Q,C]
//	  pred_boxes: pred_boxes  # detect (DETR): float [B,Q,4], with logits
//	  labels: labels          # detect: int64 [B,Q] class ids
//	  boxes: boxes            # detect: float [B,Q,4]
//	  scores: scores          # detect: float [B,Q]
//	  box_format: xyxy_input  # xyxy_input | xyxy_norm | cxcywh_norm; default xyxy_input,
//	                          # or cxcywh_norm with pred_boxes
//	  activation: sigmoid     # DETR logits only: sigmoid (default) | softmax
//	  patch_logits: patch_logits  # segment: float [B,N,C], class 0 = background
//	  scene_logits: scene_logits  # segment, optional: float [B,S] multi-label logits
//	labels: [person, ...]     # index = class id
//	scene_labels: [...]       # segment: names of scene_logits, index = id
//	top_k: 5                  # classify: labels reported per frame; default 5
//	score_threshold: 0.5      # detect: minimum score; default 0.5
//	                          # segment: minimum region score; default 0
//	min_region_patches: 2     # segment: smallest region reported as a box; default 1
//
// A detect bundle names either labels+boxes+scores or logits+pred_boxes.
// Boxes are converted to input pixels, then mapped to source pixels with the
// frame's Transform. A Hugging Face layout bundle (config.json +
// preprocessor_config.json) is mapped onto the same struct by loadHF.
type Bundle struct {
	Name           string        `yaml:"name"`
	Task           string        `yaml:"task"`
	ONNX           string        `yaml:"onnx"`
	Input          BundleInput   `yaml:"input"`
	Outputs        BundleOutputs `yaml:"outputs"`
	Labels         []string      `yaml:"labels"`
	SceneLabels    []string      `yaml:"scene_labels"`
	TopK           int           `yaml:"top_k"`
	ScoreThreshold *float64      `yaml:"score_threshold"`
	// MinRegion is segment's smallest reported region, in patches (default 1).
	MinRegion int `yaml:"min_region_patches"`

	// Dir is the bundle directory (absolute), Path its descriptor
	// (bundle.yaml, or config.json for the Hugging Face layout), and
	// ONNXPath the ONNX file resolved against Dir. Set by LoadBundle.
	Dir      string `yaml:"-"`
	Path     string `yaml:"-"`
	ONNXPath string `yaml:"-"`
	// HF is set for a Hugging Face layout bundle: where each setting came
	// from, so errors name config.json / preprocessor_config.json keys.
	HF *HFSource `yaml:"-"`
}

// BundleInput describes the model's main input and how frames fill it.
type BundleInput struct {
	Kind      string       `yaml:"kind"`
	Name      string       `yaml:"name"`
	Width     int          `yaml:"width"`
	Height    int          `yaml:"height"`
	PatchSize int          `yaml:"patch_size"`
	Resize    string       `yaml:"resize"`
	Scale     float64      `yaml:"scale"`
	Mean      []float64    `yaml:"mean"`
	Std       []float64    `yaml:"std"`
	Extra     []ExtraInput `yaml:"extra"`
}

// ExtraInput is a further graph input, filled per frame from Value.
type ExtraInput struct {
	Name  string `yaml:"name" json:"name"`
	Value string `yaml:"value" json:"value"`
}

// BundleOutputs names the graph outputs the task reads.
// The json names are the keys of config.json "patchline": {"outputs": {...}}.
type BundleOutputs struct {
	Logits      string `yaml:"logits" json:"logits"`
	PredBoxes   string `yaml:"pred_boxes" json:"pred_boxes"`
	Labels      string `yaml:"labels" json:"labels"`
	Boxes       string `yaml:"boxes" json:"boxes"`
	Scores      string `yaml:"scores" json:"scores"`
	BoxFormat   string `yaml:"box_format" json:"box_format"`
	Activation  string `yaml:"activation" json:"activation"`
	PatchLogits string `yaml:"patch_logits" json:"patch_logits"`
	SceneLogits string `yaml:"scene_logits" json:"scene_logits"`
}

// DETR reports whether a detect bundle reads raw logits + pred_boxes rather
// than labels + boxes + scores.
func (b *Bundle) DETR() bool { return b.Task == TaskDetect && b.Outputs.PredBoxes != "" }

// Threshold is the detection score threshold (default 0.5), or for segment
// the minimum region score (default 0).
func (b *Bundle) Threshold() float64 {
	if b.ScoreThreshold == nil {
		if b.Task == TaskSegment {
			return 0
		}
		return 0.5
	}
	return *b.ScoreThreshold
}

// Grid is the patch grid: columns and rows.
func (b *Bundle) Grid() (cols, rows int) {
	return b.Input.Width / b.Input.PatchSize, b.Input.Height / b.Input.PatchSize
}

// Descriptor names the file(s) describing the bundle, for messages.
func (b *Bundle) Descriptor() string {
	if b.HF != nil {
		return filepath.Join(b.Dir, HFConfigFile) + " + " + HFPreprocessorFile
	}
	return b.Path
}

// NumPatches is the number of patch tokens per frame.
func (b *Bundle) NumPatches() int {
	return (b.Input.Width / b.Input.PatchSize) * (b.Input.Height / b.Input.PatchSize)
}

// TokenDim is the length of one patch token (P·P·3).
func (b *Bundle) TokenDim() int { return b.Input.PatchSize * b.Input.PatchSize * 3 }

// LoadBundle reads and validates a bundle directory: dir/bundle.yaml when it
// exists, else the Hugging Face layout (dir/config.json +
// dir/preprocessor_config.json + the ONNX file, see loadHF). Errors name the
// directory, the file and the offending key.
func LoadBundle(dir string) (*Bundle, error) {
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", dir, err)
	}
	path := filepath.Join(absDir, BundleFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(filepath.Join(absDir, HFConfigFile)); serr == nil {
			return loadHF(dir, absDir)
		}
		if st, serr := os.Stat(absDir); serr != nil || !st.IsDir() {
			where := ""
			if wd, err := os.Getwd(); err == nil && !filepath.IsAbs(dir) {
				where = ", relative to the working directory " + wd
			}
			return nil, fmt.Errorf("bundle %s: not a directory (analyze.model names a bundle directory%s)", dir, where)
		}
		return nil, fmt.Errorf("bundle %s: neither %s nor %s (Hugging Face layout) is there", dir, BundleFile, HFConfigFile)
	}
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", dir, err)
	}
	b := &Bundle{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(b); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("bundle %s: file is empty", path)
		}
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	b.Dir, b.Path = absDir, path
	if err := b.validate(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Bundle) errf(key, format string, args ...any) error {
	return fmt.Errorf("bundle %s: %s: %s", b.Path, key, fmt.Sprintf(format, args...))
}

func (b *Bundle) validate() error {
	if b.Name == "" {
		return b.errf("name", "is required")
	}
	if b.Task != TaskClassify && b.Task != TaskDetect && b.Task != TaskSegment {
		return b.errf("task", "is %q, want %q, %q or %q", b.Task, TaskClassify, TaskDetect, TaskSegment)
	}
	if b.ONNX == "" {
		return b.errf("onnx", "is required (path of the .onnx file, relative to the bundle directory)")
	}
	b.ONNXPath = b.ONNX
	if !filepath.IsAbs(b.ONNXPath) {
		b.ONNXPath = filepath.Join(b.Dir, b.ONNX)
	}
	if st, err := os.Stat(b.ONNXPath); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return b.errf("onnx", "model file %s does not exist (resolved to %s)", b.ONNX, b.ONNXPath)
		}
		return b.errf("onnx", "%v", err)
	} else if st.IsDir() {
		return b.errf("onnx", "%s is a directory, not an .onnx file", b.ONNXPath)
	}
	if err := b.validateInput(); err != nil {
		return err
	}
	if err := b.validateOutputs(); err != nil {
		return err
	}
	if len(b.Labels) == 0 {
		return b.errf("labels", "is required (one name per class id)")
	}
	for i, l := range b.Labels {
		if strings.TrimSpace(l) == "" {
			return b.errf(fmt.Sprintf("labels[%d]", i), "is empty")
		}
	}
	if b.Task == TaskSegment && len(b.Labels) < 2 {
		return b.errf("labels", "has %d names; segment needs background (class 0) and at least one class", len(b.Labels))
	}
	if b.Task != TaskSegment && b.SceneLabels != nil {
		return b.errf("scene_labels", "is only for task %s", TaskSegment)
	}
	if (b.Outputs.SceneLogits != "") != (len(b.SceneLabels) > 0) {
		return b.errf("scene_labels", "has %d names; give scene_labels exactly when outputs.scene_logits is set (%q)", len(b.SceneLabels), b.Outputs.SceneLogits)
	}
	for i, l := range b.SceneLabels {
		if strings.TrimSpace(l) == "" {
			return b.errf(fmt.Sprintf("scene_labels[%d]", i), "is empty")
		}
	}
	if b.TopK < 0 {
		return b.errf("top_k", "is %d, must be positive", b.TopK)
	}
	if b.TopK == 0 {
		b.TopK = 5
	}
	b.TopK = min(b.TopK, len(b.Labels))
	if b.MinRegion < 0 {
		return b.errf("min_region_patches", "is %d, want >= 0", b.MinRegion)
	}
	if t := b.ScoreThreshold; t != nil && (math.IsNaN(*t) || *t < 0 || *t > 1) {
		return b.errf("score_threshold", "is %v, want 0..1", *t)
	}
	if b.ScoreThreshold == nil {
		t := b.Threshold()
		b.ScoreThreshold = &t
	}
	return nil
}

func (b *Bundle) validateInput() error {
	in := &b.Input
	if in.Kind != InputPatches && in.Kind != InputPixels {
		return b.errf("input.kind", "is %q, want %q or %q", in.Kind, InputPatches, InputPixels)
	}
	if in.Name == "" {
		return b.errf("input.name", "is required (the graph input name)")
	}
	if in.Width < 1 || in.Width > frame.MaxSide {
		return b.errf("input.width", "is %d, want 1..%d", in.Width, frame.MaxSide)
	}
	if in.Height < 1 || in.Height > frame.MaxSide {
		return b.errf("input.height", "is %d, want 1..%d", in.Height, frame.MaxSide)
	}
	if in.PatchSize < 1 || in.Width%in.PatchSize != 0 || in.Height%in.PatchSize != 0 {
		return b.errf("input.patch_size", "%d does not divide the input size %dx%d", in.PatchSize, in.Width, in.Height)
	}
	if in.Resize != frame.ResizeStretch && in.Resize != frame.ResizeLetterbox {
		return b.errf("input.resize", "is %q, want %q or %q", in.Resize, frame.ResizeStretch, frame.ResizeLetterbox)
	}
	if !(in.Scale > 0) || math.IsInf(in.Scale, 0) {
		return b.errf("input.scale", "is %v, want a positive number (e.g. 0.00392156862745098 for x/255)", in.Scale)
	}
	if in.Mean == nil {
		in.Mean = []float64{0, 0, 0}
	}
	if in.Std == nil {
		in.Std = []float64{1, 1, 1}
	}
	if len(in.Mean) != 3 {
		return b.errf("input.mean", "has %d values, want 3 (R, G, B)", len(in.Mean))
	}
	if len(in.Std) != 3 {
		return b.errf("input.std", "has %d values, want 3 (R, G, B)", len(in.Std))
	}
	for c := range 3 {
		if math.IsNaN(in.Mean[c]) || math.IsInf(in.Mean[c], 0) {
			return b.errf(fmt.Sprintf("input.mean[%d]", c), "is %v", in.Mean[c])
		}
		if in.Std[c] == 0 || math.IsNaN(in.Std[c]) || math.IsInf(in.Std[c], 0) {
			return b.errf(fmt.Sprintf("input.std[%d]", c), "is %v, want a non-zero number", in.Std[c])
		}
	}
	seen := map[string]bool{in.Name: true}
	for i, e := range in.Extra {
		key := fmt.Sprintf("input.extra[%d]", i)
		if e.Name == "" {
			return b.errf(key+".name", "is required")
		}
		if seen[e.Name] {
			return b.errf(key+".name", "%q is fed twice", e.Name)
		}
		seen[e.Name] = true
		if e.Value != ExtraInputSize {
			return b.errf(key+".value", "is %q, want %q", e.Value, ExtraInputSize)
		}
	}
	return nil
}

func (b *Bundle) validateOutputs() error {
	o := &b.Outputs
	if b.Task != TaskSegment {
		for _, kv := range [][2]string{{"patch_logits", o.PatchLogits}, {"scene_logits", o.SceneLogits}} {
			if kv[1] != "" {
				return b.errf("outputs."+kv[0], "is only for task %s", TaskSegment)
			}
		}
	}
	switch b.Task {
	case TaskSegment:
		if o.PatchLogits == "" {
			return b.errf("outputs.patch_logits", "is required for task %s", b.Task)
		}
		for key, v := range map[string]string{"logits": o.Logits, "pred_boxes": o.PredBoxes, "labels": o.Labels, "boxes": o.Boxes, "scores": o.Scores, "box_format": o.BoxFormat, "activation": o.Activation} {
			if v != "" {
				return b.errf("outputs."+key, "is not an output of task %s (patch_logits, scene_logits)", TaskSegment)
			}
		}
		if o.SceneLogits != "" && o.SceneLogits == o.PatchLogits {
			return b.errf("outputs.scene_logits", "%q is also outputs.patch_logits", o.SceneLogits)
		}
	case TaskClassify:
		if o.Logits == "" {
			return b.errf("outputs.logits", "is required for task %s", b.Task)
		}
		for key, v := range map[string]string{"pred_boxes": o.PredBoxes, "labels": o.Labels, "boxes": o.Boxes, "scores": o.Scores, "box_format": o.BoxFormat, "activation": o.Activation} {
			if v != "" {
				return b.errf("outputs."+key, "is only for task %s", TaskDetect)
			}
		}
	case TaskDetect:
		detr := o.Logits != "" || o.PredBoxes != ""
		plain := o.Labels != "" || o.Boxes != "" || o.Scores != ""
		switch {
		case detr && plain:
			return b.errf("outputs", "name either labels+boxes+scores or logits+pred_boxes, not both")
		case detr:
			if o.Logits == "" {
				return b.errf("outputs.logits", "is required with outputs.pred_boxes")
			}
			if o.PredBoxes == "" {
				return b.errf("outputs.pred_boxes", "is required with outputs.logits for task %s", b.Task)
			}
			if o.BoxFormat == "" {
				o.BoxFormat = BoxCXCYWHNorm
			}
			if o.Activation == "" {
				o.Activation = ActivationSigmoid
			}
			if o.Activation != ActivationSigmoid && o.Activation != ActivationSoftmax {
				return b.errf("outputs.activation", "is %q, want %q or %q", o.Activation, ActivationSigmoid, ActivationSoftmax)
			}
		default:
			for key, v := range map[string]string{"labels": o.Labels, "boxes": o.Boxes, "scores": o.Scores} {
				if v == "" {
					return b.errf("outputs."+key, "is required for task %s (or name logits+pred_boxes)", b.Task)
				}
			}
			if o.Activation != "" {
				return b.errf("outputs.activation", "is only for logits+pred_boxes outputs")
			}
			if o.BoxFormat == "" {
				o.BoxFormat = BoxXYXYInput
			}
		}
		if o.BoxFormat != BoxXYXYInput && o.BoxFormat != BoxXYXYNorm && o.BoxFormat != BoxCXCYWHNorm {
			return b.errf("outputs.box_format", "is %q, want %q, %q or %q", o.BoxFormat, BoxXYXYInput, BoxXYXYNorm, BoxCXCYWHNorm)
		}
	}
	return nil
}

// CheckDecode reports whether frames decoded at width×height with patch side
// patch and the given resize mode fit the bundle; the error lists every
// mismatching setting.
func (b *Bundle) CheckDecode(width, height, patch int, resize string) error {
	var bad []string
	if width != b.Input.Width {
		bad = append(bad, fmt.Sprintf("width %d != %d", width, b.Input.Width))
	}
	if height != b.Input.Height {
		bad = append(bad, fmt.Sprintf("height %d != %d", height, b.Input.Height))
	}
	if patch != b.Input.PatchSize {
		bad = append(bad, fmt.Sprintf("patch_size %d != %d", patch, b.Input.PatchSize))
	}
	if resize != b.Input.Resize {
		bad = append(bad, fmt.Sprintf("resize %q != %q", resize, b.Input.Resize))
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("decode config does not match model bundle %s (%s): %s (decode.width/height/patch_size/resize must equal the bundle's input%s)",
		b.Name, b.Descriptor(), strings.Join(bad, ", "), b.inputSource())
}
