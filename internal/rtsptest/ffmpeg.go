package rtsptest

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/patchline/patchline/internal/testenv"
)

// ClipOptions describe a test clip. Zero fields take the defaults.
type ClipOptions struct {
	Width, Height int     // default 640x360
	FPS           int     // default 10
	Seconds       float64 // default 10
	GOP           int     // keyframe interval in frames; default 10
	Source        string  // lavfi source; default testsrc2
	Name          string  // file name in dir; default clip.mp4
}

func (o *ClipOptions) defaults() {
	if o.Width == 0 {
		o.Width = 640
	}
	if o.Height == 0 {
		o.Height = 360
	}
	if o.FPS == 0 {
		o.FPS = 10
	}
	if o.Seconds == 0 {
		o.Seconds = 10
	}
	if o.GOP == 0 {
		o.GOP = 10
	}
	if o.Source == "" {
		o.Source = "testsrc2"
	}
	if o.Name == "" {
		o.Name = "clip.mp4"
	}
}

// RequireFFmpeg ends the test (testenv.Missing) when the ffmpeg binary is
// missing.
func RequireFFmpeg(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		testenv.Missing(t, "ffmpeg not on PATH (`make deps` installs it)")
	}
}

// FFmpeg runs ffmpeg with args (its inputs, filters and codec options) to
// write the file out, quietly and overwriting, and returns out. It fails
// the test with ffmpeg's own message.
func FFmpeg(t testing.TB, out string, args ...string) string {
	t.Helper()
	RequireFFmpeg(t)
	cmd := exec.Command("ffmpeg", append(append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...), out)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg making %s: %v\n%s", filepath.Base(out), err, b)
	}
	return out
}

// MakeClip writes an H.264 (constrained baseline, no B-frames, yuv420p) mp4
// made by ffmpeg from a lavfi test source into dir and returns its path.
func MakeClip(t testing.TB, dir string, o ClipOptions) string {
	t.Helper()
	o.defaults()
	src := fmt.Sprintf("%s=size=%dx%d:rate=%d:duration=%s", o.Source, o.Width, o.Height, o.FPS, strconv.FormatFloat(o.Seconds, 'f', -1, 64))
	return FFmpeg(t, filepath.Join(dir, o.Name),
		"-f", "lavfi", "-i", src,
		"-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", strconv.Itoa(o.GOP),
		"-keyint_min", strconv.Itoa(o.GOP), "-sc_threshold", "0",
		"-pix_fmt", "yuv420p", "-preset", "veryfast", "-movflags", "+faststart")
}

// Publisher is a running ffmpeg process publishing a looped file.
type Publisher struct {
	cmd    *exec.Cmd
	done   chan struct{}
	once   sync.Once
	stderr *syncBuffer
}

// Publish runs `ffmpeg -re -stream_loop -1 -i file -c copy -f rtsp
// -rtsp_transport tcp rtspURL` until the test ends (or Stop) and waits
// until a reader of rtspURL (credentials in the URL are used) receives RTP
// packets over TCP. It fails the test when the stream does not appear within 15 s.
func Publish(t testing.TB, ctx context.Context, file, rtspURL string) *Publisher {
	t.Helper()
	RequireFFmpeg(t)
	p := &Publisher{done: make(chan struct{}), stderr: &syncBuffer{}}
	p.cmd = exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-re", "-stream_loop", "-1", "-i", file,
		"-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", rtspURL)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("rtsptest: start ffmpeg publisher: %v", err)
	}
	go func() {
		defer close(p.done)
		_ = p.cmd.Wait()
	}()
	t.Cleanup(p.Stop)

	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := waitDescribe(wctx, rtspURL, p.done); err != nil {
		p.Stop()
		t.Fatalf("rtsptest: publisher: %v\nffmpeg: %s", err, p.stderr.String())
	}
	return p
}

// PublishSilent publishes a short clip at each of paths on s and freezes
// them: streams that answer DESCRIBE and PLAY and then send nothing, as a
// camera hung mid-stream does. The publishers run until the test ends.
func (s *Server) PublishSilent(t testing.TB, ctx context.Context, paths ...string) {
	t.Helper()
	clip := MakeClip(t, t.TempDir(), ClipOptions{Seconds: 4})
	for _, p := range paths {
		Publish(t, ctx, clip, s.URL(p))
		s.Freeze(p, true)
	}
}

// Stop kills the ffmpeg process and waits for it. It is idempotent.
func (p *Publisher) Stop() {
	p.once.Do(func() {
		if p.cmd.Process != nil {
			_ = p.cmd.Process.Kill()
		}
		<-p.done
	})
}

// Exited is closed when the ffmpeg process has exited.
func (p *Publisher) Exited() <-chan struct{} { return p.done }

// Stderr is what ffmpeg has written to stderr so far.
func (p *Publisher) Stderr() string { return p.stderr.String() }

// waitDescribe polls DESCRIBE on rawURL until it succeeds, ctx ends or
// exited is closed.
func waitDescribe(ctx context.Context, rawURL string, exited <-chan struct{}) error {
	u, err := base.ParseURL(rawURL)
	if err != nil {
		return fmt.Errorf("parse url: %w", err)
	}
	var last error
	for {
		if last = play(ctx, u); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream did not appear: %w (last try: %v)", ctx.Err(), last)
		case <-exited:
			return fmt.Errorf("ffmpeg exited before the stream appeared (last try: %v)", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func describe(u *base.URL) error {
	c := gortsplib.Client{ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	if err := c.Start(u.Scheme, u.Host); err != nil {
		return err
	}
	defer c.Close()
	desc, _, err := c.Describe(u)
	if err != nil {
		return err
	}
	if len(desc.Medias) == 0 {
		return fmt.Errorf("stream has no medias")
	}
	return nil
}

// play reads the stream at u over TCP until its first RTP packet arrives.
func play(ctx context.Context, u *base.URL) error {
	tcp := gortsplib.TransportTCP
	c := gortsplib.Client{Transport: &tcp, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	if err := c.Start(u.Scheme, u.Host); err != nil {
		return err
	}
	defer c.Close()
	desc, _, err := c.Describe(u)
	if err != nil {
		return err
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		return err
	}
	got := make(chan struct{})
	var once sync.Once
	c.OnPacketRTPAny(func(*description.Media, format.Format, *rtp.Packet) { once.Do(func() { close(got) }) })
	if _, err := c.Play(nil); err != nil {
		return err
	}
	select {
	case <-got:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("no RTP packet: %w", ctx.Err())
	case <-time.After(3 * time.Second):
		return fmt.Errorf("no RTP packet within 3s")
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers,
// keeping at most the last 64 KiB.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 64<<10 {
		rest := b.b.Bytes()[b.b.Len()-32<<10:]
		b.b = *bytes.NewBuffer(append([]byte(nil), rest...))
	}
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
