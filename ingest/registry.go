// Package ingest owns the camera registry: which cameras exist, from
// pipeline.yaml and, at runtime, from the HTTP API and CLI. Cameras live in the
// JetStream KV bucket patchline_cameras, which decode workers watch; ingest
// also collects the status decode publishes for each camera. It is also
// where WebRTC publishers (WHIP, whip.go) connect, and it holds the bearer
// token, body limit and CORS middleware of the HTTP endpoints (auth.go).
package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/media"
	"github.com/patchline/patchline/internal/telemetry"
)

// Errors the API maps to HTTP status codes.
var (
	ErrExists   = errors.New("camera already exists")
	ErrNotFound = errors.New("camera not found")
	ErrInvalid  = errors.New("invalid camera")
	// ErrUnavailable: the cameras bucket did not answer for longer than
	// unavailableWait (NATS down, or a JetStream cluster without a quorum).
	ErrUnavailable = errors.New("camera registry unavailable")
)

// unavailableWait is how long a registry call waits out a cameras bucket
// that does not answer. A JetStream cluster that loses the server leading
// the bucket elects another within seconds (2–8 s in
// TestNATSClusterNodeLoss); an API call in that window is slow, not failed.
const unavailableWait = 15 * time.Second

// disconnectedWait is how long a registry call waits for NATS itself to
// come back (a blip) before it answers unavailable: a leader election is
// worth waiting out, an outage is not.
const disconnectedWait = 3 * time.Second

// errNATSDown stops a retry: NATS stayed unreachable for disconnectedWait.
var errNATSDown = errors.New("NATS is not reachable")

// retry runs op until it succeeds, fails definitely, or unavailableWait (or,
// with NATS unreachable, disconnectedWait) or ctx ends; a bucket that never
// answered is ErrUnavailable.
func retry(ctx context.Context, op func() error) error {
	var down time.Time // since when op found NATS unreachable
	err := bus.Retry(ctx, unavailableWait, func() error {
		err := op()
		if !errors.Is(err, nats.ErrReconnectBufExceeded) {
			down = time.Time{}
			return err
		}
		if down.IsZero() {
			down = time.Now()
		} else if time.Since(down) >= disconnectedWait {
			return errNATSDown // not transient: the retry ends
		}
		return err
	})
	if errors.Is(err, errNATSDown) || errors.Is(err, nats.ErrReconnectBufExceeded) {
		return fmt.Errorf("%w: %w", ErrUnavailable, errNATSDown)
	}
	if bus.Transient(context.Background(), err) || err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// CameraView is a camera as the API shows it: its spec with the URL
// redacted, and the latest status reported by decode (null until the first).
type CameraView struct {
	ID         string          `json:"id"`
	URL        string          `json:"url"`
	FPS        float64         `json:"fps,omitempty"`
	Loop       bool            `json:"loop,omitempty"`
	FromConfig bool            `json:"from_config,omitempty"` // attached by the configuration's cameras list
	Status     json.RawMessage `json:"status"`
}

// Registry is the camera registry.
type Registry struct {
	nc  *nats.Conn
	kv  jetstream.KeyValue
	log *slog.Logger

	mu        sync.Mutex
	status    map[string]cameraStatus
	statusTTL time.Duration
	pruned    time.Time // when status was last rid of the expired
	badStatus uint64
	sub       *nats.Subscription
	onDetach  []func(id string)
	stop      context.CancelFunc // ends the marker purge
}

// cameraStatus is the last status decode published for a camera.
type cameraStatus struct {
	raw json.RawMessage
	at  time.Time
}

// A status is a small JSON object; one larger is not decode's.
const maxStatusBytes = 16 << 10

// statusTTL forgets the status of a camera no decode has reported on for
// this long (decode publishes every second, on a connection apart from
// frames): one detached through another ingest replica, one whose decode
// is gone or whose lease is moving, one waiting for a replica with room.
// The API then shows no status rather than a stale "streaming".
const statusTTL = 15 * time.Second

// OnDetach calls f with the id of every camera detached from now on (the
// WHIP endpoint closes the camera's WebRTC session).
func (r *Registry) OnDetach(f func(id string)) {
	r.mu.Lock()
	r.onDetach = append(r.onDetach, f)
	r.mu.Unlock()
}

// OpenRegistry creates the cameras bucket, or updates it to replicas, and
// starts collecting camera status.
func OpenRegistry(ctx context.Context, nc *nats.Conn, replicas int, log *slog.Logger) (*Registry, error) {
	kv, err := CamerasBucket(ctx, nc, replicas, true)
	if err != nil {
		return nil, err
	}
	r := &Registry{nc: nc, kv: kv, log: log, status: map[string]cameraStatus{}, statusTTL: statusTTL}
	r.sub, err = nc.Subscribe(bus.StatusPrefix+"*", r.onStatus)
	if err != nil {
		return nil, fmt.Errorf("ingest: subscribe status: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		_ = r.sub.Unsubscribe()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	pctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	go r.purgeMarkersEvery(pctx, js, 10*time.Minute)
	return r, nil
}

// CamerasBucket opens the cameras KV bucket, creating it with replicas if
// needed. Decode uses it too, so either side may start first. Only the
// owner (ingest, which keeps the registry) sets an existing bucket's
// replicas: a decode process started with another configuration must not
// shrink it. The owner also turns direct gets off (see leaderReads); decode
// only watches the bucket, which direct gets do not concern.
func CamerasBucket(ctx context.Context, nc *nats.Conn, replicas int, owner bool) (jetstream.KeyValue, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	cfg := jetstream.KeyValueConfig{
		Bucket: bus.CamerasBucket, Description: "patchline cameras: id -> spec", History: 1, Replicas: replicas,
	}
	var kv jetstream.KeyValue
	err = bus.SetupRetry(ctx, js, func() (err error) {
		if kv, err = js.KeyValue(ctx, cfg.Bucket); errors.Is(err, jetstream.ErrBucketNotFound) {
			if kv, err = js.CreateKeyValue(ctx, cfg); errors.Is(err, jetstream.ErrBucketExists) {
				kv, err = js.KeyValue(ctx, cfg.Bucket) // the other side made it meanwhile
			}
		}
		if err != nil || !owner {
			return err
		}
		kv, err = leaderReads(ctx, js, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cameras bucket %s (is JetStream enabled on the NATS server?): %w", bus.CamerasBucket, err)
	}
	return kv, nil
}

// leaderReads sets the bucket's stream to cfg's replicas with direct gets
// off, and opens the bucket afresh, so that its reads go to the stream
// leader. With direct gets (the KV default) any replica answers a read, and
// one that has not yet applied a write the leader acknowledged answers as
// if it had not happened: in a cluster, a camera just attached could read
// as not found, and be refused a detach. The cameras bucket is read rarely,
// so consistency costs nothing here.
//
// Direct gets only ever go from on to off here (never back, as
// CreateOrUpdateKeyValue would), so a handle opened after they are off
// stays valid: one opened while they were on would ask a direct-get
// subject nobody answers any more.
func leaderReads(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	st, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, err
	}
	sc := st.CachedInfo().Config
	if sc.AllowDirect || sc.Replicas != max(1, cfg.Replicas) || sc.Description != cfg.Description {
		sc.AllowDirect, sc.Replicas, sc.Description = false, max(1, cfg.Replicas), cfg.Description
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("update to %d replicas, reads from the leader: %w", sc.Replicas, err)
		}
	}
	return js.KeyValue(ctx, cfg.Bucket)
}

// Close stops collecting status and purging old detach markers.
func (r *Registry) Close() {
	if r.sub != nil {
		_ = r.sub.Unsubscribe()
	}
	if r.stop != nil {
		r.stop()
	}
}

func (r *Registry) onStatus(m *nats.Msg) {
	id := strings.TrimPrefix(m.Subject, bus.StatusPrefix)
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if frame.ValidCameraID(id) != nil || len(m.Data) > maxStatusBytes || !json.Valid(m.Data) {
		r.badStatus++
		if n := r.badStatus; telemetry.Thinned(n) {
			r.log.Warn("dropping malformed camera status", "subject", m.Subject, "bytes", len(m.Data), "malformed_total", n)
		}
		return
	}
	r.status[id] = cameraStatus{raw: append(json.RawMessage(nil), m.Data...), at: now}
	if now.Sub(r.pruned) > r.statusTTL/4 {
		r.pruned = now
		for k, st := range r.status {
			if now.Sub(st.at) > r.statusTTL {
				delete(r.status, k)
			}
		}
	}
}

// Validate checks a camera spec with pipeline.yaml's own check.
func Validate(c config.Camera) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// Attach adds a camera; it is an error if the id is taken.
func (r *Registry) Attach(ctx context.Context, c config.Camera) error {
	if err := Validate(c); err != nil {
		return err
	}
	if c.FromConfig {
		return fmt.Errorf("%w: from_config is set by patchline, for the configuration's cameras", ErrInvalid)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	creating := false
	err = retry(ctx, func() error {
		_, err := r.kv.Create(ctx, c.ID, b)
		if errors.Is(err, jetstream.ErrKeyExists) && creating {
			// An earlier try may have been stored with its answer lost.
			if cur, gerr := r.kv.Get(ctx, c.ID); gerr == nil && bytes.Equal(cur.Value(), b) {
				return nil
			}
		}
		creating = true
		return err
	})
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%w: %s", ErrExists, c.ID)
		}
		return fmt.Errorf("attach %s: %w", c.ID, err)
	}
	r.log.Info("camera attached", "camera", c.ID, "url", media.RedactURL(c.URL))
	return nil
}

// SyncConfig makes the registry hold the configuration's cameras (its
// cameras list, at start): each is put, marked FromConfig, and a camera an
// earlier configuration put there that this one no longer lists is
// detached. Cameras attached through the API or WHIP are left alone.
func (r *Registry) SyncConfig(ctx context.Context, cams []config.Camera) error {
	listed := map[string]bool{}
	for _, c := range cams {
		c.FromConfig = true
		if err := r.Put(ctx, c); err != nil {
			return fmt.Errorf("camera %s from config: %w", c.ID, err)
		}
		listed[c.ID] = true
	}
	lister, err := r.keys(ctx)
	if err != nil {
		return err
	}
	var stale []string // put by an earlier configuration, not by this one
	for k := range lister.Keys() {
		v, err := r.Get(ctx, k) // every camera, or fail: one missed would stay
		switch {
		case errors.Is(err, ErrNotFound): // detached meanwhile
		case errors.Is(err, errSpec): // not a camera (an older version's, or put by hand): no camera of the config's
			r.skipping(k, err)
		case err != nil:
			return fmt.Errorf("camera %s: %w", k, err)
		case v.FromConfig && !listed[k]:
			stale = append(stale, k)
		}
	}
	for _, id := range stale {
		if err := r.Detach(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("camera %s, no longer in the config: %w", id, err)
		}
		r.log.Info("camera detached: the configuration no longer lists it", "camera", id)
	}
	return nil
}

// Put adds or replaces a camera.
func (r *Registry) Put(ctx context.Context, c config.Camera) error {
	if err := Validate(c); err != nil {
		return err
	}
	b, _ := json.Marshal(c)
	err := retry(ctx, func() error {
		cur, err := r.kv.Get(ctx, c.ID)
		if err == nil && bytes.Equal(cur.Value(), b) {
			return nil // unchanged: don't restart its worker
		}
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
		_, err = r.kv.Put(ctx, c.ID, b)
		return err
	})
	if err != nil {
		return fmt.Errorf("put camera %s: %w", c.ID, err)
	}
	return nil
}

// Detach removes a camera; decode stops its worker.
func (r *Registry) Detach(ctx context.Context, id string) error {
	deleting := false
	err := retry(ctx, func() error {
		if _, err := r.kv.Get(ctx, id); err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) && deleting {
				return nil // an earlier try deleted it, with its answer lost
			}
			return err
		}
		deleting = true
		return r.kv.Delete(ctx, id)
	})
	if err != nil {
		// An id no camera can have (GET answers the same).
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return fmt.Errorf("detach %s: %w", id, err)
	}
	r.mu.Lock()
	delete(r.status, id)
	hooks := r.onDetach
	r.mu.Unlock()
	for _, f := range hooks {
		f(id)
	}
	r.log.Info("camera detached", "camera", id)
	return nil
}

// Get returns one camera.
func (r *Registry) Get(ctx context.Context, id string) (CameraView, error) {
	var e jetstream.KeyValueEntry
	err := retry(ctx, func() (err error) {
		e, err = r.kv.Get(ctx, id)
		return err
	})
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
			return CameraView{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return CameraView{}, err
	}
	return r.view(e.Value())
}

// Known reports whether camera id is attached.
func (r *Registry) Known(ctx context.Context, id string) (bool, error) {
	_, err := r.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// List returns every camera, sorted by id.
func (r *Registry) List(ctx context.Context) ([]CameraView, error) {
	lister, err := r.keys(ctx)
	if err != nil {
		return nil, err
	}
	// One KV read per camera, listGets at a time: hundreds of cameras read
	// one after another made the list slow on a loaded server.
	var (
		mu  sync.Mutex
		out = []CameraView{}
	)
	g, gctx := errgroup.WithContext(ctx) // one read failed: the list fails, the others stop
	g.SetLimit(listGets)
	for k := range lister.Keys() {
		g.Go(func() error {
			v, err := r.Get(gctx, k)
			switch {
			case errors.Is(err, ErrNotFound): // detached meanwhile
				return nil
			case errors.Is(err, errSpec): // not written by patchline
				r.skipping(k, err)
				return nil
			case err != nil: // not a list with this camera missing, as if detached
				return fmt.Errorf("camera %s: %w", k, err)
			}
			mu.Lock()
			out = append(out, v)
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// keys lists the cameras' ids.
func (r *Registry) keys(ctx context.Context) (jetstream.KeyLister, error) {
	var lister jetstream.KeyLister
	err := retry(ctx, func() (err error) {
		lister, err = r.kv.ListKeys(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list cameras: %w", err)
	}
	return lister, nil
}

// listGets is how many camera reads List has in flight at once.
const listGets = 16

// skipping says that registry entry key is not a camera (err: why).
func (r *Registry) skipping(key string, err error) {
	r.log.Warn("camera registry: skipping an entry that is not a camera; remove it with patchline detach --api URL -- <key>", "key", key, "err", err)
}

// errSpec: a registry entry is not a camera's JSON spec.
var errSpec = errors.New("camera spec")

func (r *Registry) view(spec []byte) (CameraView, error) {
	var c config.Camera
	if err := json.Unmarshal(spec, &c); err != nil {
		return CameraView{}, fmt.Errorf("%w: %w", errSpec, err)
	}
	r.mu.Lock()
	var st json.RawMessage
	if cs, ok := r.status[c.ID]; ok && time.Since(cs.at) <= r.statusTTL {
		st = cs.raw
	}
	r.mu.Unlock()
	if st == nil {
		st = json.RawMessage("null")
	}
	return CameraView{ID: c.ID, URL: media.RedactURL(c.URL), FPS: c.FPS, Loop: c.Loop, FromConfig: c.FromConfig, Status: st}, nil
}
