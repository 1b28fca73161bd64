package app

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/ingest"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/internal/tick"
)

// forgetAgain is when a detached camera's series are forgotten a second
// time, after what was under way for it has drained.
var forgetAgain = time.Minute

// forgetDetached deletes the metric series of each camera detached from
// the registry while the process runs (and tells each of also, e.g.
// generate, which drops its frames): without it every process would keep
// the series of every camera ever attached. It also keeps
// patchline_cameras_attached. Best effort, until ctx ends: it waits for
// the bucket, and watches again after a NATS restart, forgetting then the
// cameras detached meanwhile.
func forgetDetached(ctx context.Context, nc *nats.Conn, replicas int, log *slog.Logger, also ...func(camera string)) {
	rw := &registryWatch{also: also}
	every, quiet := strayEvery, strayQuiet
	go tick.Every(ctx, every, func() bool {
		if n := rw.forgetStrays(quiet); n > 0 {
			log.Info("camera metrics: forgot the series of cameras not in the registry and silent", "cameras", n, "silent_for", quiet)
		}
		return true
	})
	for {
		kv, err := ingest.CamerasBucket(ctx, nc, replicas, false)
		if err == nil {
			err = rw.watch(ctx, kv)
		}
		if ctx.Err() != nil {
			return
		}
		log.Debug("camera metrics: registry watch ended, again in 5 s", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// registryWatch follows the camera registry: the cameras in it, and those
// leaving it.
type registryWatch struct {
	also  []func(camera string)
	known map[string]bool // the cameras in the registry, as of the last watch caught up; nil before

	mu   sync.Mutex
	live map[string]bool // the cameras in the registry while a watch follows it; nil otherwise
}

// strayEvery is how often, and strayQuiet after how long without a frame,
// the series of a camera that is not in the registry are forgotten (frames
// published by hand under ids never attached, or late ones of a camera
// detached): without it they would stay for the life of the process.
var strayEvery, strayQuiet = time.Minute, 5 * time.Minute

// forgetStrays forgets the series of every camera counted here that is not
// in the registry and has had no frame or annotation for quiet; it returns
// how many. Only while a watch follows the registry.
func (rw *registryWatch) forgetStrays(quiet time.Duration) int {
	rw.mu.Lock()
	var strays []string
	if rw.live != nil {
		for _, id := range telemetry.Quiet(quiet) {
			if !rw.live[id] {
				strays = append(strays, id)
			}
		}
	}
	rw.mu.Unlock()
	for _, id := range strays {
		telemetry.ForgetCamera(id)
		for _, f := range rw.also {
			f(id)
		}
	}
	return len(strays)
}

// watch follows kv until ctx ends or the watch fails. Its first values
// are the cameras in the registry now: those known from an earlier watch
// and missing now were detached in between.
func (rw *registryWatch) watch(ctx context.Context, kv jetstream.KeyValue) error {
	attached := map[string]bool{}
	caughtUp := false
	defer func() {
		rw.mu.Lock()
		rw.live = nil // until the next watch catches up: strays cannot be told from cameras now
		rw.mu.Unlock()
	}()
	return bus.WatchKV(ctx, kv, func(e jetstream.KeyValueEntry) {
		rw.mu.Lock()
		switch {
		case e == nil: // the registry as it is now, read
			caughtUp = true
			rw.live = attached
		case e.Operation() == jetstream.KeyValuePut && isCamera(e.Value()):
			attached[e.Key()] = true
		default: // a detach, or not a camera (put by hand, or an old version's): not counted
			delete(attached, e.Key())
		}
		n := len(attached)
		rw.mu.Unlock()
		switch {
		case e == nil:
			for id := range rw.known {
				if !attached[id] {
					rw.forget(ctx, kv, id)
				}
			}
			rw.known = attached // followed from here on
		case caughtUp && e.Operation() != jetstream.KeyValuePut: // not a detach from before this watch
			rw.forget(ctx, kv, e.Key())
		}
		if caughtUp {
			telemetry.CamerasAttached.Set(float64(n))
		}
	})
}

// forget deletes detached camera id's series now, and again after
// forgetAgain unless it was attached again meanwhile: frames still on
// their way (a worker stopping, a queue emptying) bring some back. When
// the registry cannot answer then (NATS away), it asks again later.
func (rw *registryWatch) forget(ctx context.Context, kv jetstream.KeyValue, id string) {
	forget := func() {
		telemetry.ForgetCamera(id)
		for _, f := range rw.also {
			f(id)
		}
	}
	forget()
	var again func()
	again = func() {
		_, err := kv.Get(ctx, id)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			forget()
		case err != nil && ctx.Err() == nil: // NATS away: the registry cannot say yet
			time.AfterFunc(forgetAgain, again)
		}
	}
	time.AfterFunc(forgetAgain, again)
}

// isCamera reports whether a registry value is a camera's spec, as the
// registry's own list reads it: JSON of a config.Camera.
func isCamera(spec []byte) bool {
	var c config.Camera
	return json.Unmarshal(spec, &c) == nil
}
