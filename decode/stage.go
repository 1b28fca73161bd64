package decode

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/ingest"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/lease"
	"github.com/patchline/patchline/internal/media"
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/internal/tick"
)

// statusEvery is how often each camera's status is published.
const statusEvery = time.Second

// Stage decodes the cameras of the registry (the cameras KV bucket) that
// this replica holds the lease of: it watches the registry, shares the
// cameras with the other decode replicas on the same NATS through leases
// (internal/lease), runs one worker per camera it holds (restarted when the
// camera changes, stopped when it goes or its lease is lost or given
// away), and publishes those cameras' status.
type Stage struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	kv      jetstream.KeyValue // the camera registry, for reads (stillAttached)
	specs   map[string][]byte  // every camera in the registry
	workers map[string]*worker // the cameras this replica decodes
	failed  map[string]failure // cameras of this replica whose spec cannot start
	wg      sync.WaitGroup
	changed chan struct{} // the registry changed: reconcile now
	// unverified counts the registry reads before a start that failed
	// (logged thinned).
	unverified atomic.Uint64
	bus.Readiness
}

// failure is a camera whose spec its worker cannot start with: reported
// (state failed) until the spec changes or the camera goes, not retried.
type failure struct {
	spec      []byte
	st        Status
	notCamera bool // not a camera's spec at all (put by hand): no status either
}

type worker struct {
	spec   []byte
	cam    *Camera
	cancel context.CancelFunc
	done   chan struct{}
	// stopping says its stop is under way (under s.mu): it is no longer
	// reported, and no new worker starts for the camera until it is over.
	stopping bool
}

// NewStage returns a decode stage; Run starts it.
func NewStage(opts Options) *Stage {
	opts.Control = cmp.Or(opts.Control, opts.NC)
	return &Stage{opts: opts, log: opts.Logger, specs: map[string][]byte{}, workers: map[string]*worker{}, failed: map[string]failure{}, changed: make(chan struct{}, 1)}
}

// Run watches the camera registry until ctx is done, then stops every worker.
func (s *Stage) Run(ctx context.Context) error {
	if s.log != nil {
		SetFFmpegLogger(s.log)
	}
	if err := checkPayload(s.opts.NC, s.opts.Decode); err != nil {
		return err
	}
	ctl := s.opts.Control
	kv, err := ingest.CamerasBucket(ctx, ctl, s.opts.Replicas, false)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	s.mu.Lock()
	s.kv = kv
	s.mu.Unlock()
	if s.opts.Seqs == nil {
		if s.opts.Seqs, err = OpenSeqStore(ctx, ctl, s.opts.Replicas); err != nil {
			return err
		}
	}
	ttl := withDefaults(s.opts.Decode).LeaseTTL
	ls, err := lease.Open(ctx, ctl, bus.LeasesBucket, "patchline decode: cam.<camera> -> decoding replica, replica.<id> -> alive", ttl, s.opts.Replicas)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	ls.Cap = s.opts.Decode.MaxCameras
	// Ends the lease round and the workers when Run returns with an
	// error too, not only when the caller stops it: else the return would
	// wait for them, and the error with it, for ever.
	ctx, cancel := context.WithCancel(ctx)
	leaseDone := make(chan struct{})
	go func() {
		defer close(leaseDone)
		ls.Run(ctx, ttl/3, s.changed, s.cameraIDs, lease.Work{
			Hold: func(id string) { s.hold(ctx, id) }, Drop: s.stop, Log: s.log,
		})
		s.stopAll()
	}()
	defer func() { <-leaseDone }() // it stops the workers and gives the leases back
	defer cancel()                 // before the wait above
	go s.noteStop(ctx, leaseDone)
	go s.publishStatus(ctx)
	watch, err := ctl.Subscribe(bus.WatchPrefix+"*", s.onWatch)
	if err != nil {
		return fmt.Errorf("decode: subscribe %s*: %w", bus.WatchPrefix, err)
	}
	defer func() { _ = watch.Unsubscribe() }()
	_ = s.opts.NC.FlushTimeout(time.Second)
	s.SetReady(ctl)
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
	seen := map[string]bool{}
	initial := true
	return bus.WatchKV(ctx, kv, func(e jetstream.KeyValueEntry) {
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
			s.poke()
		}
	})
}

// stillAttached asks the registry whether camera id is attached; an error
// when it does not answer.
func (s *Stage) stillAttached(ctx context.Context, id string) (bool, error) {
	s.mu.Lock()
	kv := s.kv
	s.mu.Unlock()
	if kv == nil {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := kv.Get(ctx, id)
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && ctx.Err() == nil {
		// A handle opened before ingest turned the bucket's direct gets
		// off asks a subject nobody answers any more: open it afresh.
		if js, jerr := jetstream.New(s.opts.Control); jerr == nil {
			if fresh, kerr := js.KeyValue(ctx, bus.CamerasBucket); kerr == nil {
				s.mu.Lock()
				s.kv = fresh
				s.mu.Unlock()
				_, err = fresh.Get(ctx, id)
			}
		}
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case err != nil:
		if n := s.unverified.Add(1); telemetry.Thinned(n) {
			s.log.Warn("decode: the camera registry did not answer whether a camera is attached; starting it waits", "camera", id, "err", err, "failures", n)
		}
		return false, err
	}
	return true, nil
}

// poke asks the lease loop for a round now.
func (s *Stage) poke() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// cameraIDs returns the cameras of the registry.
func (s *Stage) cameraIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.specs))
}

// hold runs the worker of a camera whose lease this replica holds (a
// no-op unless it is new here or its spec changed).
func (s *Stage) hold(ctx context.Context, id string) {
	s.mu.Lock()
	spec, ok := s.specs[id]
	s.mu.Unlock()
	if ok {
		s.start(ctx, id, spec)
	}
}

// start runs (or restarts, when its spec changed) the worker of a camera.
func (s *Stage) start(ctx context.Context, id string, spec []byte) {
	s.mu.Lock()
	cur := s.workers[id]
	f, failed := s.failed[id]
	restart := cur != nil && string(cur.spec) != string(spec) && !cur.stopping
	if restart {
		cur.stopping = true
	}
	s.mu.Unlock()
	if restart {
		// Stop it in the background: a read may block up to the stall
		// timeout, which must not hold up the lease round (the other
		// cameras' renewals). The round after it has stopped starts it
		// with the new spec.
		go func() {
			s.stop(id)
			s.poke()
		}()
		return
	}
	if cur != nil || failed && string(f.spec) == string(spec) {
		return // unchanged, or its stop is under way
	}
	// A camera new here: ask the registry itself, not the watch's copy of
	// it, which lags behind for a moment after NATS comes back (a replica
	// cut off while a camera was detached would start it again).
	if ok, err := s.stillAttached(ctx, id); !ok {
		if err == nil {
			s.mu.Lock()
			delete(s.specs, id)
			s.mu.Unlock()
			s.poke() // its lease goes back at the next round
		}
		return // or the registry did not answer: the next round tries again
	}
	var c config.Camera
	if err := json.Unmarshal(spec, &c); err != nil {
		// Not retried (nor logged again) until it changes, as ingest skips it.
		s.log.Warn("decode: skipping a registry entry that is not a camera; remove it with patchline detach --api URL -- <key>", "key", id, "err", err)
		s.mu.Lock()
		s.failed[id] = failure{spec: spec, notCamera: true}
		s.mu.Unlock()
		return
	}
	cam, err := NewCamera(c, s.opts)
	if err != nil {
		s.log.Error("decode: cannot start camera", "camera", id, "err", err)
		// Say so where the camera's state is read (the API, `patchline
		// cameras`), with the others' every second: it is not retried, its
		// spec has to change.
		st := Status{ID: id, URL: media.RedactURL(c.URL), State: StateFailed, LastError: err.Error(), Since: time.Now()}
		telemetry.SetCameraState(id, StateFailed, states)
		s.mu.Lock()
		s.failed[id] = failure{spec: spec, st: st}
		s.mu.Unlock()
		s.sendStatus(st)
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{spec: spec, cam: cam, cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	s.workers[id] = w
	delete(s.failed, id)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(w.done)
		cam.Run(wctx)
	}()
}

// stop stops the worker of a camera and waits for it (a read under way
// may take up to the stall timeout to give up).
func (s *Stage) stop(id string) {
	s.mu.Lock()
	w := s.workers[id]
	delete(s.failed, id)
	if w != nil {
		w.stopping = true
	}
	s.mu.Unlock()
	if w == nil {
		telemetry.ForgetCameraRun(id) // a camera that failed to start: its state "failed"
		return
	}
	w.cancel()
	<-w.done
	scheduleTrim() // what its decoder freed goes back to the system
	// Only now is it forgotten: until it has stopped, no new worker may
	// start for the camera (and none has set the gauge since).
	s.mu.Lock()
	if s.workers[id] == w {
		delete(s.workers, id)
		telemetry.ForgetCameraRun(id)
	}
	s.mu.Unlock()
}

// stopAll stops every worker and waits for them.
func (s *Stage) stopAll() {
	s.mu.Lock()
	ids := slices.Collect(maps.Keys(s.workers))
	s.mu.Unlock()
	// All at once: a camera's stop waits for a read or an open under way,
	// up to the stall timeout, and one after another they would add up.
	var stops sync.WaitGroup
	for _, id := range ids {
		stops.Go(func() { s.stop(id) })
	}
	stops.Wait()
	s.wg.Wait()
}

// noteStop says, when the stage's stop (ctx done) has not ended (done)
// within stopNote, what it waits for.
func (s *Stage) noteStop(ctx context.Context, done <-chan struct{}) {
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	select {
	case <-done:
	case <-time.After(stopNote):
		s.mu.Lock()
		n := len(s.workers)
		s.mu.Unlock()
		s.log.Info("decode: waiting for cameras to stop: a read or an open under way ends within decode.stall_timeout",
			"cameras", n, "stall_timeout", withDefaults(s.opts.Decode).StallTimeout)
	}
}

// stopNote is how long a stop goes on before noteStop says what it waits for.
const stopNote = 2 * time.Second

// onWatch turns on a camera's previews for bus.PreviewTTL.
func (s *Stage) onWatch(m *nats.Msg) {
	id := strings.TrimPrefix(m.Subject, bus.WatchPrefix)
	s.mu.Lock()
	w := s.workers[id]
	s.mu.Unlock()
	if w != nil {
		w.cam.preview.watch(bus.PreviewTTL)
	}
}

// Statuses returns the status of every camera this replica runs, and of
// each whose spec it could not start with (state failed).
func (s *Stage) Statuses() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.workers)+len(s.failed))
	for _, f := range s.failed {
		if !f.notCamera {
			out = append(out, f.st)
		}
	}
	for _, w := range s.workers {
		if !w.stopping {
			out = append(out, w.cam.Status())
		}
	}
	return out
}

func (s *Stage) publishStatus(ctx context.Context) {
	tick.Every(ctx, statusEvery, func() bool {
		for _, st := range s.Statuses() {
			s.sendStatus(st)
		}
		return true
	})
}

// sendStatus publishes a camera's status on patchline.status.<camera>.
func (s *Stage) sendStatus(st Status) {
	if b, err := json.Marshal(st); err == nil {
		_ = s.opts.Control.Publish(bus.StatusSubject(st.ID), b)
	}
}

// checkPayload fails when a frame at the decode size cannot be published on
// nc's server (its max_payload); unknown until connected, it passes then.
func checkPayload(nc *nats.Conn, d config.Decode) error {
	limit := nc.MaxPayload()
	need := int64(d.Width) * int64(d.Height) * 3
	if limit <= 0 || need+frameHeaderRoom <= limit {
		return nil
	}
	return fmt.Errorf("decode: a %dx%d frame is %d bytes of patch tokens, over the NATS server's max_payload of %d bytes: raise max_payload (deploy/nats/node.conf sets 4MB) or lower decode.width/height",
		d.Width, d.Height, need, limit)
}

// frameHeaderRoom is what a frame message's headers take at most, roughly.
const frameHeaderRoom = 4 << 10
