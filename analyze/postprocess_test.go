package analyze

import (
	"log/slog"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/internal/testenv"
)

func TestFixedBatchChunksAndPads(t *testing.T) {
	m := openViT(t)
	two, _ := vitTestFrames(t)
	frames := []*frame.Frame{two[0], two[1], two[0], two[1], two[0], two[1]}
	want, err := m.Run(frames)
	if err != nil {
		t.Fatal(err)
	}
	m.fixedBatch = 4 // as if the graph's batch dimension were fixed at 4
	got, err := m.Run(frames)
	if err != nil {
		t.Fatal(err)
	}
	for i := range frames {
		for k := range want[i].Labels {
			g, w := got[i].Labels[k], want[i].Labels[k]
			if g.ClassID != w.ClassID || math.Abs(g.Score-w.Score) > 1e-5 {
				t.Errorf("frame %d label %d: chunked %+v, whole batch %+v", i, k, g, w)
			}
		}
	}
}

func TestDETRPostprocess(t *testing.T) {
	requireORT(t)
	y := `name: detr
task: detect
onnx: model.onnx
input: {kind: pixels, name: images, width: 100, height: 100, patch_size: 10, resize: stretch, scale: 1}
outputs: {logits: logits, pred_boxes: pred_boxes}
labels: [cat, dog]
score_threshold: 0.6
`
	b := loadYAMLBundle(t, y)
	if !b.DETR() || b.Outputs.BoxFormat != BoxCXCYWHNorm || b.Outputs.Activation != ActivationSigmoid {
		t.Fatalf("defaults not applied: %+v", b.Outputs)
	}
	m := &Model{b: b}
	f := &frame.Frame{Camera: "c", SourceW: 200, SourceH: 100, Transform: frame.Stretch(200, 100, 100, 100)}
	logits := tensor(t, onnxruntime.NewShape(1, 3, 2), []float32{3, -3, -5, -4, -1, 2})
	boxes := tensor(t, onnxruntime.NewShape(1, 3, 4), []float32{
		0.5, 0.5, 0.2, 0.4, // -> input [40 30 60 70] -> source [80 30 120 70]
		0.5, 0.5, 1, 1,
		0.9, 0.9, 0.4, 0.4, // -> input [70 70 110 110] -> clamped to the source
	})
	res := make([]Result, 1)
	if err := m.detectDETR([]*frame.Frame{f}, res, logits, boxes); err != nil {
		t.Fatal(err)
	}
	d := res[0].Detections
	if len(d) != 2 {
		t.Fatalf("detections = %+v, want 2", d)
	}
	// Sorted by score: cat sigmoid(3)=0.953, dog sigmoid(2)=0.881.
	if d[0].Label != "cat" || math.Abs(d[0].Score-1/(1+math.Exp(-3))) > 1e-9 || !near(d[0].Box, [4]float64{80, 30, 120, 70}) {
		t.Errorf("first detection %+v", d[0])
	}
	if d[1].Label != "dog" || d[1].ClassID != 1 || !near(d[1].Box, [4]float64{140, 70, 200, 100}) {
		t.Errorf("second detection %+v", d[1])
	}
}

// TestDETRSoftmaxNoObject: with softmax, DETR's trailing extra class is
// "no object": a query where it wins is no detection, and it is never
// reported as a class of its own.
func TestDETRSoftmaxNoObject(t *testing.T) {
	requireORT(t)
	b := loadYAMLBundle(t, `name: detr
task: detect
onnx: model.onnx
input: {kind: pixels, name: images, width: 100, height: 100, patch_size: 10, resize: stretch, scale: 1}
outputs: {logits: logits, pred_boxes: pred_boxes, activation: softmax}
labels: [cat, dog]
score_threshold: 0.5
`)
	m := &Model{b: b}
	f := &frame.Frame{Camera: "c", SourceW: 100, SourceH: 100, Transform: frame.Stretch(100, 100, 100, 100)}
	logits := tensor(t, onnxruntime.NewShape(1, 2, 3), []float32{
		1, 0, 5, // no object: cat's probability is 0.018
		0, 5, 1, // dog: 0.976
	})
	boxes := tensor(t, onnxruntime.NewShape(1, 2, 4), []float32{0.5, 0.5, 0.2, 0.2, 0.5, 0.5, 0.4, 0.4})
	res := make([]Result, 1)
	if err := m.detectDETR([]*frame.Frame{f}, res, logits, boxes); err != nil {
		t.Fatal(err)
	}
	d := res[0].Detections
	if len(d) != 1 || d[0].Label != "dog" || d[0].ClassID != 1 || math.Abs(d[0].Score-math.Exp(5)/(1+math.Exp(5)+math.E)) > 1e-6 {
		t.Errorf("detections = %+v, want only dog at 0.976 (the no-object query left out)", d)
	}
}

func TestDetectRequiresAllOutputs(t *testing.T) {
	y := strings.Replace(vitYAML(t), "task: classify", "task: detect", 1)
	y = strings.Replace(y, "  logits: logits", "  labels: labels\n  boxes: boxes", 1)
	_, err := LoadBundle(writeBundle(t, y))
	if err == nil || !strings.Contains(err.Error(), "outputs.scores: is required for task detect") {
		t.Fatalf("err = %v", err)
	}
}

// loadYAMLBundle loads bundle.yaml y with a placeholder ONNX file, for
// tests of the post-processing alone.
func loadYAMLBundle(t *testing.T, y string) *Bundle {
	t.Helper()
	dir := writeBundle(t, y)
	if err := writeFile(dir+"/model.onnx", "x"); err != nil {
		t.Fatal(err)
	}
	b, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func near(a, b [4]float64) bool {
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-4 {
			return false
		}
	}
	return true
}

// TestClassifyNonFiniteLogits: a frame whose logits hold a NaN or an
// infinity (an fp16 export overflowing) gets no labels; the other frames
// of the batch keep theirs, and nothing panics.
func TestClassifyNonFiniteLogits(t *testing.T) {
	requireORT(t)
	m := &Model{b: &Bundle{TopK: 2, Labels: []string{"a", "b", "c"}, Outputs: BundleOutputs{Logits: "logits"}}}
	inf := float32(math.Inf(1))
	logits := tensor(t, onnxruntime.NewShape(3, 3), []float32{
		1, float32(math.NaN()), 0,
		0, inf, 0,
		0, 2, 1,
	})
	frames := []*frame.Frame{{Camera: "c"}, {Camera: "c"}, {Camera: "c"}}
	res := make([]Result, 3)
	if err := m.classify(frames, res, logits); err != nil {
		t.Fatal(err)
	}
	if len(res[0].Labels) != 0 || len(res[1].Labels) != 0 {
		t.Errorf("non-finite logits gave labels %+v, %+v; want none", res[0].Labels, res[1].Labels)
	}
	if l := res[2].Labels; len(l) != 2 || l[0].Label != "b" || l[1].Label != "c" {
		t.Errorf("finite frame's labels %+v, want b then c", l)
	}
}

// TestDetectionsLeftOut: a box with a NaN, or with no part inside the
// frame (in letterbox padding, or outside the input), is left out and
// counted; an inverted box is put in order; a class id beyond the labels
// is reported as class<id>, with a warning that the labels may not match.
func TestDetectionsLeftOut(t *testing.T) {
	requireORT(t)
	y := `name: leftout
task: detect
onnx: model.onnx
input: {kind: pixels, name: images, width: 100, height: 100, patch_size: 10, resize: letterbox, scale: 1}
outputs: {labels: labels, boxes: boxes, scores: scores}
labels: [cat, dog]
score_threshold: 0.5
`
	b := loadYAMLBundle(t, y)
	var logs testenv.Buffer
	m := &Model{b: b}
	m.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	// A 300×500 camera letterboxed into 100×100: the picture is x 20..80.
	tr, _, _ := frame.Letterbox(300, 500, 100, 100)
	f := &frame.Frame{Camera: "tall", Seq: 7, SourceW: 300, SourceH: 500, Transform: tr}
	nan := float32(math.NaN())
	ids := tensor(t, onnxruntime.NewShape(1, 7), []int64{0, 1, 0, 1, 5, 0, -1})
	boxes := tensor(t, onnxruntime.NewShape(1, 7, 4), []float32{
		80, 60, 20, 40, // inverted: → input [20 40 80 60] → source [0 200 300 300]
		nan, 0, 10, 10, // NaN
		0, 10, 15, 90, // in the left padding
		120, 0, 150, 50, // outside the input
		30, 30, 40, 40, // class 5 of 2 labels → source [50 150 100 200]
		30, 30, 40, 40, // a NaN score
		30, 30, 40, 40, // class -1: a padding row of some exports
	})
	scores := tensor(t, onnxruntime.NewShape(1, 7), []float32{0.9, 0.9, 0.9, 0.9, 0.8, nan, 0.95})
	before := func(reason string) float64 {
		return testutil.ToFloat64(telemetry.DetectionsDiscarded.WithLabelValues("leftout", reason))
	}
	nonFinite, empty := before("non_finite"), before("empty_box")
	res := make([]Result, 1)
	if err := m.detect([]*frame.Frame{f}, res, ids, boxes, scores); err != nil {
		t.Fatal(err)
	}
	d := res[0].Detections
	if len(d) != 2 || d[0].Label != "cat" || !near(d[0].Box, [4]float64{0, 200, 300, 300}) || d[1].Label != "class5" || !near(d[1].Box, [4]float64{50, 150, 100, 200}) {
		t.Errorf("detections %+v, want cat [0 200 300 300] and class5 [50 150 100 200]", d)
	}
	if got := before("non_finite") - nonFinite; got != 2 {
		t.Errorf("non_finite discards = %v, want 2 (a NaN box, a NaN score)", got)
	}
	if got := before("empty_box") - empty; got != 2 {
		t.Errorf("empty_box discards = %v, want 2", got)
	}
	for _, want := range []string{"detection left out: non_finite", "detection left out: empty_box", "class id beyond the bundle's labels", "class_id=5"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}
