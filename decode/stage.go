package decode

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
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

// Stage decodes the cameras of the registry (the cameras KV bucket) that
// this replica holds the lease of: it watches the registry, shares the
// cameras with the other decode replicas on the same NATS through leases
// (lease.go), runs one worker per camera it holds (restarted when the
// camera changes, stopped when it goes or its lease is lost or given
// away), and publishes those cameras' status.
type Stage struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	specs   map[string][]byte  // every camera in the registry
	workers map[string]*worker // the cameras this replica decodes
	wg      sync.WaitGroup
	changed chan struct{} // the registry changed: reconcile now
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
	return &Stage{opts: opts, log: opts.Logger, specs: map[string][]byte{}, workers: map[string]*worker{}, changed: make(chan struct{}, 1)}
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
	ttl := withDefaults(s.opts.Decode).LeaseTTL
	ls, err := openLeases(ctx, s.opts.NC, ttl, s.opts.Replicas)
	if err != nil {
		return err
	}
	leaseDone := make(chan struct{})
	go func() { defer close(leaseDone); s.leaseLoop(ctx, ls, ttl/3) }()
	defer func() { <-leaseDone }() // it stops the workers and gives the leases back
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

// watch keeps s.specs in step with the registry until ctx is done or the
// watcher ends.
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
			s.mu.Lock()
			switch {
			case e == nil: // end of initial values: drop cameras that vanished meanwhile
				if initial {
					for id := range s.specs {
						if !seen[id] {
							delete(s.specs, id)
						}
					}
					initial = false
				}
			case e.Operation() != jetstream.KeyValuePut:
				delete(s.specs, e.Key())
			default:
				seen[e.Key()] = true
				s.specs[e.Key()] = e.Value()
			}
			s.mu.Unlock()
			if e == nil || !initial {
				select {
				case s.changed <- struct{}{}:
				default:
				}
			}
		}
	}
}

// leaseLoop reconciles every interval, and whenever the registry
// changes, until ctx is done; then it stops every worker and gives the
// leases back.
func (s *Stage) leaseLoop(ctx context.Context, ls *leases, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.stopAll()
			lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ls.leave(lctx)
			cancel()
			return
		case <-t.C:
		case <-s.changed:
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		s.reconcile(rctx, ctx, ls)
		cancel()
	}
}

// reconcile renews this replica's leases (stopping the workers of those
// it lost and of cameras that went), gives one camera back while it holds
// more than its share, and takes free cameras while it holds fewer.
// Workers run under runCtx.
func (s *Stage) reconcile(ctx, runCtx context.Context, ls *leases) {
	replicas, err := ls.heartbeat(ctx)
	if err != nil {
		s.log.Warn("decode: lease heartbeat failed", "err", err)
		return // NATS unreachable: keep what runs, renew next round
	}
	s.mu.Lock()
	specs := maps.Clone(s.specs)
	s.mu.Unlock()
	ids := slices.Sorted(maps.Keys(specs))
	share := (len(ids) + replicas - 1) / replicas

	var held []string
	for _, id := range slices.Sorted(maps.Keys(ls.revs)) {
		spec, ok := specs[id]
		if !ok { // detached
			s.stop(id)
			ls.release(ctx, id)
			continue
		}
		if err := ls.renew(ctx, id); err != nil {
			if bus.Transient(ctx, err) {
				held = append(held, id) // try again next round
				continue
			}
			s.log.Warn("decode: camera lease lost; stopping its worker", "camera", id, "err", err)
			delete(ls.revs, id)
			s.stop(id)
			continue
		}
		s.start(runCtx, id, spec) // no-op unless new here or changed
		held = append(held, id)
	}
	if len(held) > share && replicas > 1 { // one per round, so the others can follow
		id := held[len(held)-1]
		s.log.Info("decode: giving a camera to another replica", "camera", id, "replicas", replicas, "share", share)
		s.stop(id)
		ls.release(ctx, id)
		return
	}
	// Start the search at a different place in every replica, so that
	// replicas starting together do not all race for the same cameras.
	off := 0
	if len(ids) > 0 {
		h := fnv.New32a()
		_, _ = h.Write([]byte(ls.id))
		off = int(h.Sum32() % uint32(len(ids)))
	}
	for i := 0; i < len(ids) && len(held) < share; i++ {
		id := ids[(off+i)%len(ids)]
		if _, ok := ls.revs[id]; ok {
			continue
		}
		got, err := ls.acquire(ctx, id)
		if err != nil {
			s.log.Warn("decode: camera lease", "camera", id, "err", err)
			return
		}
		if got {
			s.start(runCtx, id, specs[id])
			held = append(held, id)
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

// stopAll stops every worker and waits for them.
func (s *Stage) stopAll() {
	s.mu.Lock()
	ids := slices.Collect(maps.Keys(s.workers))
	s.mu.Unlock()
	for _, id := range ids {
		s.stop(id)
	}
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
