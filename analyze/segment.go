package analyze

import (
	"fmt"
	"math"
	"sort"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/frame"
)

// SceneThreshold is the sigmoid probability above which a segment model's
// scene label is reported.
const SceneThreshold = 0.5

// region is a 4-connected set of patches of one non-background class.
type region struct {
	Class int
	// Col0, Row0, Col1, Row1 bound the region on the patch grid (inclusive).
	Col0, Row0, Col1, Row1 int
	Patches                int
	// Score is the mean softmax probability of Class over the region's patches.
	Score float64
}

// inputBox is the region's bounding box in model-input pixels for patch side p.
func (r region) inputBox(p int) [4]float64 {
	return [4]float64{float64(r.Col0 * p), float64(r.Row0 * p), float64((r.Col1 + 1) * p), float64((r.Row1 + 1) * p)}
}

// segmentPatches reads one frame's patch logits (row-major grid of
// cols×rows patches, c classes each): the argmax class of every patch (ties
// go to the lower id) and the 4-connected regions of equal non-background
// class (class 0 is background), in the order of their first patch in
// row-major scan.
func segmentPatches(logits []float32, cols, rows, c int) ([]int, []region) {
	n := cols * rows
	classes := make([]int, n)
	prob := make([]float64, n) // softmax probability of the patch's class
	for i := range n {
		row := logits[i*c : (i+1)*c]
		best := 0
		for k := 1; k < c; k++ {
			if row[k] > row[best] {
				best = k
			}
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v) - float64(row[best]))
		}
		classes[i], prob[i] = best, 1/sum
	}

	seen := make([]bool, n)
	var regions []region
	var stack []int
	for start := range n {
		if seen[start] || classes[start] == 0 {
			continue
		}
		cl := classes[start]
		r := region{Class: cl, Col0: cols, Row0: rows, Col1: -1, Row1: -1}
		var sum float64
		seen[start] = true
		stack = append(stack[:0], start)
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			col, row := i%cols, i/cols
			r.Col0, r.Col1 = min(r.Col0, col), max(r.Col1, col)
			r.Row0, r.Row1 = min(r.Row0, row), max(r.Row1, row)
			r.Patches++
			sum += prob[i]
			for _, j := range [4]int{i - cols, i + cols, i - 1, i + 1} {
				switch {
				case j < 0 || j >= n || seen[j] || classes[j] != cl:
				case (j == i-1 || j == i+1) && j/cols != row: // no wrap across rows
				default:
					seen[j] = true
					stack = append(stack, j)
				}
			}
		}
		r.Score = sum / float64(r.Patches)
		regions = append(regions, r)
	}
	return classes, regions
}

// sceneLabels are the scene classes whose sigmoid probability is above
// SceneThreshold, best first.
func sceneLabels(logits []float32, names []string) []annotation.Label {
	var out []annotation.Label
	for k, v := range logits {
		p := 1 / (1 + math.Exp(-float64(v)))
		if p > SceneThreshold {
			out = append(out, annotation.Label{Label: names[k], ClassID: k, Score: p})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Score > out[j].Score })
	return out
}

// segment post-processes a segment model's outputs: per patch the argmax
// class (the annotation's patch map); per 4-connected region of one
// non-background class a detection whose box is the region's patch-grid box
// × patch size in model pixels, mapped to source pixels with the frame's
// Transform, and whose score is the mean softmax probability of the class
// over the region (regions below score_threshold, or lying wholly in
// letterbox padding, are left out); scene logits → sigmoid → labels above
// 0.5. sceneV is nil when the bundle has no scene output.
func (m *Model) segment(frames []*frame.Frame, results []Result, patchV, sceneV onnxruntime.Value) error {
	b := m.b
	logits, shape, err := floats(patchV, b.Outputs.PatchLogits, 3)
	if err != nil {
		return err
	}
	n, c := b.NumPatches(), len(b.Labels)
	if int(shape[0]) < len(frames) || int(shape[1]) != n || int(shape[2]) != c {
		return fmt.Errorf("output %s has shape %v, want [>=%d %d %d]", b.Outputs.PatchLogits, shape, len(frames), n, c)
	}
	var scene []float32
	ns := len(b.SceneLabels)
	if sceneV != nil {
		var sshape onnxruntime.Shape
		if scene, sshape, err = floats(sceneV, b.Outputs.SceneLogits, 2); err != nil {
			return err
		}
		if int(sshape[0]) < len(frames) || int(sshape[1]) != ns {
			return fmt.Errorf("output %s has shape %v, want [>=%d %d]", b.Outputs.SceneLogits, sshape, len(frames), ns)
		}
	}
	cols, rows := b.Grid()
	p := b.Input.PatchSize
	thr := b.Threshold()
	for i, f := range frames {
		classes, regions := segmentPatches(logits[i*n*c:(i+1)*n*c], cols, rows, c)
		var dets []annotation.Detection
		for _, r := range regions {
			if !(r.Score >= thr) || r.Patches < b.MinRegion {
				continue
			}
			box := f.Transform.BoxToSource(r.inputBox(p), f.SourceW, f.SourceH)
			if !(box[2] > box[0] && box[3] > box[1]) {
				continue // wholly outside the picture (letterbox padding)
			}
			dets = append(dets, annotation.Detection{Label: m.label(r.Class), ClassID: r.Class, Score: r.Score, Box: box})
		}
		sortDetections(dets)
		t := f.Transform
		results[i] = Result{
			Detections: dets,
			Patches: &annotation.PatchMap{
				Grid: [2]int{cols, rows}, PatchSize: p,
				Transform: [4]float64{t.ScaleX, t.ScaleY, t.OffsetX, t.OffsetY},
				Classes:   classes, Labels: b.Labels,
			},
		}
		if scene != nil {
			results[i].Labels = sceneLabels(scene[i*ns:(i+1)*ns], b.SceneLabels)
		}
	}
	return nil
}
