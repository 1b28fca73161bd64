package decode

import (
	"fmt"
	"image"
	"image/color"

	"gocv.io/x/gocv"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
)

// preprocess resizes the BGR source image src to the model input of d
// (stretch or letterbox) and converts it to RGB in m.rgb, returning the
// transform back to source pixels and m.rgb's bytes. Every frame a model
// sees, live or in a training set, goes through this one function.
func preprocess(d config.Decode, src gocv.Mat, m *mats) (frame.Transform, []byte, error) {
	srcW, srcH := src.Cols(), src.Rows()
	if srcW <= 0 || srcH <= 0 || src.Channels() != 3 {
		return frame.Transform{}, nil, fmt.Errorf("decode: source frame is %dx%d with %d channels, want BGR", srcW, srcH, src.Channels())
	}
	if srcW > frame.MaxSourceSide || srcH > frame.MaxSourceSide {
		return frame.Transform{}, nil, fmt.Errorf("decode: source frame is %dx%d, over the %d pixels a frame message can carry on a side", srcW, srcH, frame.MaxSourceSide)
	}
	w, h := d.Width, d.Height
	var tr frame.Transform
	if d.Resize == frame.ResizeStretch {
		gocv.Resize(src, &m.sized, image.Pt(w, h), 0, 0, gocv.InterpolationLinear)
		tr = frame.Stretch(srcW, srcH, w, h)
	} else {
		var iw, ih int
		tr, iw, ih = frame.Letterbox(srcW, srcH, w, h)
		gocv.Resize(src, &m.inner, image.Pt(iw, ih), 0, 0, gocv.InterpolationLinear)
		ox, oy := int(tr.OffsetX), int(tr.OffsetY)
		gocv.CopyMakeBorder(m.inner, &m.sized, oy, h-ih-oy, ox, w-iw-ox, gocv.BorderConstant, color.RGBA{A: 255})
	}
	gocv.CvtColor(m.sized, &m.rgb, gocv.ColorBGRToRGB)
	rgb, err := m.rgb.DataPtrUint8()
	if err != nil {
		return tr, nil, fmt.Errorf("decode: rgb image: %w", err)
	}
	return tr, rgb, nil
}

// Preprocessor turns packed RGB source images into model-input RGB exactly
// as a decode worker does (the same OpenCV calls on the same BGR image), so
// that data sets made offline, such as `patchline synth`'s, match what the
// live pipeline feeds a model byte for byte. Not safe for concurrent use.
type Preprocessor struct {
	cfg config.Decode
	raw gocv.Mat
	m   *mats
}

// NewPreprocessor returns a Preprocessor for the model input of d.
func NewPreprocessor(d config.Decode) (*Preprocessor, error) {
	if d.Width <= 0 || d.Height <= 0 || d.PatchSize <= 0 || d.Width%d.PatchSize != 0 || d.Height%d.PatchSize != 0 {
		return nil, fmt.Errorf("decode: model input %dx%d is not a positive multiple of patch size %d", d.Width, d.Height, d.PatchSize)
	}
	if d.Resize != frame.ResizeStretch && d.Resize != frame.ResizeLetterbox {
		return nil, fmt.Errorf("decode: resize %q is not %q or %q", d.Resize, frame.ResizeStretch, frame.ResizeLetterbox)
	}
	return &Preprocessor{cfg: d, raw: gocv.NewMat(), m: newMats()}, nil
}

// FromRGB preprocesses a packed RGB image of w×h pixels. The returned bytes
// (Width·Height·3, RGB) are valid until the next call.
func (p *Preprocessor) FromRGB(src []byte, w, h int) ([]byte, frame.Transform, error) {
	if w <= 0 || h <= 0 || len(src) != w*h*3 {
		return nil, frame.Transform{}, fmt.Errorf("decode: source image is %d bytes, want %dx%dx3", len(src), w, h)
	}
	if err := rgbToBGR(&p.raw, src, w, h); err != nil {
		return nil, frame.Transform{}, err
	}
	tr, rgb, err := preprocess(p.cfg, p.raw, p.m)
	return rgb, tr, err
}

// Close frees the OpenCV images.
func (p *Preprocessor) Close() error {
	_ = p.raw.Close()
	p.m.close()
	return nil
}

// rgbToBGR writes packed RGB into dst as an 8-bit BGR image of w×h,
// reallocating dst when its size or type differs.
func rgbToBGR(dst *gocv.Mat, src []byte, w, h int) error {
	if dst.Rows() != h || dst.Cols() != w || dst.Type() != gocv.MatTypeCV8UC3 {
		_ = dst.Close()
		*dst = gocv.NewMatWithSize(h, w, gocv.MatTypeCV8UC3)
	}
	data, err := dst.DataPtrUint8()
	if err != nil {
		return fmt.Errorf("decode: bgr image: %w", err)
	}
	for j := 0; j+2 < len(src); j += 3 {
		data[j], data[j+1], data[j+2] = src[j+2], src[j+1], src[j]
	}
	return nil
}
