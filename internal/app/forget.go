package app

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/ingest"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/telemetry"
)

// forgetDetached deletes the metric series of each camera detached from
// the registry while the process runs (and tells each of also, e.g.
// generate, which drops its frames): without it every process would keep
// the series of every camera ever attached. Best effort, until ctx ends: it
// waits for the bucket, and watches again after a NATS restart (a detach
// during the gap keeps its series).
// forgetAgain is when a detached camera's series are forgotten a second
// time, after what was under way for it has drained.
const forgetAgain = time.Minute

func forgetDetached(ctx context.Context, nc *nats.Conn, replicas int, log *slog.Logger, also ...func(camera string)) {
	for {
		kv, err := ingest.CamerasBucket(ctx, nc, replicas, false)
		if err == nil {
			err = bus.WatchKV(ctx, kv, func(e jetstream.KeyValueEntry) {
				if e == nil || e.Operation() == jetstream.KeyValuePut {
					return
				}
				id := e.Key()
				forget := func() {
					telemetry.ForgetCamera(id)
					for _, f := range also {
						f(id)
					}
				}
				forget()
				// Frames still on their way (a worker stopping, a queue
				// emptying) bring some series back: forget them again
				// later, unless the camera was attached again meanwhile.
				time.AfterFunc(forgetAgain, func() {
					if _, err := kv.Get(ctx, id); errors.Is(err, jetstream.ErrKeyNotFound) {
						forget()
					}
				})
			}, jetstream.UpdatesOnly())
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
