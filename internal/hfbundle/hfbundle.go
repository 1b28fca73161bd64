// Package hfbundle reads the two JSON files every Hugging Face layout model
// bundle has (analyze's classify/segment/detect bundles, generate's framegen
// and caption bundles): config.json and preprocessor_config.json.
//
// It owns what the readers share: reading a file with errors that name the
// bundle directory, the file, the line and the key; config.json's vision keys
// (image_size, patch_size, num_channels) and patchline's "patchline" object
// (name, task, input, resize); and the whole of preprocessor_config.json
// (size, patch_size, resampling, rescaling and normalisation), validated into
// an Image. Each reader keeps its own struct for the keys only it reads and
// its own checks of them.
//
// Every error reads "<dir>: <file>: <problem>", dir as the caller named it.
package hfbundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/patchline/patchline/internal/frame"
)

// Files of a Hugging Face layout bundle.
const (
	ConfigFile       = "config.json"
	PreprocessorFile = "preprocessor_config.json"
)

// Errorf builds an error naming the bundle dir, the file and the problem:
// "models/x: preprocessor_config.json: size: ...".
func Errorf(dir, file, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", dir, file, fmt.Sprintf(format, args...))
}

// ReadJSON reads dir/file into v and returns the file's bytes. A missing
// file, bad JSON and wrong types are errors naming dir, file, the line and
// the key.
func ReadJSON(dir, file string, v any) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(dir, file))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Errorf(dir, file, "no such file (a Hugging Face layout bundle needs %s, %s and the .onnx file)", ConfigFile, PreprocessorFile)
	}
	if err != nil {
		return nil, Errorf(dir, file, "%v", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, Errorf(dir, file, "%s", JSONError(data, 0, err))
	}
	return data, nil
}

// JSONError turns an encoding/json error into "line L: key: ..."; the
// error's offsets count from data[base:].
func JSONError(data []byte, base int64, err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("line %d: invalid JSON: %v", lineOf(data, base+syn.Offset), syn)
	case errors.As(err, &typ):
		want := typ.Type.String()
		switch typ.Type.Kind() {
		case reflect.Struct, reflect.Map:
			want = "an object"
		case reflect.Slice:
			want = map[reflect.Kind]string{reflect.Float64: "a list of numbers", reflect.String: "a list of strings", reflect.Int: "a list of integers"}[typ.Type.Elem().Kind()]
		case reflect.Int, reflect.Int64:
			want = "an integer"
		case reflect.Float64:
			want = "a number"
		case reflect.Bool:
			want = "true or false"
		}
		if want == "" {
			want = "a list"
		}
		if typ.Field == "" {
			return fmt.Sprintf("line %d: is a JSON %s, want %s", lineOf(data, base+typ.Offset), typ.Value, want)
		}
		return fmt.Sprintf("line %d: %s: is a JSON %s, want %s", lineOf(data, base+typ.Offset), typ.Field, typ.Value, want)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func lineOf(data []byte, offset int64) int {
	offset = min(max(offset, 0), int64(len(data)))
	return 1 + bytes.Count(data[:offset], []byte("\n"))
}

// Vision is the part of a transformers vision config.json that the
// preprocessing cross-checks: preprocessor_config.json size and patch_size
// default to image_size and patch_size and must agree with them.
type Vision struct {
	ImageSize   json.RawMessage `json:"image_size"`
	PatchSize   json.RawMessage `json:"patch_size"`
	NumChannels *int            `json:"num_channels"`
}

// Config is a config.json as read: the keys every reader shares. Readers
// read their own keys with their own struct (see ReadConfig).
type Config struct {
	Dir  string `json:"-"` // the bundle directory as the caller named it
	Data []byte `json:"-"` // the file, for line numbers
	Vision
	// Patchline is the "patchline" object, raw; absent or null for a plain
	// transformers/optimum export (see HasPatchline, DecodePatchline).
	Patchline json.RawMessage `json:"patchline"`
}

// Patchline is the part of config.json's "patchline" object every task
// shares. Readers embed it in their struct of the object.
type Patchline struct {
	Name   string `json:"name"`
	Task   string `json:"task"`
	Input  string `json:"input"`
	Resize string `json:"resize"`
}

// ReadConfig reads dir/config.json into v (the reader's own keys; nil for
// none) and returns the shared keys.
func ReadConfig(dir string, v any) (*Config, error) {
	c := &Config{Dir: dir}
	data, err := ReadJSON(dir, ConfigFile, c)
	if err != nil {
		return nil, err
	}
	c.Data = data
	if v != nil {
		if err := json.Unmarshal(data, v); err != nil {
			return nil, c.Errorf("%s", JSONError(data, 0, err))
		}
	}
	return c, nil
}

// Errorf builds an error naming the bundle dir, config.json and the problem.
func (c *Config) Errorf(format string, args ...any) error {
	return Errorf(c.Dir, ConfigFile, format, args...)
}

// HasPatchline reports whether config.json has a (non-null) "patchline"
// object.
func (c *Config) HasPatchline() bool {
	return len(c.Patchline) > 0 && string(c.Patchline) != "null"
}

// DecodePatchline decodes the "patchline" object into v, a struct that
// embeds Patchline. With strict, keys v does not have are errors. Errors
// name the line in config.json and the key.
func (c *Config) DecodePatchline(v any, strict bool) error {
	dec := json.NewDecoder(bytes.NewReader(c.Patchline))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return c.Errorf("patchline: %s", JSONError(c.Data, int64(max(0, bytes.Index(c.Data, c.Patchline))), err))
	}
	return nil
}

// CheckResize checks patchline.resize ("" is the default, stretch) and
// returns the resize mode.
func (c *Config) CheckResize(p Patchline) (string, error) {
	switch p.Resize {
	case "":
		return frame.ResizeStretch, nil
	case frame.ResizeStretch, frame.ResizeLetterbox:
		return p.Resize, nil
	}
	return "", c.Errorf("patchline.resize: is %q, want %q or %q", p.Resize, frame.ResizeStretch, frame.ResizeLetterbox)
}

// Preprocessor is the part of a transformers image processor config
// (preprocessor_config.json) patchline reads, plus patchline's
// "patch_size" (the frame patch side).
type Preprocessor struct {
	DoResize      *bool           `json:"do_resize"`
	Size          json.RawMessage `json:"size"`
	Resample      *int            `json:"resample"`
	DoRescale     *bool           `json:"do_rescale"`
	RescaleFactor *float64        `json:"rescale_factor"`
	DoNormalize   *bool           `json:"do_normalize"`
	ImageMean     []float64       `json:"image_mean"`
	ImageStd      []float64       `json:"image_std"`
	DoCenterCrop  bool            `json:"do_center_crop"`
	DoPad         bool            `json:"do_pad"`
	PatchSize     json.RawMessage `json:"patch_size"`
}

// Image is a validated preprocessing: the model input size, the frame
// patch side and the per-channel normalisation
// value = (u8·Scale − Mean[c]) / Std[c].
type Image struct {
	Width, Height, PatchSize int
	Scale                    float64
	Mean, Std                []float64 // 3 values each: R, G, B
}

// String is "WxH patch P".
func (im *Image) String() string {
	return fmt.Sprintf("%dx%d patch %d", im.Width, im.Height, im.PatchSize)
}

// LUT is the normalisation as a table: LUT()[c][u8] is the model input
// value of byte u8 in channel c.
func (im *Image) LUT() [3][256]float32 { return LUT(im.Scale, im.Mean, im.Std) }

// LUT tabulates value = (u8·scale − mean[c]) / std[c] for the three
// channels; mean and std have 3 values.
func LUT(scale float64, mean, std []float64) [3][256]float32 {
	var lut [3][256]float32
	for c := range 3 {
		for v := range 256 {
			lut[c][v] = float32((float64(v)*scale - mean[c]) / std[c])
		}
	}
	return lut
}

// Size is a size as transformers writes it: 224, [224, 224] (height,
// width) or {"height": 224, "width": 224}. {"shortest_edge": n} (resize
// keeping the aspect ratio, then crop) has no fixed size patchline could use.
type Size struct {
	H, W     int
	Shortest int
}

// String is width x height.
func (s Size) String() string { return fmt.Sprintf("%dx%d", s.W, s.H) }

// ParseSize reads a Size; nil when raw is absent or null.
func ParseSize(raw json.RawMessage) (*Size, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		return &Size{H: n, W: n}, nil
	}
	var hw []int
	if err := json.Unmarshal(raw, &hw); err == nil {
		if len(hw) != 2 {
			return nil, fmt.Errorf("is %s, want [height, width]", raw)
		}
		return &Size{H: hw[0], W: hw[1]}, nil
	}
	var m struct {
		Height       *int `json:"height"`
		Width        *int `json:"width"`
		ShortestEdge *int `json:"shortest_edge"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("is %s, want a number, [height, width] or {\"height\": h, \"width\": w}", raw)
	}
	switch {
	case m.ShortestEdge != nil:
		return &Size{Shortest: *m.ShortestEdge}, nil
	case m.Height == nil || m.Width == nil:
		return nil, fmt.Errorf("is %s, want {\"height\": h, \"width\": w}", raw)
	}
	return &Size{H: *m.Height, W: *m.Width}, nil
}

// ReadPreprocessor reads and validates c.Dir/preprocessor_config.json
// against config.json's vision keys (c.Vision):
//
//   - size (else config.json image_size; both present: they agree), each
//     side 1..frame.MaxSide; do_resize not false, no center crop or padding
//     (decode resizes the whole frame to size), resample a PIL filter 0..5;
//   - patch_size (else config.json patch_size; both: they agree), square,
//     dividing size;
//   - do_rescale (default true) with rescale_factor (default 1/255) > 0;
//   - do_normalize (default true) with 3 finite image_mean values and 3
//     finite, positive image_std values;
//   - config.json num_channels, if set, is 3.
func (c *Config) ReadPreprocessor() (*Image, error) {
	var pre Preprocessor
	if _, err := ReadJSON(c.Dir, PreprocessorFile, &pre); err != nil {
		return nil, err
	}
	perr := func(format string, args ...any) error { return Errorf(c.Dir, PreprocessorFile, format, args...) }
	// sizes parses key of preprocessor_config.json and cfgKey of config.json.
	sizes := func(pre, cfg json.RawMessage, key, cfgKey string) (*Size, *Size, error) {
		fromPre, err := ParseSize(pre)
		if err != nil {
			return nil, nil, perr("%s: %v", key, err)
		}
		fromCfg, err := ParseSize(cfg)
		if err != nil {
			return nil, nil, c.Errorf("%s: %v", cfgKey, err)
		}
		return fromPre, fromCfg, nil
	}
	if n := c.NumChannels; n != nil && *n != 3 {
		return nil, c.Errorf("num_channels: is %d; frames are RGB (3 channels)", *n)
	}

	// Size: preprocessor size, cross-checked with config image_size.
	size, imageSize, err := sizes(pre.Size, c.ImageSize, "size", "image_size")
	if err != nil {
		return nil, err
	}
	switch {
	case size == nil && imageSize == nil:
		return nil, perr("size: is required ({\"height\": h, \"width\": w}; %s has no image_size either)", ConfigFile)
	case size == nil:
		size = imageSize
	case size.Shortest > 0:
		return nil, perr("size: {\"shortest_edge\": %d} resizes keeping the aspect ratio; patchline feeds a fixed size: use {\"height\": h, \"width\": w}", size.Shortest)
	}
	if imageSize != nil && (imageSize.W != size.W || imageSize.H != size.H) {
		return nil, perr("size: %s disagrees with %s image_size %s", size, ConfigFile, imageSize)
	}
	if size.W < 1 || size.W > frame.MaxSide || size.H < 1 || size.H > frame.MaxSide {
		return nil, perr("size: %s, want each side 1..%d", size, frame.MaxSide)
	}
	im := &Image{Width: size.W, Height: size.H}
	if pre.DoResize != nil && !*pre.DoResize {
		return nil, perr("do_resize: is false; frames are resized to size by the decode stage, so the model must expect a resized image")
	}
	if pre.DoCenterCrop {
		return nil, perr("do_center_crop: is true; patchline resizes the whole frame to size (no crop): set it false if the model takes the full image")
	}
	if pre.DoPad {
		return nil, perr("do_pad: is true; use %s \"patchline\": {\"resize\": \"letterbox\"} for padded input", ConfigFile)
	}
	if pre.Resample != nil && (*pre.Resample < 0 || *pre.Resample > 5) {
		return nil, perr("resample: is %d, want a PIL filter 0..5 (decode resizes bilinear, 2)", *pre.Resample)
	}

	// Patch size: preprocessor patch_size (patchline's), else config's.
	prePatch, cfgPatch, err := sizes(pre.PatchSize, c.PatchSize, "patch_size", "patch_size")
	if err != nil {
		return nil, err
	}
	var patch *Size
	switch {
	case prePatch != nil && cfgPatch != nil && *prePatch != *cfgPatch:
		return nil, perr("patch_size: %d disagrees with %s patch_size %d", prePatch.W, ConfigFile, cfgPatch.W)
	case prePatch != nil:
		patch = prePatch
	case cfgPatch != nil:
		patch = cfgPatch
	default:
		return nil, perr("patch_size: is required (the side of the square patches frames travel in, here or in %s); a model without patches (a CNN taking pixel_values) takes any side that divides size: add \"patch_size\": 16 here, and set decode.patch_size to it", ConfigFile)
	}
	if patch.W != patch.H || patch.Shortest > 0 {
		return nil, perr("patch_size: is %s; patches are square", patch)
	}
	im.PatchSize = patch.W
	if im.PatchSize < 1 || im.Width%im.PatchSize != 0 || im.Height%im.PatchSize != 0 {
		return nil, perr("patch_size: %d does not divide size %s", im.PatchSize, size)
	}

	// Normalisation: value = (u8*rescale_factor - mean[c]) / std[c].
	im.Scale = 1
	if pre.DoRescale == nil || *pre.DoRescale {
		im.Scale = 1.0 / 255
		if pre.RescaleFactor != nil {
			im.Scale = *pre.RescaleFactor
		}
		if !(im.Scale > 0) || math.IsInf(im.Scale, 0) {
			return nil, perr("rescale_factor: is %v, want a positive number (e.g. 0.00392156862745098 for x/255)", im.Scale)
		}
	}
	im.Mean, im.Std = []float64{0, 0, 0}, []float64{1, 1, 1}
	if pre.DoNormalize == nil || *pre.DoNormalize {
		for _, v := range []struct {
			key string
			val []float64
		}{{"image_mean", pre.ImageMean}, {"image_std", pre.ImageStd}} {
			if len(v.val) != 3 {
				return nil, perr("%s: has %d values, want 3 (R, G, B) when do_normalize is true", v.key, len(v.val))
			}
			for ch, x := range v.val {
				if math.IsNaN(x) || math.IsInf(x, 0) {
					return nil, perr("%s[%d]: is %v", v.key, ch, x)
				}
				if v.key == "image_std" && x <= 0 {
					return nil, perr("%s[%d]: is %v, want > 0", v.key, ch, x)
				}
			}
		}
		im.Mean, im.Std = pre.ImageMean, pre.ImageStd
	}
	return im, nil
}
