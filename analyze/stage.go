package analyze

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/queue"
	"github.com/patchline/patchline/internal/telemetry"
)

const stageName = "analyze"

// Stage consumes tokenized frames from every camera (in the analyze queue
// group, so replicas split the work), batches them across cameras up to
// BatchSize frames or MaxBatchWait, runs the model, and publishes one
// annotation per frame for the sink.
type Stage struct {
	nc      *nats.Conn
	model   *Model
	cfg     config.Analyze
	log     *slog.Logger
	ring    *queue.Ring[*item]
	replica string

	malformed atomic.Uint64
	analyzed  atomic.Uint64
	failed    atomic.Uint64 // batches whose inference failed
	unencoded atomic.Uint64 // annotations that could not be encoded
	// frames the model cannot take, and annotations not published: each
	// can happen for every frame, so they are logged thinned
	mismatched, unpublished atomic.Uint64
	behind                  atomic.Uint64 // frames dropped from a full queue
	bus.Readiness
}

type item struct {
	f       *frame.Frame
	ctx     context.Context // carries the frame's remote span context
	arrived time.Time
	// taken is when the batcher took the frame from the queue: its
	// queue_wait ends and its batch wait (for the batch to fill) begins.
	taken time.Time
}

// NewStage wires a model to NATS. The caller owns the model.
func NewStage(nc *nats.Conn, model *Model, cfg config.Analyze, log *slog.Logger) *Stage {
	host, _ := os.Hostname()
	model.SetLogger(log)
	for _, n := range model.Notes() {
		log.Warn(n)
	}
	return &Stage{
		nc: nc, model: model, cfg: cfg, log: log,
		ring:    queue.NewRing[*item](cfg.QueueSize),
		replica: host + "/" + strconv.Itoa(os.Getpid()),
	}
}

// Analyzed is the number of frames this stage has annotated.
func (s *Stage) Analyzed() uint64 { return s.analyzed.Load() }

// Malformed is the number of frame messages dropped as undecodable.
func (s *Stage) Malformed() uint64 { return s.malformed.Load() }

// Run consumes frames until ctx is done.
func (s *Stage) Run(ctx context.Context) error {
	sub, err := s.nc.QueueSubscribe(bus.FramesPrefix+"*", bus.QueueAnalyze, s.onFrame)
	if err != nil {
		return fmt.Errorf("analyze: subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	telemetry.ShowMalformed(stageName, bus.FramesPrefix+"*")
	telemetry.ClockSkew.WithLabelValues(stageName)
	s.Announce(s.nc, s.log, stageName, "model", s.model.Name(), "task", s.model.Task(), "batch", s.cfg.BatchSize, "max_wait", s.cfg.MaxBatchWait)
	// Inference and publishing overlap: while one goroutine builds and
	// publishes a batch's annotations, this one gathers the next batch and
	// runs the model, so ONNX Runtime is not left idle for the per-frame
	// work. The small buffer bounds the batches waiting to be published.
	done := make(chan inferred, 2)
	published := make(chan struct{})
	go func() {
		defer close(published)
		for r := range done {
			s.publishBatch(r)
		}
	}()
	defer func() {
		close(done)
		<-published
	}()
	for {
		batch, err := s.nextBatch(ctx)
		if err != nil {
			return nil // ctx done
		}
		if r, ok := s.infer(batch); ok {
			done <- r
		}
	}
}

// inferred is one batch after inference, on its way to publishing.
type inferred struct {
	items      []*item // the frames the model ran on, in batch order
	results    []Result
	start, end time.Time
}

func (s *Stage) onFrame(m *nats.Msg) {
	now := time.Now()
	f, err := frame.Decode(m.Header, m.Data)
	if err == nil && m.Subject != bus.FrameSubject(f.Camera) {
		err = fmt.Errorf("frame of camera %q on subject %s", f.Camera, m.Subject)
	}
	if err != nil {
		n := s.malformed.Add(1)
		telemetry.Malformed.WithLabelValues(stageName, bus.SubjectFamily(m.Subject)).Inc()
		if telemetry.Thinned(n) {
			s.log.Warn("dropping malformed frame message", "subject", m.Subject, "err", err, "malformed_total", n)
		}
		return
	}
	telemetry.FramesIn.WithLabelValues(stageName, f.Camera).Inc()
	telemetry.ShowCamera(stageName, f.Camera, dropReasons...) // each frame: a camera's series come back after a detach forgot them
	ctx := bus.ExtractTrace(context.Background(), m.Header)
	if old, dropped := s.ring.Push(&item{f: f, ctx: ctx, arrived: now}); dropped {
		telemetry.FramesDropped.WithLabelValues(stageName, old.f.Camera, "queue_full").Inc()
		if n := s.behind.Add(1); telemetry.Thinned(n) {
			s.log.Warn("analyze falls behind: the oldest queued frames are dropped (add analyze replicas, or lower cameras' fps)",
				"camera", old.f.Camera, "queue_size", s.cfg.QueueSize, "dropped_total", n)
		}
	}
	telemetry.QueueDepth.WithLabelValues(stageName).Set(float64(s.ring.Len()))
}

// dropReasons are the reasons analyze drops a frame for, whose series
// exist at 0 from a camera's first frame.
var dropReasons = []string{"queue_full", "input_mismatch", "inference_error", "encode_error", "publish_error"}

// nextBatch waits for one frame, then gathers more until the batch is full
// or MaxBatchWait has passed since the first.
func (s *Stage) nextBatch(ctx context.Context) ([]*item, error) {
	first, err := s.ring.Pop(ctx)
	if err != nil {
		return nil, err
	}
	first.taken = time.Now()
	batch := []*item{first}
	timer := time.NewTimer(s.cfg.MaxBatchWait)
	defer timer.Stop()
	for len(batch) < s.cfg.BatchSize {
		if it, ok := s.ring.TryPop(); ok {
			it.taken = time.Now()
			batch = append(batch, it)
			continue
		}
		if s.cfg.MaxBatchWait <= 0 {
			break
		}
		select {
		case <-s.ring.Wait():
			continue
		case <-timer.C:
		case <-ctx.Done():
		}
		break
	}
	telemetry.QueueDepth.WithLabelValues(stageName).Set(float64(s.ring.Len()))
	return batch, nil
}

// infer runs the model on the frames of batch it accepts; ok is false when
// none is left to publish.
func (s *Stage) infer(batch []*item) (r inferred, ok bool) {
	frames := make([]*frame.Frame, 0, len(batch))
	kept := batch[:0]
	for _, it := range batch {
		if err := s.model.Accepts(it.f); err != nil {
			telemetry.FramesDropped.WithLabelValues(stageName, it.f.Camera, "input_mismatch").Inc()
			if n := s.mismatched.Add(1); telemetry.Thinned(n) {
				s.log.Warn("dropping frame the model cannot take", "camera", it.f.Camera, "seq", it.f.Seq, "err", err, "dropped_total", n)
			}
			continue
		}
		frames = append(frames, it.f)
		kept = append(kept, it)
	}
	if len(frames) == 0 {
		return r, false
	}
	start := time.Now()
	results, err := s.model.Run(frames)
	end := time.Now()
	telemetry.BatchSize.Observe(float64(len(frames)))
	telemetry.StageLatency.WithLabelValues("inference").Observe(end.Sub(start).Seconds())
	if err != nil {
		if n := s.failed.Add(1); telemetry.Thinned(n) {
			s.log.Error("inference failed; batch dropped", "frames", len(frames), "err", err, "failed_batches", n)
		}
		for _, f := range frames {
			telemetry.FramesDropped.WithLabelValues(stageName, f.Camera, "inference_error").Inc()
		}
		return r, false
	}
	return inferred{items: kept, results: results, start: start, end: end}, true
}

// publishBatch traces and publishes one annotation per frame of r.
func (s *Stage) publishBatch(r inferred) {
	start, end, results := r.start, r.end, r.results
	tracer := telemetry.Tracer()
	for i, it := range r.items {
		f := it.f
		queuedFrom := telemetry.NotAfter(stageName, f.PublishedAt, it.arrived) // decode's clock, which may be ahead of this one
		if queuedFrom.IsZero() {
			queuedFrom = it.arrived
		}
		ctx, span := tracer.Start(it.ctx, "analyze", trace.WithTimestamp(queuedFrom), trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("camera", f.Camera), attribute.Int64("seq", int64(f.Seq)), attribute.String("model", s.model.Name())))
		taken := it.taken
		_, qs := tracer.Start(ctx, "queue_wait", trace.WithTimestamp(queuedFrom))
		qs.End(trace.WithTimestamp(taken))
		_, bs := tracer.Start(ctx, "batch", trace.WithTimestamp(taken), trace.WithAttributes(attribute.Int("batch_size", len(r.items))))
		bs.End(trace.WithTimestamp(start))
		_, is := tracer.Start(ctx, "inference", trace.WithTimestamp(start), trace.WithAttributes(attribute.Int("batch_size", len(r.items))))
		is.End(trace.WithTimestamp(end))
		span.End(trace.WithTimestamp(end))

		lat := map[string]float64{}
		for k, v := range f.Latency {
			lat[k] = v
		}
		lat["queue"] = frame.Millis(taken.Sub(queuedFrom))
		lat["batch"] = frame.Millis(start.Sub(taken))
		lat["inference"] = frame.Millis(end.Sub(start))
		telemetry.StageLatency.WithLabelValues("queue").Observe(taken.Sub(queuedFrom).Seconds())
		telemetry.StageLatency.WithLabelValues("batch").Observe(start.Sub(taken).Seconds())

		a := annotation.Annotation{
			Schema: annotation.Schema, Kind: annotation.KindAnalysis,
			Camera: f.Camera, Seq: f.Seq, PTSMs: frame.Millis(f.PTS), CapturedAt: f.CapturedAt.UTC(),
			SourceWidth: f.SourceW, SourceHeight: f.SourceH,
			Model: s.model.Name(), Task: s.model.Task(),
			Labels: results[i].Labels, Detections: results[i].Detections, Patches: results[i].Patches,
			LatencyMs: lat, TraceID: span.SpanContext().TraceID().String(), AnalyzedBy: s.replica,
		}
		s.publish(ctx, a)
	}
}

func (s *Stage) publish(ctx context.Context, a annotation.Annotation) {
	b, err := json.Marshal(a)
	if err != nil {
		telemetry.FramesDropped.WithLabelValues(stageName, a.Camera, "encode_error").Inc()
		if n := s.unencoded.Add(1); telemetry.Thinned(n) {
			s.log.Error("annotation cannot be encoded; dropped", "camera", a.Camera, "seq", a.Seq, "err", err, "dropped_total", n)
		}
		return
	}
	m := nats.NewMsg(bus.AnalyzedSubject(a.Camera))
	m.Data = b
	m.Header.Set(annotation.HdrAnalyzedAt, strconv.FormatInt(time.Now().UnixNano(), 10))
	bus.InjectTrace(ctx, m.Header)
	if err := s.nc.PublishMsg(m); err != nil {
		telemetry.FramesDropped.WithLabelValues(stageName, a.Camera, "publish_error").Inc()
		if n := s.unpublished.Add(1); telemetry.Thinned(n) {
			s.log.Warn("publish annotation failed; dropped", "camera", a.Camera, "err", err, "dropped_total", n)
		}
		return
	}
	s.analyzed.Add(1)
	telemetry.FramesOut.WithLabelValues(stageName, a.Camera).Inc()
}
