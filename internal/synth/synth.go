// Package synth is patchline's synthetic world: a seeded, deterministic
// scene of coloured shapes that move, bounce, stop, leave and come back,
// on varied backgrounds under changing light, rendered in pure Go into
// packed RGB. It is the built-in camera (synthetic://) and the source of
// every training and test set of patchline's own models.
//
// A scene is addressed by a URL such as
//
//	synthetic://?seed=7&width=384&height=384&objects=3&fps=5&background=noise
//
// and, to inject anomalies for the anomaly detector,
//
//	synthetic://?seed=7&anomaly=teleport&anomaly_at=30&anomaly_every=20
//
// Frame i of a scene depends only on its parameters and i: the same seed and
// index always give the same bytes and the same ground truth. Every frame
// comes with exact ground truth (Truth): each visible object's shape,
// colour, class, pixel box and motion, the per-pixel class map (and from it
// the per-patch class map at any patch grid), a caption in a small fixed
// grammar, and the anomaly injected at that frame, if any.
package synth

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/patchline/patchline/internal/media"
)

// Scheme is the URL scheme of synthetic sources.
const Scheme = "synthetic"

// Defaults of a synthetic scene. The world's speeds are per frame, so fps
// sets how fast it plays: 5 is the rate patchline's models were trained at.
const (
	DefaultSeed       = 1
	DefaultWidth      = 384
	DefaultHeight     = 384
	DefaultObjects    = 3
	DefaultFPS        = 5
	DefaultBackground = BackgroundAuto
)

// Limits of the URL parameters.
const (
	MinSide    = 32
	MaxSide    = 4096
	MaxObjects = 8 // every object is a distinct class; one spare for "spawn"
	MaxFPS     = 240
)

// Backgrounds. Auto picks one of the others from the seed.
const (
	BackgroundAuto     = "auto"
	BackgroundPlain    = "plain"
	BackgroundGradient = "gradient"
	BackgroundNoise    = "noise"
	BackgroundTexture  = "texture"
)

// Backgrounds lists the concrete backgrounds, in the order auto picks from.
var Backgrounds = []string{BackgroundPlain, BackgroundGradient, BackgroundNoise, BackgroundTexture}

// Anomalies that can be injected. None of them ever happens on its own:
// a normal world only bounces off walls, stops and resumes, and enters or
// leaves through an edge.
const (
	AnomalyNone     = ""
	AnomalyTeleport = "teleport" // an object jumps somewhere else
	AnomalyReverse  = "reverse"  // an object turns back in mid-field
	AnomalySpawn    = "spawn"    // an object appears from nowhere, mid-field
	// AnomalyVanish is not injectable by name: with anomaly=spawn and
	// anomaly_every, the spawned object vanishes mid-field halfway between
	// two spawns so that it can spawn again; those frames are labelled vanish.
	AnomalyVanish = "vanish"
)

// Anomalies lists the injectable anomalies.
var Anomalies = []string{AnomalyTeleport, AnomalyReverse, AnomalySpawn}

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

// Shapes and Colors list every shape and colour a scene can contain.
var (
	Shapes = []string{ShapeCircle, ShapeSquare, ShapeTriangle}
	Colors = []string{ColorRed, ColorGreen, ColorBlue, ColorYellow}
)

// Motions of an object, as ground truth and in captions.
const (
	MotionLeft  = "left"
	MotionRight = "right"
	MotionUp    = "up"
	MotionDown  = "down"
	MotionStill = "still"
)

// NumClasses is the number of per-pixel classes: background and every
// colour × shape.
const NumClasses = 1 + 4*3

// Class is the class id of a colour and shape: 1 + colour·3 + shape, in the
// order of Colors and Shapes (1 red circle, 2 red square, ... 12 yellow
// triangle). Class 0 is the background. It returns -1 for unknown names.
func Class(color, shape string) int {
	c, s := index(Colors, color), index(Shapes, shape)
	if c < 0 || s < 0 {
		return -1
	}
	return 1 + c*len(Shapes) + s
}

// ClassName is the name of a class id: "background" or "<colour> <shape>".
func ClassName(id int) string {
	if id <= 0 || id >= NumClasses {
		return "background"
	}
	id--
	return Colors[id/len(Shapes)] + " " + Shapes[id%len(Shapes)]
}

// ClassNames lists every class name by id.
func ClassNames() []string {
	out := make([]string, NumClasses)
	for i := range out {
		out[i] = ClassName(i)
	}
	return out
}

func index(list []string, v string) int {
	for i, s := range list {
		if s == v {
			return i
		}
	}
	return -1
}

// RGB returns the pixel value of a named colour at full light.
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
	Background string  // auto | plain | gradient | noise | texture
	// Anomaly is injected at frame AnomalyAt, and again every AnomalyEvery
	// frames after it when AnomalyEvery > 0.
	Anomaly      string
	AnomalyAt    int
	AnomalyEvery int
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
	if p.Objects < 1 || p.Objects > MaxObjects {
		return fmt.Errorf("synth: objects %d out of range 1..%d", p.Objects, MaxObjects)
	}
	if !(p.FPS > 0 && p.FPS <= MaxFPS) {
		return fmt.Errorf("synth: fps %g out of range (0, %d]", p.FPS, MaxFPS)
	}
	if p.Background != BackgroundAuto && index(Backgrounds, p.Background) < 0 {
		return fmt.Errorf("synth: background %q is not one of auto, plain, gradient, noise, texture", p.Background)
	}
	if p.Anomaly != AnomalyNone && index(Anomalies, p.Anomaly) < 0 {
		return fmt.Errorf("synth: anomaly %q is not one of teleport, reverse, spawn", p.Anomaly)
	}
	if p.AnomalyAt < 0 || p.AnomalyEvery < 0 {
		return fmt.Errorf("synth: anomaly_at %d and anomaly_every %d must not be negative", p.AnomalyAt, p.AnomalyEvery)
	}
	if p.Anomaly == AnomalyNone && (p.AnomalyAt != 0 || p.AnomalyEvery != 0) {
		return fmt.Errorf("synth: anomaly_at and anomaly_every need anomaly=teleport|reverse|spawn")
	}
	if p.Anomaly == AnomalySpawn && p.AnomalyEvery > 0 && p.AnomalyEvery < 4 {
		return fmt.Errorf("synth: anomaly_every %d is too short for spawn: the object needs at least 4 frames to spawn and vanish", p.AnomalyEvery)
	}
	return nil
}

// ParseURL parses a synthetic:// URL. Known query parameters are seed,
// width, height, objects, fps, background, anomaly, anomaly_at and
// anomaly_every; any other parameter, a repeated parameter, a host or a path
// is an error.
func ParseURL(raw string) (Params, error) {
	p := DefaultParams()
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a password
		}
		return p, fmt.Errorf("synth: parse url: %w", err)
	}
	if u.Scheme != Scheme {
		return p, fmt.Errorf("synth: url scheme is %q, want %q", u.Scheme, Scheme)
	}
	if u.Host != "" || (u.Path != "" && u.Path != "/") || u.Opaque != "" || u.User != nil {
		return p, fmt.Errorf("synth: url %q: only query parameters are allowed, e.g. synthetic://?seed=7", media.RedactURL(raw))
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
		case "anomaly":
			p.Anomaly = v
		case "anomaly_at":
			p.AnomalyAt, err = strconv.Atoi(v)
		case "anomaly_every":
			p.AnomalyEvery, err = strconv.Atoi(v)
		default:
			return p, fmt.Errorf("synth: unknown parameter %q (known: seed, width, height, objects, fps, background, anomaly, anomaly_at, anomaly_every)", k)
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

// Open builds the scene a synthetic:// URL describes.
func Open(raw string) (*Scene, error) {
	p, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	return New(p)
}
