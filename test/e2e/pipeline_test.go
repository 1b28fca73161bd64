package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchline/patchline/internal/app"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/rtsptest"
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/schema"
)

var traceID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// An H.264 clip served by a real RTSP server (with credentials) goes through
// OpenCV decode, tokenization, NATS, ONNX Runtime and the sink.
func TestRTSPCameraEndToEnd(t *testing.T) {
	rtsptest.RequireFFmpeg(t)
	srv := rtsptest.StartWith(t, rtsptest.Config{User: "cam", Pass: "s3cret"})
	clip := rtsptest.MakeClip(t, t.TempDir(), rtsptest.ClipOptions{Width: 640, Height: 360, FPS: 10, Seconds: 10})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rtsptest.Publish(t, ctx, clip, srv.AuthURL("cam"))

	info := startPipeline(t, testConfig(t))
	nc := natstest.Connect(t, info.NATSURL)
	rec := record(t, nc, "cam1")

	// Garbage on a frames subject is counted and dropped; the pipeline goes
	// on. The counter is the process's: earlier tests (or runs, -count) may
	// have counted some.
	malformed := telemetry.Malformed.WithLabelValues("analyze", "patchline.frames.*")
	before := testutil.ToFloat64(malformed)
	for _, junk := range []string{"", "garbage", strings.Repeat("x", 1000)} {
		if err := nc.Publish("patchline.frames.x", []byte(junk)); err != nil {
			t.Fatal(err)
		}
	}
	attach(t, info.HTTPAddr, config.Camera{ID: "cam1", URL: srv.AuthURL("cam"), FPS: 5})
	rec.waitAnnotations(t, 25, 90*time.Second)

	_, anns, raw := rec.snapshot()
	sch, err := schema.CompileAnnotation()
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i, a := range anns {
		if a.Seq <= last {
			t.Errorf("annotation %d: seq %d after %d, want increasing", i, a.Seq, last)
		}
		last = a.Seq
		if !traceID.MatchString(a.TraceID) {
			t.Errorf("seq %d: trace_id %q", a.Seq, a.TraceID)
		}
		if len(a.Labels) == 0 || a.SourceWidth != 640 || a.SourceHeight != 360 {
			t.Errorf("seq %d: labels %v, source %dx%d", a.Seq, a.Labels, a.SourceWidth, a.SourceHeight)
		}
		for _, k := range []string{"decode", "tokenize", "queue", "batch", "inference", "sink", "total"} {
			if _, ok := a.LatencyMs[k]; !ok {
				t.Errorf("seq %d: latency_ms has no %q: %v", a.Seq, k, a.LatencyMs)
			}
		}
		if err := schema.ValidateAnnotation(sch, raw[i]); err != nil {
			t.Errorf("seq %d: schema: %v", a.Seq, err)
		}
	}
	annotatedShare(t, rec, 0)

	body := get(t, "http://"+info.HTTPAddr+"/v1/cameras/cam1")
	if strings.Contains(body, "s3cret") || !strings.Contains(body, `"state":"streaming"`) {
		t.Errorf("camera status leaks the password or is not streaming: %s", body)
	}
	metrics := get(t, "http://"+info.HTTPAddr+"/metrics")
	if n := testutil.ToFloat64(malformed) - before; n != 3 {
		t.Errorf("malformed frames counted %v, want 3; /metrics says:\n%s", n, grepLines(metrics, "malformed"))
	}
	// Counters a dashboard or alert reads exist from the start, before
	// anything happens (this process's earlier tests may have counted some:
	// the registry is the process's).
	for _, series := range []string{
		`patchline_frames_dropped_total{camera="cam1",reason="nats_down",stage="decode"} 0`,
		`patchline_malformed_messages_total{stage="sink",subject="patchline.analyzed.*"} `,
		`patchline_malformed_messages_total{stage="generate",subject="patchline.annotations.*"} `,
	} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics lacks %s:\n%s", series, grepLines(metrics, strings.SplitN(series, "{", 2)[0]))
		}
	}
	// Starting the pipeline reads the runtime's settings for its first log
	// line and changes none: the collector still runs.
	if m := regexp.MustCompile(`(?m)^go_gc_gogc_percent (\d+)$`).FindStringSubmatch(metrics); m == nil {
		t.Errorf("the garbage collector is off (GOGC not a small number):\n%s", grepLines(metrics, "go_gc_gogc"))
	}
}

// A camera that cannot connect is retried forever with its error in status,
// while other cameras keep flowing.
func TestUnreachableCameraKeepsRetrying(t *testing.T) {
	info := startPipeline(t, testConfig(t))
	nc := natstest.Connect(t, info.NATSURL)
	rec := record(t, nc, "synth")
	attach(t, info.HTTPAddr, config.Camera{ID: "dead", URL: "rtsp://user:pw@127.0.0.1:1/nothing"})
	attach(t, info.HTTPAddr, config.Camera{ID: "synth", URL: "synthetic://?seed=5", FPS: 5})
	rec.waitAnnotations(t, 5, 60*time.Second)

	deadline := time.Now().Add(30 * time.Second)
	for {
		var v struct {
			URL    string `json:"url"`
			Status *struct {
				State      string `json:"state"`
				LastError  string `json:"last_error"`
				Reconnects int    `json:"reconnects"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(get(t, "http://"+info.HTTPAddr+"/v1/cameras/dead")), &v); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(v.URL, ":pw@") {
			t.Fatalf("API shows the password: %s", v.URL)
		}
		if v.Status != nil && v.Status.State == "retrying" && v.Status.LastError != "" && v.Status.Reconnects >= 2 {
			if strings.Contains(v.Status.LastError, ":pw@") {
				t.Fatalf("last_error leaks the password: %s", v.Status.LastError)
			}
			if !strings.Contains(v.Status.LastError, "connection refused") {
				t.Errorf("last_error %q does not say why (the connect's error)", v.Status.LastError)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("camera 'dead' never showed retrying with an error: %+v", v.Status)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// Bad URLs are refused by the API with a clear message, nothing created.
	resp, err := http.Post("http://"+info.HTTPAddr+"/v1/cameras", "application/json", strings.NewReader(`{"id":"bad","url":"htp://x"}`))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), `unknown scheme \"htp\"`) {
		t.Errorf("bad scheme: %s %s", resp.Status, msg)
	}
	if body := get(t, "http://"+info.HTTPAddr+"/v1/cameras"); strings.Contains(body, `"bad"`) {
		t.Errorf("rejected camera was created: %s", body)
	}
}

// A model whose input does not match the decode config is a clear error at start.
func TestModelShapeMismatchFailsAtStart(t *testing.T) {
	cfg := testConfig(t)
	cfg.Decode.Width, cfg.Decode.Height = 320, 320
	err := app.Run(context.Background(), app.Options{Config: cfg, Stages: app.AllStages, Logger: natstest.Discard()})
	if err == nil || !strings.Contains(err.Error(), "224") || !strings.Contains(err.Error(), "320") {
		t.Fatalf("want an error naming 224 and 320, got %v", err)
	}
}

// The real pretrained DEIMv2-Atto detector finds people in real footage
// served over RTSP.
func TestDEIMv2FindsPeopleOverRTSP(t *testing.T) {
	assets := sharedAssets(t)
	rtsptest.RequireFFmpeg(t)
	srv := rtsptest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rtsptest.Publish(t, ctx, filepath.Join(assets, "video", "people-768x432.mp4"), srv.URL("people"))

	cfg := testConfig(t)
	cfg.Analyze.Model = filepath.Join(repoRoot(t), "models", "deimv2-atto")
	cfg.Decode.Width, cfg.Decode.Height, cfg.Decode.PatchSize = 320, 320, 16
	cfg.Analyze.BatchSize = 4
	info := startPipeline(t, cfg)
	rec := record(t, natstest.Connect(t, info.NATSURL), "people")
	attach(t, info.HTTPAddr, config.Camera{ID: "people", URL: srv.URL("people"), FPS: 4})
	// The clip opens on an empty street for ~5 s: analyze ~20 s of it.
	rec.waitAnnotations(t, 80, 120*time.Second)

	_, anns, _ := rec.snapshot()
	withPerson := 0
	for _, a := range anns {
		found := false
		for _, d := range a.Detections {
			b := d.Box
			if b[0] < 0 || b[1] < 0 || b[2] > 768 || b[3] > 432 || b[0] > b[2] || b[1] > b[3] {
				t.Errorf("seq %d: box %v outside the 768x432 frame", a.Seq, b)
			}
			if d.Label == "person" && d.Score >= 0.5 {
				found = true
			}
		}
		if found {
			withPerson++
		}
	}
	if 2*withPerson < len(anns) {
		t.Errorf("a person (score ≥ 0.5) in %d of %d frames, want at least half", withPerson, len(anns))
	}
	t.Logf("person in %d of %d analyzed frames", withPerson, len(anns))
}

func get(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestBrowserGuard: without http.token, the running server refuses a
// request naming it by an unknown host name (DNS rebinding) and a state
// change from another origin's page (CSRF), and serves its own console's.
func TestBrowserGuard(t *testing.T) {
	info := startPipeline(t, testConfig(t))
	do := func(method, path, host, origin string) int {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+info.HTTPAddr+path, strings.NewReader(`{"id":"x","url":"synthetic://"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if host != "" {
			req.Host = host
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := do("GET", "/v1/cameras", "attacker.example:8080", ""); code != http.StatusMisdirectedRequest {
		t.Errorf("GET by a foreign host name: %d, want 421", code)
	}
	if code := do("POST", "/v1/cameras", "", "http://attacker.example"); code != http.StatusForbidden {
		t.Errorf("attach from another origin: %d, want 403", code)
	}
	if code := do("POST", "/v1/cameras", "", "http://"+info.HTTPAddr); code != http.StatusCreated {
		t.Errorf("attach from the console's origin: %d, want 201", code)
	}
	// The live view streams attached cameras only.
	if code := do("GET", "/v1/live/x", "", ""); code != http.StatusOK {
		t.Errorf("live view of an attached camera: %d, want 200", code)
	}
	if code := do("GET", "/v1/live/nosuch", "", ""); code != http.StatusNotFound {
		t.Errorf("live view of a camera never attached: %d, want 404", code)
	}
}
