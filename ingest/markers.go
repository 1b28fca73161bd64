package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/tick"
)

// markerAge is how long a detached camera's delete marker stays in the
// registry: long enough for every decode replica's watch to see it; one
// that reconnects later re-syncs from the initial values, where the camera
// is simply absent.
const markerAge = time.Hour

// purgeMarkers removes the delete markers of cameras detached more than
// olderThan ago, so that the registry does not keep one for every camera
// ever detached (and decode's watch replay them all). Only what is at or
// before a marker goes: a camera attached again meanwhile keeps its spec.
// It returns how many it removed.
func purgeMarkers(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, olderThan time.Duration) (int, error) {
	var old []jetstream.KeyValueEntry
	limit := time.Now().Add(-olderThan)
	replay, replayed := context.WithCancel(ctx)
	defer replayed()
	err := bus.WatchKV(replay, kv, func(e jetstream.KeyValueEntry) {
		switch {
		case e == nil:
			replayed() // all current values seen
		case e.Operation() != jetstream.KeyValuePut && e.Created().Before(limit):
			old = append(old, e)
		}
	})
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return 0, err
	}
	if len(old) == 0 {
		return 0, nil
	}
	stream, err := js.Stream(ctx, "KV_"+bus.CamerasBucket)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range old {
		err := stream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+bus.CamerasBucket+"."+e.Key()), jetstream.WithPurgeSequence(e.Revision()+1))
		if err != nil {
			return n, fmt.Errorf("purge the marker of %s: %w", e.Key(), err)
		}
		n++
	}
	return n, nil
}

// purgeMarkersEvery runs purgeMarkers every interval until ctx ends.
func (r *Registry) purgeMarkersEvery(ctx context.Context, js jetstream.JetStream, interval time.Duration) {
	tick.Every(ctx, interval, func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		n, err := purgeMarkers(pctx, js, r.kv, markerAge)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Warn("camera registry: removing old detach markers", "err", err)
		case n > 0:
			r.log.Debug("camera registry: removed old detach markers", "n", n)
		}
		return true
	})
}
