package decode

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/rtsptest"
)

// TestFileSourceMustBeARegularFile: a FIFO or a device as a file camera is
// refused at once, naming what it is: FFmpeg's read of it would block for
// ever, and every open waiting for its turn with it.
func TestFileSourceMustBeARegularFile(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, "file://" + fifo, "/dev/zero", t.TempDir()} {
		done := make(chan error, 1)
		go func() {
			src, err := OpenSource(p, SourceOptions{})
			if err == nil {
				_ = src.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("%s: %v, want not a regular file", p, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the open blocks", p)
		}
	}
}

// TestFileRoots: with decode.file_roots a file camera must lie in one of
// them, symbolic links resolved as the kernel resolves them: a link inside
// pointing out is refused, a path through a link to a root is allowed,
// and a ".." after a link leaves the link's target, not the root.
func TestFileRoots(t *testing.T) {
	root, outside, elsewhere := t.TempDir(), t.TempDir(), t.TempDir()
	in := filepath.Join(root, "a.mp4")
	out := filepath.Join(outside, "b.mp4")
	for _, f := range []string{in, out, filepath.Join(root, "b.mp4")} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	symlink := func(target, name string) string {
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
		return name
	}
	link := symlink(out, filepath.Join(root, "link.mp4"))
	alias := symlink(root, filepath.Join(elsewhere, "alias"))                         // another name for the root
	archive := symlink(filepath.Join(outside, "sub"), filepath.Join(root, "archive")) // a directory outside
	if err := os.Mkdir(filepath.Join(outside, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	roots := []string{root}
	for p, ok := range map[string]bool{
		in:   true,
		out:  false,
		link: false,
		filepath.Join(root, "..", filepath.Base(outside), "b.mp4"): false,
		filepath.Join(alias, "a.mp4"):                              true,
		archive + "/../b.mp4":                                      false, // outside/b.mp4 to the kernel, root/b.mp4 once cleaned
	} {
		open, err := underRoots(p, roots)
		if (err == nil) != ok {
			t.Errorf("underRoots(%s) = %q, %v; want allowed %v", p, open, err, ok)
		}
		if ok {
			if b, err := os.ReadFile(open); err != nil || string(b) != "x" {
				t.Errorf("underRoots(%s) = %q, which reads %q, %v", p, open, b, err)
			}
		}
		if got, err := underRoots(p, nil); err != nil || got != p {
			t.Errorf("without roots, %s: %q, %v", p, got, err)
		}
		// A camera whose file is outside fails at once (state failed,
		// not retried).
		_, err = NewCamera(config.Camera{ID: "a", URL: p}, Options{Decode: config.Decode{FileRoots: roots}})
		if refused := err != nil && strings.Contains(err.Error(), "not under decode.file_roots"); refused == ok {
			t.Errorf("NewCamera(%s) = %v, want allowed %v", p, err, ok)
		}
	}
	_, err := OpenSource("file://"+out, SourceOptions{FileRoots: roots})
	if err == nil || !strings.Contains(err.Error(), "not under decode.file_roots") {
		t.Errorf("OpenSource outside the roots: %v", err)
	}
	// A file not there yet is left to the opens, which retry.
	if _, err := NewCamera(config.Camera{ID: "a", URL: filepath.Join(outside, "later.mp4")}, Options{Decode: config.Decode{FileRoots: roots}}); err != nil && strings.Contains(err.Error(), "file_roots") {
		t.Errorf("NewCamera of a missing file: %v", err)
	}
}

// TestParseSourceURLSchemeCase: URL schemes are case-insensitive but
// FFmpeg's protocol names are not: an RTSP:// camera is opened as rtsp://.
func TestParseSourceURLSchemeCase(t *testing.T) {
	for raw, want := range map[string]string{
		"RTSP://u:p@cam:554/Stream1": "rtsp://u:p@cam:554/Stream1",
		"Rtsps://cam/s":              "rtsps://cam/s",
		"rtsp://cam/s":               "rtsp://cam/s",
	} {
		kind, got, err := ParseSourceURL(raw)
		if err != nil || kind != KindRTSP || got != want {
			t.Errorf("ParseSourceURL(%q) = %s %q %v, want rtsp %q", raw, kind, got, err, want)
		}
	}
}

// TestPlainPathsAreFiles: a plain path is a file whether or not it parses
// as a URL ("100%.mp4" does not), and shown as it is.
func TestPlainPathsAreFiles(t *testing.T) {
	for _, raw := range []string{"/videos/100%.mp4", "clips/50% off.mp4", "/v/a.mp4"} {
		kind, got, err := ParseSourceURL(raw)
		if err != nil || kind != KindFile || got != raw {
			t.Errorf("ParseSourceURL(%q) = %s %q %v, want file %q", raw, kind, got, err, raw)
		}
	}
	dir := t.TempDir()
	clip := rtsptest.MakeClip(t, dir, rtsptest.ClipOptions{Seconds: 1, FPS: 10, Width: 160, Height: 120})
	odd := filepath.Join(dir, "100%.mp4")
	if err := os.Rename(clip, odd); err != nil {
		t.Fatal(err)
	}
	src, err := OpenSource(odd, SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.Grab(); err != nil {
		t.Errorf("first frame of %s: %v", odd, err)
	}
}

// TestDirectoryCameraFailsAtOnce: a directory will not turn into a video,
// so a camera on one is refused when made (the stage reports it failed),
// not retried for ever; a file that is missing may still appear.
func TestDirectoryCameraFailsAtOnce(t *testing.T) {
	dir := t.TempDir()
	nc := natstest.Connect(t, natstest.Start(t))
	_, err := NewCamera(config.Camera{ID: "dir", URL: dir}, Options{NC: nc, Logger: natstest.Discard()})
	if err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("camera on a directory: %v, want refused as a directory", err)
	}
	cam, err := NewCamera(config.Camera{ID: "later", URL: filepath.Join(dir, "later.mp4")}, Options{NC: nc, Logger: natstest.Discard()})
	if err != nil || cam == nil {
		t.Errorf("camera on a file not there yet: %v, want made (and retried)", err)
	}
}

// TestOpenAtTheFileLimit: an open that fails because the process is out of
// file descriptors says so, where FFmpeg gives no reason and the message
// listed network causes. (The limit is lowered for this test alone: no
// test runs beside it.)
func TestOpenAtTheFileLimit(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "notes.mp4")
	if err := os.WriteFile(clip, []byte("not a video at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// The limit is on descriptor numbers: the lowest free one, which the
	// next open would take, is where it bites.
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	next := f.Fd()
	_ = f.Close()
	low := lim
	low.Cur = uint64(next)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	_, err = openCV(clip, clip, KindFile, SourceOptions{})
	// A few left: too few for an open, counted.
	low.Cur = uint64(next) + 2
	if serr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); serr != nil {
		t.Error(serr)
	}
	nearly := outOfFiles()
	if rerr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); rerr != nil {
		t.Fatal(rerr)
	}
	if !strings.Contains(nearly, "open-files limit") {
		t.Errorf("with 2 descriptors left: outOfFiles %q, want the limit named", nearly)
	}
	if err == nil || !strings.Contains(err.Error(), "open-files limit") {
		t.Errorf("open with no descriptor left: %v, want it to name the open-files limit", err)
	}
	if why := outOfFiles(); why != "" {
		t.Errorf("outOfFiles with the limit restored: %q", why)
	}
}

// TestStepWithoutTimestamps: the interval put after a frame whose
// timestamp is not after the last one's: the container's frame duration,
// else the source's last interval, else (a live stream) how long the frame
// took to come, else 25 fps.
func TestStepWithoutTimestamps(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		s    cvSource
		want time.Duration
	}{
		{cvSource{frameDur: 40 * time.Millisecond, lastStep: 10 * time.Millisecond}, 40 * time.Millisecond},
		{cvSource{lastStep: 33 * time.Millisecond, live: true, lastAt: now.Add(-time.Second)}, 33 * time.Millisecond},
		{cvSource{live: true, lastAt: now.Add(-70 * time.Millisecond)}, 70 * time.Millisecond},
		{cvSource{live: true, lastAt: now}, time.Millisecond},
		{cvSource{}, 40 * time.Millisecond},
	} {
		if got := c.s.step(now); got != c.want {
			t.Errorf("step of %+v = %v, want %v", c.s, got, c.want)
		}
	}
}

// TestMendTimeline: the pts a source gives frames whose own timestamps
// repeat, go missing, glitch back for one frame, or start again.
func TestMendTimeline(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	for _, c := range []struct {
		name     string
		raw, pts []time.Duration
	}{
		{"in order", ms(0, 100, 200), ms(0, 100, 200)},
		{"one repeated", ms(0, 100, 200, 300, 400, 400, 600, 700), ms(0, 100, 200, 300, 400, 500, 600, 700)},
		{"one missing (read as 0) an hour in", ms(3600000, 3600100, 0, 3600300, 3600400), ms(3600000, 3600100, 3600200, 3600300, 3600400)},
		{"the last two missing (a B-frame file's end)", ms(4800, 4900, 0, 0), ms(4800, 4900, 5000, 5100)},
		{"one frame back to 0, in a slot of its own", ms(4800, 4900, 0, 5000, 5100), ms(4800, 4900, 5000, 5100, 5200)},
		{"a new timeline (joined recordings, at 30 fps)", ms(800, 900, -30000, -29967, -29933), ms(800, 900, 1000, 1033, 1067)},
		{"slightly back: a step after the last, then on by its own intervals", ms(1000, 1100, 1050, 1150, 1250), ms(1000, 1100, 1200, 1300, 1400)},
		// No frame rate stated: the step is the source's last interval,
		// never a leap's (else an hour between every frame after it).
		{"no rate: one frame an hour ahead", ms(0, 40, 80, 120, 3600160, 200, 240, 280), ms(0, 40, 80, 120, 3600160, 3600200, 3600240, 3600280)},
		{"no rate: repeated", ms(0, 40, 80, 80, 160), ms(0, 40, 80, 120, 160)},
		{"no rate: a leap at the first interval", ms(0, 3600000, 40, 80, 120), ms(0, 3600000, 3600040, 3600080, 3600120)},
		{"a new timeline whose first timestamp repeats", ms(800, 900, -30000, -30000, -29967, -29933), ms(800, 900, 1000, 1100, 1133, 1167)},
	} {
		s := &cvSource{frameDur: 100 * time.Millisecond}
		if strings.HasPrefix(c.name, "no rate") {
			s.frameDur = 0
		}
		now := time.Now()
		var got []time.Duration
		for _, raw := range c.raw {
			s.read++
			got = append(got, s.mend(raw, now))
		}
		if !slices.Equal(got, c.pts) {
			t.Errorf("%s: raw %v gave pts %v, want %v", c.name, c.raw, got, c.pts)
		}
	}
}
