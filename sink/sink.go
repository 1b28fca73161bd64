// Package sink publishes annotations downstream: the public subject
// patchline.annotations.<camera> (with a Nats-Msg-Id of camera:seq), the
// JetStream stream over it that keeps them for replay (deduplicated by that
// id), and an optional JSON Lines file.
package sink

import (
	"bytes"
	"context"
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
	"go.opentelemetry.io/otel/trace"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/telemetry"
)

const stageName = "sink"

// Stage is the sink stage. Replicas share the sink queue group.
type Stage struct {
	nc       *nats.Conn
	cfg      config.Sink
	replicas int
	log      *slog.Logger

	mu       sync.Mutex
	jsonl    *jsonlFile   // nil: no file
	lines    bytes.Buffer // whole lines not yet written (a write never splits one across files)
	jsonlErr uint64       // failed writes in a row, for thinning the log

	hooks  []*webhook
	storer *bus.Storer // nil without the stream

	malformed   atomic.Uint64
	unpublished atomic.Uint64 // annotations not published (logged thinned)
	bus.Readiness
}

// NewStage opens the configured outputs; Run creates the stream (with
// replicas replicas, nats.replicas) if cfg.Stream names one.
func NewStage(nc *nats.Conn, cfg config.Sink, replicas int, log *slog.Logger) (*Stage, error) {
	s := &Stage{nc: nc, cfg: cfg, replicas: replicas, log: log}
	for i, w := range cfg.Webhooks {
		if err := w.Validate(); err != nil {
			return nil, fmt.Errorf("sink: webhooks[%d]: %w", i, err)
		}
		delivery, err := w.DeliveryFor(cfg.Stream)
		if err != nil {
			return nil, fmt.Errorf("sink: webhooks[%d]: %w", i, err)
		}
		h, err := newWebhook(w, delivery == config.DeliveryDurable, log)
		if err != nil {
			return nil, fmt.Errorf("sink: webhooks[%d]: %w", i, err)
		}
		if h.durable {
			h.maxAge = cfg.Stream.MaxAge
		}
		s.hooks = append(s.hooks, h)
	}
	if cfg.JSONL != "" {
		// Its directory is made as the rotated files' would be.
		if err := os.MkdirAll(filepath.Dir(cfg.JSONL), 0o755); err != nil {
			return nil, fmt.Errorf("sink: jsonl output: %w", err)
		}
		if err := touch(cfg.JSONL); err != nil { // writable: the rotating writer opens it at the first write
			return nil, fmt.Errorf("sink: jsonl output: %w", err)
		}
		s.jsonl = newJSONLFile(cfg.JSONL, cfg.JSONLMaxMB, cfg.JSONLKeep)
	}
	return s, nil
}

// Run forwards annotations until ctx is done, flushing the file output
// every second and at the end.
func (s *Stage) Run(ctx context.Context) error {
	if s.cfg.Stream.Name == "" {
		// Beside the start, not before it: with NATS away, the check
		// waits out its timeout.
		warned := make(chan struct{})
		go func() { defer close(warned); s.warnStreamLeft(ctx) }()
		defer func() { <-warned }()
	} else {
		if err := EnsureStream(ctx, s.nc, s.cfg.Stream, s.replicas); err != nil {
			return err
		}
		storer, stop, err := bus.StartStorer(s.nc, s.cfg.Stream, s.log)
		if err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		s.storer = storer
		defer stop() // after the subscription drained: what it published gets stored
	}
	consumers, err := s.hookConsumers(ctx)
	if err != nil {
		return err
	}
	sub, err := s.nc.QueueSubscribe(bus.AnalyzedPrefix+"*", bus.QueueSink, s.onAnnotation)
	if err != nil {
		return fmt.Errorf("sink: subscribe: %w", err)
	}
	// Webhooks deliver until the end of Run plus a grace to empty their queues.
	hookCtx, stopHooks := context.WithCancel(context.Background())
	defer stopHooks()
	var hooks sync.WaitGroup
	for i, w := range s.hooks {
		hooks.Add(1)
		go func() {
			defer hooks.Done()
			if w.durable {
				w.runDurable(ctx, hookCtx, consumers[i], func() (jetstream.Consumer, error) { return s.hookConsumer(ctx, w) })
			} else {
				w.run(hookCtx)
			}
		}()
	}
	defer func() { s.drainHooks(); stopHooks(); hooks.Wait() }()
	// Captions and anomalies come from generate straight to the public
	// subject: the replicas share them (queue group) for the memory
	// webhooks (durable ones read them from the stream).
	if slices.ContainsFunc(s.hooks, func(w *webhook) bool {
		return !w.durable && (w.wantsKind(annotation.KindCaption) || w.wantsKind(annotation.KindAnomaly))
	}) {
		gen, err := s.nc.QueueSubscribe(bus.AnnotationsPrefix+"*", bus.QueueSink+"-webhooks", s.onPublished)
		if err != nil {
			return fmt.Errorf("sink: subscribe: %w", err)
		}
		defer func() { _ = gen.Drain() }()
	}
	telemetry.ShowMalformed(stageName, bus.AnalyzedPrefix+"*")
	telemetry.ClockSkew.WithLabelValues(stageName)
	s.SetReady(s.nc)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Drain hands what is pending to onAnnotation; with NATS away
			// nothing more can come, and Drain would wait out its flush
			// (10 s) before the stop could begin.
			if s.nc.IsConnected() {
				_ = sub.Drain()
			} else {
				_ = sub.Unsubscribe()
			}
			for sub.IsValid() {
				time.Sleep(10 * time.Millisecond)
			}
			return s.close()
		case <-t.C:
			s.flush()
		}
	}
}

func (s *Stage) onAnnotation(m *nats.Msg) {
	var a annotation.Annotation
	if err := json.Unmarshal(m.Data, &a); err != nil || a.Schema != annotation.Schema || frame.ValidCameraID(a.Camera) != nil {
		n := s.malformed.Add(1)
		telemetry.Malformed.WithLabelValues(stageName, bus.SubjectFamily(m.Subject)).Inc()
		if telemetry.Thinned(n) {
			s.log.Warn("dropping malformed annotation", "subject", m.Subject, "err", err, "malformed_total", n)
		}
		return
	}
	telemetry.FramesIn.WithLabelValues(stageName, a.Camera).Inc()
	telemetry.ShowCamera(stageName, a.Camera, "publish_error")
	start := time.Now()
	if ns, err := strconv.ParseInt(m.Header.Get(annotation.HdrAnalyzedAt), 10, 64); err == nil {
		start = telemetry.NotAfter(stageName, time.Unix(0, ns), start) // analyze's clock, which may be ahead of this one
	}
	ctx, span := telemetry.Tracer().Start(bus.ExtractTrace(context.Background(), m.Header), "sink", trace.WithTimestamp(start), trace.WithSpanKind(trace.SpanKindConsumer))
	if a.LatencyMs == nil {
		a.LatencyMs = map[string]float64{}
	}
	now := time.Now()
	captured := telemetry.NotAfter(stageName, a.CapturedAt, now)
	a.LatencyMs["sink"] = frame.Millis(now.Sub(start))
	a.LatencyMs["total"] = frame.Millis(now.Sub(captured))
	telemetry.StageLatency.WithLabelValues("sink").Observe(now.Sub(start).Seconds())
	telemetry.StageLatency.WithLabelValues("total").Observe(now.Sub(captured).Seconds())
	b, err := json.Marshal(a)
	if err != nil {
		span.End()
		return
	}
	out := nats.NewMsg(bus.AnnotationSubject(a.Camera))
	out.Data = b
	out.Header.Set(nats.MsgIdHdr, frame.MsgID(a.Camera, a.Seq))
	bus.InjectTrace(ctx, out.Header)
	if err := s.nc.PublishMsg(out); err != nil {
		telemetry.FramesDropped.WithLabelValues(stageName, a.Camera, "publish_error").Inc()
		if n := s.unpublished.Add(1); telemetry.Thinned(n) {
			s.log.Warn("publish annotation failed; dropped", "camera", a.Camera, "err", err, "dropped_total", n)
		}
	} else {
		telemetry.FramesOut.WithLabelValues(stageName, a.Camera).Inc()
		telemetry.LastAnnotation.WithLabelValues(a.Camera).Set(float64(now.UnixNano()) / 1e9)
	}
	if s.storer != nil {
		s.storer.Store(out)
	}
	s.writeLine(b)
	s.toHooks(&a, delivery{id: out.Header.Get(nats.MsgIdHdr), body: b, trace: ctx})
	span.End()
}

// onPublished takes the annotations generate published (message ids
// camera:seq:kind:trigger[:nonce]) to the webhooks; the sink's own (camera:seq) went to
// them as it published them.
func (s *Stage) onPublished(m *nats.Msg) {
	id := m.Header.Get(nats.MsgIdHdr)
	if strings.Count(id, ":") < 2 {
		return // analysis: the sink's own
	}
	var a annotation.Annotation
	if err := json.Unmarshal(m.Data, &a); err != nil || a.Kind == annotation.KindAnalysis {
		return
	}
	s.toHooks(&a, delivery{id: id, body: m.Data, trace: bus.ExtractTrace(context.Background(), m.Header)})
}

// toHooks queues an annotation for every memory webhook that wants it.
func (s *Stage) toHooks(a *annotation.Annotation, d delivery) {
	for _, w := range s.hooks {
		if !w.durable && w.wants(a) {
			w.enqueue(d)
		}
	}
}

// hookGrace is how long a stopping sink lets its webhooks empty their
// queues (memory) or finish the delivery under way (durable).
const hookGrace = 2 * time.Second

// drainHooks waits up to hookGrace for the webhooks to be done.
func (s *Stage) drainHooks() {
	deadline := time.Now().Add(hookGrace)
	for time.Now().Before(deadline) && slices.ContainsFunc(s.hooks, func(w *webhook) bool { return w.q.Len() > 0 || w.inFlight.Load() }) {
		time.Sleep(20 * time.Millisecond)
	}
}

// hookConsumers creates or updates the durable consumer of every durable
// webhook (nil for memory ones), on the annotation stream.
func (s *Stage) hookConsumers(ctx context.Context) ([]jetstream.Consumer, error) {
	out := make([]jetstream.Consumer, len(s.hooks))
	for i, w := range s.hooks {
		if !w.durable {
			continue
		}
		var err error
		if out[i], err = s.hookConsumer(ctx, w); err != nil {
			return nil, fmt.Errorf("sink: webhooks[%d]: %w", i, err)
		}
	}
	return out, nil
}

// hookConsumer creates or updates the durable consumer of w. Where a
// consumer starts is fixed when it is made: at the annotations that come
// after, or, made again while the sink runs (it vanished), after the last
// one known done with (w.done), so that none stored meanwhile is skipped.
func (s *Stage) hookConsumer(ctx context.Context, w *webhook) (cons jetstream.Consumer, err error) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	stream, want := s.cfg.Stream.Name, w.consumer(s.cfg.Stream)
	err = bus.SetupRetry(ctx, js, func() (err error) {
		cfg := want
		cons, err = js.Consumer(ctx, stream, cfg.Durable)
		if err == nil {
			cur := cons.CachedInfo().Config
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = cur.DeliverPolicy, cur.OptStartSeq, cur.OptStartTime
			if cons, err = js.UpdateConsumer(ctx, stream, cfg); !errors.Is(err, jetstream.ErrConsumerDoesNotExist) {
				return err
			}
			cfg = want // deleted meanwhile: make it
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return err
		}
		if done := w.done.Load(); done > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, done+1
		}
		cons, err = js.CreateConsumer(ctx, stream, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) { // another replica made it first
			cons, err = js.Consumer(ctx, stream, cfg.Durable)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: durable consumer %s on stream %s: %w", w.name, want.Durable, stream, err)
	}
	w.handled(cons.CachedInfo().AckFloor.Stream)
	return cons, nil
}

// jsonlBuffer is how much of the JSON Lines output waits in memory before
// a write (and at most a second).
const jsonlBuffer = 64 << 10

func (s *Stage) writeLine(b []byte) {
	if s.jsonl == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines.Write(b)
	s.lines.WriteByte('\n')
	if s.lines.Len() >= jsonlBuffer {
		s.writeLines()
	}
}

// writeLines writes the buffered lines in one write, which the rotating
// writer puts whole into one file. A failed write drops them (logged the
// 1st, 2nd, 4th… time): a full disk must not grow the sink's memory.
func (s *Stage) writeLines() {
	if s.lines.Len() == 0 {
		return
	}
	err := s.jsonl.Write(s.lines.Bytes())
	lines := bytes.Count(s.lines.Bytes(), []byte{'\n'})
	s.lines.Reset()
	switch {
	case err != nil:
		jsonlDropped.Add(float64(lines))
		if s.jsonlErr++; telemetry.Thinned(s.jsonlErr) {
			s.log.Warn("jsonl output: write failed, lines dropped", "file", s.cfg.JSONL, "err", err, "failures", s.jsonlErr, "lines", lines)
		}
	case s.jsonlErr > 0:
		s.log.Info("jsonl output: writing again", "file", s.cfg.JSONL, "failed_writes", s.jsonlErr)
		s.jsonlErr = 0
	}
}

func (s *Stage) flush() {
	if s.jsonl == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeLines()
}

func (s *Stage) close() error {
	if s.jsonl == nil {
		return nil
	}
	s.flush()
	return s.jsonl.Close()
}

// EnsureStream creates the annotation stream st, or updates it to st's
// limits: every message on patchline.annotations.*, and the copies on
// patchline.stored.* (bus.Storer) stored as patchline.annotations.* (a
// second chance for what the stream missed live, deduplicated), file storage, the oldest messages dropped first,
// duplicates (by Nats-Msg-Id) stored once.
func EnsureStream(ctx context.Context, nc *nats.Conn, st config.Stream, replicas int) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("sink: jetstream: %w", err)
	}
	cfg := jetstream.StreamConfig{
		Name:        st.Name,
		Description: streamDescription,
		Subjects:    []string{bus.AnnotationsPrefix + "*", bus.StoredPrefix + "*"},
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source: bus.StoredPrefix + "*", Destination: bus.AnnotationsPrefix + "{{wildcard(1)}}",
		},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		MaxAge:     st.MaxAge,
		MaxBytes:   st.MaxBytes,
		Duplicates: st.DuplicateWindow,
		Replicas:   replicas,
	}
	err = bus.SetupRetry(ctx, js, func() error {
		_, err := js.CreateOrUpdateStream(ctx, cfg)
		return err
	})
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == jsSubjectsOverlap {
		// JetStream says only "subjects overlap": say with which stream.
		if other, ours, lerr := annotationStream(ctx, js); lerr == nil && other != "" {
			if ours {
				return fmt.Errorf("sink: sink.stream.name %s: stream %s, made before under that name, already stores %s*: set sink.stream.name back to %s, or delete that stream, annotations and all (nats stream rm %s)",
					st.Name, other, bus.AnnotationsPrefix, other, other)
			}
			return fmt.Errorf("sink: sink.stream.name %s: stream %s, not patchline's, already stores %s* (a subject goes to one stream only): narrow its subjects, or turn sink.stream off (name: \"\")",
				st.Name, other, bus.AnnotationsPrefix)
		}
	}
	if err != nil {
		return fmt.Errorf("sink: annotation stream %s (sink.stream): %w", st.Name, err)
	}
	return nil
}

// streamDescription marks the annotation streams patchline makes.
const streamDescription = "patchline annotations (analysis, captions, anomalies) for replay"

// jsSubjectsOverlap is JetStream's error code for a stream whose subjects
// another stream already takes.
const jsSubjectsOverlap jetstream.ErrorCode = 10065

// annotationStream names the stream that stores patchline.annotations.*
// ("" if none does), and whether patchline made it.
func annotationStream(ctx context.Context, js jetstream.JetStream) (name string, ours bool, err error) {
	name, err = js.StreamNameBySubject(ctx, bus.AnnotationsPrefix+"*")
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	str, err := js.Stream(ctx, name)
	if err != nil {
		return name, false, err
	}
	return name, str.CachedInfo().Config.Description == streamDescription, nil
}

// warnStreamLeft says, with sink.stream off, that a stream an earlier
// configuration made still stores every annotation, up to its limits.
func (s *Stage) warnStreamLeft(ctx context.Context) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if other, ours, err := annotationStream(ctx, js); err == nil && ours {
		s.log.Warn("sink.stream is off, but a stream made before still stores every annotation, up to its limits: delete it to stop that (nats stream rm "+other+")",
			"stream", other)
	}
}
