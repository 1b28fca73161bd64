package analyze

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/schema"
)

// craftLogits builds patch logits for a class map: each patch's class gets
// logit conf[i] (default 3), every other class 0, so its softmax probability
// is e^conf / (e^conf + c - 1).
func craftLogits(classes []int, c int, conf map[int]float32) []float32 {
	out := make([]float32, len(classes)*c)
	for i, cl := range classes {
		v, ok := conf[i]
		if !ok {
			v = 3
		}
		out[i*c+cl] = v
	}
	return out
}

func pOf(logit float64, c int) float64 { return math.Exp(logit) / (math.Exp(logit) + float64(c-1)) }

func TestSegmentPatches(t *testing.T) {
	// 4 columns × 3 rows, 3 classes. Index 7 (col 3, row 1) and index 8
	// (col 0, row 2) are neighbours in memory but not on the grid.
	classes := []int{
		1, 1, 0, 2,
		0, 1, 0, 2,
		2, 0, 0, 1,
	}
	conf := map[int]float32{0: 1, 1: 2, 5: 4, 3: 5}
	got, regions := segmentPatches(craftLogits(classes, 3, conf), 4, 3, 3)
	if !slices.Equal(got, classes) {
		t.Fatalf("classes = %v, want %v", got, classes)
	}
	want := []region{
		{Class: 1, Col0: 0, Row0: 0, Col1: 1, Row1: 1, Patches: 3, Score: (pOf(1, 3) + pOf(2, 3) + pOf(4, 3)) / 3},
		{Class: 2, Col0: 3, Row0: 0, Col1: 3, Row1: 1, Patches: 2, Score: (pOf(5, 3) + pOf(3, 3)) / 2},
		{Class: 2, Col0: 0, Row0: 2, Col1: 0, Row1: 2, Patches: 1, Score: pOf(3, 3)},
		{Class: 1, Col0: 3, Row0: 2, Col1: 3, Row1: 2, Patches: 1, Score: pOf(3, 3)},
	}
	if len(regions) != len(want) {
		t.Fatalf("regions = %+v, want %+v", regions, want)
	}
	for i, r := range regions {
		w := want[i]
		if math.Abs(r.Score-w.Score) > 1e-6 {
			t.Errorf("region %d score %v, want %v", i, r.Score, w.Score)
		}
		r.Score = w.Score
		if r != w {
			t.Errorf("region %d = %+v, want %+v", i, r, w)
		}
	}

	// A U shape is one region (connected through the bottom row); diagonal
	// contact is not a connection; ties go to the lower class id.
	u := []int{
		1, 0, 1, 0,
		1, 0, 1, 0,
		1, 1, 1, 0,
		0, 0, 0, 1,
	}
	logits := craftLogits(u, 2, nil)
	logits[3*2+0], logits[3*2+1] = 1, 1 // patch 3: tie between 0 and 1 → 0
	_, regions = segmentPatches(logits, 4, 4, 2)
	if len(regions) != 2 || regions[0].Patches != 7 || regions[0].Col1 != 2 || regions[0].Row1 != 2 || regions[1].Patches != 1 || regions[1].Col0 != 3 || regions[1].Row0 != 3 {
		t.Errorf("U shape regions = %+v", regions)
	}

	// All background: no regions.
	if _, r := segmentPatches(make([]float32, 6*5), 3, 2, 5); len(r) != 0 {
		t.Errorf("all-background regions = %+v", r)
	}
}

// segmentBundle loads a segment bundle: 96x96, P=8 (12x12 grid), 4 classes,
// 3 scene labels, the given resize and optional score threshold. The ONNX file
// is a placeholder: post-processing tests feed crafted outputs.
func segmentBundle(t *testing.T, resize string, threshold any) *Bundle {
	t.Helper()
	dir := copyBundle(t, segmentTiny)
	editJSON(t, dir, HFConfigFile, func(m map[string]any) {
		m["id2label"] = map[string]any{"0": "background", "1": "red circle", "2": "blue square", "3": "green triangle"}
		delete(m, "label2id")
		pl := patchline(m)
		pl["resize"] = resize
		pl["scene_id2label"] = map[string]any{"0": "red circle", "1": "blue square", "2": "green triangle"}
		if threshold != nil {
			pl["score_threshold"] = threshold
		}
	})
	b, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tensor is a tensor of data in shape, destroyed when the test ends.
func tensor[T onnxruntime.TensorData](t *testing.T, shape onnxruntime.Shape, data []T) onnxruntime.Value {
	t.Helper()
	v, err := onnxruntime.NewTensor(shape, data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Destroy() })
	return v
}

func TestSegmentPostprocessLetterbox(t *testing.T) {
	requireORT(t)
	b := segmentBundle(t, frame.ResizeLetterbox, nil)
	m := &Model{b: b}
	// A 192x96 source letterboxed into 96x96: scale 0.5, picture rows
	// 24..72 of the input (patch rows 3..8), padding above and below.
	tr, iw, ih := frame.Letterbox(192, 96, 96, 96)
	if iw != 96 || ih != 48 || tr.OffsetY != 24 || tr.ScaleX != 0.5 {
		t.Fatalf("letterbox = %+v %dx%d", tr, iw, ih)
	}
	f := &frame.Frame{Camera: "c", SourceW: 192, SourceH: 96, Width: 96, Height: 96, Patch: 8, Resize: frame.ResizeLetterbox, Transform: tr}
	g := func(col, row int) int { return row*12 + col }
	classes := make([]int, 144)
	// red circle: cols 2..3, rows 4..5 → input [16 32 32 48] → source [32 16 64 48].
	for _, i := range []int{g(2, 4), g(3, 4), g(2, 5), g(3, 5)} {
		classes[i] = 1
	}
	// blue square: cols 10..11, rows 2..3, half in the top padding →
	// input [80 16 96 32] → source [160 -16 192 16] clamped to [160 0 192 16].
	for _, i := range []int{g(10, 2), g(11, 2), g(10, 3), g(11, 3)} {
		classes[i] = 2
	}
	// green triangle: wholly in the bottom padding (row 10) → dropped.
	classes[g(5, 10)] = 3
	conf := map[int]float32{g(2, 4): 1, g(3, 5): 5}

	// Frame 2 of the batch: one green triangle patch at (0,3) → source [0 0 16 16].
	classes2 := make([]int, 144)
	classes2[g(0, 3)] = 3
	logits := append(craftLogits(classes, 4, conf), craftLogits(classes2, 4, nil)...)
	scene := []float32{2, -1, 0.3, 0, -3, 4}

	res := make([]Result, 2)
	if err := m.segment([]*frame.Frame{f, f}, res, tensor(t, onnxruntime.NewShape(2, 144, 4), logits),
		tensor(t, onnxruntime.NewShape(2, 3), scene)); err != nil {
		t.Fatal(err)
	}
	r := res[0]
	redScore := (pOf(1, 4) + pOf(5, 4) + 2*pOf(3, 4)) / 4
	wantDets := []annotation.Detection{
		{Label: "blue square", ClassID: 2, Score: pOf(3, 4), Box: [4]float64{160, 0, 192, 16}},
		{Label: "red circle", ClassID: 1, Score: redScore, Box: [4]float64{32, 16, 64, 48}},
	}
	if redScore > pOf(3, 4) {
		wantDets[0], wantDets[1] = wantDets[1], wantDets[0]
	}
	if len(r.Detections) != 2 {
		t.Fatalf("detections = %+v, want %+v", r.Detections, wantDets)
	}
	for i, d := range r.Detections {
		w := wantDets[i]
		if d.Label != w.Label || d.ClassID != w.ClassID || math.Abs(d.Score-w.Score) > 1e-6 || !near(d.Box, w.Box) {
			t.Errorf("detection %d = %+v, want %+v", i, d, w)
		}
	}
	p := r.Patches
	if p == nil || p.Grid != [2]int{12, 12} || p.PatchSize != 8 || p.Transform != [4]float64{0.5, 0.5, 0, 24} || !slices.Equal(p.Classes, classes) ||
		!slices.Equal(p.Labels, []string{"background", "red circle", "blue square", "green triangle"}) {
		t.Errorf("patch map = %+v", p)
	}
	// Scene: sigmoid(2)=0.88 and sigmoid(0.3)=0.57 are above 0.5; sigmoid(0)=0.5 is not.
	if len(r.Labels) != 2 || r.Labels[0].Label != "red circle" || r.Labels[1].Label != "green triangle" || r.Labels[1].ClassID != 2 ||
		math.Abs(r.Labels[0].Score-1/(1+math.Exp(-2))) > 1e-9 {
		t.Errorf("scene labels = %+v", r.Labels)
	}
	r2 := res[1]
	if len(r2.Detections) != 1 || r2.Detections[0].Label != "green triangle" || !near(r2.Detections[0].Box, [4]float64{0, 0, 16, 16}) {
		t.Errorf("frame 2 detections = %+v", r2.Detections)
	}
	if len(r2.Labels) != 1 || r2.Labels[0].Label != "green triangle" || r2.Labels[0].ClassID != 2 {
		t.Errorf("frame 2 scene labels = %+v", r2.Labels)
	}

	// The annotation with the patch map is valid against the schema.
	sch, err := schema.CompileAnnotation()
	if err != nil {
		t.Fatal(err)
	}
	a := annotation.Annotation{
		Schema: annotation.Schema, Kind: annotation.KindAnalysis, Camera: "c", Seq: 1, CapturedAt: time.Now().UTC(),
		SourceWidth: 192, SourceHeight: 96, Model: b.Name, Task: TaskSegment,
		Labels: r.Labels, Detections: r.Detections, Patches: r.Patches,
		LatencyMs: map[string]float64{"total": 1}, TraceID: "0123456789abcdef0123456789abcdef",
	}
	doc, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.ValidateAnnotation(sch, doc); err != nil {
		t.Fatalf("segment annotation fails the schema: %v\n%s", err, doc)
	}
	for name, bad := range map[string]func(p *annotation.PatchMap){
		"negative class": func(p *annotation.PatchMap) { p.Classes[0] = -1 },
		"no labels":      func(p *annotation.PatchMap) { p.Labels = nil },
	} {
		q := *r.Patches
		q.Classes = slices.Clone(q.Classes)
		bad(&q)
		a.Patches = &q
		doc, _ := json.Marshal(a)
		if err := schema.ValidateAnnotation(sch, doc); err == nil {
			t.Errorf("schema accepts a patch map with %s", name)
		}
	}
	var raw map[string]any
	_ = json.Unmarshal(doc, &raw)
	raw["patches"].(map[string]any)["grid"] = []any{12, 12, 1}
	doc, _ = json.Marshal(raw)
	if err := schema.ValidateAnnotation(sch, doc); err == nil {
		t.Error("schema accepts a 3-value grid")
	}
}

func TestSegmentScoreThreshold(t *testing.T) {
	requireORT(t)
	b := segmentBundle(t, frame.ResizeStretch, 0.8)
	m := &Model{b: b}
	f := &frame.Frame{Camera: "c", SourceW: 96, SourceH: 96, Transform: frame.Stretch(96, 96, 96, 96)}
	classes := make([]int, 144)
	classes[0], classes[143] = 1, 2
	// patch 0: p = e^1/(e^1+3) = 0.475 < 0.8 (left out); patch 143: e^5/(e^5+3) = 0.98.
	logits := craftLogits(classes, 4, map[int]float32{0: 1, 143: 5})
	res := make([]Result, 1)
	if err := m.segment([]*frame.Frame{f}, res, tensor(t, onnxruntime.NewShape(1, 144, 4), logits), nil); err != nil {
		t.Fatal(err)
	}
	if d := res[0].Detections; len(d) != 1 || d[0].ClassID != 2 || !near(d[0].Box, [4]float64{88, 88, 96, 96}) {
		t.Errorf("detections = %+v, want only the blue square at [88 88 96 96]", d)
	}
	if res[0].Labels != nil || res[0].Patches.Classes[0] != 1 {
		t.Errorf("result = %+v", res[0])
	}
	// Wrong output shapes are errors, not panics.
	bad := tensor(t, onnxruntime.NewShape(1, 100, 4), make([]float32, 400))
	if err := m.segment([]*frame.Frame{f}, res, bad, nil); err == nil {
		t.Error("segment took patch logits of 100 patches for a 144-patch grid")
	}
	good := tensor(t, onnxruntime.NewShape(1, 144, 4), logits)
	if err := m.segment([]*frame.Frame{f}, res, good, tensor(t, onnxruntime.NewShape(1, 5), make([]float32, 5))); err == nil {
		t.Error("segment took 5 scene logits for 3 scene labels")
	}
}

func TestSegmentMinRegion(t *testing.T) {
	requireORT(t)
	b := segmentBundle(t, frame.ResizeStretch, 0)
	b.MinRegion = 2
	m := &Model{b: b}
	f := &frame.Frame{Camera: "c", SourceW: 96, SourceH: 96, Transform: frame.Stretch(96, 96, 96, 96)}
	classes := make([]int, 144)
	classes[0], classes[142], classes[143] = 1, 2, 2 // one patch of class 1, two of class 2
	logits := craftLogits(classes, 4, map[int]float32{})
	res := make([]Result, 1)
	if err := m.segment([]*frame.Frame{f}, res, tensor(t, onnxruntime.NewShape(1, 144, 4), logits), nil); err != nil {
		t.Fatal(err)
	}
	if d := res[0].Detections; len(d) != 1 || d[0].ClassID != 2 {
		t.Errorf("detections = %+v, want only the 2-patch region of class 2", d)
	}
	if res[0].Patches.Classes[0] != 1 {
		t.Error("the patch map must keep small regions")
	}
}

// The scene-vit-shaped test bundle through ORT matches torch, and Run's
// post-processing equals segmentPatches/sceneLabels on torch's outputs.
func TestSegmentTinyMatchesTorch(t *testing.T) {
	m := openTestBundle(t, segmentTiny, segmentOptions())
	frames, want := expectedFrames(t, m, "patch_logits", "scene_logits")
	outs, err := m.forward(frames)
	defer destroyAll(outs)
	if err != nil {
		t.Fatal(err)
	}
	requireClose(t, "patch_logits", outs[0].(*onnxruntime.Tensor[float32]).GetData(), want[0])
	requireClose(t, "scene_logits", outs[1].(*onnxruntime.Tensor[float32]).GetData(), want[1])

	res, err := m.Run(frames)
	if err != nil {
		t.Fatal(err)
	}
	b := m.Bundle()
	for i, r := range res {
		classes, regions := segmentPatches(want[0][i*144*13:(i+1)*144*13], 12, 12, 13)
		if r.Patches == nil || !slices.Equal(r.Patches.Classes, classes) {
			t.Errorf("frame %d: patch classes differ from torch's argmax", i)
		}
		if len(r.Detections) != len(regions) {
			t.Errorf("frame %d: %d detections, torch outputs give %d regions", i, len(r.Detections), len(regions))
		}
		scene := sceneLabels(want[1][i*12:(i+1)*12], b.SceneLabels)
		if len(r.Labels) != len(scene) {
			t.Errorf("frame %d: scene labels %+v, torch gives %+v", i, r.Labels, scene)
		}
		for k := range min(len(scene), len(r.Labels)) {
			if r.Labels[k].ClassID != scene[k].ClassID || math.Abs(r.Labels[k].Score-scene[k].Score) > 1e-4 {
				t.Errorf("frame %d scene label %d = %+v, torch %+v", i, k, r.Labels[k], scene[k])
			}
		}
		for _, d := range r.Detections {
			if !(d.Box[0] >= 0 && d.Box[1] >= 0 && d.Box[2] <= 160 && d.Box[3] <= 120 && d.Box[0] < d.Box[2] && d.Box[1] < d.Box[3]) || d.ClassID == 0 || d.Label != b.Labels[d.ClassID] {
				t.Errorf("frame %d: detection %+v", i, d)
			}
		}
		t.Logf("frame %d: %d regions, %d scene labels", i, len(r.Detections), len(r.Labels))
	}
}

// The analyze stage publishes the segment result (patch map included) for
// a frame that travelled over a real NATS server.
func TestSegmentStagePublishesPatchMap(t *testing.T) {
	m := openTestBundle(t, segmentTiny, segmentOptions())
	frames, _ := expectedFrames(t, m)
	want, err := m.Run(frames[:1])
	if err != nil {
		t.Fatal(err)
	}
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	got := make(chan []byte, 1)
	sub, err := nc.Subscribe(bus.AnalyzedSubject("test"), func(msg *nats.Msg) {
		select {
		case got <- msg.Data:
		default: // one is enough
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	st := NewStage(natstest.Connect(t, url), m, config.Analyze{BatchSize: 1, QueueSize: 4}, natstest.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	defer func() { cancel(); <-done }()

	pub := natstest.Connect(t, url)
	deadline := time.After(10 * time.Second)
	for {
		if err := pub.PublishMsg(frames[0].Encode(bus.FrameSubject("test"))); err != nil {
			t.Fatal(err)
		}
		select {
		case data := <-got:
			var a annotation.Annotation
			if err := json.Unmarshal(data, &a); err != nil {
				t.Fatal(err)
			}
			if a.Task != TaskSegment || a.Model != "segment-tiny" || a.Patches == nil || !slices.Equal(a.Patches.Classes, want[0].Patches.Classes) ||
				len(a.Detections) != len(want[0].Detections) || len(a.Labels) != len(want[0].Labels) {
				t.Fatalf("annotation = %s\nwant patches %v", data, want[0].Patches.Classes)
			}
			return
		case <-time.After(200 * time.Millisecond): // the stage may not have subscribed yet
		case <-deadline:
			t.Fatal("no annotation within 10s")
		}
	}
}

// The same segment model described by a bundle.yaml gives the same results
// as its Hugging Face layout: both load into one Bundle and one Run path.
func TestSegmentYAMLEqualsHF(t *testing.T) {
	hf := openTestBundle(t, segmentTiny, segmentOptions())
	y := `name: segment-tiny
task: segment
onnx: ` + hf.Bundle().ONNXPath + `
input: {kind: patches, name: patch_tokens, width: 96, height: 96, patch_size: 8, resize: stretch, scale: 0.00392156862745098, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
outputs: {patch_logits: patch_logits, scene_logits: scene_logits}
labels: [` + strings.Join(hf.Bundle().Labels, ", ") + `]
scene_labels: [` + strings.Join(hf.Bundle().SceneLabels, ", ") + `]
`
	b, err := LoadBundle(writeBundle(t, y))
	if err != nil {
		t.Fatal(err)
	}
	ym, err := OpenModel(b, segmentOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ym.Close() }()
	frames, _ := expectedFrames(t, hf)
	want, err := hf.Run(frames)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ym.Run(frames)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		g, w := got[i], want[i]
		if !slices.Equal(g.Patches.Classes, w.Patches.Classes) || len(g.Detections) != len(w.Detections) || len(g.Labels) != len(w.Labels) {
			t.Errorf("frame %d: bundle.yaml result differs from the Hugging Face layout's", i)
		}
	}

	// scene_labels and scene_logits go together.
	for _, c := range []struct{ old, new, want string }{
		{"outputs: {patch_logits: patch_logits, scene_logits: scene_logits}", "outputs: {patch_logits: patch_logits}", "scene_labels: has 12 names; give scene_labels exactly when outputs.scene_logits is set"},
		{"task: segment", "task: classify", "outputs.patch_logits: is only for task segment"},
	} {
		_, err := LoadBundle(writeBundle(t, strings.Replace(y, c.old, c.new, 1)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want %q", err, c.want)
		}
	}
}
