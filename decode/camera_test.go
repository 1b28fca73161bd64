package decode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"gocv.io/x/gocv"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/rtsptest"
	"github.com/patchline/patchline/internal/synth"
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/internal/testenv"
)

var (
	spansOnce sync.Once
	spans     *tracetest.SpanRecorder
)

// recorder installs a global tracer provider that records every span.
func recorder() *tracetest.SpanRecorder {
	spansOnce.Do(func() {
		spans = tracetest.NewSpanRecorder()
		otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	})
	return spans
}

// startNATS runs an embedded nats-server and connects to it.
func startNATS(t *testing.T) *nats.Conn { return natstest.Connect(t, natstest.Start(t)) }

type running struct {
	cam  *Camera
	msgs chan *nats.Msg
	stop func()
	log  *testenv.Buffer
}

// runCamera subscribes to the camera's frames and runs it until the test ends.
func runCamera(t *testing.T, nc *nats.Conn, spec config.Camera, d config.Decode) *running {
	t.Helper()
	if d.QueueSize == 0 {
		// Every frame reaches the test: the default queue of 2 drops the
		// oldest when a loaded machine holds the publisher up.
		d.QueueSize = 256
	}
	lg := &testenv.Buffer{}
	cam, err := NewCamera(spec, Options{NC: nc, Decode: d, Logger: slog.New(slog.NewTextHandler(lg, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(bus.FrameSubject(spec.ID), msgs)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		cam.Run(ctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Error("Run did not return within 15s of cancel")
			}
			_ = sub.Unsubscribe()
		})
	}
	t.Cleanup(stop)
	return &running{cam: cam, msgs: msgs, stop: stop, log: lg}
}

// next decodes the next frame message within timeout.
func (r *running) next(t *testing.T, timeout time.Duration) (*frame.Frame, *nats.Msg) {
	t.Helper()
	select {
	case m := <-r.msgs:
		f, err := frame.Decode(m.Header, m.Data)
		if err != nil {
			t.Fatalf("frame.Decode: %v", err)
		}
		return f, m
	case <-time.After(timeout):
		t.Fatalf("no frame within %s; status %+v", timeout, r.cam.Status())
	}
	return nil, nil
}

func waitState(t *testing.T, c *Camera, timeout time.Duration, states ...string) Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := c.Status()
		for _, s := range states {
			if st.State == s {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %q after %s, want one of %v (%+v)", st.State, timeout, states, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRTSPCamera(t *testing.T) {
	rtsptest.RequireFFmpeg(t)
	rec := recorder()
	nc := startNATS(t)
	srv := rtsptest.StartWith(t, rtsptest.Config{User: "cam", Pass: "hunter2"})
	clip := rtsptest.MakeClip(t, t.TempDir(), rtsptest.ClipOptions{Seconds: 4})
	rtsptest.Publish(t, context.Background(), clip, srv.AuthURL("live"))

	d := config.Decode{Width: 224, Height: 224, PatchSize: 16, StallTimeout: 1500 * time.Millisecond, RetryMin: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond, QueueSize: 4}
	r := runCamera(t, nc, config.Camera{ID: "door", URL: srv.AuthURL("live"), FPS: 5}, d)

	const n = 11
	var first, last *frame.Frame
	for i := 0; i < n; i++ {
		f, m := r.next(t, 15*time.Second)
		if first == nil {
			first = f
		} else if f.Seq != last.Seq+1 || f.PTS <= last.PTS {
			t.Fatalf("frame %d: seq %d pts %v after seq %d pts %v", i, f.Seq, f.PTS, last.Seq, last.PTS)
		}
		last = f
		if f.Camera != "door" || f.SourceW != 640 || f.SourceH != 360 || f.Width != 224 || f.Height != 224 || f.Patch != 16 || f.Resize != frame.ResizeStretch {
			t.Fatalf("frame %+v", f)
		}
		if f.Transform != frame.Stretch(640, 360, 224, 224) {
			t.Fatalf("transform %v", f.Transform)
		}
		if f.TraceParent == "" || m.Header.Get("traceparent") != f.TraceParent {
			t.Fatalf("traceparent %q", f.TraceParent)
		}
		if _, ok := f.Latency["decode"]; !ok {
			t.Fatalf("latency %v", f.Latency)
		}
		if _, ok := f.Latency["tokenize"]; !ok {
			t.Fatalf("latency %v", f.Latency)
		}
		if f.PublishedAt.Before(f.CapturedAt) {
			t.Fatalf("published %v before captured %v", f.PublishedAt, f.CapturedAt)
		}
	}
	if first.Seq != 1 {
		t.Fatalf("first seq %d, want 1", first.Seq)
	}
	// 5 fps by pts (exactly, sampling a 10 fps source) and by wall time (roughly).
	if got := (last.PTS - first.PTS) / (n - 1); got != 200*time.Millisecond {
		t.Errorf("mean pts step %v, want 200ms", got)
	}
	wall := last.CapturedAt.Sub(first.CapturedAt).Seconds()
	if fps := float64(n-1) / wall; fps < 3.5 || fps > 7 {
		t.Errorf("wall-clock rate %.2f fps, want ~5", fps)
	}
	// The publisher counts a frame and ends its spans just after sending it,
	// so the last frame can arrive here first: wait for both.
	lastTrace := strings.Split(last.TraceParent, "-")[1]
	var st Status
	var spans map[string]int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st = r.cam.Status()
		spans = map[string]int{}
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID().String() == lastTrace {
				spans[s.Name()]++
			}
		}
		if st.FramesOut >= n && spans["decode.frame"] == 1 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("status %+v", st)
	if st.State != StateStreaming || st.FramesOut < n || st.Width != 640 || st.Height != 360 || st.FPS < 3 || st.FPS > 8 {
		t.Errorf("status %+v", st)
	}
	// Spans: the frame's trace has capture, tokenize and publish under one root.
	for _, name := range []string{"decode.frame", "capture", "tokenize", "publish"} {
		if spans[name] != 1 {
			t.Errorf("trace of the last frame has %d %q spans (%v)", spans[name], name, spans)
		}
	}

	// A stalled stream (connections open, no packets) is closed and reopened.
	srv.Freeze("live", true)
	st = waitState(t, r.cam, 10*time.Second, StateStalled, StateRetrying)
	t.Logf("after freeze: %+v", st)
	// The blocked read must fail by FFmpeg's socket timeout (~StallTimeout),
	// not by OpenCV's 30 s interrupt: wait for the camera to reconnect.
	frozeAt := time.Now()
	for r.cam.Status().Reconnects == 0 {
		if time.Since(frozeAt) > 8*time.Second {
			t.Fatalf("stalled read did not return within 8s: %+v", r.cam.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("stalled read returned %s after the stall was detected: %+v", time.Since(frozeAt).Round(time.Millisecond), r.cam.Status())
	srv.Freeze("live", false)
	deadline := time.Now().Add(15 * time.Second)
	for {
		f, _ := r.next(t, 15*time.Second)
		if f.Seq > last.Seq && r.cam.Status().Reconnects > 0 {
			if time.Since(f.CapturedAt) < time.Second {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fresh frames after the stream resumed: %+v\n%s", r.cam.Status(), r.log.String())
		}
	}
	st = r.cam.Status()
	if st.Reconnects < 1 || !strings.Contains(st.LastError, "no frame") && !strings.Contains(st.LastError, "stall") {
		t.Errorf("after stall: %+v", st)
	}
	r.stop()
	if st := r.cam.Status(); st.State != StateStopped {
		t.Errorf("state after stop %q", st.State)
	}
	for _, s := range []string{r.log.String(), st.URL, st.LastError} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("password leaked: %s", s)
		}
	}
	if !strings.Contains(st.URL, "cam:xxxxx@") {
		t.Errorf("status url %q", st.URL)
	}
}

func TestUnreachableRTSPRetries(t *testing.T) {
	nc := startNATS(t)
	d := config.Decode{RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond, StallTimeout: time.Second}
	r := runCamera(t, nc, config.Camera{ID: "gone", URL: "rtsp://user:topsecret@127.0.0.1:1/x"}, d)
	time.Sleep(1200 * time.Millisecond)
	st := waitState(t, r.cam, 5*time.Second, StateRetrying)
	if st.LastError == "" || st.Reconnects < 2 || st.FramesOut != 0 {
		t.Errorf("status %+v", st)
	}
	start := time.Now()
	r.stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stop took %s", d)
	}
	for _, s := range []string{r.log.String(), st.URL, st.LastError} {
		if strings.Contains(s, "topsecret") {
			t.Fatalf("password leaked: %s", s)
		}
	}
	t.Logf("status %+v", st)
}

// readFrame grabs and retrieves the next frame of src.
func readFrame(src Source, dst *gocv.Mat) (time.Duration, error) {
	pts, err := src.Grab()
	if err != nil {
		return 0, err
	}
	return pts, src.Retrieve(dst)
}

// graySource delivers single-channel frames, which no model input can be
// made from.
type graySource struct{ n int }

func (s *graySource) Grab() (time.Duration, error) {
	s.n++
	return time.Duration(s.n) * 100 * time.Millisecond, nil
}

func (s *graySource) Retrieve(dst *gocv.Mat) error {
	_ = dst.Close()
	*dst = gocv.NewMatWithSize(48, 64, gocv.MatTypeCV8UC1)
	return nil
}
func (s *graySource) Live() bool   { return true }
func (s *graySource) Close() error { return nil }

// failAfter is a source that fails after n frames.
type failAfter struct {
	Source
	n int
}

func (s *failAfter) Grab() (time.Duration, error) {
	if s.n == 0 {
		return 0, errors.New("connection reset")
	}
	s.n--
	return s.Source.Grab()
}

// TestBackoffStartsOverAfterFrames: a camera that failed to open four
// times waits longer each time; once it has streamed frames, its next
// failure is retried after retry_min again, not after the grown wait.
func TestBackoffStartsOverAfterFrames(t *testing.T) {
	d := config.Decode{RetryMin: 20 * time.Millisecond, RetryMax: 10 * time.Second}
	var logs testenv.Buffer
	cam, err := NewCamera(config.Camera{ID: "flaky", URL: "synthetic://"}, Options{NC: startNATS(t), Decode: d, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	opens := 0
	cam.open = func(context.Context) (Source, error) { // the reader's goroutine only
		if opens++; opens != 5 {
			return nil, errors.New("connection refused")
		}
		src, err := OpenSource("synthetic://?width=64&height=48", SourceOptions{})
		return &failAfter{Source: src, n: 3}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cam.Run(ctx) }()
	waits := regexp.MustCompile(`camera source failed; retrying.* retry_in=(\S+)`)
	// Logged thinned: the 1st, 2nd and 4th failure in a row, then the 1st
	// after the frames.
	testenv.WaitFor(t, "four failure lines", 10*time.Second, func() bool { return len(waits.FindAllString(logs.String(), -1)) >= 4 })
	cancel()
	<-done
	var got []time.Duration
	for _, m := range waits.FindAllStringSubmatch(logs.String(), 4) {
		w, err := time.ParseDuration(m[1])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, w)
	}
	// Backoff n is retry_min·2ⁿ ± 25%: 20, 40, (80,) 160 ms; then 20 again.
	if got[2] < 100*time.Millisecond || got[3] > 26*time.Millisecond {
		t.Errorf("waits logged %v: want the 4th failure's about 160 ms and the next, after frames, about 20 ms", got)
	}
	if n := testutil.ToFloat64(telemetry.CameraReconnects.WithLabelValues("flaky")); n < 4 {
		t.Errorf("patchline_camera_reconnects_total{camera=flaky} = %v, want at least 4 (before the 4th line)", n)
	}
}

// TestUnprocessableFrameReopens checks that a frame the worker cannot
// process comes back to the reader as the camera's error: the camera
// reopens its source with backoff, publishes nothing and stops cleanly.
func TestUnprocessableFrameReopens(t *testing.T) {
	nc := startNATS(t)
	d := config.Decode{RetryMin: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond}
	cam, err := NewCamera(config.Camera{ID: "gray", URL: "synthetic://"}, Options{NC: nc, Decode: d})
	if err != nil {
		t.Fatal(err)
	}
	var opens sync.Map
	cam.open = func(context.Context) (Source, error) {
		src := &graySource{}
		opens.Store(src, true)
		return src, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cam.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for st := cam.Status(); st.Reconnects < 2; st = cam.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("no reopen after a bad frame: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := cam.Status()
	if !strings.Contains(st.LastError, "1 channels, want BGR") || st.FramesOut != 0 {
		t.Errorf("status %+v", st)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if st := cam.Status(); st.State != StateStopped {
		t.Errorf("state %q after cancel", st.State)
	}
}

func TestUnknownScheme(t *testing.T) {
	nc := startNATS(t)
	_, err := NewCamera(config.Camera{ID: "x", URL: "http://u:pw123@example.com/a.mp4"}, Options{NC: nc})
	if err == nil || !strings.Contains(err.Error(), `"http"`) || strings.Contains(err.Error(), "pw123") {
		t.Fatalf("err = %v", err)
	}
	for _, u := range []string{"synthetic://?bogus=1", "file://relative.mp4", ""} {
		if _, err := NewCamera(config.Camera{ID: "x", URL: u}, Options{NC: nc}); err == nil {
			t.Errorf("NewCamera(%q) succeeded", u)
		}
	}
	if _, err := NewCamera(config.Camera{ID: "x", URL: "synthetic://"}, Options{NC: nc, Decode: config.Decode{Width: 100, PatchSize: 16}}); err == nil {
		t.Error("input not a multiple of the patch size accepted")
	}
}

func TestFileLoopAndEnd(t *testing.T) {
	rtsptest.RequireFFmpeg(t)
	nc := startNATS(t)
	clip := rtsptest.MakeClip(t, t.TempDir(), rtsptest.ClipOptions{Seconds: 1, Width: 320, Height: 180})

	// Looping: the timeline continues across the restart.
	r := runCamera(t, nc, config.Camera{ID: "loop", URL: "file://" + clip, FPS: 10, Loop: true}, config.Decode{})
	var last *frame.Frame
	for i := 0; i < 16; i++ {
		f, _ := r.next(t, 5*time.Second)
		if last != nil && (f.PTS <= last.PTS || f.Seq != last.Seq+1) {
			t.Fatalf("frame %d: seq %d pts %v after seq %d pts %v", i, f.Seq, f.PTS, last.Seq, last.PTS)
		}
		last = f
	}
	if last.PTS < 1400*time.Millisecond {
		t.Fatalf("pts %v after 16 frames of a looped 1s clip", last.PTS)
	}
	r.stop()

	// Not looping: about ten frames, then "ended".
	r = runCamera(t, nc, config.Camera{ID: "once", URL: clip, FPS: 10}, config.Decode{})
	st := waitState(t, r.cam, 5*time.Second, StateEnded)
	if st.FramesOut < 9 || st.FramesOut > 10 {
		t.Errorf("ended after %d frames, want 10", st.FramesOut)
	}
}

// TestFileTimestampLeap: a file whose timestamps leap a minute ahead (two
// recordings joined end to end) is paced across the leap without waiting
// for it, and keeps its own timestamps.
func TestFileTimestampLeap(t *testing.T) {
	part := func(offset string) []string {
		return []string{"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1",
			"-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-output_ts_offset", offset}
	}
	clip := joinTS(t, part("0"), part("61"))
	r := runCamera(t, startNATS(t), config.Camera{ID: "leap", URL: clip, FPS: 10}, config.Decode{StallTimeout: 2 * time.Second})
	var first, last *frame.Frame
	for i := range 15 { // the second part's frames come without waiting a minute
		f, _ := r.next(t, 10*time.Second)
		if i == 0 {
			first = f
		}
		last = f
	}
	if leap := last.PTS - first.PTS; leap < time.Minute {
		t.Errorf("pts went from %v to %v, want the file's leap of a minute kept", first.PTS, last.PTS)
	}
	if strings.Contains(r.log.String(), "camera stalled") {
		t.Errorf("camera marked stalled:\n%s", r.log.String())
	}
}

// TestFileTimestampLeapAtTheStart: a leap between a file's first two
// frames is one too (the container's frame rate tells it from a slow
// source), not an hour's wait for the second frame.
func TestFileTimestampLeapAtTheStart(t *testing.T) {
	clip := rtsptest.FFmpeg(t, filepath.Join(t.TempDir(), "leap1.mkv"), "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1",
		"-vf", "setpts='if(gte(N,1),PTS+3600/TB,PTS)'", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p")
	r := runCamera(t, startNATS(t), config.Camera{ID: "leap1", URL: clip, FPS: 10}, config.Decode{})
	first, _ := r.next(t, 10*time.Second)
	last := first
	for range 5 { // without waiting an hour
		last, _ = r.next(t, 5*time.Second)
	}
	if last.PTS-first.PTS < time.Hour {
		t.Errorf("pts went from %v to %v, want the file's leap of an hour kept", first.PTS, last.PTS)
	}
}

// TestFileTimelineGoesBack: a file whose timestamps go back (recordings
// joined end to end, the second one starting at 0 again, at another frame
// rate) goes on from its last frame by the second part's own intervals:
// its 2 s at 30 fps take 2 s and give 20 frames at fps 10, not one frame
// faked a container interval (100 ms) after another for 6 s.
func TestFileTimelineGoesBack(t *testing.T) {
	part := func(rate, seconds, offset string) []string {
		return []string{"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=" + rate + ":duration=" + seconds,
			"-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-output_ts_offset", offset}
	}
	clip := joinTS(t, part("10", "1", "30"), part("30", "2", "0"))
	r := runCamera(t, startNATS(t), config.Camera{ID: "back", URL: clip, FPS: 10}, config.Decode{})
	var pts []time.Duration
	for {
		select {
		case m := <-r.msgs:
			f, err := frame.Decode(m.Header, m.Data)
			if err != nil {
				t.Fatal(err)
			}
			pts = append(pts, f.PTS)
			continue
		case <-time.After(3 * time.Second):
		}
		break
	}
	if len(pts) < 2 {
		t.Fatalf("%d frames", len(pts))
	}
	for i := 1; i < len(pts); i++ {
		if pts[i] <= pts[i-1] {
			t.Fatalf("pts went back: %v", pts)
		}
	}
	// (FFmpeg guesses the timestamps of the last frames it drains at the
	// end of a file: those may leap, so the frames are counted, not the span.)
	if len(pts) < 27 || len(pts) > 33 {
		t.Errorf("%d frames, want about 30 (10 of the first second, 20 of the next two): %v", len(pts), pts)
	}
}

// TestBFramesFileWhole: every frame of an H.264 file with B-frames is
// published at its own rate: OpenCV gives the last frames no timestamp,
// and those mended must not land so close to the one before that the
// sampler drops them.
func TestBFramesFileWhole(t *testing.T) {
	clip := rtsptest.FFmpeg(t, filepath.Join(t.TempDir(), "bf.mp4"), "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=2",
		"-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-pix_fmt", "yuv420p")
	r := runCamera(t, startNATS(t), config.Camera{ID: "bf", URL: clip, FPS: 10}, config.Decode{})
	st := waitState(t, r.cam, 10*time.Second, StateEnded)
	if st.FramesOut != 20 {
		t.Errorf("%d frames of a 20-frame file published, want all", st.FramesOut)
	}
}

// joinTS makes one MPEG-TS segment per part (ffmpeg's input and codec
// arguments) and returns the path of a file holding them end to end, the
// way recordings are joined.
func joinTS(t *testing.T, parts ...[]string) string {
	t.Helper()
	dir := t.TempDir()
	var joined []byte
	for i, args := range parts {
		seg := rtsptest.FFmpeg(t, filepath.Join(dir, fmt.Sprintf("seg%d.ts", i)), append(args, "-f", "mpegts")...)
		b, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		joined = append(joined, b...)
	}
	clip := filepath.Join(dir, "joined.ts")
	if err := os.WriteFile(clip, joined, 0o644); err != nil {
		t.Fatal(err)
	}
	return clip
}

// TestSlowFileIsNotStalled: a file of one frame a second (a timelapse)
// paced with a stall timeout under its frame interval is waited for in
// real time, not marked stalled between frames.
func TestSlowFileIsNotStalled(t *testing.T) {
	clip := rtsptest.MakeClip(t, t.TempDir(), rtsptest.ClipOptions{Seconds: 3, FPS: 1, Width: 160, Height: 120, GOP: 1})
	r := runCamera(t, startNATS(t), config.Camera{ID: "slow", URL: clip, FPS: 5}, config.Decode{StallTimeout: 400 * time.Millisecond})
	start := time.Now()
	st := waitState(t, r.cam, 15*time.Second, StateEnded)
	if st.FramesOut != 3 || st.Reconnects != 0 || strings.Contains(r.log.String(), "camera stalled") {
		t.Errorf("%d frames, %d reconnects, want 3 and 0 without a stall:\n%s", st.FramesOut, st.Reconnects, r.log.String())
	}
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Errorf("3 frames a second apart took %s, want them paced in real time", took)
	}
}

// TestPanoramicSource: a source wider than a model input may be (9000 px,
// a panoramic camera) streams frames that consumers decode, with its size;
// a side over what a frame message carries fails the frame, naming it.
func TestPanoramicSource(t *testing.T) {
	nc := startNATS(t)
	clip := rtsptest.MakeClip(t, t.TempDir(), rtsptest.ClipOptions{Seconds: 0.5, FPS: 4, Width: 9000, Height: 64})
	r := runCamera(t, nc, config.Camera{ID: "pano", URL: clip, FPS: 4}, config.Decode{})
	if f, _ := r.next(t, 10*time.Second); f.SourceW != 9000 || f.SourceH != 64 {
		t.Errorf("source size %dx%d, want 9000x64", f.SourceW, f.SourceH)
	}

	raw := gocv.NewMatWithSize(1, frame.MaxSourceSide+1, gocv.MatTypeCV8UC3)
	defer raw.Close()
	m := newMats()
	defer m.close()
	if _, _, err := preprocess(withDefaults(config.Decode{}), raw, m); err == nil || !strings.Contains(err.Error(), "65536x1, over the 65535 pixels") {
		t.Errorf("preprocess of a 65536x1 frame = %v, want an error naming its size", err)
	}
}

// TestQueueDropsOldest: while the publisher falls behind, a camera keeps
// the newest decode.queue_size frames and counts the others as dropped.
func TestQueueDropsOldest(t *testing.T) {
	src, err := OpenSource("synthetic://?seed=2&width=320&height=240", SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	rf := &rawFrame{img: gocv.NewMat(), keep: true, readEnd: time.Now()}
	defer rf.img.Close()
	if _, err := readFrame(src, &rf.img); err != nil {
		t.Fatal(err)
	}
	cam, err := NewCamera(config.Camera{ID: "behind", URL: "synthetic://?seed=2"},
		Options{NC: startNATS(t), Decode: config.Decode{Width: 96, Height: 96, PatchSize: 8, QueueSize: 2}, Logger: natstest.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	m := newMats()
	defer m.close()
	for range 5 { // no publish loop runs: the queue fills
		if err := cam.process(m, rf); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	for {
		it, ok := cam.q.TryPop()
		if !ok {
			break
		}
		seqs = append(seqs, it.f.Seq)
	}
	if st := cam.Status(); !slices.Equal(seqs, []uint64{4, 5}) || st.FramesDropped != 3 {
		t.Errorf("queued seqs %v with %d dropped, want the newest two [4 5] and 3 dropped", seqs, st.FramesDropped)
	}
}

// TestBackoff: reconnect delays double from retry_min and stop growing at
// retry_max, with ±25% jitter.
func TestBackoff(t *testing.T) {
	c := &Camera{cfg: config.Decode{RetryMin: 100 * time.Millisecond, RetryMax: 1600 * time.Millisecond}}
	for n, want := range []time.Duration{100, 200, 400, 800, 1600, 1600, 1600} {
		want *= time.Millisecond
		for range 50 {
			if d := c.backoff(n); d < want*3/4 || d > want*5/4 {
				t.Fatalf("backoff(%d) = %v, want %v ±25%%", n, d, want)
			}
		}
	}
	if d := c.backoff(60); d > 2*time.Second {
		t.Errorf("backoff(60) = %v, want at most retry_max +25%%", d)
	}
}

// TestDefaultFPSAndPreviews: a camera without fps is sampled at
// decode.default_fps; while watched it publishes JPEG previews
// decode.preview_width wide, and none with decode.preview_fps 0.
func TestDefaultFPSAndPreviews(t *testing.T) {
	nc := startNATS(t)
	for _, c := range []struct {
		id         string
		previewFPS float64
	}{{"previewed", 4}, {"unpreviewed", 0}} {
		t.Run(c.id, func(t *testing.T) {
			previews := make(chan *nats.Msg, 64)
			sub, err := nc.ChanSubscribe(bus.PreviewSubject(c.id), previews)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			r := runCamera(t, nc, config.Camera{ID: c.id, URL: "synthetic://?seed=4&fps=10&width=320&height=240"},
				config.Decode{Width: 96, Height: 96, PatchSize: 8, DefaultFPS: 2, PreviewFPS: c.previewFPS, PreviewWidth: 160})
			r.cam.preview.watch(time.Minute)
			f1, _ := r.next(t, 10*time.Second)
			f2, _ := r.next(t, 10*time.Second)
			if step := f2.PTS - f1.PTS; step != 500*time.Millisecond {
				t.Errorf("frames %v apart, want 500ms (default_fps 2)", step)
			}
			select {
			case m := <-previews:
				if c.previewFPS == 0 {
					t.Fatalf("a preview with preview_fps 0")
				}
				img, err := jpeg.Decode(bytes.NewReader(m.Data))
				if err != nil {
					t.Fatal(err)
				}
				if b := img.Bounds(); b.Dx() != 160 || b.Dy() != 120 {
					t.Errorf("preview %dx%d, want 160x120 (preview_width 160 of 320x240)", b.Dx(), b.Dy())
				}
			case <-time.After(2 * time.Second):
				if c.previewFPS != 0 {
					t.Fatal("no preview within 2 s while watched")
				}
			}
		})
	}
}

// TestSampledFramesExact checks that a camera sampled below its source rate,
// which grabs every frame but retrieves only the kept ones, publishes
// exactly the frames at the kept pts: each one's tokens against the same
// frame read by a plain OpenCV loop and preprocessed alike.
func TestSampledFramesExact(t *testing.T) {
	rtsptest.RequireFFmpeg(t)
	nc := startNATS(t)
	clip := rtsptest.MakeClip(t, t.TempDir(), rtsptest.ClipOptions{Seconds: 2, FPS: 30, Width: 320, Height: 180})
	d := withDefaults(config.Decode{Width: 96, Height: 64, PatchSize: 16})

	want := map[time.Duration][]byte{} // pts → tokens
	vc, err := gocv.VideoCaptureFileWithAPI(clip, gocv.VideoCaptureFFmpeg)
	if err != nil {
		t.Fatal(err)
	}
	raw, m := gocv.NewMat(), newMats()
	for vc.Read(&raw) && !raw.Empty() {
		pts := time.Duration(vc.Get(gocv.VideoCapturePosMsec) * float64(time.Millisecond))
		_, rgb, err := preprocess(d, raw, m)
		if err != nil {
			t.Fatal(err)
		}
		tok := make([]byte, len(rgb))
		if err := frame.Tokenize(tok, rgb, d.Width, d.Height, d.PatchSize); err != nil {
			t.Fatal(err)
		}
		want[pts] = tok
	}
	_ = vc.Close()
	_ = raw.Close()
	m.close()
	if len(want) < 55 {
		t.Fatalf("plain read loop got %d frames of a 60-frame clip", len(want))
	}

	r := runCamera(t, nc, config.Camera{ID: "sampled", URL: clip, FPS: 5}, d)
	waitState(t, r.cam, 10*time.Second, StateEnded)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []*frame.Frame
	for len(r.msgs) > 0 { // all published before "ended", all delivered after the flush
		f, _ := r.next(t, time.Second)
		got = append(got, f)
	}
	if len(got) < 9 || len(got) > 11 {
		t.Fatalf("%d frames of a 2 s clip sampled at 5 fps", len(got))
	}
	for i, f := range got {
		tok, ok := want[f.PTS]
		if !ok {
			t.Fatalf("frame %d: pts %v is no frame of the clip", i, f.PTS)
		}
		if !bytes.Equal(f.Tokens, tok) {
			t.Fatalf("frame %d (pts %v): tokens differ from the plain loop's frame at that pts", i, f.PTS)
		}
		if i > 0 && f.PTS-got[i-1].PTS < 150*time.Millisecond {
			t.Fatalf("frames %d and %d are %v apart at 5 fps", i-1, i, f.PTS-got[i-1].PTS)
		}
	}
}

// TestSyntheticLetterboxExact checks the published tokens of a synthetic
// camera against the scene rendered independently and letterboxed.
func TestSyntheticLetterboxExact(t *testing.T) {
	nc := startNATS(t)
	url := "synthetic://?seed=7&width=640&height=360&objects=4&fps=30"
	d := config.Decode{Width: 224, Height: 224, PatchSize: 16, Resize: frame.ResizeLetterbox}
	r := runCamera(t, nc, config.Camera{ID: "synth", URL: url, FPS: 10}, d)
	p, _ := synth.ParseURL(url)
	scene, _ := synth.New(p)
	want, _, inner := frame.Letterbox(640, 360, 224, 224)
	for k := 0; k < 3; k++ {
		f, _ := r.next(t, 5*time.Second)
		if f.Transform != want || f.Resize != frame.ResizeLetterbox || f.SourceW != 640 || f.SourceH != 360 {
			t.Fatalf("frame %+v, want transform %v", f, want)
		}
		got := make([]byte, 224*224*3)
		if err := frame.Untokenize(got, f.Tokens, 224, 224, 16); err != nil {
			t.Fatal(err)
		}
		// Reference: render frame i = pts·fps and letterbox it the same way.
		i := int(f.PTS.Seconds()*30 + 0.5)
		rgb := make([]byte, scene.FrameSize())
		scene.Render(rgb, i)
		ref := letterboxRef(t, rgb, 640, 360, 224, 224)
		if !bytes.Equal(got, ref) {
			t.Fatalf("frame seq %d (synthetic %d) differs from the reference", f.Seq, i)
		}
		// Padding rows are black, the picture is not.
		oy := int(want.OffsetY)
		if oy == 0 || inner == 0 {
			t.Fatal("no padding")
		}
		if !bytes.Equal(got[:oy*224*3], make([]byte, oy*224*3)) {
			t.Fatal("top padding not black")
		}
		if bytes.Equal(got[oy*224*3:(oy+1)*224*3], make([]byte, 224*3)) {
			t.Fatal("first picture row is black")
		}
	}
	if st := r.cam.Status(); st.State != StateStreaming {
		t.Errorf("status %+v", st)
	}
}

// letterboxRef letterboxes an RGB image with gocv independently of Camera.
func letterboxRef(t *testing.T, rgb []byte, sw, sh, w, h int) []byte {
	src, err := gocv.NewMatFromBytes(sh, sw, gocv.MatTypeCV8UC3, rgb)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tr, iw, ih := frame.Letterbox(sw, sh, w, h)
	small := gocv.NewMat()
	defer small.Close()
	gocv.Resize(src, &small, image.Pt(iw, ih), 0, 0, gocv.InterpolationLinear)
	out := gocv.NewMatWithSize(h, w, gocv.MatTypeCV8UC3)
	defer out.Close()
	out.SetTo(gocv.NewScalar(0, 0, 0, 0))
	roi := out.Region(image.Rect(int(tr.OffsetX), int(tr.OffsetY), int(tr.OffsetX)+iw, int(tr.OffsetY)+ih))
	small.CopyTo(&roi)
	roi.Close()
	return bytes.Clone(out.ToBytes())
}

// TestTokenizeRoundTrip runs one decoded frame through the camera's resize
// and tokenization and back through frame.Untokenize.
func TestTokenizeRoundTrip(t *testing.T) {
	for _, mode := range []string{frame.ResizeStretch, frame.ResizeLetterbox} {
		src, err := OpenSource("synthetic://?seed=3&width=320&height=200", SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		raw, m := gocv.NewMat(), newMats()
		if _, err := readFrame(src, &raw); err != nil {
			t.Fatal(err)
		}
		_, rgb, err := preprocess(withDefaults(config.Decode{Width: 96, Height: 64, PatchSize: 16, Resize: mode}), raw, m)
		if err != nil {
			t.Fatal(err)
		}
		if len(rgb) != 96*64*3 {
			t.Fatalf("%s: rgb is %d bytes", mode, len(rgb))
		}
		tok := make([]byte, len(rgb))
		back := make([]byte, len(rgb))
		if err := frame.Tokenize(tok, rgb, 96, 64, 16); err != nil {
			t.Fatal(err)
		}
		if err := frame.Untokenize(back, tok, 96, 64, 16); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back, rgb) || bytes.Equal(tok, rgb) {
			t.Fatalf("%s: round trip differs (or tokenize was the identity)", mode)
		}
		m.close()
		raw.Close()
		src.Close()
	}
}

func TestSampler(t *testing.T) {
	s := NewSampler(5)
	kept := 0
	for i := 0; i < 300; i++ { // 10 s of 30 fps
		if s.Keep(time.Duration(i) * time.Second / 30) {
			kept++
		}
	}
	if kept != 50 {
		t.Fatalf("kept %d of 300 frames at 30→5 fps, want 50", kept)
	}
	// pts going back restarts; a source slower than the target keeps all.
	if !s.Keep(0) {
		t.Fatal("pts reset not kept")
	}
	s = NewSampler(30)
	for i := 0; i < 20; i++ {
		if !s.Keep(time.Duration(i) * 100 * time.Millisecond) {
			t.Fatalf("frame %d of a 10 fps source dropped at 30 fps target", i)
		}
	}
	// A 30 fps source whose pts leaps 10 s ahead: sampling resumes on the
	// grid at once, 5 frames a second, not a burst until it catches up.
	s = NewSampler(5)
	leap := 0
	for i := range 120 {
		pts := time.Duration(i) * time.Second / 30
		if i >= 60 {
			pts += 10 * time.Second
		}
		if s.Keep(pts) && i >= 60 {
			leap++
		}
	}
	if leap < 9 || leap > 11 {
		t.Errorf("kept %d frames in the 2 s after a leap, want 10", leap)
	}
	// A variable-rate source at 30 fps with a gap before a sample time:
	// the frame after the gap is kept late, the next on-grid one is not
	// kept right after it.
	s = NewSampler(5)
	var vfr []time.Duration
	for _, ms := range []float64{1400, 1433.3, 1466.7, 1500, 1533.3, 1566.7, 1766.7, 1800, 1833.3, 1866.7, 1900, 1933.3, 1966.7, 2000, 2033.3, 2066.7, 2100, 2133.3, 2166.7, 2200} {
		if pts := time.Duration(ms * float64(time.Millisecond)); s.Keep(pts) {
			vfr = append(vfr, pts)
		}
	}
	for i := 1; i < len(vfr); i++ {
		if gap := vfr[i] - vfr[i-1]; gap < 100*time.Millisecond {
			t.Errorf("kept %v: %v and %v are %v apart, under half the 200 ms interval", vfr, vfr[i-1], vfr[i], gap)
		}
	}
	if len(vfr) != 5 {
		t.Errorf("kept %v, want 5: one per sample time from 1.4 to 2.2 s", vfr)
	}
}

// TestShrink: between sources the reader's images give their memory back,
// waiting for the one the worker still holds.
func TestShrink(t *testing.T) {
	free := make(chan *rawFrame, rawFrames)
	var frames []*rawFrame
	for range rawFrames {
		rf := &rawFrame{img: gocv.NewMatWithSize(1080, 1920, gocv.MatTypeCV8UC3)}
		frames = append(frames, rf)
	}
	free <- frames[0]
	free <- frames[1]
	go func() { // the worker hands the third back later
		time.Sleep(50 * time.Millisecond)
		free <- frames[2]
	}()
	shrink(free)
	for i, rf := range frames {
		if !rf.img.Empty() {
			t.Errorf("image %d still %dx%d", i, rf.img.Cols(), rf.img.Rows())
		}
	}
	if len(free) != rawFrames {
		t.Errorf("%d images back in free, want %d", len(free), rawFrames)
	}
	for range rawFrames {
		_ = (<-free).img.Close()
	}
}

// TestFramesWhileNATSIsDown: frames made while the camera's NATS
// connection is down are dropped and counted (reason nats_down), not
// buffered by the client to arrive late in a burst; once the server is
// back, fresh frames flow again.
func TestFramesWhileNATSIsDown(t *testing.T) {
	emb := config.Embedded{Host: "127.0.0.1", Port: testenv.FreePort(t, "127.0.0.1"), StoreDir: t.TempDir()}
	start := func() *bus.Embedded {
		e, err := bus.StartEmbedded(emb, "", natstest.Discard())
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	srv := start()
	defer func() { srv.Shutdown() }()
	connect := func(name string) *nats.Conn {
		nc, err := bus.Connect(config.NATS{}, srv.URL(), name, natstest.Discard())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	pub, sub := connect("camera"), connect("test")
	r := runCamera(t, pub, config.Camera{ID: "cam1", URL: "synthetic://?seed=3", FPS: 20}, config.Decode{Width: 96, Height: 96, PatchSize: 8, QueueSize: 4})
	var (
		mu        sync.Mutex
		published []time.Time
	)
	if _, err := sub.Subscribe(bus.FrameSubject("cam1"), func(m *nats.Msg) {
		if f, err := frame.Decode(m.Header, m.Data); err == nil {
			mu.Lock()
			published = append(published, f.PublishedAt)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	received := func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(published)
	}
	testenv.WaitFor(t, "frames", 20*time.Second, func() bool { return len(received()) >= 5 })

	dropped := func() float64 {
		return testutil.ToFloat64(telemetry.FramesDropped.WithLabelValues(stageName, "cam1", "nats_down"))
	}
	before, stBefore := dropped(), r.cam.Status().FramesDropped
	srv.Shutdown()
	down := time.Now()
	// 40 at 20 fps: down for 2 s at least, so that the check for late
	// frames below, which gives the client 1 s to see the server gone,
	// has a second to look at.
	testenv.WaitFor(t, "frames dropped while NATS is down", 15*time.Second, func() bool { return dropped() >= before+40 })
	if st := r.cam.Status(); st.FramesDropped < stBefore+40 {
		t.Errorf("status counts %d frames dropped, want the nats_down drops among them", st.FramesDropped)
	}
	up := time.Now() // before the start: a frame may be published as soon as it is up
	srv = start()
	n := len(received())
	testenv.WaitFor(t, "fresh frames after the server came back", 20*time.Second, func() bool { return len(received()) >= n+5 })
	for _, at := range received() {
		if at.After(down.Add(time.Second)) && at.Before(up) {
			t.Errorf("a frame published at %s, while NATS was down (%s to %s), arrived late", at.Format(time.StampMilli), down.Format(time.StampMilli), up.Format(time.StampMilli))
		}
	}
	if !strings.Contains(r.log.String(), "nats not connected: dropping frames") || !strings.Contains(r.log.String(), "nats back") {
		t.Errorf("log does not say frames were dropped and then flowed again:\n%s", r.log.String())
	}
}

// TestSilentStreamOpenIsBounded: a server that answers PLAY and then sends
// nothing fails the open within about the stall timeout, not OpenCV's
// default 30 s (FFmpeg waits for packets to probe; OpenCV opens one capture
// at a time, so a hung open would hold up every other camera's).
func TestSilentStreamOpenIsBounded(t *testing.T) {
	rtsptest.RequireFFmpeg(t)
	srv := rtsptest.Start(t)
	srv.PublishSilent(t, context.Background(), "quiet")
	d := config.Decode{RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond, StallTimeout: 1500 * time.Millisecond}
	start := time.Now()
	r := runCamera(t, startNATS(t), config.Camera{ID: "quiet", URL: srv.URL("quiet")}, d)
	st := waitState(t, r.cam, 12*time.Second, StateRetrying)
	t.Logf("open failed after %s: %s", time.Since(start).Round(time.Millisecond), st.LastError)
}

// TestSilentHostDoesNotHoldUpOthers: a camera whose host accepts
// connections but never answers (as one gone from the network keeps a
// connect waiting) waits out its open timeout without OpenCV's open lock:
// a good camera started meanwhile streams while the silent one is still
// in its first open.
func TestSilentHostDoesNotHoldUpOthers(t *testing.T) {
	rtsptest.RequireFFmpeg(t)
	srv := rtsptest.Start(t)
	rtsptest.Publish(t, context.Background(), rtsptest.MakeClip(t, t.TempDir(), rtsptest.ClipOptions{Seconds: 4}), srv.URL("good"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	connected := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			connected <- c // held open, never answered
		}
	}()
	defer func() {
		for len(connected) > 0 {
			(<-connected).Close()
		}
	}()
	nc := startNATS(t)
	d := config.Decode{StallTimeout: 5 * time.Second, RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	quiet := d
	quiet.StallTimeout = 30 * time.Second // ample time for the good camera to start meanwhile
	silent := runCamera(t, nc, config.Camera{ID: "silent", URL: "rtsp://u:p@" + ln.Addr().String() + "/s"}, quiet)
	select {
	case c := <-connected:
		connected <- c
	case <-time.After(10 * time.Second):
		t.Fatal("the silent camera never connected")
	}
	good := runCamera(t, nc, config.Camera{ID: "good", URL: srv.URL("good")}, d)
	good.next(t, 15*time.Second)
	if st := silent.cam.Status(); st.State != StateConnecting || st.Reconnects != 0 {
		t.Errorf("the good camera streamed only once the silent one's open had failed (%s, %d reconnects): it waited for OpenCV's lock", st.State, st.Reconnects)
	}
	// Stopping it ends its probe at once, not when the probe's 30 s are up
	// (stop fails the test past 15 s).
	start := time.Now()
	silent.stop()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("stopping the camera in its probe took %s", took)
	}

	// What the probe says of such a host, and of others that are no RTSP
	// server; no credentials in any of it.
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	closing, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer closing.Close()
	go func() {
		for {
			c, err := closing.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, c := range []struct{ addr, want string }{
		{ln.Addr().String(), "but no RTSP answer within 300ms"},
		{strings.TrimPrefix(web.URL, "http://"), `is not an RTSP server (it answered "HTTP/1.1 400 Bad Request`},
		{closing.Addr().String(), "but it closed without an RTSP answer"},
	} {
		err := probeRTSP(context.Background(), "rtsp://u:s3cret@"+c.addr+"/s", 300*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("probe of %s: %v, want %q", c.addr, err, c.want)
		}
	}
}

// TestStreamChangesSize: a stream whose picture size changes mid-stream,
// without a new session (new parameter sets in band, as a camera whose
// settings change), goes on at the new size: OpenCV 4.6's converter keeps
// the size it opened with and fails (FFmpeg's swscaler: "Slice parameters
// ... are invalid"), leaving the old picture in place, so the camera
// reopens the stream instead of publishing that picture again and again.
func TestStreamChangesSize(t *testing.T) {
	part := func(size string) []string {
		return []string{"-f", "lavfi", "-i", "testsrc2=size=" + size + ":rate=10:duration=3",
			"-c:v", "libx264", "-g", "10", "-bf", "0", "-pix_fmt", "yuv420p"}
	}
	clip := joinTS(t, part("320x240"), part("240x320"))
	srv := rtsptest.Start(t)
	rtsptest.Publish(t, context.Background(), clip, srv.URL("switch"))
	d := config.Decode{Width: 96, Height: 96, PatchSize: 8, StallTimeout: 3 * time.Second, RetryMin: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond, QueueSize: 4}
	r := runCamera(t, startNATS(t), config.Camera{ID: "switch", URL: srv.URL("switch"), FPS: 10}, d)
	// The clip loops: 3 s at each size. Frames of the second size come
	// within a few seconds of the switch, not when a later loop happens
	// to reopen at it.
	sizes := map[string]int{}
	for deadline := time.Now().Add(12 * time.Second); len(sizes) < 2 && time.Now().Before(deadline); {
		f, _ := r.next(t, 15*time.Second)
		sizes[fmt.Sprintf("%dx%d", f.SourceW, f.SourceH)]++
	}
	if sizes["320x240"] == 0 || sizes["240x320"] == 0 {
		t.Errorf("frames by source size in 12 s %v, want both 320x240 and 240x320\n%s", sizes, r.log.String())
	}
	r.stop()

	// A file would reopen at its first size: it ends where the size
	// changes, and says why, rather than repeat its last picture.
	f := runCamera(t, startNATS(t), config.Camera{ID: "switchfile", URL: clip, FPS: 10}, config.Decode{Width: 96, Height: 96, PatchSize: 8})
	st := waitState(t, f.cam, 20*time.Second, StateEnded)
	if !strings.Contains(st.LastError, "picture size changed") || st.FramesOut > 31 {
		t.Errorf("the file ended with %d frames out, last error %q; want ≤ 30 (its first part) and the size change named", st.FramesOut, st.LastError)
	}
}

// TestLeapWatch: what a file camera's pacing takes for a leap of its
// timestamps (re-anchored, not waited out) and what for a slow source.
func TestLeapWatch(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		name  string
		start time.Duration // the container's stated interval
		gaps  []time.Duration
		want  []bool
	}{
		{"joined recordings", 40 * time.Millisecond, []time.Duration{40 * time.Millisecond, time.Minute, 40 * time.Millisecond}, []bool{false, true, false}},
		{"a leap at the first interval", 40 * time.Millisecond, []time.Duration{time.Hour, 40 * time.Millisecond}, []bool{true, false}},
		{"a timelapse", 2 * s, []time.Duration{2 * s, 2 * s, 2 * s}, []bool{false, false, false}},
		// A wrong stated rate: only the first interval is taken for a leap.
		{"a slow file stating 25 fps", 40 * time.Millisecond, []time.Duration{1700 * time.Millisecond, 2500 * time.Millisecond, 1700 * time.Millisecond, 2500 * time.Millisecond}, []bool{true, false, false, false}},
		{"two leaps in a row, unlike", 40 * time.Millisecond, []time.Duration{40 * time.Millisecond, time.Minute, time.Hour, 40 * time.Millisecond}, []bool{false, true, true, false}},
		{"a leap, 1 ms, a leap", 40 * time.Millisecond, []time.Duration{time.Minute, time.Millisecond, time.Hour, 40 * time.Millisecond}, []bool{true, false, true, false}},
		// An interval of 1 ms is none.
		{"a timelapse with a 1 ms interval", 2 * s, []time.Duration{2 * s, time.Millisecond, 2 * s, 2 * s}, []bool{false, false, false, false}},
	} {
		l := leapWatch{gap: c.start}
		var got []bool
		for _, d := range c.gaps {
			got = append(got, l.leap(d))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: intervals %v: leaps %v, want %v", c.name, c.gaps, got, c.want)
		}
	}
}
