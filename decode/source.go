package decode

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"gocv.io/x/gocv"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/media"
	"github.com/patchline/patchline/internal/synth"
)

// Source is an opened video source. It is used by one goroutine at a time.
type Source interface {
	// Grab decodes the next frame and returns its presentation time. It
	// returns io.EOF at the end of a file that does not loop.
	Grab() (pts time.Duration, err error)
	// Retrieve writes the frame the last Grab decoded into dst as 8-bit,
	// 3-channel BGR. A camera retrieves only the frames it keeps: the
	// conversion is a large part of a frame's cost (decode/capture.go).
	Retrieve(dst *gocv.Mat) error
	// Live reports whether frames arrive in real time by themselves (a
	// network stream). Other sources are paced by their pts by the reader.
	Live() bool
	// Close releases the source.
	Close() error
}

// SourceKind names what a camera URL points at.
type SourceKind string

// Source kinds.
const (
	KindRTSP      SourceKind = "rtsp"
	KindFile      SourceKind = "file"
	KindSynthetic SourceKind = "synthetic"
	KindWHIP      SourceKind = "whip"
)

// SourceOptions tune how a source is opened.
type SourceOptions struct {
	// Loop reopens a file at its end instead of returning io.EOF.
	Loop bool
	// StallTimeout bounds how long a network read may wait for data.
	StallTimeout time.Duration
	// FileRoots, if any, are the only directories files may be read from.
	FileRoots []string
	// Camera names the lines FFmpeg logs while reading this source.
	Camera string
	// Ctx, if set, ends what the open waits for that it can end: the probe
	// of an RTSP server (the camera stopping). OpenCV's own open cannot be.
	Ctx context.Context
}

// ParseSourceURL classifies a camera URL: rtsp:// and rtsps:// are network
// streams, file:///abs/path and plain paths are files, synthetic://?... is the
// built-in synthetic camera. For files it returns the local path; any other
// scheme is an error naming it. Errors never include credentials.
func ParseSourceURL(raw string) (SourceKind, string, error) {
	if raw == "" {
		return "", "", errors.New("decode: camera url is empty")
	}
	u, err := url.Parse(raw)
	if err != nil && !strings.Contains(raw, "://") {
		return KindFile, raw, nil // a path, which need not parse as a URL ("100%.mp4")
	}
	if err != nil {
		return "", "", fmt.Errorf("decode: camera url %s does not parse", media.RedactURL(raw))
	}
	switch strings.ToLower(u.Scheme) {
	case "rtsp", "rtsps":
		if u.Host == "" {
			return "", "", fmt.Errorf("decode: camera url %s has no host", media.RedactURL(raw))
		}
		// URL schemes are case-insensitive, FFmpeg's protocol names not.
		return KindRTSP, strings.ToLower(u.Scheme) + raw[len(u.Scheme):], nil
	case "synthetic":
		if _, err := synth.ParseURL(raw); err != nil {
			return "", "", fmt.Errorf("decode: camera url %s: %w", media.RedactURL(raw), err)
		}
		return KindSynthetic, raw, nil
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return "", "", fmt.Errorf("decode: file url %s names host %q; use file:///absolute/path", media.RedactURL(raw), u.Host)
		}
		if u.Path == "" || !filepath.IsAbs(u.Path) {
			return "", "", fmt.Errorf("decode: file url %s needs an absolute path (file:///abs/path)", media.RedactURL(raw))
		}
		return KindFile, u.Path, nil
	case "whip":
		if u.Host != "" || u.Path != "" || u.RawQuery != "" {
			return "", "", fmt.Errorf("decode: whip url %s: want just whip:// (the camera id names the WHIP resource)", media.RedactURL(raw))
		}
		return KindWHIP, raw, nil
	case "":
		return KindFile, raw, nil
	default:
		return "", "", fmt.Errorf("decode: unsupported camera url scheme %q in %s (use rtsp://, file:// or a path, synthetic:// or whip://)", u.Scheme, media.RedactURL(raw))
	}
}

// OpenSource opens the source of a camera URL. RTSP streams and files are
// decoded by OpenCV's FFmpeg backend; RTSP uses TCP transport and a socket
// timeout of o.StallTimeout so that a stalled stream's read fails instead of
// blocking.
func OpenSource(raw string, o SourceOptions) (Source, error) {
	kind, p, err := ParseSourceURL(raw)
	if err != nil {
		return nil, err
	}
	switch kind {
	case KindSynthetic:
		return openSynthetic(raw)
	case KindFile:
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("decode: file source: %w", err)
		}
		if !fi.Mode().IsRegular() {
			// A FIFO or a device would block FFmpeg's read for ever, and
			// with it every open that waits for its turn (withCaptureOptions).
			return nil, fmt.Errorf("decode: file source %s is not a regular file (%s)", p, fi.Mode().Type())
		}
		open, err := underRoots(p, o.FileRoots)
		if err != nil {
			return nil, err
		}
		return openCV(open, media.RedactURL(raw), KindFile, o)
	case KindWHIP:
		return nil, errors.New("decode: a whip:// camera is opened by its camera worker, which receives its RTP from NATS")
	default:
		return openCV(p, media.RedactURL(raw), KindRTSP, o)
	}
}

// underRoots checks that the file p, every symbolic link resolved, lies
// in one of roots (any, when there are none), and returns the path to open:
// the resolved one with roots, so that what is opened is what was checked.
func underRoots(p string, roots []string) (string, error) {
	if len(roots) == 0 {
		return p, nil
	}
	real, err := resolveFile(p)
	if err != nil {
		return "", fmt.Errorf("decode: file source: %w", err)
	}
	if !inRoots(real, roots) {
		return "", errOutsideRoots(p, roots)
	}
	return real, nil
}

func errOutsideRoots(p string, roots []string) error {
	return fmt.Errorf("decode: file source %s is not under decode.file_roots %v", p, roots)
}

// resolveFile returns p with every symbolic link resolved, as the kernel
// resolves it (a ".." after a link leaves the link's target, so p is not
// cleaned first), made absolute.
func resolveFile(p string) (string, error) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	return filepath.Abs(real)
}

// inRoots reports whether the resolved path real lies in one of roots,
// themselves resolved.
func inRoots(real string, roots []string) bool {
	for _, root := range roots {
		if r, err := resolveFile(root); err == nil && within(real, r) {
			return true
		}
	}
	return false
}

// within reports whether path lies in dir (both absolute and clean).
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// ffmpegOptionsEnv is read by OpenCV's FFmpeg backend at every open.
const ffmpegOptionsEnv = "OPENCV_FFMPEG_CAPTURE_OPTIONS"

// ffmpegEnvBase is the OPENCV_FFMPEG_CAPTURE_OPTIONS value the process
// started with, which every open's options begin with.
var ffmpegEnvBase = startEnv()

// startEnv reads the variable, and makes it exist (empty) if it does not:
// each open then sets it by replacing a value. C setenv adding a variable
// grows the environment array and frees the old one, under any getenv
// running then in another thread (FFmpeg's, ONNX Runtime's, glibc's own);
// replacing a value swaps one pointer and frees nothing. Package variables
// are set before main starts any stage, so before any of those threads.
// An empty value is no option at all to OpenCV: files open as before, and
// RTSP and WHIP opens always set theirs.
func startEnv() string {
	v, ok := os.LookupEnv(ffmpegOptionsEnv)
	if !ok {
		_ = os.Setenv(ffmpegOptionsEnv, "")
	}
	return v
}

// CaptureOptions is the OPENCV_FFMPEG_CAPTURE_OPTIONS value used to open a
// source of the given kind: any options the process was started with, then
// for RTSP: TCP transport; fflags=nobuffer and a 1 s analyzeduration, so the
// packets FFmpeg probes at open are dropped instead of being replayed as a
// burst of stale frames; and a socket I/O timeout (FFmpeg 5 rtsp "timeout",
// in µs) of stall, so a stalled read fails instead of blocking.
func CaptureOptions(kind SourceKind, stall time.Duration) string {
	var opts []string
	if ffmpegEnvBase != "" {
		opts = append(opts, ffmpegEnvBase)
	}
	switch kind {
	case KindRTSP:
		opts = append(opts, "rtsp_transport;tcp", "fflags;nobuffer", "analyzeduration;1000000")
		if stall > 0 {
			opts = append(opts, "timeout;"+strconv.FormatInt(stall.Microseconds(), 10))
		}
	case KindWHIP:
		// An SDP file describing RTP on a loopback UDP port (decode/whip.go).
		opts = append(opts, "protocol_whitelist;file,rtp,udp", "fflags;nobuffer", "analyzeduration;2000000")
	}
	return strings.Join(opts, "|")
}

// openTurn is held by the one capture open under way; openWaiting counts
// the opens waiting for it.
var (
	openTurn    = make(chan struct{}, 1)
	openWaiting atomic.Int32
)

// withCaptureOptions runs open with OPENCV_FFMPEG_CAPTURE_OPTIONS set to v
// when its turn comes. OpenCV opens one capture at a time, process-wide,
// holding its lock in C (and reads the variable then); waiting here
// instead, opens take turns in the order they came (a file camera is not
// starved by RTSP opens to a dead host, each up to the stall timeout), and
// ctx ends the wait: a stop waits for the one open under way, not for all
// those queued behind it.
func withCaptureOptions(ctx context.Context, v string, open func()) error {
	openWaiting.Add(1)
	select {
	case openTurn <- struct{}{}:
		openWaiting.Add(-1)
	case <-ctx.Done():
		openWaiting.Add(-1)
		return context.Cause(ctx)
	}
	defer func() { <-openTurn }()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if os.Getenv(ffmpegOptionsEnv) != v {
		_ = os.Setenv(ffmpegOptionsEnv, v)
	}
	open()
	return nil
}

// cvSource reads a stream or file with OpenCV's FFmpeg backend.
type cvSource struct {
	uri      string // what OpenCV opens (never logged)
	redacted string
	kind     SourceKind // KindRTSP, KindFile or KindWHIP
	live     bool
	o        SourceOptions
	vc       *capture

	offset   time.Duration // added to pts: the length of earlier loops, and the timeline's mends
	lastPTS  time.Duration
	lastRaw  time.Duration // the last frame's own timestamp, before offset
	lastStep time.Duration // the last interval between two frames' own timestamps
	lastAt   time.Time     // when the last frame was read
	fell     bool          // the last frame's own timestamp fell far behind the one before: the next frame tells why
	frameDur time.Duration
	read     int // frames read since the last (re)open
}

func openCV(uri, redacted string, kind SourceKind, o SourceOptions) (*cvSource, error) {
	s := &cvSource{uri: uri, redacted: redacted, kind: kind, live: kind != KindFile, o: o}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *cvSource) open() error {
	if s.kind == KindRTSP {
		if err := probeRTSP(cmp.Or(s.o.Ctx, context.Background()), s.uri, s.o.StallTimeout); err != nil {
			return fmt.Errorf("decode: open %s failed: %w", s.redacted, err)
		}
	}
	var (
		vc  *capture
		err error
	)
	if werr := withCaptureOptions(cmp.Or(s.o.Ctx, context.Background()), CaptureOptions(s.kind, s.o.StallTimeout), func() {
		var timeout time.Duration // files: OpenCV's own
		if s.live {
			timeout = s.o.StallTimeout
		}
		vc, err = openCapture(s.uri, s.o.Camera, timeout)
	}); werr != nil {
		return fmt.Errorf("decode: open %s: %w", s.redacted, werr)
	}
	switch {
	case errors.Is(err, errCaptureOpen): // FFmpeg did not say why
		if why := outOfFiles(); why != "" {
			return fmt.Errorf("decode: open %s with OpenCV/FFmpeg failed: %s", s.redacted, why)
		}
		return fmt.Errorf("decode: open %s with OpenCV/FFmpeg failed (unreachable, unauthorized, not found, or no video stream in it)", s.redacted)
	case err != nil:
		return fmt.Errorf("decode: open %s with OpenCV/FFmpeg failed: %w", s.redacted, err)
	}
	s.vc = vc
	s.read = 0
	s.frameDur = 0
	if fps := vc.get(gocv.VideoCaptureFPS); fps > 0 && fps < 1000 {
		s.frameDur = time.Duration(float64(time.Second) / fps)
	}
	return nil
}

// outOfFiles says, when it is so, that this process holds (nearly) as
// many file descriptors as its limit allows, or that the system has none
// left: FFmpeg's open then fails without saying why. "" otherwise.
func outOfFiles() string {
	const atLimit = "the process is at its open-files limit (raise ulimit -n / LimitNOFILE)"
	fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, syscall.EMFILE):
		return atLimit
	case errors.Is(err, syscall.ENFILE):
		return "the system is out of file descriptors (fs.file-max)"
	case err == nil:
		_ = syscall.Close(fd)
	}
	limit, ok := bus.OpenFilesLimit()
	if !ok {
		return ""
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil && uint64(len(fds))+fdMargin >= limit {
		return atLimit
	}
	return ""
}

// fdMargin: descriptors an open may need beyond those held (the file,
// FFmpeg's, a thread's).
const fdMargin = 4

func (s *cvSource) Live() bool { return s.live }

func (s *cvSource) Grab() (time.Duration, error) {
	for attempt := 0; ; attempt++ {
		if s.vc.grab() {
			s.read++
			return s.mend(time.Duration(s.vc.get(gocv.VideoCapturePosMsec)*float64(time.Millisecond)), time.Now()), nil
		}
		if s.live {
			return 0, fmt.Errorf("decode: read from %s failed (stream ended, stalled or broken)", s.redacted)
		}
		if !s.o.Loop {
			return 0, io.EOF
		}
		if attempt > 0 || s.read == 0 {
			return 0, fmt.Errorf("decode: file %s has no readable frames to loop", s.redacted)
		}
		// Loop: reopen and continue the timeline after the last frame.
		s.offset = s.lastPTS + s.step(time.Now())
		s.vc.close()
		s.vc = nil
		if err := s.open(); err != nil {
			return 0, err
		}
	}
}

// mend returns the pts of the frame just read, whose own timestamp is raw,
// and keeps what the next frame's needs; pts always increases within one
// open:
//   - a timestamp not after the last, or missing, or slightly behind, puts
//     the frame one step after the last (as if it had its timestamp);
//   - one far behind does too, and the next frame decides: back on the old
//     timeline, it goes on as it was (one step late if it has to); close
//     after the fallen one, it is a new timeline, which goes on from that
//     frame by the source's own differences, rather than each frame being
//     faked a step after the last until the source's clock catches up.
func (s *cvSource) mend(raw time.Duration, now time.Time) time.Duration {
	pts := s.mended(raw, now)
	s.lastPTS, s.lastRaw, s.lastAt = pts, raw, now
	return pts
}

func (s *cvSource) mended(raw time.Duration, now time.Time) time.Duration {
	pts := raw + s.offset
	fell := s.fell
	s.fell = false
	switch {
	case s.read == 1:
		return pts
	case pts > s.lastPTS:
		// A leap (over a second and ten intervals) is no interval of the
		// source's: as a step it would put an hour between every frame
		// faked after it.
		if d := pts - s.lastPTS; !fell && d <= max(time.Second, 10*s.lastStep) {
			s.lastStep = d
		}
		return pts // in order, or back on the old timeline after one bad timestamp
	}
	step := s.step(now)
	far := max(time.Second, 10*step)
	switch {
	case raw > s.lastRaw && raw-s.lastRaw <= far:
		// On from the last frame, itself mended, by the source's own
		// interval (after a fall: a new timeline), rather than a made-up
		// step each until its clock passes the pts.
		s.offset = s.lastPTS - s.lastRaw
		return raw + s.offset
	case s.lastRaw-raw > far:
		s.fell = true
	}
	return s.lastPTS + step // missing, repeated, or fallen far behind
}

// step is the interval to put between the last frame and one whose
// timestamp is not after it: the container's frame duration, or else the
// last interval the source's timestamps had, or else (neither known) the
// time a live stream took to deliver it, or 25 fps for a file.
func (s *cvSource) step(now time.Time) time.Duration {
	switch {
	case s.frameDur > 0:
		return s.frameDur
	case s.lastStep > 0:
		return s.lastStep
	case s.live:
		return max(now.Sub(s.lastAt), time.Millisecond)
	default:
		return 40 * time.Millisecond
	}
}

// FrameDuration is the interval between frames the container states (its
// frame rate), 0 when it does not.
func (s *cvSource) FrameDuration() time.Duration { return s.frameDur }

func (s *cvSource) Retrieve(dst *gocv.Mat) error {
	if s.vc == nil {
		return fmt.Errorf("decode: %s is not open", s.redacted)
	}
	err := s.vc.retrieve(dst)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errSizeChanged) && s.live:
		// Reopened, the stream is converted at its new size.
		return fmt.Errorf("decode: %s: frame %d: %w; reopening", s.redacted, s.read, err)
	case errors.Is(err, errSizeChanged):
		// A file would reopen at its first size again: it ends here.
		return fmt.Errorf("decode: %s: frame %d: %w; the file ends there (%w)", s.redacted, s.read, err, io.EOF)
	}
	return fmt.Errorf("decode: frame %d of %s: %w", s.read, s.redacted, err)
}

func (s *cvSource) Close() error {
	if s.vc == nil {
		return nil
	}
	s.vc.close()
	s.vc = nil
	return nil
}

// synthSource renders the synthetic camera; frame i is at pts i/fps. A
// grabbed frame is only rendered when it is retrieved.
type synthSource struct {
	scene   *synth.Scene
	rgb     []byte
	classes []byte // the class map the scene draws alongside, reused per frame
	i       int    // the next frame to grab
}

func openSynthetic(raw string) (*synthSource, error) {
	sc, err := synth.Open(raw)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	p := sc.Params()
	return &synthSource{scene: sc, rgb: make([]byte, sc.FrameSize()), classes: make([]byte, p.Width*p.Height)}, nil
}

func (s *synthSource) Live() bool { return false }

func (s *synthSource) Grab() (time.Duration, error) {
	pts := time.Duration(float64(s.i) / s.scene.Params().FPS * float64(time.Second))
	s.i++
	return pts, nil
}

func (s *synthSource) Retrieve(dst *gocv.Mat) error {
	p, i := s.scene.Params(), s.i-1
	if i < 0 {
		return errors.New("decode: synthetic: retrieve before grab")
	}
	if _, err := s.scene.RenderClasses(s.rgb, s.classes, i); err != nil {
		return fmt.Errorf("decode: synthetic frame %d: %w", i, err)
	}
	if err := rgbToBGR(dst, s.rgb, p.Width, p.Height); err != nil {
		return fmt.Errorf("decode: synthetic frame %d: %w", i, err)
	}
	return nil
}

func (s *synthSource) Close() error { return nil }
