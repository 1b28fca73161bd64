package decode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchline/patchline/internal/media"
	"github.com/patchline/patchline/internal/rtsptest"
	"github.com/patchline/patchline/internal/testenv"
)

// TestOpenErrorSaysWhy: a camera that cannot be opened fails with FFmpeg's
// own reason (what `patchline cameras` shows as its last error), never
// with its credentials.
func TestOpenErrorSaysWhy(t *testing.T) {
	srv := rtsptest.StartWith(t, rtsptest.Config{User: "cam", Pass: "hunter2"})
	closed := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	wrong, _ := url.Parse(srv.AuthURL("live"))
	wrong.User = url.UserPassword("cam", "wrong-s3cret")
	for _, c := range []struct{ name, uri, want string }{
		{"refused", "rtsp://cam:hunter2@" + closed + "/live", "connection refused"},
		{"unauthorized", wrong.String(), "401 Unauthorized"},
		{"not found", srv.AuthURL("nobody-publishes-here"), "404 Not Found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := openCV(c.uri, media.RedactURL(c.uri), KindRTSP, SourceOptions{StallTimeout: 2 * time.Second})
			checkOpenError(t, err, c.want)
		})
	}
	garbage := filepath.Join(t.TempDir(), "notes.mp4")
	if err := os.WriteFile(garbage, []byte("not a video at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := openCV(garbage, garbage, KindFile, SourceOptions{})
	checkOpenError(t, err, "moov atom not found") // the mp4 demuxer's reason
}

func checkOpenError(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatal("opened")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	for _, secret := range []string{"hunter2", "wrong-s3cret"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q shows the password", err)
		}
	}
}

// TestFFmpegLines: FFmpeg's lines go to the logger set, component named
// without its address, credentials hidden, and a line repeated with other
// numbers logged the 1st, 2nd and 4th time only.
func TestFFmpegLines(t *testing.T) {
	var buf testenv.Buffer
	SetFFmpegLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer SetFFmpegLogger(slog.New(slog.DiscardHandler))
	ffmpegSeen.Reset() // what real streams of earlier tests logged
	for i := range 5 {
		ffmpegLine(avLogError, fmt.Sprintf("[h264 @ 0x55d0c1a0bc00] error while decoding MB %d 7, bytestream -5\n", 30+i), "")
	}
	ffmpegLine(avLogWarning, "[rtsp @ 0x5] reading rtsp://admin:pa55@10.0.0.9/stream failed\n", "door")
	out := buf.String()
	if n := strings.Count(out, "h264: error while decoding MB"); n != 3 {
		t.Errorf("%d h264 lines logged, want 3 (the 1st, 2nd, 4th):\n%s", n, out)
	}
	for _, want := range []string{"level=WARN", "component=ffmpeg", "seen=4", `level=INFO msg="rtsp: reading rtsp://xxxxx@10.0.0.9/stream failed" component=ffmpeg camera=door seen=1`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "pa55") || strings.Contains(out, "0x55d0") {
		t.Errorf("log shows a password or an address:\n%s", out)
	}
}

// TestFFmpegLinesNameTheCamera: what FFmpeg logs while a camera's source
// reads (here the mp4 demuxer's "partial file" of a truncated clip) names
// the camera.
func TestFFmpegLinesNameTheCamera(t *testing.T) {
	dir := t.TempDir()
	clip := rtsptest.MakeClip(t, dir, rtsptest.ClipOptions{Width: 160, Height: 120, Seconds: 3})
	b, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.mp4")
	if err := os.WriteFile(cut, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	var buf testenv.Buffer
	SetFFmpegLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer SetFFmpegLogger(slog.New(slog.DiscardHandler))
	src, err := OpenSource(cut, SourceOptions{Camera: "porch"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for range 100 {
		if _, err := src.Grab(); err != nil {
			break
		}
	}
	out := buf.String()
	if line := grepLine(out, "partial file"); !strings.Contains(line, "camera=porch") {
		t.Errorf("the demuxer's line %q does not name the camera; log:\n%s", line, out)
	}
}

func grepLine(s, sub string) string {
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			return line
		}
	}
	return ""
}

// TestCaptureOpenTurns: capture opens take turns in the order they came
// (RTSP opens to a dead host kept a file camera from opening), each with
// its options in force, and one whose camera stops while it waits for its
// turn gives up at once instead of waiting for the opens before it.
func TestCaptureOpenTurns(t *testing.T) {
	var mu sync.Mutex
	var order []string
	run := func(ctx context.Context, name, v string, hold <-chan struct{}, started chan<- struct{}) error {
		return withCaptureOptions(ctx, v, func() {
			mu.Lock()
			order = append(order, name+"="+os.Getenv(ffmpegOptionsEnv))
			mu.Unlock()
			if started != nil {
				close(started)
			}
			if hold != nil {
				<-hold
			}
		})
	}
	bg := context.Background()
	release, started := make(chan struct{}), make(chan struct{})
	done := make(chan error, 4)
	go func() { done <- run(bg, "rtsp-1", "A", release, started) }()
	<-started
	waiting := func(n int32) func() bool { return func() bool { return openWaiting.Load() == n } }
	go func() { done <- run(bg, "file", "B", nil, nil) }()
	testenv.WaitFor(t, "the file open waiting", 5*time.Second, waiting(1))
	go func() { done <- run(bg, "rtsp-2", "A", nil, nil) }()
	testenv.WaitFor(t, "the second RTSP open waiting", 5*time.Second, waiting(2))
	stopped, stop := context.WithCancel(bg)
	go func() { done <- run(stopped, "stopped", "A", nil, nil) }()
	testenv.WaitFor(t, "a third open waiting", 5*time.Second, waiting(3))
	stop()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the open whose camera stopped: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an open whose camera stopped still waits for its turn")
	}
	close(release)
	for range 3 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if want := []string{"rtsp-1=A", "file=B", "rtsp-2=A"}; !slices.Equal(order, want) {
		t.Errorf("opens ran in the order %v, want %v", order, want)
	}
}

// TestCaptureOptionsVariableExists: OPENCV_FFMPEG_CAPTURE_OPTIONS exists
// from the start, so opens replace its value (C setenv adding a variable
// frees the environment array under other threads' getenv).
func TestCaptureOptionsVariableExists(t *testing.T) {
	if _, ok := os.LookupEnv(ffmpegOptionsEnv); !ok {
		t.Fatalf("%s is not in the environment after the package started", ffmpegOptionsEnv)
	}
}
