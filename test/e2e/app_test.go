package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/app"
	"github.com/patchline/patchline/internal/apptest"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/rtsptest"
	"github.com/patchline/patchline/internal/testenv"
)

// runUntil runs the whole pipeline in-process until stop, which returns
// app.Run's error.
func runUntil(t *testing.T, cfg config.Config) (app.Info, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Options{Config: cfg, Stages: app.AllStages, Logger: natstest.Discard(), Ready: func(i app.Info) { ready <- i }})
	}()
	select {
	case i := <-ready:
		stopped := false
		return i, func() error {
			if stopped {
				return nil
			}
			stopped = true
			cancel()
			return <-done
		}
	case err := <-done:
		cancel()
		t.Fatalf("pipeline failed to start: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("pipeline not ready within 60s")
	}
	return app.Info{}, nil
}

// TestRestartKeepsState stops `patchline run` and starts it again on the
// same nats.embedded.store_dir: the camera attached at runtime is still
// there and streams on with higher seq numbers, and the annotation stream
// still holds what was annotated before.
func TestRestartKeepsState(t *testing.T) {
	cfg := testConfig(t)
	info, stop := runUntil(t, cfg)
	t.Cleanup(func() { _ = stop() })
	attach(t, info.HTTPAddr, config.Camera{ID: "kept", URL: "synthetic://?seed=8&fps=10", FPS: 5})
	nc := natstest.Connect(t, info.NATSURL)
	rec := record(t, nc, "kept")
	rec.waitAnnotations(t, 5, 60*time.Second)
	if err := stop(); err != nil {
		t.Fatalf("first run: %v", err)
	}
	_, before, _ := rec.snapshot()
	last := before[len(before)-1].Seq

	info, stop = runUntil(t, cfg)
	t.Cleanup(func() { _ = stop() })
	resp, err := http.Get("http://" + info.HTTPAddr + "/v1/cameras")
	if err != nil {
		t.Fatal(err)
	}
	var cams []struct {
		ID string `json:"id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&cams)
	resp.Body.Close()
	var ids []string
	for _, c := range cams {
		ids = append(ids, c.ID)
	}
	if err != nil || !slices.Contains(ids, "kept") {
		t.Fatalf("cameras after the restart: %v (%v), want kept", ids, err)
	}
	nc = natstest.Connect(t, info.NATSURL)
	rec = record(t, nc, "kept")
	rec.waitAnnotations(t, 3, 60*time.Second)
	_, after, _ := rec.snapshot()
	if after[0].Seq <= last {
		t.Errorf("after the restart seq %d, before it up to %d: want higher", after[0].Seq, last)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // the calls of the poll below
	defer cancel()
	// The stream stores the last annotations a moment after they are
	// delivered.
	want := uint64(len(before) + len(after))
	var got uint64
	if !testenv.Poll(10*time.Second, func() bool { got = storedAnnotations(t, ctx, js, "kept"); return got >= want }) {
		t.Errorf("stream holds %d annotations of kept, want at least %d from before and after the restart", got, want)
	}
}

// TestHTTPMaxBodyFromConfig: http.max_body from the configuration limits
// the API's request bodies (413 above it).
func TestHTTPMaxBodyFromConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTP.MaxBody = 1024
	info := apptest.Start(t, app.Options{Config: cfg, Stages: []string{app.Ingest}})
	small := config.Camera{ID: "small", URL: "synthetic://?seed=1"}
	if err := postCamera(info.HTTPAddr, small); err != nil {
		t.Fatal(err)
	}
	big := config.Camera{ID: "big", URL: "synthetic://?seed=1&pad=" + strings.Repeat("x", 2048)}
	err := postCamera(info.HTTPAddr, big)
	if err == nil || !strings.Contains(err.Error(), "413") {
		t.Errorf("a 2 KB camera with http.max_body 1024: %v, want 413", err)
	}
	resp, err := http.Post("http://"+info.HTTPAddr+"/v1/cameras/small/describe", "application/json",
		strings.NewReader(`{"kind":"caption","id":"`+strings.Repeat("x", 2048)+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The describe route answers its errors in its own shape, with a reason.
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), `"reason":"bad_request"`) {
		t.Errorf("a 2 KB describe request with http.max_body 1024: %s %s, want 413 with reason bad_request", resp.Status, b)
	}
	// Another method on the describe route is a 405 naming POST, not the
	// camera API's 404 for a path it does not know.
	resp, err = http.Get("http://" + info.HTTPAddr + "/v1/cameras/small/describe")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost || !strings.Contains(string(b), `"reason":"bad_request"`) {
		t.Errorf("GET describe: %s (Allow %q) %s, want 405, Allow POST, reason bad_request", resp.Status, resp.Header.Get("Allow"), b)
	}
}

// TestStopWhileCamerasOpen: a stop while cameras wait to open streams that
// send nothing (each open may take decode.stall_timeout, one at a time in
// OpenCV) ends once the open under way does, not after every queued one
// in turn; meanwhile /readyz says the process is stopping.
func TestStopWhileCamerasOpen(t *testing.T) {
	rtsptest.RequireFFmpeg(t)
	srv := rtsptest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := testConfig(t)
	cfg.Decode.StallTimeout = 4 * time.Second
	paths := []string{"quiet0", "quiet1", "quiet2", "quiet3"}
	srv.PublishSilent(t, ctx, paths...)
	for _, path := range paths {
		cfg.Cameras = append(cfg.Cameras, config.Camera{ID: path, URL: srv.URL(path)})
	}
	before := srv.Plays(paths...) // PublishSilent's own checks
	info, stop := runUntil(t, cfg)
	// The first open under way, the others queued behind it.
	testenv.WaitFor(t, "a camera's open under way (its PLAY)", 30*time.Second, func() bool { return srv.Plays(paths...) > before })
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	testenv.WaitFor(t, "/readyz saying stopping", 3*time.Second, func() bool {
		resp, err := http.Get("http://" + info.HTTPAddr + "/readyz")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "stopping")
	})
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	// One after another the four opens would take ~15 s; the one under
	// way ends within the stall timeout. The bound leaves room for a slow
	// machine.
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the stop took %v with 4 cameras opening silent streams (stall_timeout 4s), want about one open's time", took)
	}
}
