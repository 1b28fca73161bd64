package generate

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
	"github.com/patchline/patchline/internal/textgen"
	"github.com/patchline/patchline/schema"
)

// testGenerate is generate's default config with the automatic triggers off.
func testGenerate() config.Generate {
	g := config.Default().Generate
	g.Auto = false
	g.Triggers = config.Triggers{}
	return g
}

// startStage runs a Stage against a fresh embedded NATS server and returns
// a client connection once the stage answers requests.
func startStage(t testing.TB, cfg config.Generate, fg *Framegen, capt *textgen.Captioner) *nats.Conn {
	t.Helper()
	nc, _ := startStageWith(t, cfg, fg, capt)
	return nc
}

// startStageWith is startStage that also returns the stage.
func startStageWith(t testing.TB, cfg config.Generate, fg *Framegen, capt *textgen.Captioner) (*nats.Conn, *Stage) {
	t.Helper()
	return startStageOpts(t, Options{Config: cfg, Framegen: fg, Captions: capt})
}

// startStageLog is startStage logging to log.
func startStageLog(t testing.TB, cfg config.Generate, fg *Framegen, capt *textgen.Captioner, log *slog.Logger) *nats.Conn {
	t.Helper()
	nc, _ := startStageOpts(t, Options{Config: cfg, Framegen: fg, Captions: capt, Logger: log})
	return nc
}

// startStageOpts runs a stage of o (its NC on a new server; no log
// unless o has one) and waits until it answers requests.
func startStageOpts(t testing.TB, o Options) (*nats.Conn, *Stage) {
	t.Helper()
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	st := runStageOpts(t, url, o)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := nc.Request(bus.GenerateRequest, []byte(`{"camera":"ping"}`), time.Second)
		if err == nil {
			return nc, st
		}
		if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			t.Fatalf("stage not answering: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runStage runs a Stage on the server at url until the test ends.
func runStage(t testing.TB, url string, cfg config.Generate, fg *Framegen, capt *textgen.Captioner) *Stage {
	t.Helper()
	return runStageOpts(t, url, Options{Config: cfg, Framegen: fg, Captions: capt})
}

// runStageOpts runs a Stage of o on the server at url (its NC; no log
// unless o has one) until the test ends.
func runStageOpts(t testing.TB, url string, o Options) *Stage {
	t.Helper()
	o.NC = natstest.Connect(t, url)
	o.Logger = cmp.Or(o.Logger, natstest.Discard())
	st := NewStage(o)
	serve(t, st)
	return st
}

// serve runs st until the test ends, which fails if Run returns an error.
func serve(t testing.TB, st *Stage) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stage: %v", err)
		}
	})
}

// testFrame is a 96×96 frame (8-pixel patches) of a red square at x on a
// gradient, with a trace context.
func testFrame(camera string, seq uint64, x int) *frame.Frame {
	const size, p = 96, 8
	rgb := make([]byte, size*size*3)
	for y := range size {
		for xx := range size {
			o := (y*size + xx) * 3
			rgb[o], rgb[o+1], rgb[o+2] = byte(xx*255/(size-1)), byte(y*255/(size-1)), 90
			if y >= 30 && y < 50 && xx >= x && xx < x+20 {
				rgb[o], rgb[o+1], rgb[o+2] = 230, 20, 20
			}
		}
	}
	tokens := make([]byte, len(rgb))
	if err := frame.Tokenize(tokens, rgb, size, size, p); err != nil {
		panic(err)
	}
	return &frame.Frame{
		Camera: camera, Seq: seq, PTS: time.Duration(seq) * 200 * time.Millisecond, CapturedAt: time.Now(),
		SourceW: 384, SourceH: 384, Width: size, Height: size, Patch: p, Resize: frame.ResizeStretch,
		Transform:   frame.Stretch(384, 384, size, size),
		TraceParent: fmt.Sprintf("00-%032x-%016x-01", seq+0xabc0000, seq+1),
		Tokens:      tokens,
	}
}

// publishFrame publishes frame seq of camera (a square moving with seq).
func publishFrame(nc *nats.Conn, camera string, seq int) error {
	f := testFrame(camera, uint64(seq), 4+3*seq%60)
	return nc.PublishMsg(f.Encode(bus.FrameSubject(camera)))
}

func publishFrames(t testing.TB, nc *nats.Conn, camera string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := publishFrame(nc, camera, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// request sends a raw request and decodes the reply.
func request(t testing.TB, nc *nats.Conn, body string) *Reply {
	t.Helper()
	m, err := nc.Request(bus.GenerateRequest, []byte(body), 15*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", body, err)
	}
	var r Reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("reply %q: %v", m.Data, err)
	}
	return &r
}

// waitWindow asks for body until the reply is of frame seq, the last one
// published: a reply may come before the stage has taken every frame in.
func waitWindow(t testing.TB, nc *nats.Conn, body string, seq uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a reply of frame %d to %s", seq, body), func() bool {
		r := request(t, nc, body)
		switch {
		case r.Error != "":
			return false
		case r.Caption != nil:
			return r.Caption.Seq == seq
		default:
			return r.Generated != nil && r.Generated.Seq == seq
		}
	})
}

// ofFrame returns those of msgs (annotations or generated messages) that
// are of frame seq.
func ofFrame(msgs []*nats.Msg, seq uint64) []*nats.Msg {
	var out []*nats.Msg
	for _, m := range msgs {
		var v struct {
			Seq uint64 `json:"seq"`
		}
		if json.Unmarshal(m.Data, &v) == nil && v.Seq == seq {
			out = append(out, m)
		}
	}
	return out
}

// waitFor polls until cond holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, what, 30*time.Second, cond)
}

// collect subscribes to subject and returns a function listing what came.
func collect(t testing.TB, nc *nats.Conn, subject string) func() []*nats.Msg {
	t.Helper()
	var mu sync.Mutex
	var got []*nats.Msg
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func() []*nats.Msg {
		mu.Lock()
		defer mu.Unlock()
		return append([]*nats.Msg(nil), got...)
	}
}

// readPNG reads a generated object back from the Object Store (checking
// size and digest) and decodes it.
func readPNG(t testing.TB, nc *nats.Conn, o ObjectRef) {
	t.Helper()
	b, err := FetchObject(context.Background(), nc, o)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode png: %v", err)
	}
	if img.Bounds().Dx() != 96 || img.Bounds().Dy() != 96 {
		t.Errorf("png is %v, want 96x96", img.Bounds())
	}
}

// TestFrameRequestStoresPNG asks for a generated frame over NATS and checks
// the reply, the PNG in the Object Store, the patchline.generated messages
// against schema/generated.v1.json, each with an id of its own; and that,
// though threshold 0 makes every frame an anomaly, a request publishes no
// anomaly annotation: its score is its requester's, anomaly events the
// scorer's (with its cooldown).
func TestFrameRequestStoresPNG(t *testing.T) {
	fg, err := OpenFramegen(copyBundle(t, func(c map[string]any) { c["patchline"].(map[string]any)["anomaly_threshold"] = 0 }), ModelOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer fg.Close()
	nc := startStage(t, testGenerate(), fg, nil)
	generated := collect(t, nc, bus.GeneratedPrefix+"*")
	anns := collect(t, nc, bus.AnnotationsPrefix+"*")
	publishFrames(t, nc, "cam1", 1, 6)
	waitWindow(t, nc, `{"camera":"cam1","kind":"frame"}`, 6)
	r := request(t, nc, `{"id":"r1","camera":"cam1","kind":"frame","timeout":"5s"}`)
	if r.Error != "" || r.Generated == nil {
		t.Fatalf("reply: %+v", r)
	}
	g := r.Generated
	if r.ID != "r1" || g.Camera != "cam1" || g.Seq != 6 || len(g.Context) != 3 || g.Context[0] != 3 || g.Trigger != TriggerRequest {
		t.Errorf("generated %+v", g)
	}
	if len(g.Heatmap.Scores) != 144 || g.Heatmap.GridW != 12 || !g.Anomaly || g.Score <= 0 {
		t.Errorf("heatmap %dx%d (%d scores), score %v, anomaly %v", g.Heatmap.GridW, g.Heatmap.GridH, len(g.Heatmap.Scores), g.Score, g.Anomaly)
	}
	if want := fmt.Sprintf("%032x", 6+0xabc0000); g.TraceID != want {
		t.Errorf("trace id %s, want the frame's %s", g.TraceID, want)
	}
	readPNG(t, nc, g.Object)

	gsch, err := schema.CompileGenerated()
	if err != nil {
		t.Fatal(err)
	}
	// The polling above may have had a frame of an older window (seq 4 or
	// 5) generated before the sixth arrived; each message's id names its own
	// frame. At least two are of the sixth: the poll's last and r1.
	waitFor(t, "generated messages", func() bool { return len(ofFrame(generated(), 6)) >= 2 })
	ids := map[string]bool{}
	for _, m := range generated() {
		if err := schema.ValidateAnnotation(gsch, m.Data); err != nil {
			t.Errorf("generated message %s: %v", m.Data, err)
		}
		var g Generated
		if err := json.Unmarshal(m.Data, &g); err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get(nats.MsgIdHdr)
		if want := fmt.Sprintf("cam1:%d:generated:request:", g.Seq); !strings.HasPrefix(id, want) || ids[id] {
			t.Errorf("Nats-Msg-Id %q: want %s<unique>", id, want)
		}
		ids[id] = true
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(anns()); n != 0 {
		t.Errorf("frame requests published %d anomaly annotations, want none", n)
	}
}

func TestBadRequests(t *testing.T) {
	fg := openTiny(t)
	nc := startStage(t, testGenerate(), fg, nil)
	publishFrames(t, nc, "short", 1, 2)
	publishFrames(t, nc, "ok", 1, 5)
	big := testFrame("big", 1, 0)
	big.Width, big.Height, big.Patch = 192, 96, 8
	big.Tokens = append(big.Tokens, big.Tokens...)
	for i := uint64(1); i <= 5; i++ {
		big.Seq, big.PTS = i, time.Duration(i)*200*time.Millisecond
		if err := nc.PublishMsg(big.Encode(bus.FrameSubject("big"))); err != nil {
			t.Fatal(err)
		}
	}
	// Garbage on the frame subject is counted, not fatal.
	_ = nc.Publish(bus.FrameSubject("junk"), []byte("not a frame"))
	_ = nc.Flush()
	waitFor(t, "frames", func() bool {
		return request(t, nc, `{"camera":"short","kind":"frame"}`).Reason == ReasonNotEnoughFrames &&
			request(t, nc, `{"camera":"big","kind":"frame"}`).Reason == ReasonInputMismatch
	})
	cases := []struct {
		body, reason string
		want         []string
	}{
		{`{"camera":`, ReasonBadRequest, []string{"malformed request JSON", "unexpected EOF"}},
		{`not json`, ReasonBadRequest, []string{"malformed request JSON", "invalid character"}},
		{`{"camera":"ok"}}`, ReasonBadRequest, []string{"more than one JSON value"}},
		{`{"camera":"ok"} {}`, ReasonBadRequest, []string{"more than one JSON value"}},
		{`{"camera":"cam1","colour":"red"}`, ReasonBadRequest, []string{`unknown field "colour"`}},
		{`{"camera":7}`, ReasonBadRequest, []string{`"camera"`, "string"}},
		{`{}`, ReasonBadRequest, []string{"camera: missing"}},
		{`{"camera":"a.b"}`, ReasonBadRequest, []string{"camera:"}},
		{`{"camera":"cam1","kind":"poem"}`, ReasonBadRequest, []string{`kind: "poem"`}},
		{`{"camera":"cam1","timeout":"soon"}`, ReasonBadRequest, []string{`timeout: "soon"`}},
		{`{"camera":"cam1","sampling":{"top_p":2}}`, ReasonBadRequest, []string{"sampling.top_p", "out of range"}},
		{`{"camera":"nosuchcam","kind":"frame"}`, ReasonUnknownCamera, []string{`camera "nosuchcam": no frames seen`}},
		{`{"camera":"short","kind":"frame"}`, ReasonNotEnoughFrames, []string{"2 frames so far", "needs the last 4"}},
		{`{"camera":"big","kind":"frame"}`, ReasonInputMismatch, []string{"192x96", "96x96", "decode.width"}},
		{`{"camera":"short","kind":"caption"}`, ReasonUnavailable, []string{"generate.caption_model"}},
		{`{"camera":"ok","kind":"frame","deadline":"2001-01-01T00:00:00Z"}`, ReasonDeadline, []string{"deadline passed"}},
	}
	for _, c := range cases {
		r := request(t, nc, c.body)
		if r.Reason != c.reason {
			t.Errorf("%s: reason %q (%s), want %q", c.body, r.Reason, r.Error, c.reason)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(r.Error, w) {
				t.Errorf("%s: error %q does not mention %q", c.body, r.Error, w)
			}
		}
		if r.Caption != nil || r.Generated != nil {
			t.Errorf("%s: error reply carries a result", c.body)
		}
	}
}

// TestNewReplicaHandsBack starts a second replica after the first has a
// camera's frames: the new one has none, and every request the queue group
// gives it must still be served (by the first), not answered unknown_camera.
func TestNewReplicaHandsBack(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	runStage(t, url, testGenerate(), openTiny(t), nil)
	body := `{"camera":"cam1","kind":"frame"}`
	waitFor(t, "the first replica", func() bool {
		m, err := nc.Request(bus.GenerateRequest, []byte(body), time.Second)
		return err == nil && bytes.Contains(m.Data, []byte(`"reason":"unknown_camera"`))
	})
	publishFrames(t, nc, "cam1", 1, 6)
	waitFor(t, "a generated frame", func() bool { return request(t, nc, body).Error == "" })

	young := runStage(t, url, testGenerate(), openTiny(t), nil)
	served := 0
	for young.HandedBack() == 0 || served < 20 {
		if r := request(t, nc, body); r.Error != "" {
			t.Fatalf("request %d: %s (%s), handed back %d", served, r.Error, r.Reason, young.HandedBack())
		}
		served++
		if served > 200 {
			t.Fatal("the new replica got none of 200 requests")
		}
	}
	t.Logf("%d requests served, %d handed back by the new replica", served, young.HandedBack())
}

// TestOverloadEveryRequestAnswered sends 20 requests at once to a stage with
// budget 2 and a short queue: each gets a result or a reason, none is lost.
func TestOverloadEveryRequestAnswered(t *testing.T) {
	fg := openTiny(t)
	cfg := testGenerate()
	cfg.Budget, cfg.QueueSize = 2, 2
	nc := startStage(t, cfg, fg, nil)
	publishFrames(t, nc, "cam1", 1, 5)
	waitFor(t, "window", func() bool { return request(t, nc, `{"camera":"cam1","kind":"frame"}`).Error == "" })
	counts := overload(t, nc, 20, `{"camera":"cam1","kind":"frame","timeout":"10s"}`)
	t.Logf("20 requests: %v", counts)
	if counts["ok"] < 2 {
		t.Errorf("only %d succeeded", counts["ok"])
	}
}

// overload sends n requests at once and checks each is answered with a
// result or an explicit overload/deadline reason; it returns the counts.
func overload(t testing.TB, nc *nats.Conn, n int, body string) map[string]int {
	t.Helper()
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		wg     sync.WaitGroup
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := nc.Request(bus.GenerateRequest, []byte(body), 20*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				counts["lost: "+err.Error()]++
				return
			}
			var r Reply
			if err := json.Unmarshal(m.Data, &r); err != nil {
				counts["malformed reply"]++
				return
			}
			switch {
			case r.Error == "" && (r.Generated != nil || r.Caption != nil):
				counts["ok"]++
			case (r.Reason == ReasonOverloaded || r.Reason == ReasonDeadline) && r.Error != "":
				counts[r.Reason]++
			default:
				counts[fmt.Sprintf("unexpected %q: %s", r.Reason, r.Error)]++
			}
		}()
	}
	wg.Wait()
	total := counts["ok"] + counts[ReasonOverloaded] + counts[ReasonDeadline]
	if total != n {
		t.Errorf("of %d requests only %d were answered with a result or a reason: %v", n, total, counts)
	}
	return counts
}

// TestWindowAndObjectTTL: a camera silent for longer than window_ttl is
// forgotten (unknown_camera), and the generated-frames bucket expires
// objects after object_ttl.
func TestWindowAndObjectTTL(t *testing.T) {
	cfg := testGenerate()
	cfg.WindowTTL = time.Second
	cfg.ObjectTTL = 90 * time.Minute
	cfg.Auto, cfg.Triggers = true, config.Triggers{OnChange: true} // scenes are followed: per-camera state
	nc, stage := startStageWith(t, cfg, openTiny(t), nil)
	waitFor(t, "window", func() bool {
		publishFrames(t, nc, "cam1", 1, 4) // fresh for each try
		return request(t, nc, `{"camera":"cam1","kind":"frame"}`).Error == ""
	})
	publishAnalysis(t, nc, "cam1", 4, []string{"red circle"})
	camState := func() bool { stage.mu.Lock(); defer stage.mu.Unlock(); return stage.cams["cam1"] != nil }
	waitFor(t, "cam1's scene followed", camState)
	time.Sleep(2 * time.Second)
	if r := request(t, nc, `{"camera":"cam1","kind":"frame"}`); r.Reason != ReasonUnknownCamera {
		t.Errorf("2 s after the last frame, with window_ttl 1s: %+v, want %s", r, ReasonUnknownCamera)
	}
	if camState() {
		t.Error("cam1's trigger state kept after its window expired")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := js.ObjectStore(context.Background(), bus.GeneratedBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := obj.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != cfg.ObjectTTL {
		t.Errorf("bucket %s TTL %v, want object_ttl %v", bus.GeneratedBucket, st.TTL(), cfg.ObjectTTL)
	}
}

// startAnomalyStage runs a stage that scores every frame (on_anomaly)
// with the tiny framegen bundle at the given anomaly threshold.
func startAnomalyStage(t *testing.T, threshold float64) *nats.Conn {
	t.Helper()
	fg, err := OpenFramegen(copyBundle(t, func(m map[string]any) { m["patchline"].(map[string]any)["anomaly_threshold"] = threshold }), ModelOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fg.Close() })
	cfg := testGenerate()
	cfg.Auto = true
	cfg.Triggers = config.Triggers{OnAnomaly: true}
	return startStage(t, cfg, fg, nil)
}

// TestAnomalyTrigger: with on_anomaly, every frame is scored; threshold 0
// publishes anomalies with their PNG, a huge threshold publishes nothing.
func TestAnomalyTrigger(t *testing.T) {
	for _, c := range []struct {
		threshold float64
		anomalies bool
	}{{0, true}, {1e9, false}} {
		t.Run(fmt.Sprint(c.threshold), func(t *testing.T) {
			started0 := testutil.ToFloat64(metricStarted.WithLabelValues(KindFrame))
			done0 := testutil.ToFloat64(metricDone.WithLabelValues(KindFrame, TriggerAnomaly))
			nc := startAnomalyStage(t, c.threshold)
			anns := collect(t, nc, bus.AnnotationsPrefix+"cam1")
			generated := collect(t, nc, bus.GeneratedPrefix+"cam1")
			for i := 1; i <= 12; i++ {
				publishFrames(t, nc, "cam1", i, 1)
				time.Sleep(30 * time.Millisecond)
			}
			if !c.anomalies {
				time.Sleep(300 * time.Millisecond)
				if len(anns()) != 0 || len(generated()) != 0 {
					t.Fatalf("threshold %v: %d annotations, %d generated", c.threshold, len(anns()), len(generated()))
				}
				return
			}
			seq := 12
			waitFor(t, "anomalies", func() bool {
				seq++ // frames go on: those before the lease was taken are not scored
				publishFrames(t, nc, "cam1", seq, 1)
				return len(anns()) >= 3
			})
			var g Generated
			if err := json.Unmarshal(generated()[0].Data, &g); err != nil {
				t.Fatal(err)
			}
			if g.Trigger != TriggerAnomaly || !g.Anomaly {
				t.Errorf("generated %+v", g)
			}
			asch, err := schema.CompileAnnotation()
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range anns() {
				if err := schema.ValidateAnnotation(asch, m.Data); err != nil {
					t.Errorf("anomaly annotation %s: %v", m.Data, err)
				}
				var a annotation.Annotation
				_ = json.Unmarshal(m.Data, &a)
				if a.Kind != annotation.KindAnomaly || a.Anomaly == nil || a.Anomaly.Object == "" || a.Task != "framegen" ||
					m.Header.Get(nats.MsgIdHdr) != fmt.Sprintf("cam1:%d:anomaly:anomaly", a.Seq) {
					t.Errorf("annotation %s, Nats-Msg-Id %q", m.Data, m.Header.Get(nats.MsgIdHdr))
				}
			}
			readPNG(t, nc, g.Object)
			// Each anomaly's frame counts as started, as other frames do.
			started := testutil.ToFloat64(metricStarted.WithLabelValues(KindFrame)) - started0
			done := testutil.ToFloat64(metricDone.WithLabelValues(KindFrame, TriggerAnomaly)) - done0
			if done < 3 || started < done {
				t.Errorf("%v anomaly frames done but %v frames started", done, started)
			}
		})
	}
}

// TestAnomalyFrameInterval: a framegen bundle trained on frames 200 ms
// apart does not score a camera whose frames are 1 s apart (a camera
// sampled at 1 fps: its ordinary motion looks like teleports), counting
// and logging it; once its frames are 200 ms apart again it is scored.
func TestAnomalyFrameInterval(t *testing.T) {
	fg, err := OpenFramegen(copyBundle(t, func(m map[string]any) {
		pl := m["patchline"].(map[string]any)
		pl["anomaly_threshold"], pl["frame_interval_ms"] = 0, 200
	}), ModelOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fg.Close() })
	if fg.FrameInterval() != 200*time.Millisecond {
		t.Fatalf("FrameInterval %v, want 200ms", fg.FrameInterval())
	}
	cfg := testGenerate()
	cfg.Auto = true
	cfg.Triggers = config.Triggers{OnAnomaly: true}
	var logs testenv.Buffer
	nc := startStageLog(t, cfg, fg, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	generated := collect(t, nc, bus.GeneratedPrefix+"slow")
	off := metricRejected.WithLabelValues(KindFrame, reasonFrameInterval)
	before := testutil.ToFloat64(off)
	seq := 0
	waitFor(t, "frames 1 s apart refused for their interval", func() bool {
		seq += 5 // every 5th frame of a 5 fps source: 1 s apart
		publishFrames(t, nc, "slow", seq, 1)
		return testutil.ToFloat64(off)-before >= 3
	})
	if len(generated()) != 0 {
		t.Errorf("%d anomalies of frames 1 s apart, want none scored", len(generated()))
	}
	if !strings.Contains(logs.String(), "anomaly scoring off for this camera") || !strings.Contains(logs.String(), "frame_gap=1s") {
		t.Errorf("no warning naming the gap:\n%s", logs.String())
	}
	waitFor(t, "frames 200 ms apart scored again", func() bool {
		seq++
		publishFrames(t, nc, "slow", seq, 1)
		return len(generated()) > 0
	})
	if !strings.Contains(logs.String(), "anomaly scoring on again") {
		t.Errorf("no line saying scoring is on again:\n%s", logs.String())
	}
	// Frames 100 ms apart (a 10 fps source kept whole) are too close.
	before = testutil.ToFloat64(off)
	fast := 1
	waitFor(t, "frames 100 ms apart refused for their interval", func() bool {
		f := testFrame("fast", uint64(fast), 4+3*fast%60)
		f.PTS = time.Duration(fast) * 100 * time.Millisecond
		fast++
		if err := nc.PublishMsg(f.Encode(bus.FrameSubject("fast"))); err != nil {
			t.Fatal(err)
		}
		return testutil.ToFloat64(off)-before >= 3
	})
	if !strings.Contains(logs.String(), "frame_gap=100ms") {
		t.Errorf("no warning naming the 100 ms gap:\n%s", logs.String())
	}
	// One leap among frames otherwise 200 ms apart (the median fits): the
	// frame after it is not scored, nor served on request.
	leapGen := collect(t, nc, bus.GeneratedPrefix+"leap")
	leap := 0
	waitFor(t, "frames of camera leap scored", func() bool {
		leap++
		publishFrames(t, nc, "leap", leap, 1)
		return len(leapGen()) > 0
	})
	before = testutil.ToFloat64(off)
	leap++
	f := testFrame("leap", uint64(leap), 4)
	f.PTS = time.Duration(leap)*200*time.Millisecond + time.Hour
	if err := nc.PublishMsg(f.Encode(bus.FrameSubject("leap"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the frame after a leap refused for its interval", func() bool { return testutil.ToFloat64(off) > before })
	for _, m := range leapGen() {
		var g Generated
		if err := json.Unmarshal(m.Data, &g); err != nil || g.Seq == uint64(leap) {
			t.Errorf("the frame after the leap scored: %s (%v)", m.Data, err)
		}
	}
	// A 6 fps source sampled at 5 keeps frames 167 and 333 ms apart in
	// turn: no leap, and scored.
	unevenGen := collect(t, nc, bus.GeneratedPrefix+"uneven")
	var pts time.Duration
	n := uint64(0)
	waitFor(t, "a camera sampled unevenly scored", func() bool {
		n++
		pts += []time.Duration{167 * time.Millisecond, 333 * time.Millisecond}[n%2]
		f := testFrame("uneven", n, int(n*3%60))
		f.PTS = pts
		if err := nc.PublishMsg(f.Encode(bus.FrameSubject("uneven"))); err != nil {
			t.Fatal(err)
		}
		return len(unevenGen()) > 0
	})
	r := Describe(context.Background(), nc, Request{Camera: "leap", Kind: KindFrame}, 5*time.Second)
	if r.Reason != ReasonInputMismatch || !strings.Contains(r.Error, "gap of 1h0m0.2s") || !strings.Contains(r.Error, "ask again once 4 more have come") {
		t.Errorf("a frame of a camera whose last frames leapt an hour: %+v, want %s naming the gap", r, ReasonInputMismatch)
	}
	// Asked for, such a camera's frame is refused, naming both gaps, rather
	// than predicted from motion the model was not trained on.
	r = Describe(context.Background(), nc, Request{Camera: "fast", Kind: KindFrame}, 5*time.Second)
	if r.Reason != ReasonInputMismatch || !strings.Contains(r.Error, "100ms apart") || !strings.Contains(r.Error, "200ms apart") {
		t.Errorf("a frame of a camera sending frames 100 ms apart: %+v, want %s naming 100ms and 200ms", r, ReasonInputMismatch)
	}
}

// TestAnomalyScoresManyCameras: more cameras than one framegen run takes
// (maxScoreBatch) are all scored, in several runs.
func TestAnomalyScoresManyCameras(t *testing.T) {
	nc := startAnomalyStage(t, 0)
	generated := collect(t, nc, bus.GeneratedPrefix+"*")
	const n = 2*maxScoreBatch + 3
	seen := func() map[string]bool {
		cams := map[string]bool{}
		for _, m := range generated() {
			cams[strings.TrimPrefix(m.Subject, bus.GeneratedPrefix)] = true
		}
		return cams
	}
	seq := 0
	waitFor(t, fmt.Sprintf("generated frames of all %d cameras", n), func() bool {
		seq++ // frames go on: those before the leases were taken are not scored
		for c := range n {
			publishFrames(t, nc, fmt.Sprintf("cam%d", c), seq, 1)
		}
		time.Sleep(30 * time.Millisecond)
		return len(seen()) == n
	})
}

// TestDescribeHTTP serves the describe route over a real stage.
func TestDescribeHTTP(t *testing.T) {
	fg := openTiny(t)
	nc := startStage(t, testGenerate(), fg, nil)
	publishFrames(t, nc, "cam1", 1, 5)
	mux := http.NewServeMux()
	mux.Handle(DescribePattern, DescribeHandler(nc, 5*time.Second, 0))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	post := func(path, body string) (int, Reply) {
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r Reply
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, r
	}
	waitFor(t, "window", func() bool { code, _ := post("/v1/cameras/cam1/describe", `{"kind":"frame"}`); return code == 200 })
	code, r := post("/v1/cameras/cam1/describe", `{"kind":"frame","timeout":"5s"}`)
	if code != 200 || r.Generated == nil {
		t.Fatalf("%d %+v", code, r)
	}
	for _, c := range []struct {
		path, body string
		status     int
		reason     string
	}{
		{"/v1/cameras/cam1/describe", `{"kind":`, 400, ReasonBadRequest},
		{"/v1/cameras/cam1/describe", `{"camera":"cam2"}`, 400, ReasonBadRequest},
		{"/v1/cameras/nosuch/describe", `{"kind":"frame"}`, 404, ReasonUnknownCamera},
		{"/v1/cameras/cam1/describe", ``, 503, ReasonUnavailable}, // caption: no caption model
	} {
		code, r := post(c.path, c.body)
		if code != c.status || r.Reason != c.reason || r.Error == "" {
			t.Errorf("POST %s %s: %d %+v, want %d %s", c.path, c.body, code, r, c.status, c.reason)
		}
	}
}

func TestDescribeWithoutStage(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	r := Describe(context.Background(), nc, Request{Camera: "cam1"}, time.Second)
	if r.Reason != ReasonUnavailable || !strings.Contains(r.Error, "no generate stage") {
		t.Errorf("%+v", r)
	}
}

func TestSceneKey(t *testing.T) {
	a := annotation.Annotation{Detections: []annotation.Detection{{Label: "red circle"}, {Label: "blue square"}, {Label: "red circle"}}}
	b := annotation.Annotation{Detections: []annotation.Detection{{Label: "blue square"}, {Label: "red circle"}, {Label: "red circle"}}}
	c := annotation.Annotation{Detections: []annotation.Detection{{Label: "blue square"}, {Label: "red circle"}}}
	if SceneKey(a) != SceneKey(b) {
		t.Errorf("order changed the key: %q vs %q", SceneKey(a), SceneKey(b))
	}
	if SceneKey(a) == SceneKey(c) {
		t.Errorf("a second red circle leaving did not change the key %q", SceneKey(a))
	}
	l := annotation.Annotation{Labels: []annotation.Label{{Label: "cat", Score: 0.9}, {Label: "dog", Score: 0.1}}}
	if SceneKey(l) != "cat×1" {
		t.Errorf("labels key %q", SceneKey(l))
	}
}

// TestAnomalyCooldownEscalation: within a camera's cooldown an anomaly is
// published only if it scores anomalyEscalation times the one that began
// it (and then begins a cooldown of its own); after the cooldown, any.
func TestAnomalyCooldownEscalation(t *testing.T) {
	cfg := testGenerate()
	cfg.Triggers = config.Triggers{OnAnomaly: true, Cooldown: 2 * time.Second}
	s := NewStage(Options{Config: cfg, Logger: natstest.Discard()})
	t0 := time.Now()
	for _, c := range []struct {
		after time.Duration
		score float64
		want  bool
	}{
		{0, 0.5, true},
		{100 * time.Millisecond, 0.6, false}, // a repeat of the first
		{200 * time.Millisecond, 1.8, true},  // a scene cut after a person walked in
		{300 * time.Millisecond, 2.5, false}, // under 1.5 × 1.8
		{2300 * time.Millisecond, 0.4, true}, // the cooldown since 1.8 passed
		{2400 * time.Millisecond, 0.59, false},
	} {
		if got := s.anomalyDue("cam1", c.score, t0.Add(c.after)); got != c.want {
			t.Errorf("score %v at +%v: published %v, want %v", c.score, c.after, got, c.want)
		}
	}
	if !s.anomalyDue("cam2", 0.1, t0) {
		t.Error("another camera's first anomaly held back by cam1's cooldown")
	}
}

// TestOutputID: automatic outputs have one id per camera, frame, kind and
// trigger (two replicas publishing one are stored once); requests' differ.
func TestOutputID(t *testing.T) {
	if a, b := outputID("cam1", 7, "caption", TriggerChange), outputID("cam1", 7, "caption", TriggerChange); a != b || a != "cam1:7:caption:change" {
		t.Errorf("automatic ids %q, %q, want cam1:7:caption:change twice", a, b)
	}
	if outputID("cam1", 7, "caption", TriggerChange) == outputID("cam1", 7, "caption", TriggerAnomaly) {
		t.Error("a change caption and an anomaly caption of one frame share an id")
	}
	if a, b := outputID("cam1", 7, "caption", TriggerRequest), outputID("cam1", 7, "caption", TriggerRequest); a == b {
		t.Errorf("two requests' captions of one frame share id %q", a)
	}
}

// TestScorerCountsMismatchedFrames: the anomaly scorer does not score a
// camera whose frames are not framegen's input size, and counts each such
// frame once as a rejected frame generation (input_mismatch).
func TestScorerCountsMismatchedFrames(t *testing.T) {
	nc := startAnomalyStage(t, 0)
	generated := collect(t, nc, bus.GeneratedPrefix+"*")
	before := testutil.ToFloat64(metricRejected.WithLabelValues(KindFrame, ReasonInputMismatch))
	big := testFrame("big", 0, 0)
	big.Width, big.Height, big.Patch = 192, 96, 8
	big.Tokens = append(big.Tokens, big.Tokens...)
	waitFor(t, "mismatched frames counted", func() bool {
		big.Seq++ // frames go on: those before the lease was taken are not scored
		big.PTS += 200 * time.Millisecond
		if err := nc.PublishMsg(big.Encode(bus.FrameSubject("big"))); err != nil {
			t.Fatal(err)
		}
		return testutil.ToFloat64(metricRejected.WithLabelValues(KindFrame, ReasonInputMismatch)) > before
	})
	if got := testutil.ToFloat64(metricRejected.WithLabelValues(KindFrame, ReasonInputMismatch)) - before; got > float64(big.Seq) {
		t.Errorf("%v mismatches counted for %d frames", got, big.Seq)
	}
	if n := len(generated()); n != 0 {
		t.Errorf("%d frames generated for a camera of another size", n)
	}
}

// TestWindowStartsAgainWhenPTSGoesBack: a camera's frames whose seq goes
// on but whose timestamps start again (its source reopened, or another
// decode replica took it) start its window again: frames from before are
// no context for those after.
func TestWindowStartsAgainWhenPTSGoesBack(t *testing.T) {
	ws := newWindows(4, time.Minute)
	now := time.Now()
	for seq := uint64(1); seq <= 3; seq++ {
		ws.add(testFrame("c", seq, 0), now)
	}
	if fs, err := ws.last("c", 3, now); err != nil || len(fs) != 3 {
		t.Fatalf("3 frames in: %d, %v", len(fs), err)
	}
	f := testFrame("c", 4, 0)
	f.PTS = 10 * time.Millisecond // the source's clock from 0 again
	ws.add(f, now)
	if fs, err := ws.last("c", 2, now); err == nil {
		t.Errorf("after pts went back the window holds %d frames, want only the new one", len(fs))
	}
}

// TestLeapGap: among frames framegen would score (interval 200 ms), a gap
// over three intervals (a leap) or under a third of one (closer than a
// sampler keeps frames) stops the score; a sampler's spread does not.
func TestLeapGap(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		gaps []time.Duration
		want bool
	}{
		{[]time.Duration{200 * ms, 200 * ms, 200 * ms}, false},
		{[]time.Duration{167 * ms, 333 * ms, 167 * ms}, false},
		{[]time.Duration{100 * ms, 200 * ms, 300 * ms}, false},
		{[]time.Duration{200 * ms, time.Hour, 200 * ms}, true},
		{[]time.Duration{200 * ms, ms, 200 * ms}, true},
		{[]time.Duration{200 * ms, 0, 200 * ms}, true},
	} {
		fs := []*frame.Frame{{PTS: time.Second}}
		for _, g := range c.gaps {
			fs = append(fs, &frame.Frame{PTS: fs[len(fs)-1].PTS + g})
		}
		if _, got := leapGap(fs, 200*ms); got != c.want {
			t.Errorf("gaps %v: leap %v, want %v", c.gaps, got, c.want)
		}
	}
}
