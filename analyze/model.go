package analyze

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/hfbundle"
	"github.com/patchline/patchline/internal/ort"
	"github.com/patchline/patchline/internal/telemetry"
)

// ModelOptions configures OpenModel. Width, Height, PatchSize and Resize are
// the decode settings the frames will arrive with; they must match the bundle.
type ModelOptions struct {
	Threads    int    // ONNX Runtime intra-op threads; 0 = ONNX Runtime's default, within the CPUs the process may use
	Spin       bool   // let the intra-op threads spin-wait (ONNX Runtime's default); see config.Analyze.Spin
	ORTLibrary string // ONNX Runtime library path; "" = $PATCHLINE_ORT_LIB or .cache (see package ort)
	Width      int
	Height     int
	PatchSize  int
	Resize     string
}

// OptionsFromConfig builds ModelOptions from the pipeline configuration.
func OptionsFromConfig(d config.Decode, a config.Analyze) ModelOptions {
	return ModelOptions{
		Threads: a.Threads, Spin: a.Spin, ORTLibrary: a.ORTLibrary,
		Width: d.Width, Height: d.Height, PatchSize: d.PatchSize, Resize: d.Resize,
	}
}

// Result is the model's output for one frame: Labels for classify,
// Detections (boxes in source pixels, best first) for detect; for segment,
// Patches (the class map), Detections (one per connected region) and Labels
// (scene labels above 0.5).
type Result struct {
	Labels     []annotation.Label
	Detections []annotation.Detection
	Patches    *annotation.PatchMap
}

// Model is an open ONNX Runtime session for a bundle. Run may be called from
// several goroutines; calls are serialised (buffers are reused across calls).
type Model struct {
	b           *Bundle
	sess        *onnxruntime.DynamicAdvancedSession
	inputNames  []string // main input, then extras
	outputNames []string
	fixedBatch  int // >0 when the graph's batch dimension is fixed
	notes       []string
	numClasses  int // logits classes per query/frame, from the graph (-1 = dynamic)

	lut [3][256]float32 // normalised value of byte v in channel c

	mu    sync.Mutex
	log   *slog.Logger     // SetLogger; nil: no warnings
	warns telemetry.Counts // warnings by reason, for thinning them
	in    []float32        // main input buffer
	rgb   []byte           // one untokenized frame (pixels input)
	sizes []int64          // input_size extra
	probs []float64        // classify scratch
}

// OpenModel loads b's ONNX file into an ONNX Runtime session after checking
// that the decode settings in opts match the bundle and that the graph's
// inputs and outputs (names, element types, shapes) match the descriptor.
func OpenModel(b *Bundle, opts ModelOptions) (*Model, error) {
	if b == nil {
		return nil, errors.New("analyze: OpenModel: nil bundle")
	}
	if err := b.CheckDecode(opts.Width, opts.Height, opts.PatchSize, opts.Resize); err != nil {
		return nil, fmt.Errorf("analyze: %w", err)
	}
	if opts.Threads < 0 {
		return nil, fmt.Errorf("analyze: threads is %d, want >= 0", opts.Threads)
	}
	if err := ort.Init(opts.ORTLibrary); err != nil {
		return nil, fmt.Errorf("analyze: %w", err)
	}
	ins, outs, err := onnxruntime.GetInputOutputInfo(b.ONNXPath)
	if err != nil {
		return nil, fmt.Errorf("analyze: model %s: read graph %s: %w", b.Name, b.ONNXPath, err)
	}
	m := &Model{b: b}
	if err := m.checkGraph(ins, outs); err != nil {
		return nil, fmt.Errorf("analyze: model %s: %s does not match %s: %w", b.Name, b.ONNXPath, b.Descriptor(), err)
	}
	m.sess, err = ort.NewSession(b.ONNXPath, m.inputNames, m.outputNames, opts.Threads, opts.Spin)
	if err != nil {
		return nil, fmt.Errorf("analyze: model %s: %w", b.Name, err)
	}
	m.lut = hfbundle.LUT(b.Input.Scale, b.Input.Mean, b.Input.Std)
	if err := m.trial(); err != nil {
		_ = m.sess.Destroy()
		return nil, fmt.Errorf("analyze: model %s: %w", b.Name, err)
	}
	return m, nil
}

// trial runs the graph once on blank frames, two at a time unless its
// batch is fixed, so that a graph that cannot run the batches analyze
// makes fails at start (and `patchline validate`), not on every batch. A
// graph whose inputs say any batch but which runs only batch 1 (a size
// baked into a reshape: batch 2 fails twice, around a batch 1 that runs)
// is fed one frame at a time, and says so (Notes).
func (m *Model) trial() error {
	in := m.b.Input
	blank := func(n int) []*frame.Frame {
		fs := make([]*frame.Frame, n)
		for i := range fs {
			fs[i] = &frame.Frame{Camera: "trial", Width: in.Width, Height: in.Height, Patch: in.PatchSize,
				Tokens: make([]byte, in.Width*in.Height*3), SourceW: in.Width, SourceH: in.Height}
		}
		return fs
	}
	run := func(n int) error {
		outs, err := m.forward(blank(n))
		destroyAll(outs)
		return err
	}
	n := 2
	if m.fixedBatch > 0 {
		n = 1 // padded to the fixed batch
	}
	err := run(n)
	switch {
	case err == nil:
		return nil
	case n == 1:
		return fmt.Errorf("a trial run on a blank frame failed: %w", err)
	case run(1) != nil:
		return fmt.Errorf("a trial run on two blank frames failed: %w", err)
	case run(2) == nil: // batch 1 runs and batch 2 does now: the failure passed
		return nil
	}
	m.fixedBatch = 1
	m.notes = append(m.notes, fmt.Sprintf("model %s: its graph input %q takes any batch size, but the graph runs only batch 1 (a size fixed inside it, e.g. by a reshape); analyze feeds it one frame at a time. Export it with a dynamic batch to batch frames (%v)", m.b.Name, in.Name, err))
	return nil
}

// Notes are what OpenModel found that works, but not as well as it could
// (the stage logs them as warnings, and `patchline validate` prints them).
func (m *Model) Notes() []string { return m.notes }

// SetLogger makes the model warn (thinned: the 1st, 2nd, 4th… time of
// each reason) about outputs it leaves out or cannot name: boxes that are
// NaN or lie outside the frame, class ids beyond the bundle's labels.
func (m *Model) SetLogger(log *slog.Logger) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = log
}

// warn counts a warning of reason and logs it the 1st, 2nd, 4th… time.
// m.mu is held.
func (m *Model) warn(reason, msg string, args ...any) {
	if n := m.warns.Add(reason); m.log != nil && telemetry.Thinned(n) {
		m.log.Warn(msg, append(args, "model", m.b.Name, "times", n)...)
	}
}

// discard counts a detection left out for reason.
func (m *Model) discard(reason string, args ...any) {
	telemetry.DetectionsDiscarded.WithLabelValues(m.b.Name, reason).Inc()
	m.warn(reason, "detection left out: "+reason, args...)
}

// Name is the bundle's model name.
func (m *Model) Name() string { return m.b.Name }

// Task is the bundle's task (classify, detect or segment).
func (m *Model) Task() string { return m.b.Task }

// Bundle returns the model's bundle.
func (m *Model) Bundle() *Bundle { return m.b }

// Close releases the session. The model must not be used afterwards.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sess == nil {
		return nil
	}
	err := m.sess.Destroy()
	m.sess = nil
	if err != nil {
		return fmt.Errorf("analyze: close model %s: %w", m.b.Name, err)
	}
	return nil
}

// Accepts reports whether f can go into a batch: its input size, patch size,
// resize mode and payload length must be the bundle's.
func (m *Model) Accepts(f *frame.Frame) error {
	in := m.b.Input
	if f.Width != in.Width || f.Height != in.Height || f.Patch != in.PatchSize || f.Resize != in.Resize {
		return fmt.Errorf("frame %s is %dx%d patch %d %s, model %s wants %dx%d patch %d %s",
			f.ID(), f.Width, f.Height, f.Patch, f.Resize, m.b.Name, in.Width, in.Height, in.PatchSize, in.Resize)
	}
	if want := in.Width * in.Height * 3; len(f.Tokens) != want {
		return fmt.Errorf("frame %s has %d token bytes, want %d", f.ID(), len(f.Tokens), want)
	}
	return nil
}

// Run infers a batch of frames and returns one Result per frame, in order.
// All frames must pass Accepts. Frames go through the graph as one tensor
// (in chunks of the graph's batch size when that is fixed).
func (m *Model) Run(frames []*frame.Frame) ([]Result, error) {
	if len(frames) == 0 {
		return nil, nil
	}
	for i, f := range frames {
		if f == nil {
			return nil, fmt.Errorf("analyze: run %s: frame %d is nil", m.b.Name, i)
		}
		if err := m.Accepts(f); err != nil {
			return nil, fmt.Errorf("analyze: run %s: batch index %d: %w", m.b.Name, i, err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sess == nil {
		return nil, fmt.Errorf("analyze: run %s: model is closed", m.b.Name)
	}
	results := make([]Result, len(frames))
	chunk := len(frames)
	if m.fixedBatch > 0 {
		chunk = m.fixedBatch
	}
	for lo := 0; lo < len(frames); lo += chunk {
		hi := min(lo+chunk, len(frames))
		if err := m.runChunk(frames[lo:hi], results[lo:hi]); err != nil {
			return nil, fmt.Errorf("analyze: run %s on %d frames: %w", m.b.Name, len(frames), err)
		}
	}
	return results, nil
}

func (m *Model) runChunk(frames []*frame.Frame, results []Result) error {
	outputs, err := m.forward(frames)
	defer destroyAll(outputs)
	if err != nil {
		return err
	}
	switch m.b.Task {
	case TaskClassify:
		return m.classify(frames, results, outputs[0])
	case TaskSegment:
		var scene onnxruntime.Value
		if len(outputs) > 1 {
			scene = outputs[1]
		}
		return m.segment(frames, results, outputs[0], scene)
	}
	if m.b.DETR() {
		return m.detectDETR(frames, results, outputs[0], outputs[1])
	}
	return m.detect(frames, results, outputs[0], outputs[1], outputs[2])
}

// forward fills the input tensors from frames (at most the fixed batch size;
// padded with zeros up to it) and runs the session. The caller destroys the
// returned outputs, which follow m.outputNames.
func (m *Model) forward(frames []*frame.Frame) ([]onnxruntime.Value, error) {
	in := m.b.Input
	batch := len(frames)
	if m.fixedBatch > 0 {
		batch = m.fixedBatch // pad with zeros
	}
	per := in.Width * in.Height * 3
	m.in = grow(m.in, batch*per)
	var shape onnxruntime.Shape
	switch in.Kind {
	case InputPatches:
		shape = onnxruntime.NewShape(int64(batch), int64(m.b.NumPatches()), int64(m.b.TokenDim()))
		for i, f := range frames {
			dst := m.in[i*per : (i+1)*per]
			for j, v := range f.Tokens {
				dst[j] = m.lut[j%3][v]
			}
		}
	case InputPixels:
		shape = onnxruntime.NewShape(int64(batch), 3, int64(in.Height), int64(in.Width))
		m.rgb = grow(m.rgb, per)
		plane := in.Width * in.Height
		for i, f := range frames {
			if err := frame.Untokenize(m.rgb, f.Tokens, in.Width, in.Height, in.PatchSize); err != nil {
				return nil, fmt.Errorf("untokenize frame %s: %w", f.ID(), err)
			}
			r := m.in[i*per : i*per+plane]
			g := m.in[i*per+plane : i*per+2*plane]
			b := m.in[i*per+2*plane : (i+1)*per]
			for p := range plane {
				r[p] = m.lut[0][m.rgb[3*p]]
				g[p] = m.lut[1][m.rgb[3*p+1]]
				b[p] = m.lut[2][m.rgb[3*p+2]]
			}
		}
	}
	clear(m.in[len(frames)*per : batch*per])

	inputs := make([]onnxruntime.Value, 0, len(m.inputNames))
	defer func() { destroyAll(inputs) }()
	t, err := onnxruntime.NewTensor(shape, m.in)
	if err != nil {
		return nil, fmt.Errorf("input tensor %s %v: %w", in.Name, shape, err)
	}
	inputs = append(inputs, t)
	for _, e := range in.Extra {
		// Only input_size exists (validated by LoadBundle).
		m.sizes = grow(m.sizes, 2*batch)
		for i := range batch {
			m.sizes[2*i], m.sizes[2*i+1] = int64(in.Width), int64(in.Height)
		}
		st, err := onnxruntime.NewTensor(onnxruntime.NewShape(int64(batch), 2), m.sizes)
		if err != nil {
			return nil, fmt.Errorf("input tensor %s: %w", e.Name, err)
		}
		inputs = append(inputs, st)
	}
	outputs := make([]onnxruntime.Value, len(m.outputNames))
	if err := m.sess.Run(inputs, outputs); err != nil {
		return outputs, fmt.Errorf("onnxruntime: %w", err)
	}
	return outputs, nil
}

func destroyAll(vs []onnxruntime.Value) {
	for _, v := range vs {
		if v != nil {
			_ = v.Destroy()
		}
	}
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

func floats(v onnxruntime.Value, name string, rank int) ([]float32, onnxruntime.Shape, error) {
	t, ok := v.(*onnxruntime.Tensor[float32])
	if !ok {
		return nil, nil, fmt.Errorf("output %s is %T, want a float32 tensor", name, v)
	}
	if s := t.GetShape(); len(s) != rank {
		return nil, nil, fmt.Errorf("output %s has shape %v, want rank %d", name, s, rank)
	}
	return t.GetData(), t.GetShape(), nil
}

func (m *Model) classify(frames []*frame.Frame, results []Result, out onnxruntime.Value) error {
	logits, shape, err := floats(out, m.b.Outputs.Logits, 2)
	if err != nil {
		return err
	}
	c := int(shape[1])
	if int(shape[0]) < len(frames) {
		return fmt.Errorf("output %s has shape %v for %d frames", m.b.Outputs.Logits, shape, len(frames))
	}
	m.probs = grow(m.probs, c)
	k := min(m.b.TopK, c)
	for i := range frames {
		softmax(m.probs, logits[i*c:(i+1)*c])
		labels := make([]annotation.Label, 0, k)
		for range k {
			best := -1
			for j, p := range m.probs {
				if p >= 0 && (best < 0 || p > m.probs[best]) {
					best = j
				}
			}
			if best < 0 { // NaN scores (a logit NaN or infinite): no label is right
				break
			}
			labels = append(labels, annotation.Label{Label: m.label(best), ClassID: best, Score: m.probs[best]})
			m.probs[best] = -1 // taken
		}
		results[i].Labels = labels
	}
	return nil
}

func softmax(dst []float64, logits []float32) {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	var sum float64
	for j, v := range logits {
		e := math.Exp(float64(v) - mx)
		dst[j] = e
		sum += e
	}
	for j := range dst {
		dst[j] /= sum
	}
}

func (m *Model) label(id int) string {
	if id >= 0 && id < len(m.b.Labels) {
		return m.b.Labels[id]
	}
	return fmt.Sprintf("class%d", id)
}

func (m *Model) detect(frames []*frame.Frame, results []Result, labelsV, boxesV, scoresV onnxruntime.Value) error {
	o := m.b.Outputs
	var ids []int64
	switch t := labelsV.(type) {
	case *onnxruntime.Tensor[int64]:
		ids = t.GetData()
	case *onnxruntime.Tensor[int32]:
		d := t.GetData()
		ids = make([]int64, len(d))
		for i, v := range d {
			ids[i] = int64(v)
		}
	default:
		return fmt.Errorf("output %s is %T, want an int64 tensor", o.Labels, labelsV)
	}
	boxes, bshape, err := floats(boxesV, o.Boxes, 3)
	if err != nil {
		return err
	}
	scores, sshape, err := floats(scoresV, o.Scores, 2)
	if err != nil {
		return err
	}
	q := int(sshape[1])
	if int(sshape[0]) < len(frames) || int(bshape[0]) != int(sshape[0]) || int(bshape[1]) != q || bshape[2] != 4 || len(ids) != int(sshape[0])*q {
		return fmt.Errorf("outputs %s/%s/%s disagree: shapes %v, %v, %d ids for %d frames", o.Labels, o.Boxes, o.Scores, bshape, sshape, len(ids), len(frames))
	}
	thr := m.b.Threshold()
	for i, f := range frames {
		var dets []annotation.Detection
		for j := range q {
			s := float64(scores[i*q+j])
			id := int(ids[i*q+j])
			if s < thr || id < 0 { // a negative id pads the list in some exports; a NaN goes on, for detection to count
				continue
			}
			bx := boxes[(i*q+j)*4 : (i*q+j)*4+4]
			if d, ok := m.detection(f, id, s, bx); ok {
				if id >= len(m.b.Labels) {
					m.warn("unknown_class", "class id beyond the bundle's labels: reported as class<id>; do the labels match the model?", "class_id", id, "labels", len(m.b.Labels))
				}
				dets = append(dets, d)
			}
		}
		sortDetections(dets)
		results[i].Detections = dets
	}
	return nil
}

func (m *Model) detectDETR(frames []*frame.Frame, results []Result, logitsV, boxesV onnxruntime.Value) error {
	o := m.b.Outputs
	logits, lshape, err := floats(logitsV, o.Logits, 3)
	if err != nil {
		return err
	}
	boxes, bshape, err := floats(boxesV, o.PredBoxes, 3)
	if err != nil {
		return err
	}
	q, c := int(lshape[1]), int(lshape[2])
	if int(lshape[0]) < len(frames) || bshape[0] != lshape[0] || int(bshape[1]) != q || bshape[2] != 4 {
		return fmt.Errorf("outputs %s/%s disagree: shapes %v, %v for %d frames", o.Logits, o.PredBoxes, lshape, bshape, len(frames))
	}
	nreal := min(c, len(m.b.Labels)) // softmax: a trailing extra class is "no object"
	m.probs = grow(m.probs, c)
	thr := m.b.Threshold()
	for i, f := range frames {
		var dets []annotation.Detection
		for j := range q {
			row := logits[(i*q+j)*c : (i*q+j+1)*c]
			best := 0
			for k := 1; k < nreal; k++ {
				if row[k] > row[best] {
					best = k
				}
			}
			var s float64
			if o.Activation == ActivationSoftmax {
				softmax(m.probs, row)
				s = m.probs[best]
			} else {
				s = 1 / (1 + math.Exp(-float64(row[best])))
			}
			if s < thr { // a NaN goes on, for detection to count
				continue
			}
			bx := boxes[(i*q+j)*4 : (i*q+j)*4+4]
			if d, ok := m.detection(f, best, s, bx); ok {
				dets = append(dets, d)
			}
		}
		sortDetections(dets)
		results[i].Detections = dets
	}
	return nil
}

// detection converts a raw box to input pixels per box_format, then to
// source pixels with the frame's transform, corners in order (x1 ≤ x2,
// y1 ≤ y2). ok is false, and the detection counted as left out, when the
// box or score is not finite, or no part of the box lies inside the frame
// (wholly outside it, or in letterbox padding).
func (m *Model) detection(f *frame.Frame, id int, score float64, bx []float32) (annotation.Detection, bool) {
	w, h := float64(m.b.Input.Width), float64(m.b.Input.Height)
	a, b, c, d := float64(bx[0]), float64(bx[1]), float64(bx[2]), float64(bx[3])
	var box [4]float64
	switch m.b.Outputs.BoxFormat {
	case BoxXYXYNorm:
		box = [4]float64{a * w, b * h, c * w, d * h}
	case BoxCXCYWHNorm:
		box = [4]float64{(a - c/2) * w, (b - d/2) * h, (a + c/2) * w, (b + d/2) * h}
	default: // BoxXYXYInput
		box = [4]float64{a, b, c, d}
	}
	for _, v := range append(box[:], score) {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			m.discard("non_finite", "camera", f.Camera, "seq", f.Seq, "box", fmt.Sprint(bx), "score", fmt.Sprint(score))
			return annotation.Detection{}, false
		}
	}
	box[0], box[2] = min(box[0], box[2]), max(box[0], box[2])
	box[1], box[3] = min(box[1], box[3]), max(box[1], box[3])
	src := f.Transform.BoxToSource(box, f.SourceW, f.SourceH)
	if !(src[2] > src[0] && src[3] > src[1]) {
		m.discard("empty_box", "camera", f.Camera, "seq", f.Seq, "box", fmt.Sprint(bx))
		return annotation.Detection{}, false
	}
	return annotation.Detection{Label: m.label(id), ClassID: id, Score: score, Box: src}, true
}

func sortDetections(d []annotation.Detection) {
	sort.SliceStable(d, func(i, j int) bool { return d[i].Score > d[j].Score })
}

// checkGraph compares the graph's inputs and outputs with the descriptor and
// sets the session's input/output names and the fixed batch size.
func (m *Model) checkGraph(ins, outs []onnxruntime.InputOutputInfo) error {
	b := m.b
	inByName := map[string]onnxruntime.InputOutputInfo{}
	var inNames []string
	for _, i := range ins {
		inByName[i.Name] = i
		inNames = append(inNames, i.Name)
	}
	outByName := map[string]onnxruntime.InputOutputInfo{}
	var outNames []string
	for _, o := range outs {
		outByName[o.Name] = o
		outNames = append(outNames, o.Name)
	}

	// Every graph input must be fed, and every fed input must exist.
	fed := []string{b.Input.Name}
	for _, e := range b.Input.Extra {
		fed = append(fed, e.Name)
	}
	for i, n := range fed {
		if _, ok := inByName[n]; !ok {
			key := "input.name"
			if i > 0 {
				key = fmt.Sprintf("input.extra[%d].name", i-1)
			}
			return fmt.Errorf("%s %q is not a graph input (graph inputs: %s)", b.graphKey(key), n, strings.Join(inNames, ", "))
		}
	}
	for _, n := range inNames {
		if !slices.Contains(fed, n) {
			return fmt.Errorf("graph input %q is not fed by the bundle (graph inputs: %s; name it in input.name or input.extra)", n, strings.Join(inNames, ", "))
		}
	}

	in := b.Input
	main := inByName[in.Name]
	var want []int64
	var what []string
	from := "" // where the size comes from, for Hugging Face layout bundles
	if b.HF != nil {
		from = " from " + HFPreprocessorFile
	}
	patchesWhat := fmt.Sprintf("patches N = (%d/%d)*(%d/%d)%s", in.Width, in.PatchSize, in.Height, in.PatchSize, from)
	switch in.Kind {
	case InputPatches:
		want = []int64{-1, int64(b.NumPatches()), int64(b.TokenDim())}
		what = []string{"batch", patchesWhat, fmt.Sprintf("token P*P*3 = %d*%d*3%s", in.PatchSize, in.PatchSize, from)}
	case InputPixels:
		want = []int64{-1, 3, int64(in.Height), int64(in.Width)}
		what = []string{"batch", "channels", "height" + from, "width" + from}
	}
	if err := checkTensor("input", main, onnxruntime.TensorElementDataTypeFloat, want, what); err != nil {
		return err
	}
	if bd := main.Dimensions[0]; bd > 0 {
		m.fixedBatch = int(bd)
	}
	for _, e := range in.Extra {
		info := inByName[e.Name]
		if err := checkTensor("input", info, onnxruntime.TensorElementDataTypeInt64, []int64{-1, 2}, []string{"batch", "(width, height)"}); err != nil {
			return err
		}
		// A batch fixed on an extra input (dynamic axes given for the
		// image only, a common export slip) fixes every input's.
		switch bd := int(info.Dimensions[0]); {
		case bd <= 0:
		case m.fixedBatch == 0:
			m.fixedBatch = bd
		case m.fixedBatch != bd:
			return fmt.Errorf("graph inputs %q and %q have fixed batch sizes %d and %d: export them with the same (or a dynamic) batch", in.Name, e.Name, m.fixedBatch, bd)
		}
	}
	m.inputNames = fed

	o := b.Outputs
	type spec struct {
		key, name string
		typ       onnxruntime.TensorElementDataType
		want      []int64
		what      []string
	}
	var specs []spec
	nl := int64(len(b.Labels))
	switch {
	case b.Task == TaskClassify:
		specs = []spec{{"outputs.logits", o.Logits, onnxruntime.TensorElementDataTypeFloat, []int64{-1, nl}, []string{"batch", "classes (" + b.labelsKey(false) + ")"}}}
	case b.Task == TaskSegment:
		specs = []spec{{"outputs.patch_logits", o.PatchLogits, onnxruntime.TensorElementDataTypeFloat, []int64{-1, int64(b.NumPatches()), nl},
			[]string{"batch", patchesWhat, "classes (" + b.labelsKey(false) + ")"}}}
		if o.SceneLogits != "" {
			specs = append(specs, spec{"outputs.scene_logits", o.SceneLogits, onnxruntime.TensorElementDataTypeFloat, []int64{-1, int64(len(b.SceneLabels))},
				[]string{"batch", "scene classes (" + b.labelsKey(true) + ")"}})
		}
	case b.DETR():
		specs = []spec{
			{"outputs.logits", o.Logits, onnxruntime.TensorElementDataTypeFloat, []int64{-1, -1, -1}, []string{"batch", "queries", "classes"}},
			{"outputs.pred_boxes", o.PredBoxes, onnxruntime.TensorElementDataTypeFloat, []int64{-1, -1, 4}, []string{"batch", "queries", "box"}},
		}
	default:
		specs = []spec{
			{"outputs.labels", o.Labels, onnxruntime.TensorElementDataTypeInt64, []int64{-1, -1}, []string{"batch", "queries"}},
			{"outputs.boxes", o.Boxes, onnxruntime.TensorElementDataTypeFloat, []int64{-1, -1, 4}, []string{"batch", "queries", "box"}},
			{"outputs.scores", o.Scores, onnxruntime.TensorElementDataTypeFloat, []int64{-1, -1}, []string{"batch", "queries"}},
		}
	}
	m.outputNames = nil
	for _, s := range specs {
		info, ok := outByName[s.name]
		if !ok {
			return fmt.Errorf("%s %q is not a graph output (graph outputs: %s)", b.graphKey(s.key), s.name, strings.Join(outNames, ", "))
		}
		typ := s.typ
		if s.key == "outputs.labels" && info.DataType == onnxruntime.TensorElementDataTypeInt32 {
			typ = info.DataType
		}
		if err := checkTensor("output", info, typ, s.want, s.what); err != nil {
			return err
		}
		m.outputNames = append(m.outputNames, s.name)
	}
	if b.DETR() {
		c := outByName[o.Logits].Dimensions[2]
		if c > 0 && c != nl && !(o.Activation == ActivationSoftmax && c == nl+1) {
			hint := ""
			if c == nl+1 {
				hint = `; a softmax head's last class is "no object": set outputs.activation: softmax`
			}
			return fmt.Errorf("graph output %q (%s) has %d classes, but the bundle has %d labels (%s)%s", o.Logits, b.graphKey("outputs.logits"), c, nl, b.labelsKey(false), hint)
		}
	}
	return nil
}

// checkTensor checks a graph tensor's element type and shape against want,
// where -1 in want (or a symbolic dimension in the graph) matches anything.
func checkTensor(role string, info onnxruntime.InputOutputInfo, typ onnxruntime.TensorElementDataType, want []int64, what []string) error {
	if info.OrtValueType != onnxruntime.ONNXTypeTensor {
		return fmt.Errorf("graph %s %q is a %s, want a tensor", role, info.Name, info.OrtValueType)
	}
	if info.DataType != typ {
		return fmt.Errorf("graph %s %q has element type %s, want %s", role, info.Name, info.DataType, typ)
	}
	dims := info.Dimensions
	wantStr := make([]string, len(want))
	for i, w := range want {
		wantStr[i] = strconvDim(w, what[i])
	}
	if len(dims) != len(want) {
		return fmt.Errorf("graph %s %q has shape %v (rank %d), bundle expects [%s] (rank %d)", role, info.Name, dims, len(dims), strings.Join(wantStr, " "), len(want))
	}
	var bad []string
	for i, w := range want {
		if w >= 0 && dims[i] > 0 && dims[i] != w {
			bad = append(bad, fmt.Sprintf("dim %d (%s) is %d, want %d", i, what[i], dims[i], w))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("graph %s %q has shape %v, bundle expects [%s]: %s", role, info.Name, dims, strings.Join(wantStr, " "), strings.Join(bad, "; "))
	}
	return nil
}

func strconvDim(w int64, what string) string {
	if w < 0 {
		if what == "batch" {
			return "B"
		}
		return "?"
	}
	return fmt.Sprint(w)
}
