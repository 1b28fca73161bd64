package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
	"github.com/patchline/patchline/sink"
)

// watch --since replays what the stream kept, in order and for the one
// camera asked, then goes on with live annotations.
func TestWatchSinceReplaysTheStream(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	stream := config.Default().Sink.Stream
	if err := sink.EnsureStream(context.Background(), nc, stream, 1); err != nil {
		t.Fatal(err)
	}
	publish := func(camera string, seq int) {
		m := nats.NewMsg(bus.AnnotationSubject(camera))
		m.Data = fmt.Appendf(nil, `{"camera":%q,"seq":%d}`, camera, seq)
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s:%d", camera, seq))
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	for seq := 1; seq <= 3; seq++ {
		publish("cam1", seq)
		publish("cam2", seq)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	var out testenv.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- execute(ctx, &out, "watch", "cam1", "--since", "1h", "--json", "--nats", url) }()
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("no %s in:\n%s", want, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(`"seq":3}`)
	publish("cam1", 4) // live, after the replay
	waitFor(`"seq":4}`)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var seqs []string
	for line := range strings.Lines(out.String()) {
		if strings.HasPrefix(line, "{") {
			if !strings.Contains(line, `"camera":"cam1"`) {
				t.Errorf("watch cam1 printed %s", line)
			}
			seqs = append(seqs, strings.TrimSpace(line[strings.Index(line, `"seq":`):]))
		}
	}
	if got := strings.Join(seqs, " "); got != `"seq":1} "seq":2} "seq":3} "seq":4}` {
		t.Errorf("replayed then live: %s, want seqs 1 2 3 4 in order", got)
	}

	if _, err := run(t, "watch", "--since", "2999-01-01T00:00:00Z", "--nats", url); err == nil || !strings.Contains(err.Error(), "--since 2999-01-01T00:00:00Z is in the future") {
		t.Errorf("watch --since a time in the future: %v, want it refused", err)
	}
	if _, err := run(t, "watch", "--since", "yesterday", "--nats", url); err == nil || !strings.Contains(err.Error(), `--since "yesterday": want a duration`) {
		t.Errorf("bad --since: %v", err)
	}
	if _, err := run(t, "watch", "--since", "1h", "--stream", "NOPE", "--nats", url); err == nil || !strings.Contains(err.Error(), "stream NOPE not found") {
		t.Errorf("missing stream: %v", err)
	}
}

// watch sends $PATCHLINE_NATS_TOKEN: a server with nats.token refuses it
// without, and serves it with.
func TestWatchSendsTheNATSToken(t *testing.T) {
	e, err := bus.StartEmbedded(config.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir()}, "s3cret", natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	run := func(ctx context.Context, out *testenv.Buffer) error {
		return execute(ctx, out, "watch", "--json", "--nats", e.URL())
	}
	t.Setenv(natsTokenEnv, "")
	if err := run(context.Background(), &testenv.Buffer{}); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("without the token: %v, want an authorization error", err)
	}
	t.Setenv(natsTokenEnv, "s3cret")
	var out testenv.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, &out) }()
	nc, err := bus.Connect(config.NATS{Token: "s3cret"}, e.URL(), "test", natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	testenv.WaitFor(t, "the annotation printed", 10*time.Second, func() bool {
		_ = nc.Publish(bus.AnnotationSubject("cam1"), []byte(`{"camera":"cam1","seq":1}`))
		return strings.Contains(out.String(), `"seq":1}`)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSummarize: watch's text line says what each kind of annotation holds.
func TestSummarize(t *testing.T) {
	at := time.Date(2026, 11, 30, 9, 15, 0, 0, time.UTC)
	for _, c := range []struct {
		a    annotation.Annotation
		want string
	}{
		{annotation.Annotation{Camera: "door", Seq: 7, CapturedAt: at, Labels: []annotation.Label{{Label: "walk", Score: 0.91}}},
			"door #7 09:15:00.000  walk 0.91  total 0.0ms"},
		{annotation.Annotation{Camera: "door", Seq: 8, CapturedAt: at, Detections: []annotation.Detection{{Label: "person", Score: 0.8, Box: [4]float64{1, 2, 30, 40}}}},
			"person 0.80 [1,2,30,40]"},
		{annotation.Annotation{Kind: "caption", Camera: "door", Seq: 9, CapturedAt: at, Caption: &annotation.Caption{Text: "a red circle moves left", Trigger: "change"}},
			`caption (change): "a red circle moves left"`},
		{annotation.Annotation{Kind: "anomaly", Camera: "door", Seq: 10, CapturedAt: at, Anomaly: &annotation.Anomaly{Score: 0.4213, Threshold: 0.2, Trigger: "anomaly", Bucket: "patchline_generated", Object: "door/10.png"}},
			"anomaly (anomaly) 0.421 > 0.200, frame patchline_generated/door/10.png"},
		{annotation.Annotation{Camera: "door", Seq: 11, CapturedAt: at}, "(nothing)"},
	} {
		if got := summarize(c.a); !strings.Contains(got, c.want) {
			t.Errorf("summarize(%s #%d) = %q, want it to contain %q", c.a.Kind, c.a.Seq, got, c.want)
		}
	}
}

// TestWatchSaysWhenNATSGoes: watch says when its server goes away and when
// it is back, and prints what comes after.
func TestWatchSaysWhenNATSGoes(t *testing.T) {
	port := testenv.FreePort(t, "127.0.0.1")
	cfg := config.Embedded{Host: "127.0.0.1", Port: port, StoreDir: t.TempDir()}
	e, err := bus.StartEmbedded(cfg, "", natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	var out testenv.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- execute(ctx, &out, "watch", "--json", "--nats", e.URL()) }()
	testenv.WaitFor(t, "watching", 10*time.Second, func() bool { return strings.Contains(out.String(), "watching") })
	e.Shutdown()
	testenv.WaitFor(t, "the loss said", 10*time.Second, func() bool { return strings.Contains(out.String(), "NATS connection lost") })
	if e, err = bus.StartEmbedded(cfg, "", natstest.Discard()); err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	testenv.WaitFor(t, "the reconnect said", 10*time.Second, func() bool { return strings.Contains(out.String(), "NATS reconnected") })
	nc := natstest.Connect(t, e.URL())
	testenv.WaitFor(t, "an annotation after the reconnect printed", 10*time.Second, func() bool {
		_ = nc.Publish(bus.AnnotationSubject("cam1"), []byte(`{"camera":"cam1","seq":7}`))
		return strings.Contains(out.String(), `"seq":7}`)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
