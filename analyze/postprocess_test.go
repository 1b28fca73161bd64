package analyze

import (
	"math"
	"strings"
	"testing"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/patchline/patchline/internal/frame"
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
	dir := writeBundle(t, y)
	if err := writeFile(dir+"/model.onnx", "x"); err != nil {
		t.Fatal(err)
	}
	b, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !b.DETR() || b.Outputs.BoxFormat != BoxCXCYWHNorm || b.Outputs.Activation != ActivationSigmoid {
		t.Fatalf("defaults not applied: %+v", b.Outputs)
	}
	m := &Model{b: b}
	f := &frame.Frame{Camera: "c", SourceW: 200, SourceH: 100, Transform: frame.Stretch(200, 100, 100, 100)}
	logits, err := onnxruntime.NewTensor(onnxruntime.NewShape(1, 3, 2), []float32{3, -3, -5, -4, -1, 2})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logits.Destroy() }()
	boxes, err := onnxruntime.NewTensor(onnxruntime.NewShape(1, 3, 4), []float32{
		0.5, 0.5, 0.2, 0.4, // -> input [40 30 60 70] -> source [80 30 120 70]
		0.5, 0.5, 1, 1,
		0.9, 0.9, 0.4, 0.4, // -> input [70 70 110 110] -> clamped to the source
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = boxes.Destroy() }()
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

func TestDetectRequiresAllOutputs(t *testing.T) {
	y := strings.Replace(vitYAML(t), "task: classify", "task: detect", 1)
	y = strings.Replace(y, "  logits: logits", "  labels: labels\n  boxes: boxes", 1)
	_, err := LoadBundle(writeBundle(t, y))
	if err == nil || !strings.Contains(err.Error(), "outputs.scores: is required for task detect") {
		t.Fatalf("err = %v", err)
	}
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
	logits, err := onnxruntime.NewTensor(onnxruntime.NewShape(3, 3), []float32{
		1, float32(math.NaN()), 0,
		0, inf, 0,
		0, 2, 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logits.Destroy() }()
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
