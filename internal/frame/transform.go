package frame

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Transform maps source pixels to model-input pixels: input = source·S + O.
// Boxes found in input pixels go back to the source with Inverse.
type Transform struct {
	ScaleX, ScaleY   float64
	OffsetX, OffsetY float64
}

// Stretch resizes the whole source onto the whole input, ignoring aspect.
func Stretch(srcW, srcH, dstW, dstH int) Transform {
	return Transform{ScaleX: float64(dstW) / float64(srcW), ScaleY: float64(dstH) / float64(srcH)}
}

// Letterbox scales the source uniformly to fit the input and centres it;
// the padding is black. It returns the transform and the size of the
// scaled image inside the input.
func Letterbox(srcW, srcH, dstW, dstH int) (t Transform, innerW, innerH int) {
	s := math.Min(float64(dstW)/float64(srcW), float64(dstH)/float64(srcH))
	innerW = max(1, min(dstW, int(math.Round(float64(srcW)*s))))
	innerH = max(1, min(dstH, int(math.Round(float64(srcH)*s))))
	ox, oy := (dstW-innerW)/2, (dstH-innerH)/2
	return Transform{
		ScaleX: float64(innerW) / float64(srcW), ScaleY: float64(innerH) / float64(srcH),
		OffsetX: float64(ox), OffsetY: float64(oy),
	}, innerW, innerH
}

// ToSource maps an input-pixel point back to source pixels.
func (t Transform) ToSource(x, y float64) (float64, float64) {
	return (x - t.OffsetX) / t.ScaleX, (y - t.OffsetY) / t.ScaleY
}

// BoxToSource maps an [x1,y1,x2,y2] box in input pixels to source pixels,
// clamped to the source frame.
func (t Transform) BoxToSource(b [4]float64, srcW, srcH int) [4]float64 {
	x1, y1 := t.ToSource(b[0], b[1])
	x2, y2 := t.ToSource(b[2], b[3])
	cl := func(v, hi float64) float64 { return math.Max(0, math.Min(hi, v)) }
	return [4]float64{cl(x1, float64(srcW)), cl(y1, float64(srcH)), cl(x2, float64(srcW)), cl(y2, float64(srcH))}
}

// String formats the transform as "sx,sy,ox,oy".
func (t Transform) String() string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	return f(t.ScaleX) + "," + f(t.ScaleY) + "," + f(t.OffsetX) + "," + f(t.OffsetY)
}

// ParseTransform parses String's output; scales must be positive and finite.
func ParseTransform(s string) (Transform, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 4 {
		return Transform{}, fmt.Errorf("transform %q is not sx,sy,ox,oy", s)
	}
	var v [4]float64
	for i, p := range parts {
		x, err := strconv.ParseFloat(p, 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return Transform{}, fmt.Errorf("transform %q: bad number %q", s, p)
		}
		v[i] = x
	}
	if v[0] <= 0 || v[1] <= 0 {
		return Transform{}, fmt.Errorf("transform %q: scales must be positive", s)
	}
	return Transform{ScaleX: v[0], ScaleY: v[1], OffsetX: v[2], OffsetY: v[3]}, nil
}
