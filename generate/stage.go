// Package generate is the generate stage: captions of a camera's last frames
// (a caption model via internal/textgen) and generated frames with an
// anomaly heatmap (a framegen model), made off the live path. It keeps a
// small window of every camera's latest frames from patchline.frames.*, and
// generates when a trigger fires (every N seconds, a scene change seen on
// patchline.annotations.*, an anomaly) or on request (NATS request-reply on
// patchline.generate.request, HTTP, CLI). A budget caps concurrent
// generations; requests wait in a bounded queue until their deadline, and
// everything not done is answered with a reason and counted.
package generate

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/lease"
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/internal/textgen"
)

const stageName = "generate"

// Triggers, as carried in annotation caption/anomaly "trigger" and in
// Generated.Trigger.
const (
	TriggerEvery   = "every"
	TriggerChange  = "change"
	TriggerAnomaly = "anomaly"
	TriggerRequest = "request"
)

// GeneratedSchema is the schema id of patchline.generated.<camera> messages
// (schema/generated.v1.json).
const GeneratedSchema = "patchline.generated/v1"

// Generated is the message on patchline.generated.<camera>: a generated frame
// stored as a PNG in the Object Store, with its anomaly heatmap.
type Generated struct {
	Schema string `json:"schema"`
	Camera string `json:"camera"`
	// Seq is the frame the model predicted from the Context frames before it;
	// the heatmap compares the prediction with that frame as it came.
	Seq        uint64    `json:"seq"`
	Context    []uint64  `json:"context"`
	CapturedAt time.Time `json:"captured_at"`
	Model      string    `json:"model"`
	Trigger    string    `json:"trigger"`
	Object     ObjectRef `json:"object"`
	Width      int       `json:"width"`
	Height     int       `json:"height"`
	Heatmap    Heatmap   `json:"heatmap"`
	Score      float64   `json:"score"`
	Threshold  float64   `json:"threshold"`
	Anomaly    bool      `json:"anomaly"`
	DurationMs float64   `json:"duration_ms"`
	TraceID    string    `json:"trace_id"`
	// GeneratedBy names the generate replica (host/pid).
	GeneratedBy string `json:"generated_by"`
}

// ObjectRef names an object in the NATS Object Store.
type ObjectRef struct {
	Bucket      string `json:"bucket"`
	Name        string `json:"name"`
	Size        uint64 `json:"size"`
	ContentType string `json:"content_type"`
	SHA256      string `json:"sha256"` // hex
	Digest      string `json:"digest"` // as the Object Store reports it, "SHA-256=<base64url>"
}

// Heatmap is the per-patch anomaly score (mean squared error in normalised
// space), row-major over GridW×GridH patches of Patch pixels.
type Heatmap struct {
	GridW  int       `json:"grid_w"`
	GridH  int       `json:"grid_h"`
	Patch  int       `json:"patch"`
	Scores []float64 `json:"scores"`
}

// Options wire a Stage.
type Options struct {
	NC *nats.Conn
	// Control, when set, carries the leases of the automatic triggers apart
	// from NC, which receives every camera's frames: a renewal must not
	// wait behind them. Nil: NC.
	Control  *nats.Conn
	Config   config.Generate
	Captions *textgen.Captioner // nil: caption requests answer "unavailable"
	Framegen *Framegen          // nil: frame requests answer "unavailable", no anomaly scoring
	Logger   *slog.Logger
	// Replicas of the generated-frames bucket on a JetStream cluster
	// (nats.replicas); 0 is JetStream's default, 1.
	Replicas int
	// Stream is the annotation stream (sink.stream) captions and anomalies
	// are made sure to be stored in (bus.Storer); no name: none.
	Stream config.Stream
}

// Stage is the generate stage. Every replica keeps windows of every camera
// (plain subscription to frames); requests are shared by the queue group
// patchline-generate. Replicas with automatic triggers (generate.auto)
// share the cameras through leases (KV patchline_generate_leases): each
// runs the triggers of the cameras it holds.
type Stage struct {
	nc       *nats.Conn
	ctl      *nats.Conn // leases (Options.Control, else NC)
	cfg      config.Generate
	replicas int
	cap      *textgen.Captioner
	fg       *Framegen
	capName  string
	log      *slog.Logger
	replica  string

	win    *windows
	sched  *scheduler
	obj    jetstream.ObjectStore
	stream config.Stream
	storer *bus.Storer // nil without the stream

	// scoring is held while a batch of frames is scored and its anomalies
	// published; drop takes it, so a camera given to another replica gets
	// no anomaly from this one after its lease is given back.
	scoring sync.Mutex
	mu      sync.Mutex
	cams    map[string]*camState
	owned   map[string]bool // cameras whose automatic triggers run here (their lease is ours)
	pending map[string]bool // cameras with a frame to score
	wake    chan struct{}
	// newCamera: a frame of a camera new to the windows came; balance the
	// leases now rather than at the next round.
	newCamera chan struct{}

	subscribed time.Time // when the frame windows started filling; set by Run
	malformed  atomic.Uint64
	handedBack atomic.Uint64
	scoreFails atomic.Uint64 // anomaly scoring runs that failed (logged thinned)
	bus.Readiness
}

// A replica's frame windows fill from when it subscribed, so for a while a
// new replica lacks frames its older peers hold. Until its windows have
// been filling for generate.window_ttl, it hands a request it cannot serve
// for that reason (unknown_camera, not_enough_frames) back to the queue
// group instead of answering, at most maxHandBacks times per request: with
// two replicas the request reaches the other one with probability
// 1 − 2⁻¹⁶. A lone replica answers after the last hand-back, as before.
// A replica without the model a request needs (replicas configured apart,
// or in a rolling change), or without a free slot or queue place, hands it
// back the same way, at any age: so a request is answered overloaded only
// when the replicas it reached were all full. The hops are cheap (a parse
// and an admission check), and a lone full replica answers overloaded
// after them, unless a slot freed meanwhile.
const (
	hdrHandBacks = "Patchline-Generate-Handbacks"
	maxHandBacks = 16
)

// camState is what the automatic triggers remember per camera.
type camState struct {
	scene     string
	haveScene bool
	last      map[string]time.Time // trigger → last automatic output
	scored    uint64               // last seq scored by framegen
	// anomalyPeak is the score of the last anomaly published (see anomalyDue).
	anomalyPeak float64
	// offInterval: the camera's frames are not as far apart as framegen's
	// (Framegen.FrameInterval), so it is not scored.
	offInterval bool
}

// NewStage builds the stage; Run starts it. The caller owns the models.
func NewStage(o Options) *Stage {
	host, _ := os.Hostname()
	s := &Stage{
		nc: o.NC, ctl: cmp.Or(o.Control, o.NC), cfg: o.Config, cap: o.Captions, fg: o.Framegen,
		log:      o.Logger,
		replicas: o.Replicas, stream: o.Stream,
		replica: host + "/" + strconv.Itoa(os.Getpid()),
		cams:    map[string]*camState{}, owned: map[string]bool{}, pending: map[string]bool{}, wake: make(chan struct{}, 1),
		newCamera: make(chan struct{}, 1),
	}
	if o.Config.CaptionModel != "" {
		s.capName = filepath.Base(filepath.Clean(o.Config.CaptionModel))
	}
	size := 1
	if s.cap != nil {
		size = max(size, s.cap.NumFrames())
	}
	if s.fg != nil {
		size = max(size, s.fg.NumFrames()+1)
	}
	s.win = newWindows(size, o.Config.WindowTTL)
	return s
}

// Malformed is the number of frame and request messages dropped as undecodable.
func (s *Stage) Malformed() uint64 { return s.malformed.Load() }

// HandedBack is the number of requests this replica handed back to the
// queue group while its windows were filling.
func (s *Stage) HandedBack() uint64 { return s.handedBack.Load() }

// Run serves until ctx is done.
func (s *Stage) Run(ctx context.Context) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("generate: jetstream: %w", err)
	}
	err = bus.SetupRetry(ctx, js, func() (err error) {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		s.obj, err = js.CreateOrUpdateObjectStore(octx, jetstream.ObjectStoreConfig{
			Bucket: bus.GeneratedBucket, Description: "patchline generated frames (PNG), <camera>/<seq>.png", TTL: s.cfg.ObjectTTL,
			Replicas: s.replicas,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("generate: object store bucket %s (JetStream enabled on the server?): %w", bus.GeneratedBucket, err)
	}
	if s.stream.Name != "" {
		storer, stop, err := bus.StartStorer(s.nc, s.stream, s.log)
		if err != nil {
			return fmt.Errorf("generate: %w", err)
		}
		s.storer = storer
		defer stop() // after the last generation published
	}
	var leases *lease.Set
	if s.cfg.Auto {
		leases, err = lease.Open(ctx, s.ctl, bus.GenerateLeasesBucket,
			"patchline generate: cam.<camera> -> replica running its automatic triggers, replica.<id> -> alive", s.cfg.LeaseTTL, s.replicas)
		if err != nil {
			return fmt.Errorf("generate: %w", err)
		}
	}
	for _, kind := range []string{KindCaption, KindFrame} { // at 0 from the start, for rate() and alerts
		for _, reason := range []string{ReasonOverloaded, ReasonDeadline, ReasonFailed} {
			metricRejected.WithLabelValues(kind, reason)
		}
	}
	if s.fg != nil && s.fg.FrameInterval() > 0 {
		metricRejected.WithLabelValues(KindFrame, reasonFrameInterval)
	}
	s.sched = newScheduler(ctx, s.cfg.Budget, s.cfg.QueueSize, s.cfg.BatchSize, s.runBatch, func(kind, reason string) {
		if reason == "" {
			metricStarted.WithLabelValues(kind).Inc()
		} else {
			metricRejected.WithLabelValues(kind, reason).Inc()
		}
	})
	defer s.sched.close()

	var subs []*nats.Subscription
	defer func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}()
	s.subscribed = time.Now()
	fs, err := s.nc.Subscribe(bus.FramesPrefix+"*", s.onFrame)
	if err != nil {
		return fmt.Errorf("generate: subscribe frames: %w", err)
	}
	subs = append(subs, fs)
	rs, err := s.nc.QueueSubscribe(bus.GenerateRequest, bus.QueueGenerate, s.onRequest)
	if err != nil {
		return fmt.Errorf("generate: subscribe requests: %w", err)
	}
	subs = append(subs, rs)
	if s.cfg.Auto {
		as, err := s.nc.Subscribe(bus.AnnotationsPrefix+"*", s.onAnnotation)
		if err != nil {
			return fmt.Errorf("generate: subscribe annotations: %w", err)
		}
		subs = append(subs, as)
	}
	for _, sub := range subs {
		_ = sub.SetPendingLimits(4096, 256<<20)
	}
	telemetry.ShowMalformed(stageName, bus.FramesPrefix+"*", bus.AnnotationsPrefix+"*")
	telemetry.ClockSkew.WithLabelValues(stageName)
	s.Announce(s.nc, s.log, stageName, "caption_model", s.cfg.CaptionModel, "framegen_model", s.cfg.FramegenModel,
		"budget", s.cfg.Budget, "queue", s.cfg.QueueSize, "auto", s.cfg.Auto)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.scoreLoop(ctx) }()
	if leases != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases.Run(ctx, s.cfg.LeaseTTL/3, s.newCamera, func() []string { return s.win.cameras(time.Now()) },
				lease.Work{Hold: s.hold, Drop: s.drop, Log: s.log})
		}()
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case now := <-t.C:
			s.sched.expire(now)
			if gone := s.win.expire(now); len(gone) > 0 {
				s.forget(gone)
			}
			running, queued := s.sched.stats()
			metricRunning.Set(float64(running))
			metricQueued.Set(float64(queued))
			if s.cfg.Auto {
				s.tickEvery(now)
			}
		}
	}
}

// onFrame keeps the frame in its camera's window; it never blocks the
// publisher (a slow stage only loses messages arriving on its own
// subscription past its pending limits).
func (s *Stage) onFrame(m *nats.Msg) {
	f, err := frame.Decode(m.Header, m.Data)
	if err == nil && m.Subject != bus.FrameSubject(f.Camera) {
		err = fmt.Errorf("frame of camera %q on subject %s", f.Camera, m.Subject)
	}
	if err != nil {
		s.malformedMsg(m.Subject, "dropping malformed frame message", err)
		return
	}
	telemetry.FramesIn.WithLabelValues(stageName, f.Camera).Inc()
	telemetry.Saw(f.Camera)
	if s.win.add(f, time.Now()) && s.cfg.Auto {
		select { // a camera new here: look for its lease now
		case s.newCamera <- struct{}{}:
		default:
		}
	}
	if s.fg == nil || !s.cfg.Auto || !s.cfg.TriggersFor(f.Camera).OnAnomaly {
		return
	}
	s.mu.Lock()
	if !s.owned[f.Camera] {
		s.mu.Unlock()
		return
	}
	if s.pending[f.Camera] {
		metricUnscored.Inc()
	}
	s.pending[f.Camera] = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Stage) malformedMsg(subject, what string, err error) {
	n := s.malformed.Add(1)
	telemetry.Malformed.WithLabelValues(stageName, bus.SubjectFamily(subject)).Inc()
	if telemetry.Thinned(n) {
		s.log.Warn(what, "subject", subject, "err", err, "malformed_total", n)
	}
}

// hold runs the automatic triggers of camera here (its lease is ours).
func (s *Stage) hold(camera string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.owned[camera] {
		s.owned[camera] = true
		s.log.Debug("automatic triggers of a camera run here", "camera", camera)
	}
}

// drop stops the automatic triggers of camera here, after the frames
// being scored.
func (s *Stage) drop(camera string) {
	s.scoring.Lock()
	defer s.scoring.Unlock()
	_ = s.nc.FlushTimeout(time.Second) // what was published reaches the server before the lease is given back
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.owned, camera)
	delete(s.pending, camera)
}

// owns reports whether camera's automatic triggers run here.
func (s *Stage) owns(camera string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owned[camera]
}

// forget drops the trigger state of cameras whose window expired (silent
// for window_ttl): one that comes back starts afresh, and cameras gone for
// good do not pile up.
func (s *Stage) forget(cameras []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cameras {
		delete(s.cams, c)
	}
}

func (s *Stage) state(camera string) *camState {
	st := s.cams[camera]
	if st == nil {
		st = &camState{last: map[string]time.Time{}}
		s.cams[camera] = st
	}
	return st
}

// due reports whether an automatic output of trigger may happen for camera
// now (cooldown), and if so records it.
func (s *Stage) due(camera, trigger string, every time.Duration, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dueLocked(s.state(camera), camera, trigger, every, now, false)
}

// dueLocked is due on the camera's state st, s.mu held; force makes it due
// whatever the wait.
func (s *Stage) dueLocked(st *camState, camera, trigger string, every time.Duration, now time.Time, force bool) bool {
	wait := max(every, s.cfg.TriggersFor(camera).Cooldown)
	if last, ok := st.last[trigger]; ok && now.Sub(last) < wait && !force {
		return false
	}
	st.last[trigger] = now
	return true
}

// ForgetCamera drops a detached camera's frames: a request for it is
// unknown_camera at once, not served from its last frames for window_ttl.
// (Frames still in flight may bring some back; `patchline run` and
// `patchline stage` call it again a minute later.)
func (s *Stage) ForgetCamera(camera string) {
	s.win.forget(camera)
	s.forget([]string{camera}) // its triggers' state too: the window's expiry will not see it now
}

// anomalyEscalation: within an anomaly's cooldown, a score this many times
// the highest published in it is a new anomaly all the same (a scene cut
// after a person walked in), not a repeat of the first.
const anomalyEscalation = 1.5

// anomalyDue reports whether an anomaly scored score on camera is
// published: the camera's cooldown since the last one has passed, or the
// score escalates past it (anomalyEscalation).
func (s *Stage) anomalyDue(camera string, score float64, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state(camera)
	if !s.dueLocked(st, camera, TriggerAnomaly, 0, now, score >= anomalyEscalation*st.anomalyPeak) {
		return false
	}
	st.anomalyPeak = score
	return true
}

// onAnnotation watches analysis annotations for scene changes: the set of
// labels/objects differs from the camera's previous annotation.
func (s *Stage) onAnnotation(m *nats.Msg) {
	var a annotation.Annotation
	if err := json.Unmarshal(m.Data, &a); err != nil || frame.ValidCameraID(a.Camera) != nil {
		s.malformedMsg(m.Subject, "ignoring malformed annotation", err)
		return
	}
	if a.Kind != annotation.KindAnalysis || !s.cfg.TriggersFor(a.Camera).OnChange {
		return
	}
	key := SceneKey(a)
	s.mu.Lock()
	st := s.state(a.Camera) // every replica follows every scene, so a new owner knows the last one
	changed := !st.haveScene || st.scene != key
	st.scene, st.haveScene = key, true
	owned := s.owned[a.Camera]
	s.mu.Unlock()
	// No frames of it: a camera just detached (ForgetCamera) whose last
	// annotations come in late; its caption would be refused unknown_camera.
	if changed && owned && s.cap != nil && s.win.has(a.Camera) && s.due(a.Camera, TriggerChange, 0, time.Now()) {
		s.log.Debug("scene changed", "camera", a.Camera, "seq", a.Seq, "scene", key)
		s.submitAuto(KindCaption, a.Camera, TriggerChange)
	}
}

// SceneKey is the set of objects an analysis annotation names: detection
// labels with their counts, and labels scored 0.5 or more, sorted. Two
// annotations show the same scene when their keys are equal.
func SceneKey(a annotation.Annotation) string {
	count := map[string]int{}
	for _, d := range a.Detections {
		count[d.Label]++
	}
	for _, l := range a.Labels {
		if l.Score >= 0.5 {
			count[l.Label] = max(count[l.Label], 1)
		}
	}
	keys := make([]string, 0, len(count))
	for k, n := range count {
		keys = append(keys, k+"×"+strconv.Itoa(n))
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

// tickEvery submits the periodic captions that are due.
func (s *Stage) tickEvery(now time.Time) {
	if s.cap == nil {
		return
	}
	for _, cam := range s.win.cameras(now) {
		every := s.cfg.TriggersFor(cam).Every
		if every > 0 && s.owns(cam) && s.due(cam, TriggerEvery, every, now) {
			s.submitAuto(KindCaption, cam, TriggerEvery)
		}
	}
}

// submitAuto submits an automatic generation; it never waits for a slot.
func (s *Stage) submitAuto(kind, camera, trigger string) {
	j := &job{kind: kind, camera: camera, auto: true, trigger: trigger, sampling: s.cfg.Sampling, deadline: time.Now().Add(s.cfg.RequestTimeout)}
	j.batchKey = batchKey(kind, s.cfg.Sampling, false)
	j.reject = func(reason, msg string) {
		if reason != ReasonOverloaded && reason != ReasonNotEnoughFrames && reason != ReasonUnavailable { // unavailable: stopping
			s.log.Warn("automatic generation not done", "camera", camera, "kind", kind, "trigger", trigger, "reason", reason, "err", msg)
		}
	}
	s.sched.submit(j, time.Now())
}

func batchKey(kind string, sm config.Sampling, noCache bool) string {
	if kind != KindCaption {
		return ""
	}
	return fmt.Sprintf("%v/%d/%v/%d/%d/%v", sm.Temperature, sm.TopK, sm.TopP, sm.Seed, sm.MaxTokens, noCache)
}

// onRequest answers patchline.generate.request. Parsing and admission are
// immediate; the reply comes when the generation is done or rejected.
func (s *Stage) onRequest(m *nats.Msg) {
	now := time.Now()
	respond := func(r *Reply) {
		if m.Reply == "" {
			return
		}
		b, err := json.Marshal(r)
		if err != nil {
			s.log.Error("encode reply", "err", err)
			return
		}
		if err := m.Respond(b); err != nil {
			s.log.Warn("reply", "err", err)
		}
	}
	p, bad := parseRequest(m.Data, s.cfg, now)
	if bad != nil {
		s.malformedMsg(m.Subject, "bad generate request", errors.New(bad.Error))
		metricRejected.WithLabelValues("request", bad.Reason).Inc()
		respond(bad)
		return
	}
	if m.Reply == "" {
		s.malformedMsg(m.Subject, "generate request without a reply subject", errors.New("use NATS request-reply"))
		return
	}
	if p.Kind == KindCaption && s.cap != nil && p.sampling.MaxTokens > s.cap.TokenLimit() {
		metricRejected.WithLabelValues("request", ReasonBadRequest).Inc()
		respond(errorReply(&p.Request, ReasonBadRequest, fmt.Sprintf("sampling.max_tokens %d: the caption model makes at most %d tokens", p.sampling.MaxTokens, s.cap.TokenLimit())))
		return
	}
	if reason, msg := s.precheck(p.Kind, p.Camera, now); reason != "" {
		if s.handBack(m, reason, now) {
			return
		}
		metricRejected.WithLabelValues(p.Kind, reason).Inc()
		respond(errorReply(&p.Request, reason, msg))
		return
	}
	j := &job{
		kind: p.Kind, camera: p.Camera, deadline: p.deadline, trigger: TriggerRequest,
		sampling: p.sampling, noCache: p.noCache, req: &p.Request, respond: respond,
		batchKey: batchKey(p.Kind, p.sampling, p.noCache),
		traceCtx: bus.ExtractTrace(context.Background(), m.Header),
	}
	j.reject = func(reason, msg string) { respond(errorReply(&p.Request, reason, msg)) }
	j.handBack = func(reason string) bool { return reason == ReasonOverloaded && s.handBack(m, reason, now) }
	s.sched.submit(j, now)
}

// handBack republishes request m to the queue group when another replica
// may serve it better: this one is too new to know the camera's frames, or
// lacks the model, or has no free slot (see maxHandBacks). It reports
// whether it did.
func (s *Stage) handBack(m *nats.Msg, reason string, now time.Time) bool {
	switch {
	case reason == ReasonUnavailable: // this replica lacks the model; another may have it
	case reason == ReasonOverloaded: // every slot and the queue full here; another may have room
	case reason != ReasonUnknownCamera && reason != ReasonNotEnoughFrames || now.Sub(s.subscribed) >= s.cfg.WindowTTL:
		return false
	}
	hops, _ := strconv.Atoi(m.Header.Get(hdrHandBacks))
	if hops >= maxHandBacks {
		return false
	}
	fwd := nats.NewMsg(m.Subject)
	fwd.Reply, fwd.Data = m.Reply, m.Data
	for k, v := range m.Header {
		fwd.Header[k] = v
	}
	fwd.Header.Set(hdrHandBacks, strconv.Itoa(hops+1))
	if err := s.nc.PublishMsg(fwd); err != nil {
		return false
	}
	s.handedBack.Add(1)
	metricHandedBack.Inc()
	return true
}

// precheck fails a request that cannot be served before it takes a slot.
func (s *Stage) precheck(kind, camera string, now time.Time) (reason, msg string) {
	var need int
	switch kind {
	case KindCaption:
		if s.cap == nil {
			return ReasonUnavailable, "no caption model: set generate.caption_model"
		}
		need = s.cap.NumFrames()
	case KindFrame:
		if s.fg == nil {
			return ReasonUnavailable, "no framegen model: set generate.framegen_model"
		}
		need = s.fg.NumFrames() + 1
	}
	if _, err := s.win.last(camera, need, now); err != nil {
		return reasonOf(err), err.Error()
	}
	return "", ""
}

// reasonOf is the request reason of a window error.
func reasonOf(err error) string {
	var we *windowError
	if errors.As(err, &we) {
		return we.reason
	}
	return ReasonFailed
}

// jobFrames returns the last n frames of j's camera, checked against the
// model's input grid; when it cannot, it answers j and returns nil.
func (s *Stage) jobFrames(j *job, n int, model string, w, h, p int, now time.Time) []*frame.Frame {
	frames, err := s.win.last(j.camera, n, now)
	if err != nil {
		s.fail(j, reasonOf(err), err.Error())
		return nil
	}
	if err := checkGrid(model, frames[n-1], w, h, p); err != nil {
		s.fail(j, ReasonInputMismatch, err.Error())
		return nil
	}
	return frames
}

// runBatch runs one generation (a caption batch, or one frame) holding a slot.
func (s *Stage) runBatch(ctx context.Context, batch []*job) {
	switch batch[0].kind {
	case KindCaption:
		s.runCaptions(ctx, batch)
	case KindFrame:
		for _, j := range batch {
			s.runFrame(ctx, j)
		}
	}
}

// frameContext is the trace context a frame carries.
func frameContext(f *frame.Frame) context.Context {
	if f.TraceParent == "" {
		return context.Background()
	}
	h := nats.Header{}
	h.Set(frame.HdrTraceParent, f.TraceParent)
	return bus.ExtractTrace(context.Background(), h)
}

// checkGrid reports whether frames have the model's input geometry.
func checkGrid(model string, f *frame.Frame, w, h, p int) error {
	if f.Width != w || f.Height != h || f.Patch != p {
		return fmt.Errorf("camera %q sends %dx%d frames in %d-pixel patches; %s wants %dx%d in %d-pixel patches (set decode.width, decode.height, decode.patch_size)",
			f.Camera, f.Width, f.Height, f.Patch, model, w, h, p)
	}
	return nil
}

func seqs(frames []*frame.Frame) []uint64 {
	out := make([]uint64, len(frames))
	for i, f := range frames {
		out[i] = f.Seq
	}
	return out
}

// fail answers j (if anyone asked) and counts it.
func (s *Stage) fail(j *job, reason, msg string) {
	metricRejected.WithLabelValues(j.kind, reason).Inc()
	j.reject(reason, msg)
}

func (s *Stage) runCaptions(ctx context.Context, batch []*job) {
	start := time.Now()
	w, h, p := s.cap.Grid()
	type item struct {
		j      *job
		frames []*frame.Frame
	}
	var items []item
	deadline := time.Time{}
	for _, j := range batch {
		frames := s.jobFrames(j, s.cap.NumFrames(), "generate.caption_model "+s.cfg.CaptionModel, w, h, p, start)
		if frames == nil {
			continue
		}
		items = append(items, item{j, frames})
		deadline = later(deadline, j.deadline)
	}
	if len(items) == 0 {
		return
	}
	inputs := make([]textgen.Input, len(items))
	spans := make([]trace.Span, len(items))
	ctxs := make([]context.Context, len(items))
	tracer := telemetry.Tracer()
	for i, it := range items {
		inputs[i].Frames = make([][]byte, len(it.frames))
		for k, f := range it.frames {
			inputs[i].Frames[k] = f.Tokens
		}
		newest := it.frames[len(it.frames)-1]
		ctxs[i], spans[i] = s.startSpan(tracer, it.j, newest, start, len(items))
	}
	j0 := items[0].j
	sm := textgen.Sampling{
		Temperature: j0.sampling.Temperature, TopK: j0.sampling.TopK, TopP: j0.sampling.TopP,
		Seed: j0.sampling.Seed, MaxTokens: j0.sampling.MaxTokens, NoCache: j0.noCache,
	}
	gctx := ctx
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		gctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	caps, err := s.cap.Caption(gctx, inputs, sm)
	end := time.Now()
	metricSeconds.WithLabelValues(KindCaption).Observe(end.Sub(start).Seconds())
	if err == nil && len(caps) != len(items) {
		err = fmt.Errorf("textgen returned %d captions for %d inputs", len(caps), len(items))
	}
	for i, it := range items {
		j := it.j
		if err != nil {
			reason, msg := ReasonFailed, fmt.Sprintf("caption of camera %q: %v", j.camera, err)
			switch {
			case ctx.Err() != nil: // the stage stops: no deadline was missed
				reason, msg = ReasonUnavailable, fmt.Sprintf("caption of camera %q: the generate stage is stopping", j.camera)
			case errors.Is(err, context.DeadlineExceeded) || gctx.Err() != nil:
				reason = ReasonDeadline
			}
			spans[i].SetStatus(codes.Error, err.Error())
			spans[i].End(trace.WithTimestamp(end))
			if reason == ReasonFailed {
				s.log.Error("caption failed", "camera", j.camera, "err", err)
			}
			s.fail(j, reason, msg)
			continue
		}
		c := caps[i]
		newest := it.frames[len(it.frames)-1]
		spans[i].SetAttributes(attribute.Int("tokens", len(c.Tokens)), attribute.Float64("time_to_first_token_ms", frame.Millis(c.TimeToFirstToken)))
		spans[i].End(trace.WithTimestamp(end))
		metricTTFT.Observe(c.TimeToFirstToken.Seconds())
		a := annotation.Annotation{
			Schema: annotation.Schema, Kind: annotation.KindCaption,
			Camera: newest.Camera, Seq: newest.Seq, PTSMs: frame.Millis(newest.PTS), CapturedAt: newest.CapturedAt.UTC(),
			SourceWidth: newest.SourceW, SourceHeight: newest.SourceH,
			Model: s.capName, Task: "caption",
			Caption: &annotation.Caption{
				Text: c.Text, Tokens: nonNil(c.Tokens),
				TimeToFirstTokenMs: frame.Millis(c.TimeToFirstToken), TokensPerSecond: c.TokensPerSecond,
				DurationMs: frame.Millis(c.Duration), Frames: seqs(it.frames), Trigger: j.trigger,
			},
			LatencyMs: map[string]float64{
				"queue": frame.Millis(start.Sub(j.enqueued)), "generate": frame.Millis(end.Sub(start)),
				"total": frame.Millis(end.Sub(telemetry.NotAfter(stageName, newest.CapturedAt, end))),
			},
			TraceID: spans[i].SpanContext().TraceID().String(), AnalyzedBy: s.replica,
		}
		s.publishAnnotation(ctxs[i], a)
		metricDone.WithLabelValues(KindCaption, j.trigger).Inc()
		if j.respond != nil {
			if end.After(j.deadline) {
				s.fail(j, ReasonDeadline, fmt.Sprintf("caption done %s after the deadline (published as an annotation anyway)", end.Sub(j.deadline).Round(time.Millisecond)))
				continue
			}
			j.respond(&Reply{ID: j.req.ID, Camera: j.camera, Kind: KindCaption, Caption: &a, QueueMs: frame.Millis(start.Sub(j.enqueued))})
		}
	}
}

func nonNil(t []int64) []int64 {
	if t == nil {
		return []int64{}
	}
	return t
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// startSpan starts the generation's span in the frame's trace, with a
// queue_wait child from admission to start. A request's own trace, if it
// carried one, is linked.
func (s *Stage) startSpan(tracer trace.Tracer, j *job, newest *frame.Frame, start time.Time, batch int) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{
		trace.WithTimestamp(j.enqueued),
		trace.WithAttributes(attribute.String("camera", newest.Camera), attribute.Int64("seq", int64(newest.Seq)),
			attribute.String("trigger", j.trigger), attribute.Int("batch_size", batch)),
	}
	if j.traceCtx != nil {
		if sc := trace.SpanContextFromContext(j.traceCtx); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	ctx, span := tracer.Start(frameContext(newest), "generate."+j.kind, opts...)
	_, qs := tracer.Start(ctx, "queue_wait", trace.WithTimestamp(j.enqueued))
	qs.End(trace.WithTimestamp(start))
	return ctx, span
}

func (s *Stage) runFrame(ctx context.Context, j *job) {
	start := time.Now()
	if !j.deadline.IsZero() && !start.Before(j.deadline) {
		s.fail(j, ReasonDeadline, "deadline passed before a slot was free")
		return
	}
	w, h, p := s.fg.Grid()
	frames := s.jobFrames(j, s.fg.NumFrames()+1, "generate.framegen_model "+s.cfg.FramegenModel, w, h, p, start)
	if frames == nil {
		return
	}
	if gap, want, fits := s.frameGap(frames); !fits {
		// Its prediction would not be of this camera's motion, and its score
		// would raise anomalies that are not there.
		s.fail(j, ReasonInputMismatch, fmt.Sprintf("camera %q sends frames %s apart; generate.framegen_model %s was trained on frames %s apart (%.3g fps): sample the camera at about that rate",
			j.camera, gap.Round(time.Millisecond), s.cfg.FramegenModel, want, float64(time.Second)/float64(want)))
		return
	}
	if gap, leapt := leapGap(frames, s.fg.FrameInterval()); leapt {
		s.fail(j, ReasonInputMismatch, fmt.Sprintf("camera %q's last %d frames have a gap of %s among them (its timestamps leapt); generate.framegen_model %s predicts from frames %s apart: ask again once %d more have come",
			j.camera, len(frames), gap.Round(time.Millisecond), s.cfg.FramegenModel, s.fg.FrameInterval(), len(frames)))
		return
	}
	newest := frames[len(frames)-1]
	sctx, span := s.startSpan(telemetry.Tracer(), j, newest, start, 1)
	g, err := s.generateFrame(ctx, sctx, frames, j.trigger, start)
	end := time.Now()
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		span.End(trace.WithTimestamp(end))
		if ctx.Err() != nil { // the stage stops: nothing failed
			s.fail(j, ReasonUnavailable, fmt.Sprintf("generated frame of camera %q: the generate stage is stopping", j.camera))
			return
		}
		s.log.Error("frame generation failed", "camera", j.camera, "err", err)
		s.fail(j, ReasonFailed, fmt.Sprintf("generated frame of camera %q: %v", j.camera, err))
		return
	}
	span.SetAttributes(attribute.Float64("score", g.Score), attribute.Bool("anomaly", g.Anomaly), attribute.String("object", g.Object.Name))
	span.End(trace.WithTimestamp(end))
	if j.respond != nil {
		if end.After(j.deadline) {
			s.fail(j, ReasonDeadline, fmt.Sprintf("frame generated %s after the deadline (published anyway)", end.Sub(j.deadline).Round(time.Millisecond)))
			return
		}
		j.respond(&Reply{ID: j.req.ID, Camera: j.camera, Kind: KindFrame, Generated: g, QueueMs: frame.Millis(start.Sub(j.enqueued))})
	}
}

// generateFrame runs framegen on frames (K context frames, then the actual
// one) and publishes the result; see publishFrame.
func (s *Stage) generateFrame(ctx, sctx context.Context, frames []*frame.Frame, trigger string, start time.Time) (*Generated, error) {
	k := s.fg.NumFrames()
	in := FramegenInput{Context: make([][]byte, k), Actual: frames[k].Tokens}
	for i := range k {
		in.Context[i] = frames[i].Tokens
	}
	res, err := s.fg.Run([]FramegenInput{in})
	if err != nil {
		return nil, err
	}
	metricSeconds.WithLabelValues(KindFrame).Observe(time.Since(start).Seconds())
	metricScore.Observe(res[0].Score)
	return s.publishFrame(ctx, sctx, frames, res[0], trigger, time.Since(start))
}

// publishFrame stores the predicted frame as <camera>/<seq>.png in the
// Object Store, publishes the Generated message, and, when the score passes
// the model's threshold, an annotation of kind anomaly.
func (s *Stage) publishFrame(ctx, sctx context.Context, frames []*frame.Frame, r FramegenResult, trigger string, took time.Duration) (*Generated, error) {
	actual := frames[len(frames)-1]
	pngBytes, err := s.fg.PNG(r.Next)
	if err != nil {
		return nil, fmt.Errorf("encode png: %w", err)
	}
	name := fmt.Sprintf("%s/%d.png", actual.Camera, actual.Seq)
	sum := sha256.Sum256(pngBytes)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := s.obj.Put(pctx, jetstream.ObjectMeta{
		Name: name, Description: fmt.Sprintf("frame %d of camera %s as %s expected it", actual.Seq, actual.Camera, s.fg.Name()),
		Headers: nats.Header{"Content-Type": []string{"image/png"}},
	}, bytes.NewReader(pngBytes))
	if err != nil {
		return nil, fmt.Errorf("object store put %s/%s: %w", bus.GeneratedBucket, name, err)
	}
	w, h, p := s.fg.Grid()
	g := &Generated{
		Schema: GeneratedSchema, Camera: actual.Camera, Seq: actual.Seq, Context: seqs(frames[:len(frames)-1]),
		CapturedAt: actual.CapturedAt.UTC(), Model: s.fg.Name(), Trigger: trigger,
		Object: ObjectRef{Bucket: bus.GeneratedBucket, Name: name, Size: info.Size, ContentType: "image/png",
			SHA256: hex.EncodeToString(sum[:]), Digest: info.Digest},
		Width: w, Height: h,
		Heatmap: Heatmap{GridW: w / p, GridH: h / p, Patch: p, Scores: r.PatchScores},
		Score:   r.Score, Threshold: s.fg.Threshold(), Anomaly: r.Score > s.fg.Threshold(),
		DurationMs: frame.Millis(took),
		TraceID:    trace.SpanContextFromContext(sctx).TraceID().String(), GeneratedBy: s.replica,
	}
	b, err := json.Marshal(g)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(bus.GeneratedSubject(g.Camera))
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, outputID(g.Camera, g.Seq, "generated", trigger))
	bus.InjectTrace(sctx, m.Header)
	if err := s.nc.PublishMsg(m); err != nil {
		return nil, fmt.Errorf("publish %s: %w", m.Subject, err)
	}
	metricDone.WithLabelValues(KindFrame, trigger).Inc()
	if g.Anomaly && trigger != TriggerRequest { // a request's score goes to its requester; anomaly events are the scorer's
		now := time.Now()
		a := annotation.Annotation{
			Schema: annotation.Schema, Kind: annotation.KindAnomaly,
			Camera: actual.Camera, Seq: actual.Seq, PTSMs: frame.Millis(actual.PTS), CapturedAt: actual.CapturedAt.UTC(),
			SourceWidth: actual.SourceW, SourceHeight: actual.SourceH,
			Model: s.fg.Name(), Task: "framegen",
			Anomaly: &annotation.Anomaly{
				Score: g.Score, Threshold: g.Threshold, GridW: g.Heatmap.GridW, GridH: g.Heatmap.GridH,
				PatchScores: g.Heatmap.Scores, Bucket: g.Object.Bucket, Object: g.Object.Name, Trigger: trigger,
			},
			LatencyMs: map[string]float64{"generate": g.DurationMs, "total": frame.Millis(now.Sub(telemetry.NotAfter(stageName, actual.CapturedAt, now)))},
			TraceID:   g.TraceID, AnalyzedBy: s.replica,
		}
		s.publishAnnotation(sctx, a)
	}
	return g, nil
}

// outputID is the Nats-Msg-Id of a generated output (the annotation
// stream's dedupe key, webhooks' X-Patchline-Id):
// <camera>:<seq>:<kind>:<trigger>, and for a request a random suffix. Two
// replicas that trigger the same output publish it once; outputs that
// differ only in what triggered them (a change caption and an anomaly
// caption of one frame), or requests for the same newest frame, all keep.
func outputID(camera string, seq uint64, kind, trigger string) string {
	id := frame.MsgID(camera, seq) + ":" + kind + ":" + trigger
	if trigger == TriggerRequest {
		var b [6]byte
		_, _ = rand.Read(b[:])
		id += ":" + hex.EncodeToString(b[:])
	}
	return id
}

// publishAnnotation publishes a caption or anomaly annotation on the public
// subject, with Nats-Msg-Id outputID.
func (s *Stage) publishAnnotation(ctx context.Context, a annotation.Annotation) {
	b, err := json.Marshal(a)
	if err != nil {
		s.log.Error("encode annotation", "err", err)
		return
	}
	trigger := ""
	switch {
	case a.Caption != nil:
		trigger = a.Caption.Trigger
	case a.Anomaly != nil:
		trigger = a.Anomaly.Trigger
	}
	m := nats.NewMsg(bus.AnnotationSubject(a.Camera))
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, outputID(a.Camera, a.Seq, a.Kind, trigger))
	bus.InjectTrace(ctx, m.Header)
	if err := s.nc.PublishMsg(m); err != nil {
		s.log.Warn("publish annotation", "camera", a.Camera, "kind", a.Kind, "err", err)
		return
	}
	if s.storer != nil {
		s.storer.Store(m)
	}
	telemetry.FramesOut.WithLabelValues(stageName, a.Camera).Inc()
}

// scoreLoop scores each camera's newest frame with framegen, one batch at a
// time over every camera with a new frame; frames that arrive while it is
// busy are coalesced (counted in patchline_generate_frames_unscored_total).
// A score over the threshold publishes the generated frame and an anomaly
// annotation, and triggers a caption.
func (s *Stage) scoreLoop(ctx context.Context) {
	if s.fg == nil {
		return
	}
	k := s.fg.NumFrames()
	w, h, p := s.fg.Grid()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.scoreBatch(ctx, k, w, h, p)
	}
}

// reasonFrameInterval: a camera's frames were not scored for anomalies,
// being much further apart (or closer) than framegen's.
const reasonFrameInterval = "frame_interval"

// intervalFits reports whether frames fs (oldest first) are about as far
// apart as framegen's, within a factor of 1.5 (a 24 fps source sampled at
// 5 keeps frames 167 and 208 ms apart), by their median gap; a bundle that
// does not say fits any. A camera that stops or starts fitting is logged.
func (s *Stage) intervalFits(camera string, fs []*frame.Frame) bool {
	gap, want, fits := s.frameGap(fs)
	if want <= 0 {
		return true
	}
	s.mu.Lock()
	st := s.state(camera)
	changed := st.offInterval == fits
	st.offInterval = !fits
	s.mu.Unlock()
	switch {
	case changed && !fits:
		s.log.Warn("anomaly scoring off for this camera: its frames are further apart (or closer) than the framegen model's, whose motion they would not match; sample it at the model's rate",
			"camera", camera, "frame_gap", gap.Round(time.Millisecond), "model_frame_gap", want, "model_fps", float64(time.Second)/float64(want))
	case changed:
		s.log.Info("anomaly scoring on again for this camera: its frames are as far apart as the framegen model's", "camera", camera, "frame_gap", gap.Round(time.Millisecond))
	}
	return fits
}

// frameGap is the median gap between frames fs (oldest first), want
// framegen's (0 when its bundle does not say, or fs is one frame), and
// whether they fit: within a factor of 1.5.
func (s *Stage) frameGap(fs []*frame.Frame) (gap, want time.Duration, fits bool) {
	want = s.fg.FrameInterval()
	if want <= 0 || len(fs) < 2 {
		return 0, 0, true
	}
	gaps := make([]time.Duration, 0, len(fs)-1)
	for i := 1; i < len(fs); i++ {
		gaps = append(gaps, fs[i].PTS-fs[i-1].PTS)
	}
	slices.Sort(gaps)
	gap = gaps[len(gaps)/2]
	return gap, want, gapFits(gap, want)
}

// gapFits reports whether frames gap apart are about want apart: within a
// factor of 1.5.
func gapFits(gap, want time.Duration) bool { return 3*gap >= 2*want && 2*gap <= 3*want }

// leapGap returns the first gap between frames fs over three times want,
// or under a third of it, if any: a leap of the camera's timestamps, or
// frames closer than any sampler keeps them, among frames otherwise as far
// apart as framegen's, which their median does not see. Gaps within those
// are a sampler's spread (a 6 fps source sampled at 5 keeps frames 167 and
// 333 ms apart, and none closer than half its interval), for the median to
// judge.
func leapGap(fs []*frame.Frame, want time.Duration) (time.Duration, bool) {
	if want <= 0 {
		return 0, false
	}
	for i := 1; i < len(fs); i++ {
		if g := fs[i].PTS - fs[i-1].PTS; 3*g < want || g > 3*want {
			return g, true
		}
	}
	return 0, false
}

// maxScoreBatch is the most cameras framegen scores in one run. ONNX
// Runtime's arena keeps what the largest batch needed: scoring 300 cameras
// at once held ~1 GB after they had all gone. Smaller runs also take each
// camera's newest frame closer to when it is scored.
const maxScoreBatch = 8

// scoreBatch scores the newest frame of every camera pending, at most
// maxScoreBatch cameras a run.
func (s *Stage) scoreBatch(ctx context.Context, k, w, h, p int) {
	s.scoring.Lock()
	defer s.scoring.Unlock()
	s.mu.Lock()
	cams := make([]string, 0, len(s.pending))
	for c := range s.pending {
		cams = append(cams, c)
	}
	clear(s.pending)
	s.mu.Unlock()
	slices.Sort(cams)
	for chunk := range slices.Chunk(cams, maxScoreBatch) {
		if ctx.Err() != nil {
			return
		}
		s.scoreCameras(ctx, chunk, k, w, h, p)
	}
}

// scoreCameras scores the newest frame of each of cams not scored yet.
func (s *Stage) scoreCameras(ctx context.Context, cams []string, k, w, h, p int) {
	now := time.Now()
	var (
		ins    []FramegenInput
		frames [][]*frame.Frame
	)
	for _, cam := range cams {
		fs, err := s.win.last(cam, k+1, now)
		if err != nil {
			continue // too few frames yet
		}
		s.mu.Lock()
		st := s.state(cam)
		fresh := fs[k].Seq != st.scored
		st.scored = fs[k].Seq
		s.mu.Unlock()
		if !fresh {
			continue
		}
		if checkGrid("", fs[k], w, h, p) != nil { // a camera decoded for another model size: counted, not scored
			metricRejected.WithLabelValues(KindFrame, ReasonInputMismatch).Inc()
			continue
		}
		if !s.intervalFits(cam, fs) {
			metricRejected.WithLabelValues(KindFrame, reasonFrameInterval).Inc()
			continue
		}
		if _, leapt := leapGap(fs, s.fg.FrameInterval()); leapt { // one leap among them: counted, not logged
			metricRejected.WithLabelValues(KindFrame, reasonFrameInterval).Inc()
			continue
		}
		in := FramegenInput{Context: make([][]byte, k), Actual: fs[k].Tokens}
		for i := range k {
			in.Context[i] = fs[i].Tokens
		}
		ins, frames = append(ins, in), append(frames, fs)
	}
	if len(ins) == 0 {
		return
	}
	start := time.Now()
	res, err := s.fg.Run(ins)
	took := time.Since(start)
	if err != nil {
		if n := s.scoreFails.Add(1); telemetry.Thinned(n) {
			s.log.Error("anomaly scoring failed", "cameras", len(ins), "err", err, "failed_total", n)
		}
		return
	}
	metricSeconds.WithLabelValues("score").Observe(took.Seconds())
	for i, r := range res {
		metricScore.Observe(r.Score)
		cam := frames[i][k].Camera
		if r.Score <= s.fg.Threshold() {
			continue
		}
		if !s.anomalyDue(cam, r.Score, time.Now()) {
			metricSuppressed.Inc()
			continue
		}
		newest := frames[i][k]
		metricStarted.WithLabelValues(KindFrame).Inc() // scored outside the budget, published as a frame
		sctx, span := telemetry.Tracer().Start(frameContext(newest), "generate.anomaly", trace.WithTimestamp(start),
			trace.WithAttributes(attribute.String("camera", cam), attribute.Int64("seq", int64(newest.Seq)), attribute.Float64("score", r.Score)))
		if _, err := s.publishFrame(ctx, sctx, frames[i], r, TriggerAnomaly, took); err != nil {
			span.SetStatus(codes.Error, err.Error())
			s.log.Warn("publish anomaly", "camera", cam, "err", err)
		}
		span.End()
		if s.cap != nil {
			s.submitAuto(KindCaption, cam, TriggerAnomaly)
		}
	}
}
