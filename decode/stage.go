package decode

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/ingest"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/telemetry"
)

// statusEvery is how often each camera's status is published.
const statusEvery = time.Second

// Stage runs one worker per camera in the cameras KV bucket: it watches the
// bucket, starts a worker when a camera appears or changes, stops it when
// the camera is removed, and publishes every camera's status.
type Stage struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	workers map[string]*worker
	wg      sync.WaitGroup
	bus.Readiness
}

type worker struct {
	spec   []byte
	cam    *Camera
	cancel context.CancelFunc
	done   chan struct{}
}

// NewStage returns a decode stage; Run starts it.
func NewStage(opts Options) *Stage {
	return &Stage{opts: opts, log: opts.Logger, workers: map[string]*worker{}}
}

// Run watches the camera registry until ctx is done, then stops every worker.
func (s *Stage) Run(ctx context.Context) error {
	kv, err := ingest.CamerasBucket(ctx, s.opts.NC, s.opts.Replicas, false)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if s.opts.Seqs == nil {
		if s.opts.Seqs, err = OpenSeqStore(ctx, s.opts.NC, s.opts.Replicas); err != nil {
			return err
		}
	}
	defer s.stopAll()
	go s.publishStatus(ctx)
	watch, err := s.opts.NC.Subscribe(bus.WatchPrefix+"*", s.onWatch)
	if err != nil {
		return fmt.Errorf("decode: subscribe %s*: %w", bus.WatchPrefix, err)
	}
	defer func() { _ = watch.Unsubscribe() }()
	s.SetReady(s.opts.NC)
	for {
		if err := s.watch(ctx, kv); err != nil && ctx.Err() == nil {
			// The watcher ends when NATS restarts; watch again (its initial
			// values re-sync every worker).
			s.log.Warn("decode: camera watch ended, restarting", "err", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (s *Stage) watch(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	seen := map[string]bool{}
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watcher closed")
			}
			if e == nil { // end of initial values: drop workers whose camera vanished meanwhile
				if initial {
					s.retain(seen)
					initial = false
				}
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				s.stop(e.Key())
				continue
			}
			seen[e.Key()] = true
			s.start(ctx, e.Key(), e.Value())
		}
	}
}

// start runs (or restarts, when its spec changed) the worker of a camera.
func (s *Stage) start(ctx context.Context, id string, spec []byte) {
	s.mu.Lock()
	cur := s.workers[id]
	s.mu.Unlock()
	if cur != nil && string(cur.spec) == string(spec) {
		return
	}
	if cur != nil {
		s.stop(id)
	}
	var c config.Camera
	if err := json.Unmarshal(spec, &c); err != nil {
		s.log.Error("decode: bad camera spec in registry", "camera", id, "err", err)
		return
	}
	cam, err := NewCamera(c, s.opts)
	if err != nil {
		s.log.Error("decode: cannot start camera", "camera", id, "err", err)
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{spec: spec, cam: cam, cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	s.workers[id] = w
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(w.done)
		cam.Run(wctx)
	}()
}

func (s *Stage) stop(id string) {
	s.mu.Lock()
	w := s.workers[id]
	delete(s.workers, id)
	s.mu.Unlock()
	if w == nil {
		return
	}
	w.cancel()
	<-w.done
	telemetry.CameraUp.DeleteLabelValues(id)
}

func (s *Stage) retain(keep map[string]bool) {
	s.mu.Lock()
	var gone []string
	for id := range s.workers {
		if !keep[id] {
			gone = append(gone, id)
		}
	}
	s.mu.Unlock()
	for _, id := range gone {
		s.stop(id)
	}
}

func (s *Stage) stopAll() {
	s.retain(nil)
	s.wg.Wait()
}

// onWatch turns on a camera's previews for bus.PreviewTTL.
func (s *Stage) onWatch(m *nats.Msg) {
	id := strings.TrimPrefix(m.Subject, bus.WatchPrefix)
	s.mu.Lock()
	w := s.workers[id]
	s.mu.Unlock()
	if w != nil {
		w.cam.preview.watch(time.Now().Add(bus.PreviewTTL))
	}
}

// Statuses returns the status of every running camera.
func (s *Stage) Statuses() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.workers))
	for _, w := range s.workers {
		out = append(out, w.cam.Status())
	}
	return out
}

func (s *Stage) publishStatus(ctx context.Context) {
	t := time.NewTicker(statusEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, st := range s.Statuses() {
			b, err := json.Marshal(st)
			if err != nil {
				continue
			}
			_ = s.opts.NC.Publish(bus.StatusSubject(st.ID), b)
		}
	}
}
