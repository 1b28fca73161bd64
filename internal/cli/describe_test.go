package cli

import (
	"context"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/generate"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/textgen"
)

// TestDescribe runs `patchline describe` against a real generate stage with
// the tiny test bundles.
func TestDescribe(t *testing.T) {
	fg, err := generate.OpenFramegen("../../generate/testdata/tiny-framegen", generate.ModelOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer fg.Close()
	capt, err := textgen.Open("../textgen/testdata/tiny", textgen.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer capt.Close()
	url := natstest.Start(t)
	cfg := config.Default().Generate
	cfg.Auto, cfg.CaptionModel = false, "tiny"
	st := generate.NewStage(generate.Options{NC: natstest.Connect(t, url), Config: cfg, Framegen: fg, Captions: capt, Logger: natstest.Discard()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	defer func() { cancel(); <-done }()

	nc := natstest.Connect(t, url)
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		_, err := run(t, "describe", "cam1", "--nats", url, "--timeout", "1s")
		if err != nil && strings.Contains(err.Error(), "reason unknown_camera") {
			break // the stage is up
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("generate stage not up: %v", err)
		}
	}
	for seq := uint64(1); seq <= 5; seq++ {
		f := &frame.Frame{Camera: "cam1", Seq: seq, CapturedAt: time.Now(), SourceW: 96, SourceH: 96, Width: 96, Height: 96, Patch: 8,
			Resize: frame.ResizeStretch, Transform: frame.Stretch(96, 96, 96, 96), Tokens: make([]byte, 96*96*3)}
		for i := range f.Tokens {
			f.Tokens[i] = byte(i*int(seq)) ^ byte(i>>7)
		}
		if err := nc.PublishMsg(f.Encode(bus.FrameSubject("cam1"))); err != nil {
			t.Fatal(err)
		}
	}
	_ = nc.Flush()

	png1 := filepath.Join(t.TempDir(), "gen.png")
	var out string
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err = run(t, "describe", "cam1", "--frame", "--nats", url, "--out", png1)
		if (err == nil && strings.Contains(out, "cam1 #5:")) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the stage is starting or has not seen all the frames yet
	}
	if err != nil {
		t.Fatalf("describe --frame: %v\n%s", err, out)
	}
	if !strings.Contains(out, "cam1 #5: generated frame patchline_generated/cam1/5.png") || !strings.Contains(out, "anomaly score") {
		t.Errorf("describe --frame printed:\n%s", out)
	}
	f, err := os.Open(png1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if img, err := png.Decode(f); err != nil || img.Bounds().Dx() != 96 {
		t.Errorf("--out PNG: %v", err)
	}

	out, err = run(t, "describe", "cam1", "--nats", url, "--temperature", "0.7", "--seed", "3")
	if err != nil || !strings.Contains(out, "cam1 #5: ") || !strings.Contains(out, "tokens/s") {
		t.Errorf("describe (caption): %v\n%s", err, out)
	}
	out, err = run(t, "describe", "cam1", "--nats", url, "--json")
	if err != nil || !strings.Contains(out, `"kind":"caption"`) {
		t.Errorf("describe --json: %v\n%s", err, out)
	}
	_, err = run(t, "describe", "nosuch", "--nats", url)
	if err == nil || !strings.Contains(err.Error(), "reason unknown_camera") || !strings.Contains(err.Error(), `camera "nosuch"`) {
		t.Errorf("unknown camera: %v", err)
	}
	_, err = run(t, "describe", "cam1", "--nats", url, "--out", "x.png")
	if err == nil || !strings.Contains(err.Error(), "add --frame") {
		t.Errorf("--out without --frame: %v", err)
	}
	_, err = run(t, "describe", "cam1", "--nats", url, "--top-p", "3")
	if err == nil || !strings.Contains(err.Error(), "sampling.top_p") {
		t.Errorf("bad top-p: %v", err)
	}
}

// TestDescribeTimeoutDefault: without --timeout the request carries none,
// so the stage's generate.request_timeout applies; with it, it does.
func TestDescribeTimeoutDefault(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	got := make(chan generate.Request, 2)
	sub, err := nc.Subscribe(bus.GenerateRequest, func(m *nats.Msg) {
		var r generate.Request
		_ = json.Unmarshal(m.Data, &r)
		got <- r
		b, _ := json.Marshal(generate.Reply{Camera: r.Camera, Error: "test", Reason: generate.ReasonUnavailable})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = nc.Flush()
	for _, c := range []struct {
		args []string
		want string
	}{{nil, ""}, {[]string{"--timeout", "3s"}, "3s"}} {
		_, _ = run(t, append([]string{"describe", "cam1", "--nats", url}, c.args...)...)
		select {
		case r := <-got:
			if r.Timeout != c.want {
				t.Errorf("describe %v sent timeout %q, want %q", c.args, r.Timeout, c.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("describe %v sent no request", c.args)
		}
	}
}
