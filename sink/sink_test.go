package sink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/internal/testenv"
	"github.com/patchline/patchline/schema"
)

// startSink runs a sink stage on the server at url until stop (which
// returns Run's error) or the end of the test.
func startSink(t testing.TB, url string, cfg config.Sink) (st *Stage, stop func() error) {
	t.Helper()
	return startSinkLog(t, url, cfg, natstest.Discard())
}

// startSinkLog is startSink logging to log.
func startSinkLog(t testing.TB, url string, cfg config.Sink, log *slog.Logger) (st *Stage, stop func() error) {
	t.Helper()
	st, err := NewStage(natstest.Connect(t, url), cfg, 1, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	select {
	case <-st.Ready():
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("sink not ready")
	}
	var once sync.Once
	var err2 error
	stop = func() error {
		once.Do(func() { cancel(); err2 = <-done })
		return err2
	}
	t.Cleanup(func() { _ = stop() })
	return st, stop
}

// TestSinkClockAhead: an annotation captured and analyzed by hosts whose
// clocks are an hour ahead of this one gets latencies from when the sink
// read it, not negative ones, each counted as clock skew.
func TestSinkClockAhead(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	startSink(t, url, config.Sink{})
	got := make(chan *nats.Msg, 1)
	sub, err := nc.ChanSubscribe(bus.AnnotationsPrefix+"*", got)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	skew := telemetry.ClockSkew.WithLabelValues(stageName)
	before := testutil.ToFloat64(skew)
	ahead := time.Now().Add(time.Hour)
	b, _ := json.Marshal(annotation.Annotation{
		Schema: annotation.Schema, Kind: annotation.KindAnalysis, Camera: "cam1", Seq: 8,
		CapturedAt: ahead.UTC(), SourceWidth: 640, SourceHeight: 360, Model: "m", Task: "detect",
		LatencyMs: map[string]float64{"decode": 3}, TraceID: "0123456789abcdef0123456789abcdef",
	})
	out := analyzedThrough(t, nc, b, ahead.Add(time.Second), got)
	var back annotation.Annotation
	if err := json.Unmarshal(out.Data, &back); err != nil {
		t.Fatal(err)
	}
	if l := back.LatencyMs; l["total"] < 0 || l["total"] > 5000 || l["sink"] < 0 || l["sink"] > 5000 {
		t.Errorf("latency_ms = %v of an annotation stamped an hour ahead, want total and sink from when the sink read it", l)
	}
	if n := testutil.ToFloat64(skew) - before; n != 2 {
		t.Errorf("patchline_clock_skew_total{stage=sink} rose by %v, want 2 (captured_at and analyzed-at)", n)
	}
}

// analyzedThrough publishes annotation JSON b on cam1's analyzed subject,
// stamped analyzed at at, and returns what the sink publishes of it on got.
func analyzedThrough(t *testing.T, nc *nats.Conn, b []byte, at time.Time, got <-chan *nats.Msg) *nats.Msg {
	t.Helper()
	m := nats.NewMsg(bus.AnalyzedSubject("cam1"))
	m.Data = b
	m.Header.Set(annotation.HdrAnalyzedAt, strconv.FormatInt(at.UnixNano(), 10))
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	select {
	case out := <-got:
		return out
	case <-time.After(5 * time.Second):
		t.Fatal("no annotation published")
		return nil
	}
}

func TestSinkPublishesValidatedAnnotationsAndDropsGarbage(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	jsonl := filepath.Join(t.TempDir(), "not", "yet", "out.jsonl") // its directory is made
	st, stop := startSink(t, url, config.Sink{JSONL: jsonl})

	got := make(chan *nats.Msg, 10)
	sub, err := nc.ChanSubscribe(bus.AnnotationsPrefix+"*", got)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	// Garbage first: it must be counted and dropped, and the sink must go on.
	for _, junk := range [][]byte{[]byte("not json"), []byte(`{"schema":"other"}`), nil} {
		if err := nc.Publish(bus.AnalyzedSubject("cam1"), junk); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish(bus.AnalyzedPrefix+"\xff", []byte("{}")); err != nil { // a subject that is not UTF-8
		t.Fatal(err)
	}
	// Captured 5 s before analyze finished with it: total latency runs
	// from capture, the sink's own from the analyzed-at header.
	analyzedAt := time.Now().Round(0) // wall clock only, as the header carries it
	a := annotation.Annotation{
		Schema: annotation.Schema, Kind: annotation.KindAnalysis, Camera: "cam1", Seq: 7,
		PTSMs: 700, CapturedAt: analyzedAt.Add(-5 * time.Second).UTC(), SourceWidth: 640, SourceHeight: 360,
		Model: "m", Task: "detect",
		Detections: []annotation.Detection{{Label: "person", ClassID: 0, Score: 0.9, Box: [4]float64{1, 2, 30, 40}}},
		LatencyMs:  map[string]float64{"decode": 3, "inference": 10},
		TraceID:    "0123456789abcdef0123456789abcdef",
	}
	b, _ := json.Marshal(a)
	out := analyzedThrough(t, nc, b, analyzedAt, got)
	sinceAnalyzed := frame.Millis(time.Since(analyzedAt))
	if out.Subject != bus.AnnotationSubject("cam1") {
		t.Errorf("subject %s", out.Subject)
	}
	if id := out.Header.Get(nats.MsgIdHdr); id != "cam1:7" {
		t.Errorf("Nats-Msg-Id %q, want cam1:7", id)
	}
	sch, err := schema.CompileAnnotation()
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.ValidateAnnotation(sch, out.Data); err != nil {
		t.Errorf("published annotation does not match schema: %v\n%s", err, out.Data)
	}
	var back annotation.Annotation
	if err := json.Unmarshal(out.Data, &back); err != nil {
		t.Fatal(err)
	}
	if l := back.LatencyMs; l["total"] < 5000 || l["sink"] <= 0 || l["sink"] > sinceAnalyzed || l["decode"] != 3 {
		t.Errorf("latency_ms = %v: want total ≥ 5000 (from capture), 0 < sink ≤ %.3f (from analyzed-at), decode kept", l, sinceAnalyzed)
	}
	if n := st.malformed.Load(); n != 4 {
		t.Errorf("malformed = %d, want 4", n)
	}
	// The time of the camera's last annotation, for an alert on a path
	// through which nothing comes (a dead analyze process).
	last := time.Unix(0, int64(testutil.ToFloat64(telemetry.LastAnnotation.WithLabelValues("cam1"))*1e9))
	if last.Before(analyzedAt) || last.After(time.Now()) {
		t.Errorf("patchline_last_annotation_timestamp_seconds{camera=cam1} = %v, want the publish time, after %v", last, analyzedAt)
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(jsonl)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := 0
	for sc := bufio.NewScanner(f); sc.Scan(); lines++ {
		if err := schema.ValidateAnnotation(sch, sc.Bytes()); err != nil {
			t.Errorf("jsonl line %d: %v", lines+1, err)
		}
	}
	if lines != 1 {
		t.Errorf("jsonl has %d lines, want 1", lines)
	}
}

func TestSchemaRejectsBadAnnotations(t *testing.T) {
	sch, err := schema.CompileAnnotation()
	if err != nil {
		t.Fatal(err)
	}
	for name, doc := range map[string]string{
		"missing camera": `{"schema":"patchline.annotation/v1","kind":"analysis","seq":1,"pts_ms":0,"captured_at":"2026-01-01T00:00:00Z","source_width":1,"source_height":1,"model":"m","task":"detect","latency_ms":{"total":1},"trace_id":"0123456789abcdef0123456789abcdef"}`,
		"bad time":       `{"schema":"patchline.annotation/v1","kind":"analysis","camera":"c","seq":1,"pts_ms":0,"captured_at":"yesterday","source_width":1,"source_height":1,"model":"m","task":"detect","latency_ms":{"total":1},"trace_id":"0123456789abcdef0123456789abcdef"}`,
		"short box":      `{"schema":"patchline.annotation/v1","kind":"analysis","camera":"c","seq":1,"pts_ms":0,"captured_at":"2026-01-01T00:00:00Z","source_width":1,"source_height":1,"model":"m","task":"detect","detections":[{"label":"x","class_id":0,"score":0.5,"box":[1,2,3]}],"latency_ms":{"total":1},"trace_id":"0123456789abcdef0123456789abcdef"}`,
		"negative class": `{"schema":"patchline.annotation/v1","kind":"analysis","camera":"c","seq":1,"pts_ms":0,"captured_at":"2026-01-01T00:00:00Z","source_width":1,"source_height":1,"model":"m","task":"detect","detections":[{"label":"x","class_id":-1,"score":0.5,"box":[1,2,3,4]}],"latency_ms":{"total":1},"trace_id":"0123456789abcdef0123456789abcdef"}`,
	} {
		if err := schema.ValidateAnnotation(sch, []byte(doc)); err == nil {
			t.Errorf("%s: schema accepted it", name)
		}
	}
}

// The stream keeps every message on patchline.annotations.* once per
// Nats-Msg-Id, whoever published it, within the configured limits; a sink
// started again with other limits updates them.
func TestSinkStreamKeepsAnnotationsOnce(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	stream := config.Stream{Name: "TEST_ANNOTATIONS", MaxAge: time.Hour, MaxBytes: 1 << 20, DuplicateWindow: time.Minute}
	_, stop := startSink(t, url, config.Sink{Stream: stream})
	ctx := context.Background()

	publish := func(seq uint64) {
		a := annotation.Annotation{
			Schema: annotation.Schema, Kind: annotation.KindAnalysis, Camera: "cam1", Seq: seq,
			CapturedAt: time.Now().UTC(), SourceWidth: 64, SourceHeight: 64, Model: "m", Task: "classify",
			LatencyMs: map[string]float64{}, TraceID: "0123456789abcdef0123456789abcdef",
		}
		b, _ := json.Marshal(a)
		if err := nc.Publish(bus.AnalyzedSubject("cam1"), b); err != nil {
			t.Fatal(err)
		}
	}
	publish(7)
	publish(7) // analyzed twice (say, a retried batch): stored once
	publish(8)
	caption := nats.NewMsg(bus.AnnotationSubject("cam2")) // another publisher, as generate is
	caption.Data = []byte(`{"kind":"caption"}`)
	caption.Header.Set(nats.MsgIdHdr, "cam2:3:caption")
	if err := nc.PublishMsg(caption); err != nil {
		t.Fatal(err)
	}

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, stream.Name)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var info *jetstream.StreamInfo
	for {
		if info, err = s.Info(ctx); err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a fourth message would have landed by now
	if info, err = s.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Errorf("stream holds %d messages, want 3 (cam1:7 once, cam1:8, cam2:3:caption)", info.State.Msgs)
	}
	if c := info.Config; c.MaxAge != time.Hour || c.MaxBytes != 1<<20 || c.Duplicates != time.Minute || c.Storage != jetstream.FileStorage ||
		!slices.Equal(c.Subjects, []string{bus.AnnotationsPrefix + "*", bus.StoredPrefix + "*"}) || c.SubjectTransform == nil ||
		c.SubjectTransform.Source != bus.StoredPrefix+"*" || c.SubjectTransform.Destination != bus.AnnotationsPrefix+"{{wildcard(1)}}" {
		t.Errorf("stream config %+v", c)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	stream.MaxAge = 2 * time.Hour
	if err := EnsureStream(context.Background(), nc, stream, 1); err != nil {
		t.Fatal(err)
	}
	if info, err = s.Info(context.Background()); err != nil || info.Config.MaxAge != 2*time.Hour || info.State.Msgs != 3 {
		t.Errorf("after an update: max_age %v, %d messages (err %v); want 2h and the 3 kept", info.Config.MaxAge, info.State.Msgs, err)
	}
}

// TestStreamStoresWhatItMissed: while the annotation stream is unavailable
// (here: deleted; on a cluster: electing a leader) annotations still go
// out live, once; when it is back the sink's Storer stores each of them,
// once, under its public subject.
func TestStreamStoresWhatItMissed(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	stream := config.Stream{Name: "TEST_ANNOTATIONS", MaxAge: time.Hour, MaxBytes: 1 << 20, DuplicateWindow: time.Minute}
	startSink(t, url, config.Sink{Stream: stream})
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, stream.Name); err != nil {
		t.Fatal(err)
	}
	live := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(bus.AnnotationsPrefix+"*", live)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for seq := 1; seq <= 5; seq++ {
		if err := nc.Publish(bus.AnalyzedSubject("cam1"), analysis("cam1", seq)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // the Storer retries meanwhile
	if err := EnsureStream(ctx, nc, stream, 1); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, stream.Name)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the 5 annotations stored", 10*time.Second, func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs >= 5
	})
	time.Sleep(300 * time.Millisecond)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(bus.AnnotationsPrefix+">"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 5 || info.State.Subjects[bus.AnnotationSubject("cam1")] != 5 {
		t.Errorf("stream holds %d messages (%v), want the 5 as %s", info.State.Msgs, info.State.Subjects, bus.AnnotationSubject("cam1"))
	}
	if n := len(live); n != 5 {
		t.Errorf("live subscribers got %d annotations, want 5 (once each)", n)
	}
}

// TestJSONLRotates: past jsonl_max_mb the file is renamed and a new one
// started, jsonl_keep rotated files are kept, and no line is split across
// two files.
func TestJSONLRotates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.jsonl")
	st, err := NewStage(nil, config.Sink{JSONL: path, JSONLMaxMB: 1, JSONLKeep: 1}, 1, natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(`{"camera":"cam1","pad":"` + strings.Repeat("x", 1000) + `"}`)
	for range 3500 { // ~3.4 MB: three rotations
		st.writeLine(line)
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	var files []string
	testenv.WaitFor(t, "one rotated file kept beside the current one", 5*time.Second, func() bool {
		files, _ = filepath.Glob(filepath.Join(dir, "out*.jsonl"))
		return len(files) == 2
	})
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 1<<20 {
			t.Errorf("%s: %d bytes, over jsonl_max_mb", f, len(b))
		}
		for i, l := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			if !bytes.Equal(l, line) {
				t.Fatalf("%s line %d is not a whole line (%d bytes)", f, i+1, len(l))
			}
		}
	}
}

// TestSinkStopsQuicklyWithoutNATS: a sink stopped while its server is gone
// returns within a few seconds (it waited out a drain's 10 s flush first).
func TestSinkStopsQuicklyWithoutNATS(t *testing.T) {
	e, err := bus.StartEmbedded(config.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir()}, "", natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	_, stop := startSink(t, e.URL(), config.Sink{Stream: testStream})
	e.Shutdown()
	time.Sleep(300 * time.Millisecond) // the sink's connection sees it go
	start := time.Now()
	_ = stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("stop took %v with NATS gone, want a few seconds", took)
	}
}

// TestStreamRenamedOrTurnedOff: a stream made under another name still
// stores patchline.annotations.*. A sink whose sink.stream.name changed
// fails at start naming both streams and what to do (JetStream itself
// says only "subjects overlap"); one with the stream off warns that the
// old stream goes on storing every annotation.
func TestStreamRenamedOrTurnedOff(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	ctx := context.Background()
	old := config.Stream{Name: "OLD_ANNOTATIONS", MaxAge: time.Hour, MaxBytes: 1 << 20, DuplicateWindow: time.Minute}
	if err := EnsureStream(ctx, nc, old, 1); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStream(ctx, nc, old, 1); err != nil {
		t.Fatalf("the same stream again: %v", err)
	}
	renamed := old
	renamed.Name = "NEW_ANNOTATIONS"
	err := EnsureStream(ctx, nc, renamed, 1)
	if err == nil || !strings.Contains(err.Error(), "sink.stream.name NEW_ANNOTATIONS: stream OLD_ANNOTATIONS, made before under that name, already stores patchline.annotations.*") {
		t.Errorf("renamed stream: %v, want an error naming both", err)
	}
	// A stream of the user's own on those subjects is not offered for
	// deletion.
	other := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVERYTHING", Subjects: []string{"patchline.>"}}); err != nil {
		t.Fatal(err)
	}
	err = EnsureStream(ctx, other, old, 1)
	if err == nil || !strings.Contains(err.Error(), "stream EVERYTHING, not patchline's, already stores") || strings.Contains(err.Error(), "stream rm") {
		t.Errorf("beside a user's stream: %v, want it named as not patchline's", err)
	}
	var logs testenv.Buffer
	_, stop := startSinkLog(t, url, config.Sink{}, slog.New(slog.NewTextHandler(&logs, nil)))
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	testenv.WaitFor(t, "the sink with the stream off to warn of OLD_ANNOTATIONS", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "sink.stream is off, but a stream made before still stores every annotation") && strings.Contains(logs.String(), "stream=OLD_ANNOTATIONS")
	})
}
