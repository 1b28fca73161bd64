// Package dataset writes synthetic-world data sets for training and
// evaluating patchline's models: the frames exactly as the decode stage
// feeds them to a model, with their ground truth.
//
// A data set directory holds
//
//	meta.json      what was generated: seeds, sizes, grid, class names
//	frames.npy     uint8 [N, H, W, 3]  model-input RGB (decode's resize)
//	classes.npy    uint8 [N, GH, GW]   per-patch class (0 background)
//	truth.jsonl    one JSON object per frame: seed, frame, objects (boxes in
//	               source and model pixels, motion), caption, anomaly
//	png/           (optional) the source frames, for people to look at
//
// Frames are grouped in sequences (one seed each, consecutive frames), in
// seed order.
package dataset

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"

	"github.com/patchline/patchline/decode"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/synth"
)

// Options say what to generate.
type Options struct {
	Seed      int64        // first sequence's seed; sequence k uses Seed+k
	Sequences int          // how many sequences
	Frames    int          // frames per sequence
	Scene     synth.Params // the world (its Seed is replaced per sequence)
	Decode    config.Decode
	PNG       bool // also write the source frames as PNG
}

// Meta is meta.json.
type Meta struct {
	Seeds             []int64  `json:"seeds"`
	FramesPerSequence int      `json:"frames_per_sequence"`
	SourceWidth       int      `json:"source_width"`
	SourceHeight      int      `json:"source_height"`
	Width             int      `json:"width"`
	Height            int      `json:"height"`
	PatchSize         int      `json:"patch_size"`
	Resize            string   `json:"resize"`
	Grid              [2]int   `json:"grid"` // [GW, GH]
	FPS               float64  `json:"fps"`
	Objects           int      `json:"objects"`
	Background        string   `json:"background"`
	Anomaly           string   `json:"anomaly,omitempty"`
	AnomalyAt         int      `json:"anomaly_at,omitempty"`
	AnomalyEvery      int      `json:"anomaly_every,omitempty"`
	Classes           []string `json:"classes"`
}

// Record is one line of truth.jsonl.
type Record struct {
	Seed    int64    `json:"seed"`
	Frame   int      `json:"frame"`
	Objects []Object `json:"objects"`
	Caption string   `json:"caption"`
	Anomaly string   `json:"anomaly,omitempty"`
}

// Object is a ground-truth object with its box also in model pixels.
type Object struct {
	synth.Object
	ModelBox [4]float64 `json:"model_box"`
}

// Check validates o.
func (o Options) Check() error {
	if o.Sequences < 1 || o.Frames < 1 {
		return fmt.Errorf("dataset: need at least one sequence of one frame, got %d × %d", o.Sequences, o.Frames)
	}
	if o.Decode.Resize != frame.ResizeStretch {
		return fmt.Errorf("dataset: resize %q: synthetic data sets are made with %q", o.Decode.Resize, frame.ResizeStretch)
	}
	p := o.Scene
	p.Seed = o.Seed
	return p.Validate()
}

// Write generates the data set into dir (created if missing) and returns
// its meta data.
func Write(dir string, o Options) (Meta, error) {
	if err := o.Check(); err != nil {
		return Meta{}, err
	}
	pre, err := decode.NewPreprocessor(o.Decode)
	if err != nil {
		return Meta{}, err
	}
	defer pre.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Meta{}, fmt.Errorf("dataset: %w", err)
	}
	if o.PNG {
		if err := os.MkdirAll(filepath.Join(dir, "png"), 0o755); err != nil {
			return Meta{}, fmt.Errorf("dataset: %w", err)
		}
	}
	d, p := o.Decode, o.Scene
	gw, gh := d.Width/d.PatchSize, d.Height/d.PatchSize
	n := o.Sequences * o.Frames
	m := Meta{
		FramesPerSequence: o.Frames, SourceWidth: p.Width, SourceHeight: p.Height,
		Width: d.Width, Height: d.Height, PatchSize: d.PatchSize, Resize: d.Resize, Grid: [2]int{gw, gh},
		FPS: p.FPS, Objects: p.Objects, Background: p.Background,
		Anomaly: p.Anomaly, AnomalyAt: p.AnomalyAt, AnomalyEvery: p.AnomalyEvery,
		Classes: synth.ClassNames(),
	}
	frames, err := createNPY(filepath.Join(dir, "frames.npy"), []int{n, d.Height, d.Width, 3})
	if err != nil {
		return m, err
	}
	defer frames.Close()
	classes, err := createNPY(filepath.Join(dir, "classes.npy"), []int{n, gh, gw})
	if err != nil {
		return m, err
	}
	defer classes.Close()
	tf, err := os.Create(filepath.Join(dir, "truth.jsonl"))
	if err != nil {
		return m, fmt.Errorf("dataset: %w", err)
	}
	defer tf.Close()
	truth := bufio.NewWriter(tf)
	enc := json.NewEncoder(truth)

	rgb := make([]byte, p.Width*p.Height*3)
	pix := make([]byte, p.Width*p.Height)
	patches := make([]byte, gw*gh)
	for k := 0; k < o.Sequences; k++ {
		sp := p
		sp.Seed = o.Seed + int64(k)
		m.Seeds = append(m.Seeds, sp.Seed)
		scene, err := synth.New(sp)
		if err != nil {
			return m, err
		}
		for i := 0; i < o.Frames; i++ {
			tr, err := scene.RenderClasses(rgb, pix, i)
			if err != nil {
				return m, err
			}
			model, xf, err := pre.FromRGB(rgb, p.Width, p.Height)
			if err != nil {
				return m, err
			}
			if err := frames.write(model); err != nil {
				return m, err
			}
			if err := synth.PatchClasses(patches, pix, p.Width, p.Height, gw, gh); err != nil {
				return m, err
			}
			if err := classes.write(patches); err != nil {
				return m, err
			}
			rec := Record{Seed: sp.Seed, Frame: i, Caption: tr.Caption, Anomaly: tr.Anomaly, Objects: make([]Object, len(tr.Objects))}
			for j, ob := range tr.Objects {
				rec.Objects[j] = Object{Object: ob, ModelBox: toModel(xf, ob.Box)}
			}
			if err := enc.Encode(rec); err != nil {
				return m, fmt.Errorf("dataset: truth.jsonl: %w", err)
			}
			if o.PNG {
				if err := writePNG(filepath.Join(dir, "png", pngName(sp.Seed, i)), rgb, p.Width, p.Height); err != nil {
					return m, err
				}
			}
		}
	}
	if err := truth.Flush(); err != nil {
		return m, fmt.Errorf("dataset: truth.jsonl: %w", err)
	}
	if err := frames.Close(); err != nil {
		return m, err
	}
	if err := classes.Close(); err != nil {
		return m, err
	}
	js, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), append(js, '\n'), 0o644); err != nil {
		return m, fmt.Errorf("dataset: %w", err)
	}
	return m, nil
}

// pngName is the file name of a source frame under png/.
func pngName(seed int64, i int) string { return fmt.Sprintf("%d-%05d.png", seed, i) }

// toModel maps a source-pixel box into model pixels.
func toModel(t frame.Transform, b [4]float64) [4]float64 {
	return [4]float64{
		b[0]*t.ScaleX + t.OffsetX, b[1]*t.ScaleY + t.OffsetY,
		b[2]*t.ScaleX + t.OffsetX, b[3]*t.ScaleY + t.OffsetY,
	}
}

func writePNG(path string, rgb []byte, w, h int) error {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i, j := 0, 0; i < len(rgb); i, j = i+3, j+4 {
		img.Pix[j], img.Pix[j+1], img.Pix[j+2], img.Pix[j+3] = rgb[i], rgb[i+1], rgb[i+2], 255
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("dataset: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("dataset: %s: %w", path, err)
	}
	return f.Close()
}

// npyWriter streams a uint8 C-order array into a .npy file (format 1.0).
type npyWriter struct {
	f    *os.File
	w    *bufio.Writer
	left int
	path string
}

func createNPY(path string, shape []int) (*npyWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	total := 1
	dims := ""
	for _, d := range shape {
		total *= d
		dims += fmt.Sprintf("%d, ", d)
	}
	if len(shape) > 1 {
		dims = dims[:len(dims)-1]
	}
	hdr := fmt.Sprintf("{'descr': '|u1', 'fortran_order': False, 'shape': (%s), }", dims)
	// magic (6) + version (2) + header length (2) + header, padded with
	// spaces and a newline to a multiple of 64 bytes.
	pad := 64 - (10+len(hdr)+1)%64
	if pad == 64 {
		pad = 0
	}
	for i := 0; i < pad; i++ {
		hdr += " "
	}
	hdr += "\n"
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString("\x93NUMPY\x01\x00")
	binary.Write(w, binary.LittleEndian, uint16(len(hdr)))
	w.WriteString(hdr)
	return &npyWriter{f: f, w: w, left: total, path: path}, nil
}

func (n *npyWriter) write(b []byte) error {
	if len(b) > n.left {
		return fmt.Errorf("dataset: %s: %d bytes more than its shape holds", n.path, len(b)-n.left)
	}
	n.left -= len(b)
	_, err := n.w.Write(b)
	return err
}

// Close flushes the file; it is an error to close it short of its shape.
func (n *npyWriter) Close() error {
	if n.f == nil {
		return nil
	}
	err := n.w.Flush()
	if cerr := n.f.Close(); err == nil {
		err = cerr
	}
	n.f = nil
	if err == nil && n.left != 0 {
		err = fmt.Errorf("dataset: %s: %d bytes short of its shape", n.path, n.left)
	}
	if err != nil {
		return fmt.Errorf("dataset: %w", err)
	}
	return nil
}

var _ io.Closer = (*npyWriter)(nil)
