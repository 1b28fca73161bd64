package sink

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
)

// hookServer records what a webhook endpoint received; answer decides the
// status of each request (by X-Patchline-Id and how often it came).
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	ids    []string // every request, in order
	bodies map[string][]byte
	sigs   map[string]string
	hdrs   map[string]http.Header
	answer func(id string, n int) int
}

func newHookServer(t testing.TB, answer func(id string, n int) int) *hookServer {
	h := &hookServer{bodies: map[string][]byte{}, sigs: map[string]string{}, hdrs: map[string]http.Header{}, answer: answer}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get(HdrWebhookID)
		h.mu.Lock()
		h.ids = append(h.ids, id)
		n := 0
		for _, x := range h.ids {
			if x == id {
				n++
			}
		}
		h.bodies[id], h.sigs[id], h.hdrs[id] = body, r.Header.Get(HdrWebhookSignature), r.Header.Clone()
		h.mu.Unlock()
		w.WriteHeader(h.answer(id, n))
	}))
	t.Cleanup(h.Close)
	// A path of its own: the delivery counters' label hashes the URL, and
	// a port an earlier test's server had would carry its counts over.
	h.URL = fmt.Sprintf("%s/hook%d", h.URL, hookServers.Add(1))
	return h
}

var hookServers atomic.Int64

func (h *hookServer) received() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ids)
}

func (h *hookServer) waitFor(t *testing.T, ids ...string) {
	t.Helper()
	if !testenv.Poll(10*time.Second, func() bool { return slices.Equal(h.received(), ids) }) {
		t.Fatalf("%s received %v, want %v", h.URL, h.received(), ids)
	}
}

// testStream is a small annotation stream for tests.
var testStream = config.Stream{Name: "TEST_ANNOTATIONS", MaxAge: time.Hour, MaxBytes: 1 << 20, DuplicateWindow: time.Minute}

// TestWebhooks delivers through filters, retries and refusals, in both
// deliveries: memory (no stream: the default then) and durable (the
// default with the stream).
func TestWebhooks(t *testing.T) { forDeliveries(t, testWebhooks) }

// forDeliveries runs test once per delivery, as a subtest named after it:
// memory (no stream) and durable (testStream).
func forDeliveries(t *testing.T, test func(t *testing.T, stream config.Stream)) {
	for _, delivery := range []string{config.DeliveryMemory, config.DeliveryDurable} {
		t.Run(delivery, func(t *testing.T) {
			var stream config.Stream
			if delivery == config.DeliveryDurable {
				stream = testStream
			}
			test(t, stream)
		})
	}
}

func testWebhooks(t *testing.T, stream config.Stream) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	ok := func(string, int) int { return http.StatusOK }
	people := newHookServer(t, func(id string, n int) int {
		if id == "cam1:4" && n == 1 {
			return http.StatusServiceUnavailable // the first try fails: retried
		}
		return http.StatusOK
	})
	captions := newHookServer(t, ok)
	refuses := newHookServer(t, func(id string, _ int) int {
		if id == "cam2:2" {
			return http.StatusFound // a redirect is not followed (it would drop the POST body)
		}
		return http.StatusBadRequest
	})
	cfg := config.Sink{Webhooks: []config.Webhook{
		{URL: people.URL + "/people", Cameras: []string{"cam1"}, Kinds: []string{"analysis"}, Labels: []string{"person"}, MinScore: 0.5, Secret: "s3cret"},
		{URL: captions.URL, Kinds: []string{"caption"}},
		{URL: refuses.URL, Cameras: []string{"cam2"}},
	}, Stream: stream}
	st, stop := startSink(t, url, cfg)
	for _, w := range st.hooks {
		if w.durable != (stream.Name != "") {
			t.Fatalf("%s: durable %v with stream %q", w.name, w.durable, stream.Name)
		}
	}

	analyzed := func(camera string, seq uint64, label string, score float64) {
		a := annotation.Annotation{
			Schema: annotation.Schema, Kind: annotation.KindAnalysis, Camera: camera, Seq: seq,
			CapturedAt: time.Now().UTC(), SourceWidth: 64, SourceHeight: 64, Model: "m", Task: "detect",
			Detections: []annotation.Detection{{Label: label, Score: score, Box: [4]float64{1, 2, 3, 4}}},
			LatencyMs:  map[string]float64{}, TraceID: "0123456789abcdef0123456789abcdef",
		}
		b, _ := json.Marshal(a)
		if err := nc.Publish(bus.AnalyzedSubject(camera), b); err != nil {
			t.Fatal(err)
		}
	}
	analyzed("cam1", 1, "person", 0.9)
	analyzed("cam1", 2, "car", 0.9)                       // no person
	analyzed("cam1", 3, "person", 0.3)                    // below min_score
	analyzed("cam2", 1, "person", 0.9)                    // another camera
	analyzed("cam1", 4, "person", 0.8)                    // 503 first
	analyzed("cam2", 2, "person", 0.9)                    // 302
	caption := nats.NewMsg(bus.AnnotationSubject("cam1")) // as generate publishes it
	caption.Data, _ = json.Marshal(annotation.Annotation{Schema: annotation.Schema, Kind: annotation.KindCaption, Camera: "cam1", Seq: 4,
		Caption: &annotation.Caption{Text: "a person walks"}})
	caption.Header.Set(nats.MsgIdHdr, "cam1:4:caption")
	if err := nc.PublishMsg(caption); err != nil {
		t.Fatal(err)
	}

	people.waitFor(t, "cam1:1", "cam1:4", "cam1:4")
	captions.waitFor(t, "cam1:4:caption")
	refuses.waitFor(t, "cam2:1", "cam2:2") // 400, 302: not retried

	people.mu.Lock()
	body, sig := people.bodies["cam1:1"], people.sigs["cam1:1"]
	people.mu.Unlock()
	if !hmac.Equal([]byte(sig), []byte(Sign("s3cret", body))) {
		t.Errorf("signature %q does not sign the body", sig)
	}
	var a annotation.Annotation
	if err := json.Unmarshal(body, &a); err != nil || a.Seq != 1 || a.LatencyMs["sink"] <= 0 {
		t.Errorf("webhook body: %v, %s", err, body)
	}
	for _, c := range []struct {
		w      *webhook
		result string
		want   float64
	}{{st.hooks[0], "delivered", 2}, {st.hooks[1], "delivered", 1}, {st.hooks[2], "failed", 2}} {
		// The endpoint saw the last request a moment before the sink read its answer.
		counter := webhookDeliveries.WithLabelValues(c.w.name, c.result)
		testenv.Poll(5*time.Second, func() bool { return testutil.ToFloat64(counter) >= c.want })
		if got := testutil.ToFloat64(counter); got != c.want {
			t.Errorf("%s %s = %v, want %v", c.w.name, c.result, got, c.want)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestWebhookRetries429: an endpoint that answers 429 Too Many Requests
// (rate limited) gets the annotation again, and once it answers 200 the
// annotation counts as delivered, in both deliveries: a 429 is not a
// refusal like the other 4xx.
func TestWebhookRetries429(t *testing.T) {
	forDeliveries(t, func(t *testing.T, stream config.Stream) {
		url := natstest.Start(t)
		nc := natstest.Connect(t, url)
		hook := newHookServer(t, func(_ string, n int) int {
			if n == 1 {
				return http.StatusTooManyRequests
			}
			return http.StatusOK
		})
		st, _ := startSink(t, url, config.Sink{Stream: stream, Webhooks: []config.Webhook{{URL: hook.URL}}})
		if err := nc.Publish(bus.AnalyzedSubject("cam1"), analysis("cam1", 1)); err != nil {
			t.Fatal(err)
		}
		hook.waitFor(t, "cam1:1", "cam1:1")
		name := st.hooks[0].name
		delivered := webhookDeliveries.WithLabelValues(name, "delivered")
		// The endpoint saw the request a moment before the sink read its answer.
		testenv.WaitFor(t, "the delivery counted", 5*time.Second, func() bool { return testutil.ToFloat64(delivered) == 1 })
		for _, result := range []string{"failed", "dropped"} {
			if got := testutil.ToFloat64(webhookDeliveries.WithLabelValues(name, result)); got != 0 {
				t.Errorf("%s = %v, want 0", result, got)
			}
		}
	})
}

// TestWebhookBackoffGrows: the waits between the attempts of a delivery
// to an endpoint that keeps failing (503, no Retry-After) grow, so a
// struggling endpoint is not hammered at a fixed rate. Each wait is
// jittered (±25% of 250 ms, 500 ms, 1 s, 2 s): the fourth is well over
// three times the first whatever the jitter, and a constant backoff keeps
// it under twice.
func TestWebhookBackoffGrows(t *testing.T) {
	var (
		mu  sync.Mutex
		got []time.Time
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		got = append(got, time.Now())
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	const attempts = 5
	w, err := newWebhook(config.Webhook{URL: srv.URL, Attempts: attempts}, false, natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.deliver(context.Background(), delivery{id: "cam1:1", body: analysis("cam1", 1)}, attempts); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("deliver to an endpoint that answers 503 = %v, want its 503", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != attempts {
		t.Fatalf("the endpoint got %d requests, want %d", len(got), attempts)
	}
	var gaps []time.Duration
	for i := 1; i < len(got); i++ {
		gaps = append(gaps, got[i].Sub(got[i-1]))
	}
	if first, last := gaps[0], gaps[len(gaps)-1]; last <= 3*first {
		t.Errorf("gaps between attempts %v: the last is not over 3 times the first", gaps)
	}
}

// An endpoint that hangs holds back only its own webhook: its bounded queue
// drops the oldest (counted), and annotations go on being published.
func TestWebhookQueueDropsOldest(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	release := make(chan struct{})
	arrived := make(chan struct{}, 16)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	st, _ := startSink(t, url, config.Sink{Webhooks: []config.Webhook{{URL: hang.URL + "/hang", QueueSize: 2, Timeout: 30 * time.Second}}})
	published := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(bus.AnnotationsPrefix+"*", published)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for seq := 1; seq <= 6; seq++ {
		if err := nc.Publish(bus.AnalyzedSubject("cam1"), analysis("cam1", seq)); err != nil {
			t.Fatal(err)
		}
		if seq == 1 { // the first is in flight before the others queue up
			select {
			case <-arrived:
			case <-time.After(5 * time.Second):
				t.Fatal("the first delivery never arrived")
			}
		}
	}
	for i := 0; i < 6; i++ {
		select {
		case <-published:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of 6 annotations published while the webhook hangs", i)
		}
	}
	// One in flight, two queued: three of six dropped.
	dropped := webhookDeliveries.WithLabelValues(st.hooks[0].name, "dropped")
	testenv.Poll(5*time.Second, func() bool { return testutil.ToFloat64(dropped) >= 3 })
	if got := testutil.ToFloat64(dropped); got != 3 {
		t.Errorf("dropped = %v, want 3", got)
	}
}

// publishAnalyzed publishes analysis annotations seq from..to of camera on
// the public subject, as the sink does (so they go to the stream).
// analysis is a minimal analysis annotation of camera, frame seq, as JSON.
func analysis(camera string, seq int) []byte {
	b, _ := json.Marshal(annotation.Annotation{Schema: annotation.Schema, Kind: annotation.KindAnalysis, Camera: camera, Seq: uint64(seq),
		CapturedAt: time.Now().UTC(), LatencyMs: map[string]float64{}})
	return b
}

func publishAnalyzed(t testing.TB, nc *nats.Conn, camera string, from, to int) (ids []string) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		m := nats.NewMsg(bus.AnnotationSubject(camera))
		m.Data = analysis(camera, seq)
		id := frame.MsgID(camera, uint64(seq))
		m.Header.Set(nats.MsgIdHdr, id)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestWebhookHeadersTimeoutAttempts: configured headers go with every
// request; an endpoint slower than timeout fails each attempt, and after
// attempts tries the annotation counts as failed and the next one goes.
func TestWebhookHeadersTimeoutAttempts(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	headers := newHookServer(t, func(string, int) int { return http.StatusOK })
	release := make(chan struct{})
	defer close(release)
	slow := newHookServer(t, func(id string, _ int) int {
		if id == "cam1:1" {
			<-release // never answers in time
		}
		return http.StatusOK
	})
	st, _ := startSink(t, url, config.Sink{Webhooks: []config.Webhook{
		{URL: headers.URL, Headers: map[string]string{"Authorization": "Bearer t0ken", "X-Site": "north"}},
		{URL: slow.URL, Timeout: 200 * time.Millisecond, Attempts: 2},
	}})
	for seq := 1; seq <= 2; seq++ {
		if err := nc.Publish(bus.AnalyzedSubject("cam1"), analysis("cam1", seq)); err != nil {
			t.Fatal(err)
		}
	}
	headers.waitFor(t, "cam1:1", "cam1:2")
	headers.mu.Lock()
	h := headers.hdrs["cam1:1"]
	headers.mu.Unlock()
	if h.Get("Authorization") != "Bearer t0ken" || h.Get("X-Site") != "north" || h.Get("Content-Type") != "application/json" {
		t.Errorf("request headers %v", h)
	}
	slow.waitFor(t, "cam1:1", "cam1:1", "cam1:2") // two attempts of 1, then 2
	if got := testutil.ToFloat64(webhookDeliveries.WithLabelValues(st.hooks[1].name, "failed")); got != 1 {
		t.Errorf("failed = %v, want 1", got)
	}
}

// TestDurableWebhookSurvivesRestart: the endpoint is down (503) while the
// sink stops and annotations keep coming; a new sink delivers every one of
// them, in order, once the endpoint is back.
func TestDurableWebhookSurvivesRestart(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	var down atomic.Bool
	down.Store(true)
	hook := newHookServer(t, func(string, int) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	cfg := config.Sink{Stream: testStream, Webhooks: []config.Webhook{{URL: hook.URL, Timeout: time.Second}}}
	_, stop := startSink(t, url, cfg)
	want := publishAnalyzed(t, nc, "cam1", 1, 3)
	testenv.WaitFor(t, "the first annotation tried", 10*time.Second, func() bool { return len(hook.received()) > 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want = append(want, publishAnalyzed(t, nc, "cam1", 4, 6)...) // no sink runs
	tried := len(hook.received())
	down.Store(false)

	st, _ := startSink(t, url, cfg)
	testenv.WaitFor(t, "every annotation delivered", 10*time.Second, func() bool { return len(hook.received()) >= tried+len(want) })
	time.Sleep(200 * time.Millisecond) // nothing more comes
	got := hook.received()
	for _, id := range got[:tried] {
		if id != "cam1:1" {
			t.Errorf("while the endpoint was down it got %v, want only cam1:1 (in order, one at a time)", got[:tried])
			break
		}
	}
	if !slices.Equal(got[tried:], want) {
		t.Errorf("after the restart the endpoint got %v, want %v", got[tried:], want)
	}
	if b := testutil.ToFloat64(webhookBacklog.WithLabelValues(st.hooks[0].name)); b != 0 {
		t.Errorf("backlog = %v, want 0", b)
	}
}

// TestDurableWebhookBacklogWhileStuck: while a delivery retries, the
// backlog gauge follows what piles up behind it (it was read only when a
// delivery began, and stayed at 0 for as long as one was stuck).
func TestDurableWebhookBacklogWhileStuck(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	hook := newHookServer(t, func(string, int) int { return http.StatusServiceUnavailable })
	st, _ := startSink(t, url, config.Sink{Stream: testStream, Webhooks: []config.Webhook{{URL: hook.URL, Timeout: time.Second}}})
	publishAnalyzed(t, nc, "cam1", 1, 1)
	testenv.WaitFor(t, "the first annotation tried", 10*time.Second, func() bool { return len(hook.received()) > 0 })
	publishAnalyzed(t, nc, "cam1", 2, 6)
	testenv.WaitFor(t, "a backlog of the 5 behind it", 15*time.Second, func() bool {
		return testutil.ToFloat64(webhookBacklog.WithLabelValues(st.hooks[0].name)) == 5
	})
}

// TestDurableWebhookReplicasShare: two sinks with the same durable hook
// deliver each annotation once, in order, between them.
func TestDurableWebhookReplicasShare(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	hook := newHookServer(t, func(string, int) int { return http.StatusOK })
	cfg := config.Sink{Stream: testStream, Webhooks: []config.Webhook{{URL: hook.URL}}}
	startSink(t, url, cfg)
	startSink(t, url, cfg)
	want := publishAnalyzed(t, nc, "cam1", 1, 20)
	want = append(want, publishAnalyzed(t, nc, "cam2", 1, 20)...)
	hook.waitFor(t, want...)
}

// TestDurableWebhookConsumerDeleted: a webhook whose consumer is deleted
// under a running sink makes it again and goes on delivering.
func TestDurableWebhookConsumerDeleted(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	hook := newHookServer(t, func(string, int) int { return http.StatusOK })
	st, _ := startSink(t, url, config.Sink{Stream: testStream, Webhooks: []config.Webhook{{URL: hook.URL}}})
	hook.waitFor(t, publishAnalyzed(t, nc, "cam1", 1, 2)...)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name := st.hooks[0].consumer(testStream).Durable
	if err := js.DeleteConsumer(ctx, testStream.Name, name); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the consumer made again", 10*time.Second, func() bool {
		_, err := js.Consumer(ctx, testStream.Name, name)
		return err == nil
	})
	want := append(hook.received(), publishAnalyzed(t, nc, "cam1", 3, 4)...)
	hook.waitFor(t, want...)
}

// TestDurableWebhookConsumerGoneBetweenFetches: a consumer deleted while
// no fetch waits on it (the next fetch finds no one to answer, rather
// than being told "consumer deleted") is made again too, and starts after
// the last annotation the webhook finished with: none stored while it was
// gone is skipped.
func TestDurableWebhookConsumerGoneBetweenFetches(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	hook := newHookServer(t, func(string, int) int { return http.StatusOK })
	st, err := NewStage(nc, config.Sink{Stream: testStream, Webhooks: []config.Webhook{{URL: hook.URL}}}, 1, natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := EnsureStream(ctx, nc, testStream, 1); err != nil {
		t.Fatal(err)
	}
	w := st.hooks[0]
	cons, err := st.hookConsumer(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	run := func() (stop func()) {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.runDurable(rctx, rctx, cons, func() (jetstream.Consumer, error) { return st.hookConsumer(rctx, w) })
		}()
		stop = func() { cancel(); <-done }
		t.Cleanup(stop)
		return stop
	}
	stop := run()
	want := publishAnalyzed(t, nc, "cam1", 1, 1)
	hook.waitFor(t, want...)
	testenv.WaitFor(t, "the delivery acknowledged", 5*time.Second, func() bool { return w.done.Load() == 1 })
	stop()

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	name := w.consumer(testStream).Durable
	if err := js.DeleteConsumer(ctx, testStream.Name, name); err != nil {
		t.Fatal(err)
	}
	want = append(want, publishAnalyzed(t, nc, "cam1", 2, 3)...)
	testenv.WaitFor(t, "3 annotations stored", 5*time.Second, func() bool {
		info, err := js.Stream(ctx, testStream.Name)
		return err == nil && info.CachedInfo().State.Msgs == 3
	})
	run()
	hook.waitFor(t, want...)
}

// TestWebhookDeliveryIsASpan: in both deliveries, a webhook delivery is a
// span in the trace of the frame its annotation came from.
func TestWebhookDeliveryIsASpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	defer otel.SetTracerProvider(prev)
	for i, stream := range []config.Stream{{}, testStream} {
		url := natstest.Start(t)
		nc := natstest.Connect(t, url)
		hook := newHookServer(t, func(string, int) int { return http.StatusOK })
		startSink(t, url, config.Sink{Stream: stream, Webhooks: []config.Webhook{{URL: hook.URL}}})
		m := nats.NewMsg(bus.AnalyzedSubject("cam1"))
		m.Data = analysis("cam1", 1)
		traceID := fmt.Sprintf("%032x", 0xfeed00+i)
		m.Header.Set("traceparent", "00-"+traceID+"-00000000000000aa-01")
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		hook.waitFor(t, "cam1:1")
		hook.mu.Lock()
		tp := hook.hdrs["cam1:1"].Get("traceparent")
		hook.mu.Unlock()
		if !strings.HasPrefix(tp, "00-"+traceID+"-") {
			t.Errorf("the request's traceparent %q is not in trace %s", tp, traceID)
		}
		testenv.WaitFor(t, "a webhook span in trace "+traceID, 5*time.Second, func() bool {
			for _, s := range rec.Ended() {
				if s.Name() == "webhook" && s.SpanContext().TraceID().String() == traceID {
					return true
				}
			}
			return false
		})
	}
}

// TestWebhookErrorsHideTheURL: a delivery that fails before any answer
// (here, nothing listens) is logged and ends its span with the error, which
// names the hook as the metrics do, not by a path or query that may be its
// secret.
func TestWebhookErrorsHideTheURL(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	defer otel.SetTracerProvider(prev)
	// Nothing listens on a reserved port.
	dead := fmt.Sprintf("http://127.0.0.1:%d/hook/SECRETPATH?token=tok3n", testenv.FreePort(t, "127.0.0.1"))
	logs := &testenv.Buffer{} // read while the sink writes
	log := slog.New(slog.NewTextHandler(logs, nil))
	url := natstest.Start(t)
	startSinkLog(t, url, config.Sink{Webhooks: []config.Webhook{{URL: dead, Attempts: 1}}}, log)
	m := nats.NewMsg(bus.AnalyzedSubject("cam1"))
	m.Data = analysis("cam1", 1)
	m.Header.Set("traceparent", "00-0000000000000000000000000000beef-00000000000000aa-01")
	if err := natstest.Connect(t, url).PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	var status string
	testenv.WaitFor(t, "the failed delivery's span", 10*time.Second, func() bool {
		for _, s := range rec.Ended() {
			if s.Name() == "webhook" {
				status = s.Status().Description
				return true
			}
		}
		return false
	})
	testenv.WaitFor(t, "the failure logged", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "webhook delivery failed")
	})
	logged := logs.String()
	for what, text := range map[string]string{"span status": status, "log": logged} {
		if strings.Contains(text, "SECRETPATH") || strings.Contains(text, "tok3n") {
			t.Errorf("the %s quotes the webhook's path or query: %s", what, text)
		}
		if !strings.Contains(text, config.WebhookLabel(dead)) {
			t.Errorf("the %s does not name the hook %s: %s", what, config.WebhookLabel(dead), text)
		}
	}
}

// TestDurableNeedsStream: a durable webhook without the stream is an error.
func TestDurableNeedsStream(t *testing.T) {
	_, err := NewStage(nil, config.Sink{Webhooks: []config.Webhook{{URL: "http://127.0.0.1:1/", Delivery: config.DeliveryDurable}}}, 1, natstest.Discard())
	if err == nil || !strings.Contains(err.Error(), "durable delivery needs the annotation stream") {
		t.Errorf("err = %v", err)
	}
}

func TestRetryAfter(t *testing.T) {
	soon := time.Now().Add(10 * time.Second).UTC().Format(http.TimeFormat)
	for h, want := range map[string]time.Duration{
		"": 0, "2": 2 * time.Second, "600": maxRetryAfter, "-1": 0, "junk": 0,
		"9223372037": maxRetryAfter, "99999999999999999999": 0, // overflowed to a negative wait, retried at once
		"Wed, 21 Oct 2015 07:28:00 GMT": 0, // in the past
		"Wed, 21 Oct 2099 07:28:00 GMT": maxRetryAfter,
	} {
		if got := retryAfter(h); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", h, got, want)
		}
	}
	if got := retryAfter(soon); got <= 8*time.Second || got > 10*time.Second {
		t.Errorf("retryAfter(%q) = %v, want about 10s", soon, got)
	}
}

// TestDurableWebhookLag: an annotation stored while no sink ran is
// delivered late; the lag gauge shows its age while it is delivered, a
// lag past half the stream's max age is a warning, and the gauge is 0 once
// the webhook has caught up.
func TestDurableWebhookLag(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	release := make(chan struct{})
	hook := newHookServer(t, func(string, int) int { <-release; return http.StatusOK })
	stream := config.Stream{Name: "LAG_ANNOTATIONS", MaxAge: 6 * time.Second, MaxBytes: 1 << 20, DuplicateWindow: time.Second}
	cfg := config.Sink{Stream: stream, Webhooks: []config.Webhook{{URL: hook.URL}}}
	_, stop := startSink(t, url, cfg) // makes the durable consumer
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := publishAnalyzed(t, nc, "cam1", 1, 1)
	time.Sleep(3200 * time.Millisecond) // older than half the max age (3 s) when delivered

	var logs testenv.Buffer
	st, _ := startSinkLog(t, url, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	testenv.WaitFor(t, "the late annotation at the endpoint", 10*time.Second, func() bool { return len(hook.received()) == 1 })
	lag := testutil.ToFloat64(webhookLag.WithLabelValues(st.hooks[0].name))
	close(release)
	if lag < 3.2 || lag > 6 {
		t.Errorf("lag while delivering = %.2f s, want the annotation's age (3.2 s to its max age, 6 s)", lag)
	}
	hook.waitFor(t, want...)
	testenv.WaitFor(t, "the lag back to 0", 10*time.Second, func() bool { return testutil.ToFloat64(webhookLag.WithLabelValues(st.hooks[0].name)) == 0 })
	if !strings.Contains(logs.String(), "webhook falls behind the annotation stream") || !strings.Contains(logs.String(), "max_age=6s") {
		t.Errorf("no lag warning naming the max age in the log:\n%s", logs.String())
	}
}

// TestDurableWebhookForgottenAfterMaxAge: a webhook no sink runs any more
// (left out of the configuration) has its consumer removed by the server
// once unused for the stream's max age, so it does not pin the stream.
func TestDurableWebhookForgottenAfterMaxAge(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	hook := newHookServer(t, func(string, int) int { return http.StatusOK })
	stream := config.Stream{Name: "SHORT_ANNOTATIONS", MaxAge: 2 * time.Second, MaxBytes: 1 << 20, DuplicateWindow: time.Second}
	st, stop := startSink(t, url, config.Sink{Stream: stream, Webhooks: []config.Webhook{{URL: hook.URL}}})
	hook.waitFor(t, publishAnalyzed(t, nc, "cam1", 1, 1)...)
	name := st.hooks[0].consumer(stream).Durable
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	info, err := js.Consumer(ctx, stream.Name, name)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().Config.InactiveThreshold; got != stream.MaxAge {
		t.Errorf("consumer %s: inactive threshold %v, want the stream's max age %v", name, got, stream.MaxAge)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the unused consumer removed", 15*time.Second, func() bool {
		_, err := js.Consumer(ctx, stream.Name, name)
		return errors.Is(err, jetstream.ErrConsumerNotFound)
	})
}

// TestWebhookCA: an https endpoint with a self-signed certificate is
// reached with the webhook's ca; without it, each attempt fails saying to
// set ca. A ca that is no PEM file fails the sink at start.
func TestWebhookCA(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	var got atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { got.Add(1) }))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testenv.Buffer
	_, _ = startSinkLog(t, url, config.Sink{Webhooks: []config.Webhook{
		{URL: srv.URL + "/trusted", CA: ca},
		{URL: srv.URL + "/untrusted", Attempts: 1},
	}}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := nc.Publish(bus.AnalyzedSubject("cam1"), analysis("cam1", 1)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the delivery with the ca, and the failure without", 10*time.Second, func() bool {
		return got.Load() == 1 && strings.Contains(logs.String(), "set the webhook's ca")
	})
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStage(nc, config.Sink{Webhooks: []config.Webhook{{URL: srv.URL, CA: notPEM}}}, 1, natstest.Discard()); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("a ca without a certificate: %v", err)
	}
}

// TestWebhookSeriesFromTheStart: a webhook's delivered, failed and dropped
// series exist at 0 from its start, so that rate() and an alert on
// failures see the first one.
func TestWebhookSeriesFromTheStart(t *testing.T) {
	url := "http://127.0.0.1:1/series-from-the-start"
	if _, err := NewStage(nil, config.Sink{Webhooks: []config.Webhook{{URL: url}}}, 1, natstest.Discard()); err != nil {
		t.Fatal(err)
	}
	results := map[string]bool{}
	for _, labels := range testenv.Series(t, "patchline_webhook_deliveries_total") {
		if labels["webhook"] == config.WebhookLabel(url) {
			results[labels["result"]] = true
		}
	}
	if !results["delivered"] || !results["failed"] || !results["dropped"] {
		t.Errorf("series of the new webhook: %v, want delivered, failed and dropped", results)
	}
}
