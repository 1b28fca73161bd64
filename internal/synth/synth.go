// Package synth is patchline's built-in synthetic camera: a seeded,
// deterministic scene of coloured shapes moving at constant velocity and
// bouncing off the frame edges, rendered in pure Go into packed RGB.
//
// A scene is addressed by a URL such as
//
//	synthetic://?seed=7&width=640&height=360&objects=3&fps=30&background=gradient
//
// Frame i of a scene depends only on its parameters and i, so any frame can
// be rendered directly, and the same seed and index always give the same
// bytes. Every frame comes with its ground truth: each object's shape,
// colour and pixel box.
package synth

import (
	"fmt"
	"math"
	"math/rand"
	"net/url"
	"strconv"
)

// Scheme is the URL scheme of synthetic sources.
const Scheme = "synthetic"

// Defaults of a synthetic scene.
const (
	DefaultSeed       = 1
	DefaultWidth      = 640
	DefaultHeight     = 360
	DefaultObjects    = 3
	DefaultFPS        = 30
	DefaultBackground = BackgroundGradient
)

// Limits of the URL parameters.
const (
	MinSide    = 16
	MaxSide    = 4096
	MaxObjects = 64
	MaxFPS     = 240
)

// Backgrounds.
const (
	BackgroundPlain    = "plain"
	BackgroundGradient = "gradient"
)

// Shapes.
const (
	ShapeCircle   = "circle"
	ShapeSquare   = "square"
	ShapeTriangle = "triangle"
)

// Colours.
const (
	ColorRed    = "red"
	ColorGreen  = "green"
	ColorBlue   = "blue"
	ColorYellow = "yellow"
)

// Shapes and Colors list every shape and colour a scene can contain, in the
// order the seeded generator picks from.
var (
	Shapes = []string{ShapeCircle, ShapeSquare, ShapeTriangle}
	Colors = []string{ColorRed, ColorGreen, ColorBlue, ColorYellow}
)

// RGB returns the pixel value of a named colour.
func RGB(color string) [3]byte {
	switch color {
	case ColorRed:
		return [3]byte{230, 30, 30}
	case ColorGreen:
		return [3]byte{30, 200, 50}
	case ColorBlue:
		return [3]byte{30, 60, 230}
	case ColorYellow:
		return [3]byte{240, 220, 30}
	}
	return [3]byte{255, 255, 255}
}

// Params configure a scene.
type Params struct {
	Seed       int64
	Width      int
	Height     int
	Objects    int
	FPS        float64 // nominal frame rate: frame i is at i/FPS seconds
	Background string  // plain | gradient
}

// DefaultParams returns the parameters of synthetic:// with no query.
func DefaultParams() Params {
	return Params{
		Seed: DefaultSeed, Width: DefaultWidth, Height: DefaultHeight,
		Objects: DefaultObjects, FPS: DefaultFPS, Background: DefaultBackground,
	}
}

// Validate checks every parameter's range.
func (p Params) Validate() error {
	if p.Width < MinSide || p.Width > MaxSide || p.Height < MinSide || p.Height > MaxSide {
		return fmt.Errorf("synth: size %dx%d out of range %d..%d", p.Width, p.Height, MinSide, MaxSide)
	}
	if p.Objects < 0 || p.Objects > MaxObjects {
		return fmt.Errorf("synth: objects %d out of range 0..%d", p.Objects, MaxObjects)
	}
	if !(p.FPS > 0 && p.FPS <= MaxFPS) {
		return fmt.Errorf("synth: fps %g out of range (0, %d]", p.FPS, MaxFPS)
	}
	if p.Background != BackgroundPlain && p.Background != BackgroundGradient {
		return fmt.Errorf("synth: background %q is not %q or %q", p.Background, BackgroundPlain, BackgroundGradient)
	}
	return nil
}

// ParseURL parses a synthetic:// URL. Known query parameters are seed,
// width, height, objects, fps and background; any other parameter, a
// repeated parameter, a host or a path is an error.
func ParseURL(raw string) (Params, error) {
	p := DefaultParams()
	u, err := url.Parse(raw)
	if err != nil {
		return p, fmt.Errorf("synth: parse url: %w", err)
	}
	if u.Scheme != Scheme {
		return p, fmt.Errorf("synth: url scheme is %q, want %q", u.Scheme, Scheme)
	}
	if u.Host != "" || (u.Path != "" && u.Path != "/") || u.Opaque != "" || u.User != nil {
		return p, fmt.Errorf("synth: url %q: only query parameters are allowed, e.g. synthetic://?seed=7", raw)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return p, fmt.Errorf("synth: query: %w", err)
	}
	for k, vs := range q {
		if len(vs) != 1 {
			return p, fmt.Errorf("synth: parameter %q given %d times", k, len(vs))
		}
		v := vs[0]
		switch k {
		case "seed":
			p.Seed, err = strconv.ParseInt(v, 10, 64)
		case "width":
			p.Width, err = strconv.Atoi(v)
		case "height":
			p.Height, err = strconv.Atoi(v)
		case "objects":
			p.Objects, err = strconv.Atoi(v)
		case "fps":
			p.FPS, err = strconv.ParseFloat(v, 64)
		case "background", "bg":
			p.Background = v
		default:
			return p, fmt.Errorf("synth: unknown parameter %q (known: seed, width, height, objects, fps, background)", k)
		}
		if err != nil {
			return p, fmt.Errorf("synth: parameter %s: %w", k, err)
		}
	}
	if err := p.Validate(); err != nil {
		return p, err
	}
	return p, nil
}

// Object is one object of a frame's ground truth.
type Object struct {
	ID    int    `json:"id"`
	Shape string `json:"shape"`
	Color string `json:"color"`
	// Box is [x1,y1,x2,y2] in frame pixels; x2 and y2 are exclusive, so the
	// object's pixels all lie in [x1,x2)×[y1,y2).
	Box [4]float64 `json:"box"`
}

// Label is the object's class name, e.g. "red circle".
func (o Object) Label() string { return o.Color + " " + o.Shape }

// object is an object's fixed motion parameters.
type object struct {
	shape, color string
	rgb          [3]byte
	size         int     // side of the bounding square
	x0, y0       float64 // top-left at frame 0 (unfolded)
	vx, vy       float64 // pixels per frame
}

// Scene renders the frames of one parameter set. A Scene is immutable after
// New and safe for concurrent use.
type Scene struct {
	p       Params
	objects []object
	bg      []byte // rendered background, Width*Height*3
}

// New builds the scene of p.
func New(p Params) (*Scene, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewSource(p.Seed))
	s := &Scene{p: p, bg: make([]byte, p.Width*p.Height*3)}
	minSide := min(p.Width, p.Height)
	lo, hi := max(4, minSide/10), max(5, minSide/4)
	for i := 0; i < p.Objects; i++ {
		o := object{
			shape: Shapes[rng.Intn(len(Shapes))],
			color: Colors[rng.Intn(len(Colors))],
			size:  lo + rng.Intn(hi-lo+1),
		}
		o.rgb = RGB(o.color)
		o.x0 = rng.Float64() * float64(p.Width-o.size)
		o.y0 = rng.Float64() * float64(p.Height-o.size)
		speed := 1 + rng.Float64()*5 // 1..6 px per frame
		angle := rng.Float64() * 2 * math.Pi
		o.vx, o.vy = speed*math.Cos(angle), speed*math.Sin(angle)
		s.objects = append(s.objects, o)
	}
	s.renderBackground()
	return s, nil
}

// Params returns the scene's parameters.
func (s *Scene) Params() Params { return s.p }

// FrameSize is the length of one rendered RGB frame in bytes.
func (s *Scene) FrameSize() int { return s.p.Width * s.p.Height * 3 }

func (s *Scene) renderBackground() {
	w, h := s.p.Width, s.p.Height
	if s.p.Background == BackgroundPlain {
		for i := 0; i < len(s.bg); i += 3 {
			s.bg[i], s.bg[i+1], s.bg[i+2] = 96, 96, 96
		}
		return
	}
	// Diagonal grey-blue gradient: dark at the top left, light at the bottom right.
	for y := 0; y < h; y++ {
		row := s.bg[y*w*3 : (y+1)*w*3]
		for x := 0; x < w; x++ {
			t := (float64(x)/float64(w) + float64(y)/float64(h)) / 2
			v := byte(40 + t*140)
			row[x*3], row[x*3+1], row[x*3+2] = v, v, byte(min(255, int(v)+30))
		}
	}
}

// bounce folds an unbounded coordinate into [0, span] as a ball bouncing
// between two walls would move.
func bounce(x, span float64) float64 {
	if span <= 0 {
		return 0
	}
	m := math.Mod(x, 2*span)
	if m < 0 {
		m += 2 * span
	}
	if m > span {
		m = 2*span - m
	}
	return m
}

// topLeft is object o's integer top-left corner at frame i.
func (s *Scene) topLeft(o *object, i int) (int, int) {
	x := bounce(o.x0+o.vx*float64(i), float64(s.p.Width-o.size))
	y := bounce(o.y0+o.vy*float64(i), float64(s.p.Height-o.size))
	return int(math.Round(x)), int(math.Round(y))
}

// Objects returns frame i's ground truth without rendering it.
func (s *Scene) Objects(i int) []Object {
	out := make([]Object, len(s.objects))
	for n := range s.objects {
		o := &s.objects[n]
		x, y := s.topLeft(o, i)
		x1, y1, x2, y2 := shapeBounds(o.shape, x, y, o.size)
		out[n] = Object{ID: n, Shape: o.shape, Color: o.color, Box: [4]float64{float64(x1), float64(y1), float64(x2), float64(y2)}}
	}
	return out
}

// shapeBounds is the exact pixel box a shape drawn at (x, y) covers.
func shapeBounds(shape string, x, y, size int) (x1, y1, x2, y2 int) {
	// Every shape covers its full bounding square: the circle's diameter,
	// the triangle's base and height are all size pixels.
	return x, y, x + size, y + size
}

// Render draws frame i into dst (packed RGB, Width·Height·3 bytes, rows top
// to bottom) and returns its ground truth. Objects later in the list are
// drawn over earlier ones.
func (s *Scene) Render(dst []byte, i int) ([]Object, error) {
	if len(dst) != len(s.bg) {
		return nil, fmt.Errorf("synth: render buffer is %d bytes, want %d", len(dst), len(s.bg))
	}
	copy(dst, s.bg)
	w := s.p.Width
	for n := range s.objects {
		o := &s.objects[n]
		x, y := s.topLeft(o, i)
		for r := 0; r < o.size; r++ {
			a, b := span(o.shape, o.size, r)
			if a >= b {
				continue
			}
			row := dst[((y+r)*w+x)*3:]
			for c := a; c < b; c++ {
				row[c*3], row[c*3+1], row[c*3+2] = o.rgb[0], o.rgb[1], o.rgb[2]
			}
		}
	}
	return s.Objects(i), nil
}

// span returns the half-open column range [a, b) a shape of the given size
// covers in row r of its bounding square.
func span(shape string, size, r int) (a, b int) {
	switch shape {
	case ShapeSquare:
		return 0, size
	case ShapeCircle:
		rad := float64(size) / 2
		dy := float64(r) + 0.5 - rad
		half := math.Sqrt(math.Max(0, rad*rad-dy*dy))
		a = int(math.Round(rad - half))
		b = int(math.Round(rad + half))
		if r == 0 || r == size-1 { // keep the box tight: the extreme rows are never empty
			a, b = min(a, size/2), max(b, size/2+1)
		}
		return max(0, a), min(size, b)
	case ShapeTriangle:
		// Apex at the top centre, base along the bottom row.
		half := float64(size) / 2 * float64(r+1) / float64(size)
		c := float64(size) / 2
		a = int(math.Floor(c - half))
		b = int(math.Ceil(c + half))
		return max(0, a), min(size, b)
	}
	return 0, 0
}
