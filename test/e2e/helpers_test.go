// Package e2e runs the whole pipeline with real parts: an embedded (or
// separate) nats-server, a gortsplib RTSP server fed by ffmpeg, OpenCV
// decode and ONNX Runtime.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/app"
	"github.com/patchline/patchline/internal/apptest"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/testenv"
)

func TestMain(m *testing.M) {
	// A hung server fails its request, not the package's 20-minute timeout.
	http.DefaultClient.Timeout = 2 * time.Minute
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func repoRoot(t testing.TB) string { return testenv.RepoRoot(t) }

// runProcess starts `bin run` on the configuration cfg (a pipeline.yaml)
// with its standard output and error going to out, killed at the test's end
// if it still runs; exited reports whether it has exited within a time.
func runProcess(t testing.TB, bin, cfg string, out io.Writer) (cmd *exec.Cmd, exited func(within time.Duration) bool) {
	t.Helper()
	cmd = exec.Command(bin, "run", "-c", writeConfig(t, cfg))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }() // the one Wait: the cleanup waits on it
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return cmd, func(within time.Duration) bool {
		select {
		case <-done:
			return true
		case <-time.After(within):
			return false
		}
	}
}

// writeConfig writes cfg (a pipeline.yaml) to a file of the test's and
// returns its path.
func writeConfig(t testing.TB, cfg string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func sharedAssets(t testing.TB) string { return testenv.SharedAssets(t) }

// testConfig is a pipeline config for tests: no cameras, free ports.
func testConfig(t testing.TB) config.Config {
	cfg := config.Default()
	cfg.Cameras = nil
	cfg.NATS.Embedded.Port = -1
	cfg.NATS.Embedded.StoreDir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Analyze.Model = filepath.Join(repoRoot(t), "models", "vit-tiny")
	cfg.Decode.Width, cfg.Decode.Height, cfg.Decode.PatchSize = 224, 224, 16
	cfg.Generate.CaptionModel, cfg.Generate.FramegenModel = "", "" // tests that generate set their own
	cfg.Decode.StallTimeout = 5 * time.Second
	cfg.Decode.RetryMin = 200 * time.Millisecond
	cfg.Decode.RetryMax = 2 * time.Second
	return cfg
}

// startPipeline runs every stage in-process and returns once it is ready.
func startPipeline(t testing.TB, cfg config.Config) app.Info {
	t.Helper()
	return apptest.Start(t, app.Options{Config: cfg})
}

// attach adds a camera through the HTTP API.
func attach(t testing.TB, httpAddr string, c config.Camera) {
	t.Helper()
	if err := postCamera(httpAddr, c); err != nil {
		t.Fatal(err)
	}
}

// postCamera is POST /v1/cameras; an answer other than 201 is an error
// quoting the response.
func postCamera(httpAddr string, c config.Camera) error {
	b, _ := json.Marshal(c)
	resp, err := http.Post("http://"+httpAddr+"/v1/cameras", "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("attach %s: %s: %s", c.ID, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// junkHeader marks the malformed messages a test publishes on purpose,
// which recorders skip.
const junkHeader = "Patchline-Test-Junk"

// recorder collects frame seqs and annotations of one camera from NATS.
type recorder struct {
	mu     sync.Mutex
	frames []uint64
	anns   []annotation.Annotation
	raw    [][]byte
}

func record(t testing.TB, nc *nats.Conn, camera string) *recorder {
	t.Helper()
	r := &recorder{}
	fs, err := nc.Subscribe("patchline.frames."+camera, func(m *nats.Msg) {
		var seq uint64
		fmt.Sscan(m.Header.Get("Patchline-Seq"), &seq)
		r.mu.Lock()
		r.frames = append(r.frames, seq)
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	as, err := nc.Subscribe("patchline.annotations."+camera, func(m *nats.Msg) {
		if m.Header.Get(junkHeader) != "" {
			return // a test's own malformed message
		}
		var a annotation.Annotation
		if err := json.Unmarshal(m.Data, &a); err != nil {
			t.Errorf("annotation JSON: %v", err)
			return
		}
		r.mu.Lock()
		r.anns = append(r.anns, a)
		r.raw = append(r.raw, append([]byte(nil), m.Data...))
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	fs.SetPendingLimits(-1, -1)
	as.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fs.Unsubscribe(); _ = as.Unsubscribe() })
	return r
}

// storedAnnotations is how many messages of camera's annotation subject
// the annotation stream holds.
func storedAnnotations(t testing.TB, ctx context.Context, js jetstream.JetStream, camera string) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, config.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	subj := bus.AnnotationSubject(camera)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

// waitAnnotations waits until n annotations arrived.
func (r *recorder) waitAnnotations(t testing.TB, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		got := len(r.anns)
		r.mu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Fatalf("only %d annotations (of %d frames) within %s, want %d", len(r.anns), len(r.frames), within, n)
}

// snapshot returns copies of what was recorded.
func (r *recorder) snapshot() ([]uint64, []annotation.Annotation, [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.frames...), append([]annotation.Annotation(nil), r.anns...), append([][]byte(nil), r.raw...)
}
