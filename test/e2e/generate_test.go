package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/generate"
	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/app"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
	"github.com/patchline/patchline/schema"
)

// Bundles for the generate tests. The tiny ones are random-weight test
// bundles (they test the plumbing); the accuracy tests use models/caption,
// models/framegen and models/scene-vit.
const (
	tinyCaptionBundle  = "internal/textgen/testdata/tiny"
	tinyFramegenBundle = "generate/testdata/tiny-framegen"
	tinySegmentBundle  = "analyze/testdata/segment-tiny"
)

// genBundles names the bundles of a generate test, relative to the repo root.
type genBundles struct{ analyze, caption, framegen string }

var tinyBundles = genBundles{analyze: tinySegmentBundle, caption: tinyCaptionBundle, framegen: tinyFramegenBundle}

// modelBundles are patchline's trained models, for the accuracy tests.
var modelBundles = genBundles{analyze: "models/scene-vit", caption: "models/caption", framegen: "models/framegen"}

// generateConfig is testConfig at the models' input (96×96, 8-pixel
// patches) with analyze and generate on b, automatic triggers off.
func generateConfig(t testing.TB, b genBundles) config.Config {
	cfg := testConfig(t)
	root := repoRoot(t)
	cfg.Decode.Width, cfg.Decode.Height, cfg.Decode.PatchSize = 96, 96, 8
	cfg.Analyze.Model = filepath.Join(root, b.analyze)
	cfg.Generate.Auto = false
	cfg.Generate.Triggers = config.Triggers{}
	if b.caption != "" {
		cfg.Generate.CaptionModel = filepath.Join(root, b.caption)
	}
	if b.framegen != "" {
		cfg.Generate.FramegenModel = filepath.Join(root, b.framegen)
	}
	return cfg
}

// genPipeline is a running pipeline with a client connection.
type genPipeline struct {
	info app.Info
	nc   *nats.Conn
}

// startGenerate runs the whole pipeline with cfg, attaches a synthetic
// camera (url) as camera id, and waits for its first analysis annotations.
func startGenerate(t testing.TB, cfg config.Config, id, url string) (*genPipeline, *recorder) {
	t.Helper()
	i := startPipeline(t, cfg)
	nc := natstest.Connect(t, i.NATSURL)
	rec := record(t, nc, id)
	attach(t, i.HTTPAddr, config.Camera{ID: id, URL: url, FPS: 5})
	rec.waitAnnotations(t, 6, 60*time.Second) // the windows hold enough frames
	return &genPipeline{info: i, nc: nc}, rec
}

// generatedMsgs subscribes to patchline.generated.<camera>.
func (p *genPipeline) generatedMsgs(t testing.TB, camera string) <-chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 64)
	sub, err := p.nc.ChanSubscribe(bus.GeneratedSubject(camera), ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

// describeNATS sends a generate request over NATS request-reply.
func (p *genPipeline) describeNATS(t testing.TB, req generate.Request) *generate.Reply {
	t.Helper()
	return generate.Describe(context.Background(), p.nc, req, 10*time.Second)
}

// describeHTTP posts body to /v1/cameras/<id>/describe.
func (p *genPipeline) describeHTTP(t testing.TB, id, body string) (int, *generate.Reply) {
	t.Helper()
	resp, err := http.Post("http://"+p.info.HTTPAddr+"/v1/cameras/"+id+"/describe", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r generate.Reply
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("describe reply %q: %v", b, err)
	}
	return resp.StatusCode, &r
}

// readObject reads a generated PNG back from the Object Store (checking
// size and sha256), decodes it, and leaves a copy in the test artifacts for
// people to look at.
func (p *genPipeline) readObject(t testing.TB, o generate.ObjectRef) {
	t.Helper()
	b, err := generate.FetchObject(context.Background(), p.nc, o)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("object %s is not a PNG: %v", o.Name, err)
	}
	if img.Bounds().Dx() != 96 || img.Bounds().Dy() != 96 {
		t.Errorf("generated frame is %v, want 96x96", img.Bounds())
	}
	name := strings.NewReplacer("/", "-").Replace(t.Name() + "-" + o.Name)
	_ = os.WriteFile(filepath.Join(testenv.Artifacts(t), name), b, 0o644)
}

// kinds collects the camera's annotations of one kind.
func kinds(t testing.TB, nc *nats.Conn, camera, kind string) func() []annotation.Annotation {
	t.Helper()
	var mu sync.Mutex
	var out []annotation.Annotation
	sub, err := nc.Subscribe(bus.AnnotationSubject(camera), func(m *nats.Msg) {
		var a annotation.Annotation
		if json.Unmarshal(m.Data, &a) == nil && a.Kind == kind {
			mu.Lock()
			out = append(out, a)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func() []annotation.Annotation {
		mu.Lock()
		defer mu.Unlock()
		return append([]annotation.Annotation(nil), out...)
	}
}

// TestGenerateOnRequest: the synthetic camera through the whole pipeline;
// a caption and a generated frame asked for over NATS and HTTP; the PNG
// read back from the Object Store; the generated message valid against its
// schema; unknown camera and malformed JSON answered with clear errors.
func TestGenerateOnRequest(t *testing.T) {
	p, _ := startGenerate(t, generateConfig(t, tinyBundles), "cam1", "synthetic://?seed=5")
	captions := kinds(t, p.nc, "cam1", annotation.KindCaption)
	generatedMsgs := p.generatedMsgs(t, "cam1")

	r := p.describeNATS(t, generate.Request{Camera: "cam1", Kind: generate.KindCaption, Timeout: "5s"})
	if r.Error != "" || r.Caption == nil || r.Caption.Caption == nil || r.Caption.Kind != annotation.KindCaption {
		t.Fatalf("NATS caption: %+v", r)
	}
	code, hr := p.describeHTTP(t, "cam1", `{"sampling":{"temperature":0.8,"seed":1}}`)
	if code != http.StatusOK || hr.Caption == nil {
		t.Fatalf("HTTP caption: %d %+v", code, hr)
	}
	code, fr := p.describeHTTP(t, "cam1", `{"kind":"frame"}`)
	if code != http.StatusOK || fr.Generated == nil {
		t.Fatalf("HTTP frame: %d %+v", code, fr)
	}
	p.readObject(t, fr.Generated.Object)
	sch, err := schema.CompileGenerated()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-generatedMsgs:
		if err := schema.ValidateAnnotation(sch, m.Data); err != nil {
			t.Errorf("generated message %s: %v", m.Data, err)
		}
	case <-time.After(5 * time.Second):
		t.Error("no message on patchline.generated.cam1")
	}
	waitUntil(t, "2 caption annotations", func() bool { return len(captions()) >= 2 })
	asch, _ := schema.CompileAnnotation()
	for _, a := range captions() {
		b, _ := json.Marshal(a)
		if err := schema.ValidateAnnotation(asch, b); err != nil {
			t.Errorf("caption annotation %s: %v", b, err)
		}
	}

	for _, c := range []struct {
		id, body string
		status   int
		reason   string
	}{
		{"nosuch", `{}`, http.StatusNotFound, generate.ReasonUnknownCamera},
		{"cam1", `{"kind":"caption"`, http.StatusBadRequest, generate.ReasonBadRequest},
		{"cam1", `{"kind":"sonnet"}`, http.StatusBadRequest, generate.ReasonBadRequest},
		{"cam1", `{} garbage`, http.StatusBadRequest, generate.ReasonBadRequest},
		{"cam1", `{}{}`, http.StatusBadRequest, generate.ReasonBadRequest},
		{"cam1", `{}}`, http.StatusBadRequest, generate.ReasonBadRequest},
	} {
		code, r := p.describeHTTP(t, c.id, c.body)
		if code != c.status || r.Reason != c.reason || r.Error == "" {
			t.Errorf("describe %s %s: %d %+v, want %d %s", c.id, c.body, code, r, c.status, c.reason)
		}
	}
	if r := p.describeNATS(t, generate.Request{Camera: "nosuch"}); r.Reason != generate.ReasonUnknownCamera {
		t.Errorf("NATS unknown camera: %+v", r)
	}
	m, err := p.nc.Request(bus.GenerateRequest, []byte(`{"camera": cam1}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Data), `"reason":"bad_request"`) || !strings.Contains(string(m.Data), "malformed request JSON") {
		t.Errorf("malformed NATS request: %s", m.Data)
	}

	// A detached camera is not described from the frames it left behind
	// (they would serve requests for generate.window_ttl, 30 s).
	if code := apiCall(t, http.MethodDelete, p.info.HTTPAddr, "/v1/cameras/cam1", "", ""); code != http.StatusNoContent {
		t.Fatalf("detach cam1: %d", code)
	}
	testenv.WaitFor(t, "describe of the detached cam1 unknown_camera", 10*time.Second, func() bool {
		return p.describeNATS(t, generate.Request{Camera: "cam1", Timeout: "2s"}).Reason == generate.ReasonUnknownCamera
	})
}

// TestGenerateOverloadKeepsLiveAnnotations: 20 describe requests at once
// with budget 2 are each answered with a caption or an explicit reason,
// and analysis annotations keep flowing meanwhile.
func TestGenerateOverloadKeepsLiveAnnotations(t *testing.T) {
	cfg := generateConfig(t, tinyBundles)
	cfg.Generate.Budget, cfg.Generate.QueueSize = 2, 4
	p, rec := startGenerate(t, cfg, "cam1", "synthetic://?seed=6")
	_, before, _ := rec.snapshot()
	start := time.Now()
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		wg     sync.WaitGroup
	)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, r := p.describeHTTP(t, "cam1", `{"timeout":"5s"}`)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case code == http.StatusOK && r.Caption != nil:
				counts["ok"]++
			case code == http.StatusTooManyRequests && r.Reason == generate.ReasonOverloaded && r.Error != "",
				code == http.StatusGatewayTimeout && r.Reason == generate.ReasonDeadline && r.Error != "":
				counts[r.Reason]++
			default:
				counts[fmt.Sprintf("unexpected %d %q %s", code, r.Reason, r.Error)]++
			}
		}()
	}
	wg.Wait()
	t.Logf("20 describe requests, budget 2: %v in %s", counts, time.Since(start).Round(time.Millisecond))
	if n := counts["ok"] + counts[generate.ReasonOverloaded] + counts[generate.ReasonDeadline]; n != 20 {
		t.Errorf("only %d of 20 answered with a caption or a reason: %v", n, counts)
	}
	// Live analysis keeps going: at 5 fps, 2 more seconds bring ~10 frames.
	time.Sleep(2 * time.Second)
	_, after, _ := rec.snapshot()
	live := 0
	for _, a := range after[len(before):] {
		if a.Kind == annotation.KindAnalysis {
			live++
		}
	}
	if elapsed := time.Since(start); float64(live) < elapsed.Seconds()*5*0.5 {
		t.Errorf("%d analysis annotations in %s during and after the burst, want at least half of 5 fps", live, elapsed.Round(time.Millisecond))
	}
}

// TestGenerateAnomalyPNG: with on_anomaly, a frame scored over the
// framegen threshold becomes an anomaly annotation whose PNG is in the
// Object Store. The tiny bundle's threshold is set to 0 so every scored
// frame is an anomaly (it has random weights); the accuracy test with
// models/framegen uses an injected anomaly instead.
func TestGenerateAnomalyPNG(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(repoRoot(t), tinyFramegenBundle)
	for _, f := range []string{"model.onnx", "preprocessor_config.json", "config.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "config.json" {
			b = bytes.Replace(b, []byte(`"anomaly_threshold": 0.5`), []byte(`"anomaly_threshold": 0`), 1)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := tinyBundles
	b.framegen = ""
	cfg := generateConfig(t, b)
	cfg.Generate.FramegenModel = dir
	cfg.Generate.Auto = true
	cfg.Generate.Triggers = config.Triggers{OnAnomaly: true, Cooldown: time.Second}
	p, _ := startGenerate(t, cfg, "cam1", "synthetic://?seed=5&anomaly=teleport&anomaly_at=10")
	anomalies := kinds(t, p.nc, "cam1", annotation.KindAnomaly)
	generated := p.generatedMsgs(t, "cam1")
	captions := kinds(t, p.nc, "cam1", annotation.KindCaption)
	waitUntil(t, "an anomaly annotation", func() bool { return len(anomalies()) > 0 })
	a := anomalies()[0]
	if a.Anomaly == nil || a.Anomaly.Score <= a.Anomaly.Threshold || len(a.Anomaly.PatchScores) != 144 || a.Anomaly.Trigger != generate.TriggerAnomaly {
		t.Fatalf("anomaly annotation %+v", a.Anomaly)
	}
	var g generate.Generated
	select {
	case m := <-generated:
		if err := json.Unmarshal(m.Data, &g); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message on patchline.generated.cam1")
	}
	if !g.Anomaly || g.Trigger != generate.TriggerAnomaly || g.Object.Bucket != a.Anomaly.Bucket {
		t.Errorf("generated %+v for anomaly %+v", g, a.Anomaly)
	}
	p.readObject(t, g.Object)
	waitUntil(t, "a caption triggered by the anomaly", func() bool {
		for _, c := range captions() {
			if c.Caption.Trigger == generate.TriggerAnomaly {
				return true
			}
		}
		return false
	})
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, what, time.Minute, cond)
}

// TestGenerateCaptionsOnSceneChange: with on_change, captions with trigger
// "change" arrive as the analysis annotations' set of objects changes (the
// first annotation of a camera counts as a change).
func TestGenerateCaptionsOnSceneChange(t *testing.T) {
	cfg := generateConfig(t, tinyBundles)
	cfg.Generate.Auto = true
	cfg.Generate.Triggers = config.Triggers{OnChange: true, Cooldown: 200 * time.Millisecond}
	p, _ := startGenerate(t, cfg, "cam1", "synthetic://?seed=7")
	captions := kinds(t, p.nc, "cam1", annotation.KindCaption)
	waitUntil(t, "a caption on a scene change", func() bool {
		for _, c := range captions() {
			if c.Caption.Trigger == generate.TriggerChange {
				return true
			}
		}
		return false
	})
}

// TestGenerateStageReplicas runs `patchline stage generate` twice as its own
// processes next to ingest and decode on a real nats-server: requests are
// shared by the queue group and every one is answered, by both replicas,
// and the two cameras' automatic triggers run one in each replica.
func TestGenerateStageReplicas(t *testing.T) {
	natsBin, plBin := buildBinaries(t)
	port := testenv.FreePort(t, "127.0.0.1")
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	startProc(t, "nats-server", natsBin, "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", t.TempDir())
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
	root := repoRoot(t)
	cfgPath := writeConfig(t, fmt.Sprintf(`
nats: {url: %q}
http: {addr: "127.0.0.1:%d"}
cameras:
  - {id: cam1, url: "synthetic://?seed=21", fps: 10}
  - {id: cam2, url: "synthetic://?seed=22", fps: 5}
decode: {width: 96, height: 96, patch_size: 8}
analyze: {model: %q}
generate:
  caption_model: %q
  framegen_model: %q
  budget: 1
  lease_ttl: 3s
  triggers: {on_change: false, on_anomaly: true}
`, url, testenv.FreePort(t, "127.0.0.1"), filepath.Join(root, tinySegmentBundle), filepath.Join(root, tinyCaptionBundle), filepath.Join(root, tinyFramegenBundle)))
	for _, st := range []string{"generate", "generate", "ingest", "decode"} {
		startProc(t, st, plBin, "stage", st, "-c", cfgPath, "--nats", url)
	}
	nc := natstest.Connect(t, url)
	// Each replica keeps its own window of the camera's frames, filled from
	// when it subscribed; one that started later hands requests back to the
	// queue group until its window holds what the model needs (the caption
	// model needs more frames than framegen). Wait until both have answered
	// both kinds, so the requests below measure sharing, not start-up.
	ready := map[string]bool{}
	n := 0
	waitUntil(t, "a caption and a generated frame from each replica", func() bool {
		kind := []string{generate.KindCaption, generate.KindFrame}[n%2]
		n++
		r := generate.Describe(context.Background(), nc, generate.Request{Camera: "cam1", Kind: kind}, 5*time.Second)
		switch {
		case r.Error != "":
		case r.Caption != nil:
			ready[kind+" "+r.Caption.AnalyzedBy] = true
		case r.Generated != nil:
			ready[kind+" "+r.Generated.GeneratedBy] = true
		}
		return len(ready) == 4
	})
	// A queue group picks a replica at random: all 32 to one of two has odds
	// of one in a billion (16 had one in 30,000).
	replicas := map[string]int{}
	for i := range 32 {
		kind := []string{generate.KindCaption, generate.KindFrame}[i%2]
		r := generate.Describe(context.Background(), nc, generate.Request{Camera: "cam1", Kind: kind, Timeout: "10s"}, 10*time.Second)
		switch {
		case r.Error != "":
			t.Errorf("request %d (%s): %s (%s)", i, kind, r.Error, r.Reason)
		case r.Caption != nil:
			replicas[r.Caption.AnalyzedBy]++
		case r.Generated != nil:
			replicas[r.Generated.GeneratedBy]++
		}
	}
	t.Logf("requests served by replicas: %v", replicas)
	if len(replicas) != 2 {
		t.Errorf("requests were served by %d generate replicas (%v), want 2", len(replicas), replicas)
	}
	waitSplitLeases(t, nc, bus.GenerateLeasesBucket)
}
