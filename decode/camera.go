// Package decode is patchline's decode stage: one worker per camera opens
// its source (RTSP, file or synthetic), samples it to the camera's target
// rate, resizes each kept frame to the model input, tokenizes it into
// patches and publishes it on NATS in the frame wire format.
package decode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"gocv.io/x/gocv"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/media"
	"github.com/patchline/patchline/internal/queue"
	"github.com/patchline/patchline/internal/telemetry"
)

// Stage label of every metric this package reports.
const stageName = "decode"

// Camera states reported by Status.
const (
	StateConnecting = "connecting"
	StateStreaming  = "streaming"
	StateRetrying   = "retrying"
	StateStalled    = "stalled"
	StateEnded      = "ended"
	StateStopped    = "stopped"
	StateOffline    = "offline" // a whip:// camera with no publisher
	StateFailed     = "failed"  // its spec cannot start (not retried): see last_error
)

// states are all of them, for patchline_camera_state.
var states = []string{StateConnecting, StateStreaming, StateRetrying, StateStalled, StateEnded, StateStopped, StateOffline, StateFailed}

// Options are what every camera worker shares.
type Options struct {
	NC *nats.Conn
	// Control, when set, carries the stage's control traffic (the camera
	// registry, leases, seq blocks, statuses, watch pings) apart from the
	// frames on NC: under load the server stalls a connection that
	// publishes frames faster than it routes them, and a lease renewal
	// waiting behind frames lets the lease expire. Nil: NC.
	Control *nats.Conn
	Decode  config.Decode
	Logger  *slog.Logger
	// NoPacing processes file and synthetic sources as fast as decode
	// allows instead of in real time (batch jobs, benchmarks).
	NoPacing bool
	// Replicas of the cameras bucket if decode is first to create it
	// (nats.replicas); 0 is JetStream's default, 1.
	Replicas int
	// Seqs keeps each camera's seq unique across restarts; nil starts
	// every camera at seq 1 each time (benchmarks, tests).
	Seqs *SeqStore
}

// Status is a camera's state, as served by the API and published on
// patchline.status.<camera>. URL never carries credentials.
type Status struct {
	ID            string    `json:"id"`
	URL           string    `json:"url"`
	State         string    `json:"state"`
	LastError     string    `json:"last_error,omitempty"`
	Since         time.Time `json:"since"`
	FPS           float64   `json:"fps"`
	FramesOut     uint64    `json:"frames_out"`
	FramesDropped uint64    `json:"frames_dropped"`
	Reconnects    uint64    `json:"reconnects"`
	Width         int       `json:"width"`
	Height        int       `json:"height"`
	// RTPPacketsMissed (whip:// cameras): packets the publisher's RTP
	// sequence skipped on the way to the decoder, lost (a full socket
	// buffer, the network) or late; what FFmpeg then logs as corrupt
	// macroblocks.
	RTPPacketsMissed uint64 `json:"rtp_packets_missed,omitempty"`
}

// Camera is the worker of one camera: Run reads, samples, tokenizes and
// publishes its frames until its context ends.
type Camera struct {
	spec     config.Camera
	cfg      config.Decode
	fps      float64
	redacted string
	nc       *nats.Conn
	noPacing bool
	log      *slog.Logger
	subject  string
	pool     sync.Pool // *[]byte of Width·Height·3
	q        *queue.Ring[*item]

	// open opens the source; a field so that a test can observe it.
	open func(context.Context) (Source, error)
	// relay feeds a whip:// camera from NATS; nil for other sources.
	relay   *rtpRelay
	preview *previewer

	mu        sync.Mutex
	st        Status
	lastFrame time.Time     // when the last frame was read, or is due when paced
	outTimes  [64]time.Time // publish times, ring, for the fps estimate
	outN      int
	seq       uint64 // touched by the worker only
	natsDown  bool   // frames are being dropped for want of NATS (worker only)
	pubFails  int    // publishes failed in a row (worker only)

	seqs      *SeqStore     // nil: no reservations
	seqEnd    atomic.Uint64 // end of the reserved seq block
	reserving atomic.Bool   // a reservation of the next block is under way
	seqOver   bool          // seq passed its block (warned once); worker only
}

// rawFrames is how many source images a camera rotates between its reader
// and its worker: one being read, one being preprocessed, one waiting. The
// reader waits for a free one only while the worker is two frames behind,
// which its bounded work (no I/O but a non-blocking publish) ends quickly.
const rawFrames = 3

// rawFrame is a decoded source image on its way from the reader to the
// worker, which preprocesses, tokenizes and queues it (keep) and publishes
// its preview (watched).
type rawFrame struct {
	img           gocv.Mat
	pts           time.Duration
	readDur       time.Duration // grab + retrieve, pacing excluded
	readEnd       time.Time     // the capture time
	keep, watched bool
}

// item is one frame between the reader and the publisher.
type item struct {
	f        *frame.Frame
	buf      *[]byte
	decStart time.Time // start of the read (pacing excluded)
	decEnd   time.Time
	tokStart time.Time
	tokEnd   time.Time
}

// NewCamera validates a camera and returns its worker. An unknown URL
// scheme, a bad synthetic URL or an invalid decode configuration is an error.
func NewCamera(spec config.Camera, opts Options) (*Camera, error) {
	if err := frame.ValidCameraID(spec.ID); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	kind, path, err := ParseSourceURL(spec.URL)
	if err != nil {
		return nil, fmt.Errorf("camera %s: %w", spec.ID, err) // ParseSourceURL's errors begin "decode: "
	}
	if roots := opts.Decode.FileRoots; kind == KindFile && len(roots) > 0 {
		// A file that is there, and outside, fails at once; a missing one
		// is retried by the opens (it may appear), which check again.
		if real, err := resolveFile(path); err == nil && !inRoots(real, roots) {
			return nil, errOutsideRoots(path, roots)
		}
	}
	if kind == KindFile {
		// A directory will not turn into a video: fail at once (a missing
		// file is retried, it may appear).
		if fi, err := os.Stat(path); err == nil && fi.IsDir() {
			return nil, fmt.Errorf("decode: camera %s: %s is a directory, not a video file", spec.ID, path)
		}
	}
	if opts.NC == nil {
		return nil, errors.New("decode: Options.NC is nil")
	}
	cfg := withDefaults(opts.Decode)
	if cfg.Width%cfg.PatchSize != 0 || cfg.Height%cfg.PatchSize != 0 {
		return nil, fmt.Errorf("decode: input %dx%d is not a multiple of patch size %d", cfg.Width, cfg.Height, cfg.PatchSize)
	}
	if cfg.Width > frame.MaxSide || cfg.Height > frame.MaxSide {
		return nil, fmt.Errorf("decode: input %dx%d exceeds %d", cfg.Width, cfg.Height, frame.MaxSide)
	}
	if cfg.Resize != frame.ResizeStretch && cfg.Resize != frame.ResizeLetterbox {
		return nil, fmt.Errorf("decode: resize %q is not %q or %q", cfg.Resize, frame.ResizeStretch, frame.ResizeLetterbox)
	}
	fps := spec.FPS
	if fps <= 0 {
		fps = cfg.DefaultFPS
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Camera{
		spec: spec, cfg: cfg, fps: fps, redacted: media.RedactURL(spec.URL), nc: opts.NC, noPacing: opts.NoPacing,
		subject: bus.FrameSubject(spec.ID), seqs: opts.Seqs,
		q: queue.NewRing[*item](cfg.QueueSize),
	}
	c.log = log.With("camera", spec.ID, "url", c.redacted)
	size := cfg.Width * cfg.Height * 3
	c.pool.New = func() any { b := make([]byte, size); return &b }
	c.open = func(ctx context.Context) (Source, error) {
		return OpenSource(spec.URL, SourceOptions{Loop: spec.Loop, StallTimeout: cfg.StallTimeout, FileRoots: cfg.FileRoots, Camera: spec.ID, Ctx: ctx})
	}
	if kind == KindWHIP {
		c.relay = newRelay(opts.NC, spec.ID, cfg.StallTimeout, c.log)
		c.open = func(ctx context.Context) (Source, error) {
			return c.relay.open(c.redacted, SourceOptions{StallTimeout: cfg.StallTimeout, Camera: spec.ID, Ctx: ctx})
		}
	}
	c.preview = newPreviewer(opts.NC, spec.ID, cfg.PreviewFPS, cfg.PreviewWidth)
	c.st = Status{ID: spec.ID, URL: c.redacted, State: StateConnecting, Since: time.Now()}
	return c, nil
}

// withDefaults fills the zero fields of d from config.Default(), the one
// place defaults live, so a Camera built outside config.Load (tests,
// benchmarks) behaves like the shipped configuration.
func withDefaults(d config.Decode) config.Decode {
	def := config.Default().Decode
	if d.Width <= 0 {
		d.Width = def.Width
	}
	if d.Height <= 0 {
		d.Height = def.Height
	}
	if d.PatchSize <= 0 {
		d.PatchSize = def.PatchSize
	}
	if d.DefaultFPS <= 0 {
		d.DefaultFPS = def.DefaultFPS
	}
	if d.QueueSize <= 0 {
		d.QueueSize = def.QueueSize
	}
	if d.StallTimeout <= 0 {
		d.StallTimeout = def.StallTimeout
	}
	if d.RetryMin <= 0 {
		d.RetryMin = def.RetryMin
	}
	if d.Resize == "" {
		d.Resize = def.Resize
	}
	if d.PreviewWidth <= 0 { // PreviewFPS 0 means no previews: no default
		d.PreviewWidth = def.PreviewWidth
	}
	if d.LeaseTTL <= 0 {
		d.LeaseTTL = def.LeaseTTL
	}
	if d.RetryMax < d.RetryMin {
		d.RetryMax = max(d.RetryMin, def.RetryMax)
	}
	return d
}

// ID is the camera id.
func (c *Camera) ID() string { return c.spec.ID }

// TargetFPS is the rate frames are sampled to.
func (c *Camera) TargetFPS() float64 { return c.fps }

// Status returns a snapshot of the camera's state.
func (c *Camera) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	if st.State == StateStreaming { // the rate of frames now, not of the last 5 s of a stream that ended
		st.FPS = c.fpsLocked(time.Now())
	}
	if c.relay != nil {
		st.RTPPacketsMissed = c.relay.packetsMissed()
	}
	return st
}

// fpsLocked estimates the publish rate over the last 5 seconds.
func (c *Camera) fpsLocked(now time.Time) float64 {
	const window = 5 * time.Second
	n := min(c.outN, len(c.outTimes))
	var first, last time.Time
	count := 0
	for i := 0; i < n; i++ {
		t := c.outTimes[(c.outN-1-i)%len(c.outTimes)]
		if now.Sub(t) > window {
			break
		}
		if count == 0 {
			last = t
		}
		first = t
		count++
	}
	if count < 2 || !last.After(first) {
		return 0
	}
	return float64(count-1) / last.Sub(first).Seconds()
}

func (c *Camera) setState(state string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.State != state {
		c.st.State = state
		c.st.Since = time.Now()
	}
	if err != nil {
		c.st.LastError = err.Error()
	}
	up := 0.0
	if state == StateStreaming {
		up = 1
	}
	telemetry.CameraUp.WithLabelValues(c.spec.ID).Set(up)
	telemetry.SetCameraState(c.spec.ID, state, states)
}

// Run works until ctx is done (state "stopped") or a non-looping file
// ends (state "ended", after its queued frames are published). It returns
// only when all of its goroutines have: a read blocked in FFmpeg returns
// within the stall timeout.
//
// Three goroutines carry a frame: the reader (Run's own) only decodes, so
// that FFmpeg is never kept waiting; the worker resizes, tokenizes and
// queues; the publisher sends. The reader alone keeps 0.98 of a bare
// OpenCV read loop's rate; what the stage loses beyond that is the CPU the
// other two take from FFmpeg's threads (BENCHMARKS.md).
func (c *Camera) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	telemetry.ShowCamera(stageName, c.spec.ID, dropReasons...)
	telemetry.CameraReconnects.WithLabelValues(c.spec.ID) // at 0 from the start
	c.startSeq(ctx)
	readerDone := make(chan struct{})
	workerDone := make(chan struct{})
	free := make(chan *rawFrame, rawFrames)
	work := make(chan *rawFrame, rawFrames)
	for range rawFrames {
		free <- &rawFrame{img: gocv.NewMat()}
	}
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		defer close(workerDone)
		c.workLoop(work, free, errc)
	}()
	go func() {
		defer wg.Done()
		c.publishLoop(ctx, workerDone)
	}()
	go func() {
		defer wg.Done()
		c.watchStall(ctx, readerDone)
	}()
	if c.relay != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.relay.run(ctx); err != nil {
				c.setState(StateRetrying, err)
			}
		}()
	}
	ended := c.readLoop(ctx, free, work, errc)
	close(readerDone)
	close(work)
	if !ended {
		cancel()
	}
	wg.Wait()
	for range rawFrames {
		rf := <-free
		_ = rf.img.Close()
	}
	if ended {
		c.setState(StateEnded, nil)
		c.log.Info("camera source ended")
	} else {
		c.setState(StateStopped, nil)
	}
	// Return buffers of frames that were never published.
	for {
		it, ok := c.q.TryPop()
		if !ok {
			break
		}
		c.pool.Put(it.buf)
	}
}

// startSeq reserves the camera's first block of seq numbers (SeqStore),
// waiting out a bucket that does not answer for up to 30 s. Without it the
// camera starts at seq 1, and says so.
func (c *Camera) startSeq(ctx context.Context) {
	if c.seqs == nil {
		return
	}
	var end uint64
	err := bus.Retry(ctx, 30*time.Second, func() (err error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		end, err = c.seqs.reserve(rctx, c.spec.ID)
		return err
	})
	if err != nil {
		c.log.Error("no seq block reserved: seq starts at 1 and may repeat earlier runs' numbers", "err", err)
		return
	}
	c.seq = end - seqBlock
	c.seqEnd.Store(end)
}

// nextSeq advances the camera's seq, reserving the next block in the
// background once half of the current one is used.
func (c *Camera) nextSeq() uint64 {
	c.seq++
	if c.seqs == nil {
		return c.seq
	}
	end := c.seqEnd.Load()
	if c.seq+seqBlock/2 > end && c.reserving.CompareAndSwap(false, true) {
		go func() {
			defer c.reserving.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			next, err := c.seqs.reserve(ctx, c.spec.ID)
			if err != nil {
				c.log.Warn("reserving the next seq block failed; retrying", "err", err)
				return
			}
			c.seqEnd.Store(next)
		}()
	}
	if c.seq > end && !c.seqOver {
		c.seqOver = true
		c.log.Warn("seq passed its reserved block (the decode bucket did not answer): a restart now may repeat seq numbers", "seq", c.seq)
	}
	return c.seq
}

// watchStall marks a streaming camera stalled while a read is blocked
// longer than the stall timeout (the read itself is bounded by FFmpeg).
func (c *Camera) watchStall(ctx context.Context, readerDone <-chan struct{}) {
	t := time.NewTicker(max(c.cfg.StallTimeout/4, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-readerDone:
			return
		case <-t.C:
		}
		c.mu.Lock()
		stalled := c.st.State == StateStreaming && time.Since(c.lastFrame) > c.cfg.StallTimeout
		c.mu.Unlock()
		if stalled {
			c.setState(StateStalled, fmt.Errorf("no frame for %s", c.cfg.StallTimeout))
			c.log.Warn("camera stalled", "timeout", c.cfg.StallTimeout)
		}
	}
}

// backoff is the delay before reconnect attempt n (0-based): exponential
// from RetryMin to RetryMax with ±25% jitter.
func (c *Camera) backoff(n int) time.Duration {
	d := c.cfg.RetryMin
	for i := 0; i < n && d < c.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.RetryMax)
	return time.Duration(float64(d) * (0.75 + 0.5*rand.Float64()))
}

// errStalled marks a stream closed for delivering no frame in time.
var errStalled = errors.New("stalled")

// readLoop opens and reads the source until ctx is done (false) or the
// source ends (true), reconnecting with backoff forever. It takes source
// images from free and hands the ones to process to work; the worker's
// errors come back on errc.
func (c *Camera) readLoop(ctx context.Context, free chan *rawFrame, work chan<- *rawFrame, errc <-chan error) bool {
	failures := 0
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if c.relay != nil && !c.relay.waitPublisher(ctx, func() { c.setState(StateOffline, nil) }) {
			return false
		}
		if attempt > 0 {
			c.mu.Lock()
			c.st.Reconnects++
			c.mu.Unlock()
			telemetry.CameraReconnects.WithLabelValues(c.spec.ID).Inc()
		}
		c.setState(StateConnecting, nil)
		src, err := c.open(ctx)
		if err == nil {
			var frames int
			frames, err = c.stream(ctx, src, free, work, errc)
			_ = src.Close()
			if frames > 0 {
				failures = 0
			}
			if errors.Is(err, io.EOF) {
				if err != io.EOF {
					c.setState(StateEnded, err) // ended early, and why
					c.log.Warn("camera source ended", "err", err)
				}
				return true
			}
			shrink(free)
			if c.relay != nil && c.relay.left() {
				failures = 0 // not a failure: offline until the next publisher
				continue
			}
		}
		if ctx.Err() != nil {
			return false
		}
		state := StateRetrying
		if errors.Is(err, errStalled) {
			state = StateStalled
		}
		c.setState(state, err)
		d := c.backoff(failures)
		// The 1st, 2nd, 4th… failure in a row: a camera that stays dead
		// (its status says so all along) must not fill the log.
		if failures++; telemetry.Thinned(failures) {
			c.log.Warn("camera source failed; retrying", "err", err, "state", state, "retry_in", d.Round(time.Millisecond), "failures", failures)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
		}
	}
	return false
}

// shrink frees the source images' memory while no source is open, once the
// worker has handed them all back: a camera offline or retrying (a WHIP
// camera whose publisher left, a dead RTSP host) would otherwise keep
// three frames of its last resolution (18 MB at 1080p) for as long.
func shrink(free chan *rawFrame) {
	held := make([]*rawFrame, 0, rawFrames)
	for range rawFrames {
		rf := <-free
		_ = rf.img.Close()
		rf.img = gocv.NewMat()
		held = append(held, rf)
	}
	for _, rf := range held {
		free <- rf
	}
}

// leapWatch tells a leap of a file's timestamps (over a second and ten
// times the interval before it) from a slow but steady source.
type leapWatch struct {
	gap     time.Duration // the last steady interval
	pending time.Duration // the leap just seen, if the interval after it may show it steady
}

// leap reports whether the interval d between two frames is a leap. One
// of a millisecond or less is no interval of the source's. An interval
// after a leap and about as long (within 2×) shows the source steady and
// slow (a wrong stated rate, a timelapse after a fall): it is paced from
// then on, not taken for one leap after another; one unlike it is judged
// against the interval before the leap.
func (l *leapWatch) leap(d time.Duration) bool {
	if d <= time.Millisecond {
		return false
	}
	if p := l.pending; p > 0 {
		l.pending = 0
		if 2*d >= p && d <= 2*p {
			l.gap = d
			return false
		}
	}
	if l.gap > 0 && d > 10*l.gap && d > time.Second {
		l.pending = d
		return true
	}
	l.gap = d
	return false
}

// mats are the worker's reusable OpenCV images.
type mats struct{ inner, sized, rgb gocv.Mat }

func newMats() *mats {
	return &mats{inner: gocv.NewMat(), sized: gocv.NewMat(), rgb: gocv.NewMat()}
}

func (m *mats) close() {
	_ = m.inner.Close()
	_ = m.sized.Close()
	_ = m.rgb.Close()
}

// stream reads one opened source until it fails, ends or ctx is done, and
// returns how many frames it read. It grabs every frame but retrieves (and
// hands to the worker) only those sampled or previewed.
func (c *Camera) stream(ctx context.Context, src Source, free <-chan *rawFrame, work chan<- *rawFrame, errc <-chan error) (int, error) {
	sampler := NewSampler(c.fps)
	var (
		frames    int
		sized     bool // the source size is known
		wallStart time.Time
		ptsStart  time.Duration
		lastRead  = time.Now()
		// A file's timestamps may leap ahead (recordings joined end to
		// end, a transport stream's discontinuity): pacing across the
		// leap would hold the camera for its length. prevPTS and leaps
		// tell a leap from a slow but steady source, such as a timelapse;
		// rebase re-anchors the pacing at the next paced frame.
		prevPTS time.Duration
		leaps   leapWatch
		rebase  bool
	)
	if fd, ok := src.(interface{ FrameDuration() time.Duration }); ok {
		leaps.gap = fd.FrameDuration() // so that a leap at the first interval is one too
	}
	for ctx.Err() == nil {
		select {
		case err := <-errc:
			return frames, err
		default:
		}
		t0 := time.Now()
		pts, err := src.Grab()
		t1 := time.Now()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return frames, err
			}
			if t1.Sub(lastRead) >= c.cfg.StallTimeout*9/10 {
				return frames, fmt.Errorf("%w: no frame for %s: %w", errStalled, t1.Sub(lastRead).Round(time.Millisecond), err)
			}
			return frames, err
		}
		lastRead = t1
		frames++
		if frames > 1 && leaps.leap(pts-prevPTS) {
			rebase = true
		}
		prevPTS = pts
		c.mu.Lock()
		c.lastFrame = t1
		state := c.st.State
		c.mu.Unlock()
		if state != StateStreaming {
			c.setState(StateStreaming, nil)
		}
		keep := sampler.Keep(pts)
		watched := c.preview.due(pts)
		if !keep && !watched {
			continue
		}
		if !src.Live() && !c.noPacing { // pace files and synthetic sources in real time
			if wallStart.IsZero() || pts < ptsStart || rebase {
				wallStart, ptsStart, rebase = t1, pts, false
			}
			if wait := time.Until(wallStart.Add(pts - ptsStart)); wait > 0 {
				c.mu.Lock()
				c.lastFrame = t1.Add(wait) // waiting for a frame's time is no stall
				c.mu.Unlock()
				select {
				case <-ctx.Done():
					return frames, ctx.Err()
				case <-time.After(wait):
				}
				lastRead = time.Now() // the wait was no time without a frame
			}
		}
		var rf *rawFrame
		select {
		case rf = <-free:
		case <-ctx.Done():
			return frames, ctx.Err()
		}
		t2 := time.Now()
		err = src.Retrieve(&rf.img)
		t3 := time.Now()
		rf.keep, rf.watched = err == nil && keep, err == nil && watched
		if err != nil {
			work <- rf // back to free through the worker
			return frames, err
		}
		if !sized {
			sized = true
			c.mu.Lock()
			c.st.Width, c.st.Height = rf.img.Cols(), rf.img.Rows()
			c.mu.Unlock()
			c.log.Info("camera streaming", "width", rf.img.Cols(), "height", rf.img.Rows())
		}
		rf.pts, rf.readDur, rf.readEnd = pts, t1.Sub(t0)+t3.Sub(t2), t3
		work <- rf // never blocks: work holds every rawFrame
	}
	return frames, ctx.Err()
}

// workLoop processes the reader's images until work is closed, handing
// each back to free. A frame that cannot be processed is reported on errc
// (the reader then reopens the source).
func (c *Camera) workLoop(work <-chan *rawFrame, free chan<- *rawFrame, errc chan<- error) {
	m := newMats()
	defer m.close()
	for rf := range work {
		if rf.keep {
			if err := c.process(m, rf); err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		}
		if rf.watched { // after process, so a kept frame's preview carries its seq
			c.preview.publish(rf.img, rf.pts, c.seq)
		}
		rf.keep, rf.watched = false, false
		free <- rf
	}
}

// process resizes, converts and tokenizes the source image of rf and
// queues the frame.
func (c *Camera) process(m *mats, rf *rawFrame) error {
	start := time.Now()
	captured, pts := rf.readEnd, rf.pts
	srcW, srcH := rf.img.Cols(), rf.img.Rows()
	tr, rgb, err := preprocess(c.cfg, rf.img, m)
	if err != nil {
		return err
	}
	decEnd := time.Now()
	buf := c.pool.Get().(*[]byte)
	if err := frame.Tokenize(*buf, rgb, c.cfg.Width, c.cfg.Height, c.cfg.PatchSize); err != nil {
		c.pool.Put(buf)
		return fmt.Errorf("decode: %w", err)
	}
	tokEnd := time.Now()
	decDur := rf.readDur + decEnd.Sub(start)
	tokDur := tokEnd.Sub(decEnd)
	telemetry.StageLatency.WithLabelValues("decode").Observe(decDur.Seconds())
	telemetry.StageLatency.WithLabelValues("tokenize").Observe(tokDur.Seconds())
	f := &frame.Frame{
		Camera: c.spec.ID, Seq: c.nextSeq(), PTS: pts, CapturedAt: captured,
		SourceW: srcW, SourceH: srcH, Width: c.cfg.Width, Height: c.cfg.Height,
		Patch: c.cfg.PatchSize, Resize: c.cfg.Resize, Transform: tr,
		Latency: map[string]float64{"decode": frame.Millis(decDur), "tokenize": frame.Millis(tokDur)},
		Tokens:  *buf,
	}
	it := &item{f: f, buf: buf, decStart: decEnd.Add(-decDur), decEnd: decEnd, tokStart: decEnd, tokEnd: tokEnd}
	if old, dropped := c.q.Push(it); dropped {
		c.pool.Put(old.buf)
		c.dropped("queue_full")
	}
	return nil
}

// dropReasons are the reasons decode drops a frame for (dropped), whose
// series exist from a camera's start.
var dropReasons = []string{"queue_full", "nats_down", "publish_error"}

// dropped counts a frame dropped for reason, in the metrics and the status.
func (c *Camera) dropped(reason string) {
	telemetry.FramesDropped.WithLabelValues(stageName, c.spec.ID, reason).Inc()
	c.mu.Lock()
	c.st.FramesDropped++
	c.mu.Unlock()
}

// publishLoop publishes queued frames until ctx is done, or until the
// reader is done and the queue is empty.
func (c *Camera) publishLoop(ctx context.Context, readerDone <-chan struct{}) {
	for {
		it, ok := c.q.TryPop()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-readerDone:
				if it, ok = c.q.TryPop(); !ok {
					return
				}
			case <-c.q.Wait():
				continue
			}
		}
		c.publish(it)
		c.pool.Put(it.buf)
	}
}

// publish sends one frame as the root of its trace.
func (c *Camera) publish(it *item) {
	f := it.f
	tr := telemetry.Tracer()
	attrs := trace.WithAttributes(attribute.String("camera", f.Camera), attribute.Int64("seq", int64(f.Seq)))
	ctx, root := tr.Start(context.Background(), "decode.frame", trace.WithNewRoot(), trace.WithTimestamp(it.decStart), attrs)
	_, sp := tr.Start(ctx, "capture", trace.WithTimestamp(it.decStart))
	sp.End(trace.WithTimestamp(it.decEnd))
	_, sp = tr.Start(ctx, "tokenize", trace.WithTimestamp(it.tokStart))
	sp.End(trace.WithTimestamp(it.tokEnd))
	pctx, psp := tr.Start(ctx, "publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.destination.name", c.subject)))

	// While NATS is away the client would buffer frames, to deliver them
	// late in a burst or lose them past its buffer, uncounted: a live
	// frame that cannot go now is dropped here, counted.
	if !c.nc.IsConnected() {
		psp.SetStatus(codes.Error, "nats not connected")
		c.dropped("nats_down")
		if !c.natsDown {
			c.natsDown = true
			c.log.Warn("nats not connected: dropping frames until it is back", "seq", f.Seq)
		}
		psp.End()
		root.End()
		return
	}
	if c.natsDown {
		c.natsDown = false
		c.log.Info("nats back: publishing frames again", "seq", f.Seq)
	}
	f.PublishedAt = time.Now()
	msg := f.Encode(c.subject)
	bus.InjectTrace(pctx, msg.Header)
	f.TraceParent = msg.Header.Get(frame.HdrTraceParent)
	err := c.nc.PublishMsg(msg)
	if err != nil {
		psp.RecordError(err)
		psp.SetStatus(codes.Error, "publish failed")
		c.dropped("publish_error")
		c.mu.Lock()
		c.st.LastError = "publish frame: " + err.Error()
		c.mu.Unlock()
		// The same error for every frame (a server's max_payload lowered
		// under a running stage): thinned, with the count.
		if c.pubFails++; telemetry.Thinned(c.pubFails) {
			c.log.Warn("publish frame failed; frame dropped", "seq", f.Seq, "err", err, "failures", c.pubFails)
		}
	} else {
		if c.pubFails > 0 {
			c.log.Info("publishing frames again", "seq", f.Seq, "failed", c.pubFails)
			c.pubFails = 0
		}
		telemetry.FramesOut.WithLabelValues(stageName, c.spec.ID).Inc()
		now := time.Now()
		c.mu.Lock()
		c.st.FramesOut++
		c.outTimes[c.outN%len(c.outTimes)] = now
		c.outN++
		c.mu.Unlock()
	}
	psp.End()
	root.End()
}
