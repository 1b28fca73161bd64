package rtsptest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"gocv.io/x/gocv"
)

func TestRelayToOpenCVOverTCP(t *testing.T) {
	RequireFFmpeg(t)
	ctx := context.Background()
	s := StartWith(t, Config{User: "pub", Pass: "s3cr:t", Logf: t.Logf})
	clip := MakeClip(t, t.TempDir(), ClipOptions{Seconds: 3})
	Publish(t, ctx, clip, s.AuthURL("cam/1"))
	if !s.HasStream("cam/1") {
		t.Fatal("server has no stream after Publish returned")
	}

	// Without credentials the server refuses to describe the stream.
	u, _ := base.ParseURL(s.URL("cam/1"))
	if err := describe(u); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("DESCRIBE without credentials: %v, want 401", err)
	}
	// An unknown path is 404.
	u, _ = base.ParseURL(s.AuthURL("nope"))
	if err := describe(u); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("DESCRIBE of unknown path: %v, want 404", err)
	}

	// OpenCV's FFmpeg backend reads OPENCV_FFMPEG_CAPTURE_OPTIONS at each open.
	t.Setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
	vc, err := gocv.OpenVideoCaptureWithAPI(s.AuthURL("cam/1"), gocv.VideoCaptureFFmpeg)
	if err != nil {
		if vc != nil {
			vc.Close()
		}
		t.Fatalf("open: %v", err)
	}
	defer vc.Close()
	m := gocv.NewMat()
	defer m.Close()
	deadline := time.Now().Add(10 * time.Second)
	frames := 0
	var lastPTS float64 = -1
	for frames < 15 && time.Now().Before(deadline) {
		if !vc.Read(&m) || m.Empty() {
			t.Fatalf("read failed after %d frames", frames)
		}
		if m.Cols() != 640 || m.Rows() != 360 || m.Channels() != 3 {
			t.Fatalf("frame is %dx%dx%d, want 640x360x3", m.Cols(), m.Rows(), m.Channels())
		}
		pts := vc.Get(gocv.VideoCapturePosMsec)
		if pts < lastPTS {
			t.Fatalf("pts went back from %v to %v", lastPTS, pts)
		}
		lastPTS = pts
		frames++
	}
	if frames < 15 {
		t.Fatalf("read %d frames in 10s", frames)
	}
	t.Logf("read %d frames, last pts %.0f ms", frames, lastPTS)
	if os.Getenv("OPENCV_FFMPEG_CAPTURE_OPTIONS") == "" {
		t.Fatal("env lost")
	}
}

func TestPublishWrongPassword(t *testing.T) {
	RequireFFmpeg(t)
	s := StartWith(t, Config{User: "pub", Pass: "right"})
	clip := MakeClip(t, t.TempDir(), ClipOptions{Seconds: 1, Width: 160, Height: 96})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bad := strings.Replace(s.AuthURL("x"), "right", "wrong", 1)
	ft := &fakeT{TB: t}
	func() {
		defer func() { recover() }()
		Publish(ft, ctx, clip, bad)
	}()
	if !ft.failed {
		t.Fatal("publishing with a wrong password succeeded")
	}
	if s.HasStream("x") {
		t.Fatal("server accepted a stream with a wrong password")
	}
}

// fakeT records Fatalf instead of failing the real test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = true
	f.TB.Logf("expected failure: "+format, args...)
	panic("fatal")
}
