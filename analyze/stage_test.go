package analyze

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/internal/testenv"
)

// runStage runs an analyze stage with cfg on a fresh server until the test
// ends, and returns a connection that collects the analyzed annotations.
func runStage(t *testing.T, m *Model, cfg config.Analyze) (*nats.Conn, func() []annotation.Annotation) {
	t.Helper()
	return runStageLog(t, m, cfg, natstest.Discard())
}

// runStageLog is runStage with the stage logging to log.
func runStageLog(t *testing.T, m *Model, cfg config.Analyze, log *slog.Logger) (*nats.Conn, func() []annotation.Annotation) {
	t.Helper()
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	var mu sync.Mutex
	var anns []annotation.Annotation
	if _, err := nc.Subscribe(bus.AnalyzedPrefix+"*", func(msg *nats.Msg) {
		var a annotation.Annotation
		if json.Unmarshal(msg.Data, &a) == nil {
			mu.Lock()
			anns = append(anns, a)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	st := NewStage(natstest.Connect(t, url), m, cfg, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-st.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("stage not ready")
	}
	return nc, func() []annotation.Annotation {
		mu.Lock()
		defer mu.Unlock()
		return append([]annotation.Annotation(nil), anns...)
	}
}

// publishAs publishes f as frame seq of camera.
func publishAs(t *testing.T, nc *nats.Conn, f *frame.Frame, camera string, seq uint64) {
	t.Helper()
	g := *f
	g.Camera, g.Seq = camera, seq
	if err := nc.PublishMsg(g.Encode(bus.FrameSubject(camera))); err != nil {
		t.Fatal(err)
	}
}

// TestStageBatchesAcrossCameras: frames of four cameras arriving together
// run as one batch of batch_size 4; a lone frame runs after max_batch_wait
// as a batch of 1, which its latency shows as batch wait, not queue wait.
func TestStageBatchesAcrossCameras(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	defer otel.SetTracerProvider(prev)

	m := openTestBundle(t, segmentTiny, segmentOptions())
	frames, _ := expectedFrames(t, m)
	nc, anns := runStage(t, m, config.Analyze{BatchSize: 4, MaxBatchWait: 300 * time.Millisecond, QueueSize: 16})
	for i := range 4 {
		publishAs(t, nc, frames[0], fmt.Sprintf("cam%d", i+1), 1)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "4 annotations", 10*time.Second, func() bool { return len(anns()) == 4 })
	publishAs(t, nc, frames[0], "cam1", 2)
	testenv.WaitFor(t, "the lone frame's annotation", 10*time.Second, func() bool { return len(anns()) == 5 })

	batchOf := map[string]int64{} // camera:seq → batch_size of its inference span
	for _, s := range rec.Ended() {
		if s.Name() != "analyze" {
			continue
		}
		var key string
		for _, a := range s.Attributes() {
			switch a.Key {
			case "camera":
				key = a.Value.AsString() + key
			case "seq":
				key += fmt.Sprintf(":%d", a.Value.AsInt64())
			}
		}
		for _, c := range rec.Ended() {
			if c.Name() == "inference" && c.Parent().SpanID() == s.SpanContext().SpanID() {
				for _, a := range c.Attributes() {
					if a.Key == attribute.Key("batch_size") {
						batchOf[key] = a.Value.AsInt64()
					}
				}
			}
		}
	}
	for _, k := range []string{"cam1:1", "cam2:1", "cam3:1", "cam4:1"} {
		if batchOf[k] != 4 {
			t.Errorf("%s ran in a batch of %d, want 4 (batches %v)", k, batchOf[k], batchOf)
		}
	}
	if batchOf["cam1:2"] != 1 {
		t.Errorf("the lone frame ran in a batch of %d, want 1", batchOf["cam1:2"])
	}
	for _, a := range anns() {
		// Its wait for the batch to fill is batch time, not queue time.
		if a.Camera == "cam1" && a.Seq == 2 && (a.LatencyMs["batch"] < 250 || a.LatencyMs["queue"] >= 250) {
			t.Errorf("the lone frame waited %v ms for its batch after %v ms in the queue, want max_batch_wait (300 ms) as batch",
				a.LatencyMs["batch"], a.LatencyMs["queue"])
		}
	}
}

// TestDropSeriesFromTheFirstFrame: a camera's drop counters exist, at 0,
// from its first frame, one per reason, so that an alert on them has a
// series before the first drop (and rate() sees that drop).
func TestDropSeriesFromTheFirstFrame(t *testing.T) {
	m := openTestBundle(t, segmentTiny, segmentOptions())
	frames, _ := expectedFrames(t, m)
	nc, anns := runStage(t, m, config.Analyze{BatchSize: 1})
	publishAs(t, nc, frames[0], "first", 1)
	testenv.WaitFor(t, "the frame analyzed", 10*time.Second, func() bool { return len(anns()) == 1 })
	var got []string
	for _, l := range testenv.Series(t, "patchline_frames_dropped_total") {
		if l["stage"] == stageName && l["camera"] == "first" {
			got = append(got, l["reason"])
		}
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(dropReasons))
	if !slices.Equal(got, want) {
		t.Errorf("drop series of a camera after its first frame: %v, want %v", got, want)
	}
	for _, r := range want {
		if v := testutil.ToFloat64(telemetry.FramesDropped.WithLabelValues(stageName, "first", r)); v != 0 {
			t.Errorf("%s drops: %v, want 0", r, v)
		}
	}
}

// TestStageQueueDropsOldest: a burst larger than queue_size while the model
// runs drops the oldest frames, counted per camera, and the newest frame is
// analyzed.
func TestStageQueueDropsOldest(t *testing.T) {
	m := openTestBundle(t, segmentTiny, segmentOptions())
	frames, _ := expectedFrames(t, m)
	// Two cameras, two frames of one to each of the other's, so that the
	// frame dropped is often not the arriving frame's camera: each drop is
	// counted against the camera of the frame dropped.
	cams := []string{"burst", "burst2"}
	dropped := func(cam string) float64 {
		return testutil.ToFloat64(telemetry.FramesDropped.WithLabelValues(stageName, cam, "queue_full"))
	}
	before := map[string]float64{}
	for _, c := range cams {
		before[c] = dropped(c)
	}
	nc, anns := runStage(t, m, config.Analyze{BatchSize: 1, QueueSize: 2})
	const n = 300
	sent := map[string]int{}
	for i := range n {
		c := cams[min(i%3, 1)]
		sent[c]++
		publishAs(t, nc, frames[0], c, uint64(sent[c]))
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	analyzed := func() map[string]int {
		got := map[string]int{}
		for _, a := range anns() {
			got[a.Camera]++
		}
		return got
	}
	last := cams[min((n-1)%3, 1)]
	testenv.WaitFor(t, "the newest frame analyzed, and every frame analyzed or counted dropped", 20*time.Second, func() bool {
		got, newest := analyzed(), false
		for _, a := range anns() {
			newest = newest || a.Camera == last && a.Seq == uint64(sent[last])
		}
		total := 0
		for _, c := range cams {
			total += got[c] + int(dropped(c)-before[c])
		}
		return newest && total == n
	})
	got := analyzed()
	for _, c := range cams {
		if d := int(dropped(c) - before[c]); d == 0 || got[c]+d != sent[c] {
			t.Errorf("camera %s: %d of %d frames analyzed, %d counted as dropped: want drops, and every frame of it either analyzed or counted against it", c, got[c], sent[c], d)
		}
	}
}

// TestStageSurvivesGarbage: frames that do not decode, on any subject the
// stage hears (one not even UTF-8), or that name another camera than their
// subject's, are counted under their subject's family and dropped, and the
// stage goes on analyzing.
func TestStageSurvivesGarbage(t *testing.T) {
	m := openTestBundle(t, segmentTiny, segmentOptions())
	frames, _ := expectedFrames(t, m)
	nc, anns := runStage(t, m, config.Analyze{BatchSize: 1})
	bad := telemetry.Malformed.WithLabelValues(stageName, "patchline.frames.*")
	before := testutil.ToFloat64(bad)
	for _, subj := range []string{"patchline.frames.\xff\xfe", "patchline.frames.x", bus.FrameSubject("cam1")} {
		if err := nc.Publish(subj, []byte("garbage")); err != nil {
			t.Fatal(err)
		}
	}
	other := *frames[0] // a good frame of cam2 on cam1's subject: whose is it?
	other.Camera, other.Seq = "cam2", 1
	if err := nc.PublishMsg(other.Encode(bus.FrameSubject("cam1"))); err != nil {
		t.Fatal(err)
	}
	publishAs(t, nc, frames[0], "cam1", 1)
	testenv.WaitFor(t, "the good frame analyzed", 10*time.Second, func() bool { return len(anns()) >= 1 })
	if n := testutil.ToFloat64(bad) - before; n != 4 {
		t.Errorf("%v malformed frames counted, want 4", n)
	}
	if a := anns(); len(a) != 1 || a[0].Camera != "cam1" {
		t.Errorf("annotations %+v, want only cam1's", a)
	}
}

// TestStageMismatchedFramesThinned: frames of another size than the model's
// (a decode replica configured apart), batched with good frames of another
// camera, are each dropped and counted, logged only the 1st, 2nd and 4th
// time of 5, and the good frames of the same batches are analyzed.
func TestStageMismatchedFramesThinned(t *testing.T) {
	m := openTestBundle(t, segmentTiny, segmentOptions())
	frames, _ := expectedFrames(t, m)
	var logs testenv.Buffer
	nc, anns := runStageLog(t, m, config.Analyze{BatchSize: 4, MaxBatchWait: 50 * time.Millisecond, QueueSize: 16}, slog.New(slog.NewTextHandler(&logs, nil)))
	dropped := telemetry.FramesDropped.WithLabelValues(stageName, "small", "input_mismatch")
	before := testutil.ToFloat64(dropped)
	small := &frame.Frame{SourceW: 16, SourceH: 16, Width: 16, Height: 16, Patch: 8, Resize: frame.ResizeStretch,
		Transform: frame.Stretch(16, 16, 16, 16), Tokens: make([]byte, 16*16*3)}
	for seq := range uint64(5) {
		publishAs(t, nc, small, "small", seq+1)
		publishAs(t, nc, frames[0], "good", seq+1)
	}
	testenv.WaitFor(t, "the good frames analyzed", 10*time.Second, func() bool { return len(anns()) == 5 })
	if d := testutil.ToFloat64(dropped) - before; d != 5 {
		t.Errorf("patchline_frames_dropped_total{reason=input_mismatch} rose by %v, want 5", d)
	}
	for _, a := range anns() {
		if a.Camera != "good" {
			t.Errorf("annotation of camera %s, want only the good frames'", a.Camera)
		}
	}
	if n := strings.Count(logs.String(), "dropping frame the model cannot take"); n != 3 {
		t.Errorf("%d log lines for 5 mismatched frames, want 3 (the 1st, 2nd and 4th):\n%s", n, logs.String())
	}
}

// TestClockAhead: a frame published by a host whose clock is an hour
// ahead has a queue wait of 0, not of minus an hour, and is counted as
// clock skew.
func TestClockAhead(t *testing.T) {
	m := openTestBundle(t, segmentTiny, segmentOptions())
	frames, _ := expectedFrames(t, m)
	nc, anns := runStage(t, m, config.Analyze{BatchSize: 1})
	skew := telemetry.ClockSkew.WithLabelValues(stageName)
	before := testutil.ToFloat64(skew)
	f := *frames[0]
	f.PublishedAt = time.Now().Add(time.Hour)
	f.CapturedAt = f.PublishedAt.Add(-10 * time.Millisecond)
	publishAs(t, nc, &f, "ahead", 1)
	testenv.WaitFor(t, "the annotation", 10*time.Second, func() bool { return len(anns()) == 1 })
	if q := anns()[0].LatencyMs["queue"]; q < 0 || q > 10000 {
		t.Errorf("queue latency %v ms of a frame published by a clock an hour ahead, want from its arrival here", q)
	}
	if got := testutil.ToFloat64(skew) - before; got != 1 {
		t.Errorf("patchline_clock_skew_total{stage=analyze} rose by %v, want 1", got)
	}
}

// TestStageStampsAnalyzedAt: each analyzed annotation carries the time it
// was published, from which the sink measures the NATS hop.
func TestStageStampsAnalyzedAt(t *testing.T) {
	m := openTestBundle(t, segmentTiny, segmentOptions())
	frames, _ := expectedFrames(t, m)
	nc, _ := runStage(t, m, config.Analyze{BatchSize: 1})
	sub, err := nc.SubscribeSync(bus.AnalyzedSubject("cam1"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	publishAs(t, nc, frames[0], "cam1", 1)
	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := strconv.ParseInt(msg.Header.Get(annotation.HdrAnalyzedAt), 10, 64)
	if at := time.Unix(0, ns); err != nil || at.Before(start) || at.After(time.Now()) {
		t.Errorf("%s: %q, want the publish time, between %v and now", annotation.HdrAnalyzedAt, msg.Header.Get(annotation.HdrAnalyzedAt), start)
	}
}
