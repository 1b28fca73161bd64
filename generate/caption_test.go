package generate

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/textgen"
	"github.com/patchline/patchline/schema"
)

// tinyCaption is internal/textgen's tiny random-weight caption bundle
// (96×96, 8-pixel patches, 2 frames).
const tinyCaption = "../internal/textgen/testdata/tiny"

func openCaptioner(t testing.TB) *textgen.Captioner {
	t.Helper()
	c, err := textgen.Open(tinyCaption, textgen.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func captionConfig() config.Generate {
	g := testGenerate()
	g.CaptionModel = tinyCaption
	return g
}

// TestCaptionRequest asks for a caption over NATS: the reply and the
// published annotation are the same, valid against the schema, and carry
// exactly what the captioner makes of the camera's last frames.
func TestCaptionRequest(t *testing.T) {
	capt := openCaptioner(t)
	nc := startStage(t, captionConfig(), nil, capt)
	anns := collect(t, nc, bus.AnnotationsPrefix+"cam1")
	publishFrames(t, nc, "cam1", 1, 4)
	waitWindow(t, nc, `{"camera":"cam1"}`, 4)
	r := request(t, nc, `{"id":"q","camera":"cam1","kind":"caption","timeout":"5s"}`)
	if r.Error != "" || r.Caption == nil || r.Caption.Caption == nil || r.ID != "q" {
		t.Fatalf("reply %+v", r)
	}
	a := r.Caption
	if a.Kind != annotation.KindCaption || a.Task != "caption" || a.Seq != 4 || !slices.Equal(a.Caption.Frames, []uint64{3, 4}) || a.Caption.Trigger != TriggerRequest {
		t.Errorf("caption annotation %+v / %+v", a, a.Caption)
	}
	// The same frames straight through the captioner give the same tokens.
	want, err := capt.Caption(context.Background(), []textgen.Input{{Frames: [][]byte{testFrame("cam1", 3, 4+9).Tokens, testFrame("cam1", 4, 4+12).Tokens}}}, textgen.Sampling{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Caption.Tokens, nonNil(want[0].Tokens)) || a.Caption.Text != want[0].Text {
		t.Errorf("caption %q %v, captioner says %q %v", a.Caption.Text, a.Caption.Tokens, want[0].Text, want[0].Tokens)
	}
	// The waiting's last caption and q's are both of frame 4 (the waiting's
	// earlier ones may be of frames 2 and 3): the same frames, the same
	// greedy caption.
	waitFor(t, "q's published caption", func() bool { return len(ofFrame(anns(), 4)) >= 2 })
	sch, err := schema.CompileAnnotation()
	if err != nil {
		t.Fatal(err)
	}
	fourth := ofFrame(anns(), 4)
	m := fourth[len(fourth)-1]
	if err := schema.ValidateAnnotation(sch, m.Data); err != nil {
		t.Errorf("caption annotation %s: %v", m.Data, err)
	}
	var pub annotation.Annotation
	_ = json.Unmarshal(m.Data, &pub)
	if pub.Caption == nil || pub.Caption.Text != a.Caption.Text || pub.TraceID != a.TraceID {
		t.Errorf("published %s, replied %+v", m.Data, a)
	}
	if id := m.Header.Get(nats.MsgIdHdr); !strings.HasPrefix(id, "cam1:4:caption:request:") {
		t.Errorf("Nats-Msg-Id %q, want cam1:4:caption:request:<unique>", id)
	}
}

// TestCaptionSamplingThroughRequests: a seeded sampled request repeats
// exactly; no_cache decoding gives the cached tokens.
func TestCaptionSamplingThroughRequests(t *testing.T) {
	nc := startStage(t, captionConfig(), nil, openCaptioner(t))
	publishFrames(t, nc, "cam1", 1, 3)
	waitWindow(t, nc, `{"camera":"cam1"}`, 3)
	tokens := func(body string) []int64 {
		r := request(t, nc, body)
		if r.Error != "" {
			t.Fatalf("%s: %s", body, r.Error)
		}
		return r.Caption.Caption.Tokens
	}
	s1 := tokens(`{"camera":"cam1","sampling":{"temperature":1.5,"top_k":8,"seed":42}}`)
	s2 := tokens(`{"camera":"cam1","sampling":{"temperature":1.5,"top_k":8,"seed":42}}`)
	if !slices.Equal(s1, s2) {
		t.Errorf("same seed, different tokens: %v vs %v", s1, s2)
	}
	g1 := tokens(`{"camera":"cam1"}`)
	g2 := tokens(`{"camera":"cam1","sampling":{"no_cache":true}}`)
	if !slices.Equal(g1, g2) {
		t.Errorf("KV cache %v, no cache %v", g1, g2)
	}
}

// TestDescribeOverload: 20 describe requests at once with budget 2 are all
// answered (a caption or an explicit reason), while frames keep flowing in.
func TestDescribeOverload(t *testing.T) {
	cfg := captionConfig()
	cfg.Budget, cfg.QueueSize, cfg.BatchSize = 2, 4, 2
	nc := startStage(t, cfg, nil, openCaptioner(t))
	publishFrames(t, nc, "cam1", 1, 3)
	waitFor(t, "window", func() bool { return request(t, nc, `{"camera":"cam1"}`).Error == "" })
	// New frames keep coming while the requests run. The publisher stops
	// before the test returns: its connection closes at cleanup.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 4; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				if err := publishFrame(nc, "cam1", i); err != nil {
					t.Errorf("publish frame %d: %v", i, err)
					return
				}
			}
		}
	}()
	defer func() { close(stop); <-stopped }()
	counts := overload(t, nc, 20, `{"camera":"cam1","timeout":"10s"}`)
	t.Logf("20 describe requests, budget 2: %v", counts)
}

// TestCaptionTriggers: on_change captions a new set of objects (not a
// repeat of the same set); every captions periodically.
func TestCaptionTriggers(t *testing.T) {
	t.Run("change", func(t *testing.T) {
		cfg := captionConfig()
		cfg.Auto = true
		cfg.Triggers = config.Triggers{OnChange: true}
		nc, st := startStageWith(t, cfg, nil, openCaptioner(t))
		captions := collectCaptions(t, nc)
		publishFrames(t, nc, "cam1", 1, 3)
		waitFor(t, "window", func() bool { return request(t, nc, `{"camera":"cam1"}`).Error == "" })
		waitFor(t, "cam1's lease", func() bool { return st.owns("cam1") })
		scenes := [][]string{{"red circle"}, {"red circle"}, {"red circle", "blue square"}, {"red circle", "blue square"}, {"blue square"}}
		for i, labels := range scenes {
			publishAnalysis(t, nc, "cam1", uint64(3+i), labels)
			time.Sleep(150 * time.Millisecond)
		}
		changes := func() (seqs []uint64) {
			for _, a := range captions() {
				if a.Caption.Trigger == TriggerChange {
					seqs = append(seqs, a.Seq)
				}
			}
			return seqs
		}
		waitFor(t, "3 change captions", func() bool { return len(changes()) >= 3 })
		time.Sleep(300 * time.Millisecond)
		if got := changes(); len(got) != 3 {
			t.Errorf("%d captions for 3 scene changes", len(got))
		}
	})
	t.Run("detached", func(t *testing.T) {
		// The last analysis of a camera just detached (ForgetCamera) comes
		// in late: no caption of it is attempted, to be refused
		// unknown_camera and logged as a failure.
		cfg := captionConfig()
		cfg.Auto = true
		cfg.Triggers = config.Triggers{OnChange: true}
		nc, st := startStageWith(t, cfg, nil, openCaptioner(t))
		publishFrames(t, nc, "cam1", 1, 3)
		waitFor(t, "window", func() bool { return request(t, nc, `{"camera":"cam1"}`).Error == "" })
		waitFor(t, "cam1's lease", func() bool { return st.owns("cam1") })
		refused := metricRejected.WithLabelValues(KindCaption, ReasonUnknownCamera)
		before := testutil.ToFloat64(refused)
		st.ForgetCamera("cam1")
		publishAnalysis(t, nc, "cam1", 3, []string{"red circle"})
		time.Sleep(300 * time.Millisecond)
		if n := testutil.ToFloat64(refused) - before; n != 0 {
			t.Errorf("%v captions of a forgotten camera refused unknown_camera, want none attempted", n)
		}
	})
	t.Run("cooldown", func(t *testing.T) {
		cfg := captionConfig()
		cfg.Auto = true
		cfg.Triggers = config.Triggers{OnChange: true, Cooldown: time.Minute}
		nc, st := startStageWith(t, cfg, nil, openCaptioner(t))
		captions := collectCaptions(t, nc)
		publishFrames(t, nc, "cam1", 1, 3)
		waitFor(t, "window", func() bool { return request(t, nc, `{"camera":"cam1"}`).Error == "" })
		waitFor(t, "cam1's lease", func() bool { return st.owns("cam1") })
		for i, labels := range [][]string{{"red circle"}, {"blue square"}, {"red circle"}, {"green star"}} {
			publishAnalysis(t, nc, "cam1", uint64(3+i), labels)
			time.Sleep(100 * time.Millisecond)
		}
		changes := func() (n int) {
			for _, a := range captions() {
				if a.Caption.Trigger == TriggerChange {
					n++
				}
			}
			return n
		}
		waitFor(t, "the first change caption", func() bool { return changes() >= 1 })
		time.Sleep(300 * time.Millisecond)
		if n := changes(); n != 1 {
			t.Errorf("%d captions for 4 changes within a 1 min cooldown, want 1", n)
		}
	})
	t.Run("every", func(t *testing.T) {
		cfg := captionConfig()
		cfg.Auto = true
		cfg.Triggers = config.Triggers{Every: 200 * time.Millisecond}
		nc, st := startStageWith(t, cfg, nil, openCaptioner(t))
		captions := collectCaptions(t, nc)
		publishFrames(t, nc, "cam1", 1, 3)
		waitFor(t, "cam1's lease", func() bool { return st.owns("cam1") })
		waitFor(t, "the first periodic caption", func() bool { return len(captions()) >= 1 })
		first := time.Now()
		seq := 3
		waitFor(t, "4 more periodic captions", func() bool {
			seq++
			publishFrames(t, nc, "cam1", seq, 1) // keep the window fresh
			return len(captions()) >= 5
		})
		// However slow the machine, no more than one per 200 ms (one more
		// for a caption that took longer than the next).
		got := captions()
		if most := int(time.Since(first)/(200*time.Millisecond)) + 2; len(got) > most {
			t.Errorf("%d periodic captions in %s at every 200ms, want at most %d", len(got), time.Since(first).Round(time.Millisecond), most)
		}
		for _, a := range got {
			if a.Caption.Trigger != TriggerEvery {
				t.Errorf("trigger %q", a.Caption.Trigger)
			}
		}
	})
}

// TestConfiguredSamplingAndCameraTriggers: generate.sampling is what
// automatic captions and plain requests decode with (max_tokens 2 here),
// and a generate.cameras entry replaces the global triggers for its camera
// (cam2: none).
func TestConfiguredSamplingAndCameraTriggers(t *testing.T) {
	cfg := captionConfig()
	cfg.Auto = true
	cfg.Triggers = config.Triggers{Every: 200 * time.Millisecond}
	cfg.Cameras = []config.CameraGenerate{{Camera: "cam2"}}
	cfg.Sampling = config.Sampling{MaxTokens: 2}
	nc := startStage(t, cfg, nil, openCaptioner(t))
	captions := collectCaptions(t, nc)
	publishFrames(t, nc, "cam1", 1, 3)
	publishFrames(t, nc, "cam2", 1, 3)
	waitFor(t, "windows", func() bool {
		return request(t, nc, `{"camera":"cam1"}`).Error == "" && request(t, nc, `{"camera":"cam2"}`).Error == ""
	})
	full := request(t, nc, `{"camera":"cam1","sampling":{"max_tokens":0}}`) // the model's max_length
	if full.Error != "" || len(full.Caption.Caption.Tokens) <= 2 {
		t.Fatalf("an unbounded caption: %+v (the check below needs one longer than 2 tokens)", full)
	}
	if r := request(t, nc, `{"camera":"cam2"}`); r.Error != "" || len(r.Caption.Caption.Tokens) > 2 {
		t.Errorf("request with the configured sampling: %+v", r)
	}
	// More tokens than the model has positions for: the request is wrong
	// (bad_request), not the generation (failed).
	limit := openCaptioner(t).TokenLimit()
	if r := request(t, nc, fmt.Sprintf(`{"camera":"cam1","sampling":{"max_tokens":%d}}`, limit+1)); r.Reason != ReasonBadRequest || !strings.Contains(r.Error, fmt.Sprintf("at most %d tokens", limit)) {
		t.Errorf("request for %d tokens: %+v, want bad_request naming the limit", limit+1, r)
	}
	waitFor(t, "3 periodic captions", func() bool {
		n := 0
		for _, a := range captions() {
			if a.Caption.Trigger == TriggerEvery {
				n++
			}
		}
		return n >= 3
	})
	for _, a := range captions() {
		if a.Caption.Trigger != TriggerEvery {
			continue
		}
		if a.Camera != "cam1" {
			t.Errorf("periodic caption of %s, whose triggers are all off", a.Camera)
		}
		if len(a.Caption.Tokens) > 2 {
			t.Errorf("periodic caption of %d tokens, max_tokens 2", len(a.Caption.Tokens))
		}
	}
}

func collectCaptions(t testing.TB, nc *nats.Conn) func() []annotation.Annotation {
	msgs := collect(t, nc, bus.AnnotationsPrefix+"*")
	return func() []annotation.Annotation {
		var out []annotation.Annotation
		for _, m := range msgs() {
			var a annotation.Annotation
			if json.Unmarshal(m.Data, &a) == nil && a.Kind == annotation.KindCaption {
				out = append(out, a)
			}
		}
		return out
	}
}

// publishAnalysis publishes an analysis annotation naming labels, as the sink would.
func publishAnalysis(t testing.TB, nc *nats.Conn, camera string, seq uint64, labels []string) {
	t.Helper()
	a := annotation.Annotation{Schema: annotation.Schema, Kind: annotation.KindAnalysis, Camera: camera, Seq: seq, Model: "m", Task: "segment"}
	for _, l := range labels {
		a.Detections = append(a.Detections, annotation.Detection{Label: l, Score: 0.9})
	}
	b, _ := json.Marshal(a)
	if err := nc.Publish(bus.AnnotationSubject(camera), b); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
}

// TestVocabularyMismatchFailsAtStart: a caption bundle whose tokenizer
// disagrees with the decoder's vocab_size is an error from OpenModels that
// names the bundle and the mismatch.
func TestVocabularyMismatchFailsAtStart(t *testing.T) {
	dir := t.TempDir()
	entries, err := os.ReadDir(tinyCaption)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(tinyCaption, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "config.json" {
			var m map[string]any
			_ = json.Unmarshal(b, &m)
			m["vocab_size"] = m["vocab_size"].(float64) + 3
			b, _ = json.Marshal(m)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Default()
	cfg.Decode.Width, cfg.Decode.Height, cfg.Decode.PatchSize = 96, 96, 8
	cfg.Generate.CaptionModel, cfg.Generate.FramegenModel = dir, ""
	_, err = OpenModels(cfg)
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"generate.caption_model " + dir, "vocab"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// TestMaxTokensMustFitTheModel: a generate.sampling.max_tokens the caption
// model cannot produce (config allows up to 1024) is an error at start
// naming both, not a failure of every caption later.
func TestMaxTokensMustFitTheModel(t *testing.T) {
	cfg := config.Default()
	cfg.Decode.Width, cfg.Decode.Height, cfg.Decode.PatchSize = 96, 96, 8
	cfg.Generate.CaptionModel, cfg.Generate.FramegenModel = tinyCaption, ""
	limit := openCaptioner(t).TokenLimit()
	cfg.Generate.Sampling.MaxTokens = limit
	m, err := OpenModels(cfg)
	if err != nil {
		t.Fatalf("max_tokens at the limit: %v", err)
	}
	_ = m.Close()
	cfg.Generate.Sampling.MaxTokens = limit + 1
	if _, err := OpenModels(cfg); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("generate.sampling.max_tokens %d: generate.caption_model %s makes at most %d tokens", limit+1, tinyCaption, limit)) {
		t.Errorf("max_tokens over the limit: %v", err)
	}
}

// TestModelsMustFitDecode: bundles at 96×96/8 against decode 224×224/16.
func TestModelsMustFitDecode(t *testing.T) {
	cfg := config.Default()
	cfg.Decode.Width, cfg.Decode.Height, cfg.Decode.PatchSize = 224, 224, 16
	cfg.Generate.FramegenModel, cfg.Generate.CaptionModel = tinyFramegen, ""
	if _, err := OpenModels(cfg); err == nil || !strings.Contains(err.Error(), "takes 96x96 frames in 8-pixel patches, but decode makes 224x224 in 16-pixel patches") {
		t.Errorf("framegen: %v", err)
	}
	cfg.Generate.FramegenModel, cfg.Generate.CaptionModel = "", tinyCaption
	if _, err := OpenModels(cfg); err == nil || !strings.Contains(err.Error(), "generate.caption_model") {
		t.Errorf("caption: %v", err)
	}
}
