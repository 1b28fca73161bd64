package app

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchline/patchline/ingest"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/internal/testenv"
)

// TestForgetDetached: every process counts the cameras in the registry
// (patchline_cameras_attached) and forgets a detached camera's series,
// telling also; a camera detached while the process was not watching (a
// NATS restart in between) is forgotten once the watch is back.
func TestForgetDetached(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc := natstest.Connect(t, natstest.Start(t))
	reg := registryWith(t, ctx, nc, "fa", "fb")
	for _, id := range []string{"fa", "fb"} {
		telemetry.FramesIn.WithLabelValues("test", id).Inc()
	}
	var (
		mu   sync.Mutex
		told []string
	)
	also := func(id string) {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(told, id) {
			told = append(told, id)
		}
	}
	wasTold := func(id string) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(told, id)
	}
	attached := func(n float64) func() bool {
		return func() bool { return testutil.ToFloat64(telemetry.CamerasAttached) == n }
	}
	kv, err := ingest.CamerasBucket(ctx, nc, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "junk", []byte("not a camera")); err != nil { // put by hand: the registry skips it, and so does the count
		t.Fatal(err)
	}
	go forgetDetached(ctx, nc, 1, natstest.Discard(), also)
	testenv.WaitFor(t, "2 cameras attached", 5*time.Second, attached(2))
	if err := reg.Detach(ctx, "fb"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "1 camera attached, fb forgotten", 5*time.Second, func() bool {
		return attached(1)() && wasTold("fb") && !slices.ContainsFunc(testenv.Series(t, "patchline_frames_in_total"), func(l map[string]string) bool { return l["camera"] == "fb" })
	})
	if wasTold("fa") {
		t.Error("a camera still attached was forgotten")
	}

	// A camera the last watch knew, gone when the next one catches up.
	mu.Lock()
	told = nil // fb's delete marker is in the bucket: a new watch replays it, and must not forget fb again
	mu.Unlock()
	rw := &registryWatch{also: []func(string){also}, known: map[string]bool{"fa": true, "gone": true}}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rw.watch(wctx, kv) }()
	testenv.WaitFor(t, "the camera detached between two watches forgotten", 5*time.Second, func() bool { return wasTold("gone") })
	stop()
	<-done
	if wasTold("fa") || wasTold("fb") || !rw.known["fa"] || len(rw.known) != 1 {
		t.Errorf("after the second watch caught up: known %v, told %v; want fa known, and neither fa nor fb (detached before it) forgotten", rw.known, told)
	}
}

// flakyGet is a camera bucket whose first read fails, as with NATS away.
type flakyGet struct {
	jetstream.KeyValue
	mu    sync.Mutex
	reads int
}

func (f *flakyGet) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	f.mu.Lock()
	f.reads++
	first := f.reads == 1
	f.mu.Unlock()
	if first {
		return nil, nats.ErrTimeout
	}
	return f.KeyValue.Get(ctx, key)
}

// TestForgetAgainAfterAnOutage: the second forgetting of a detached
// camera's series (frames in flight brought them back) is tried again
// later when the registry cannot answer then, instead of being skipped.
func TestForgetAgainAfterAnOutage(t *testing.T) {
	defer func(d time.Duration) { forgetAgain = d }(forgetAgain)
	forgetAgain = 50 * time.Millisecond
	ctx := context.Background()
	nc := natstest.Connect(t, natstest.Start(t))
	kv, err := ingest.CamerasBucket(ctx, nc, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	rw := &registryWatch{}
	rw.forget(ctx, &flakyGet{KeyValue: kv}, "zombie")
	telemetry.FramesIn.WithLabelValues("test", "zombie").Inc() // a late frame
	testenv.WaitFor(t, "the late frame's series forgotten", 5*time.Second, func() bool {
		return !slices.ContainsFunc(testenv.Series(t, "patchline_frames_in_total"), func(l map[string]string) bool { return l["camera"] == "zombie" })
	})
}

// TestForgetStrays: the series of a camera that was never in the registry
// (frames published by hand) are forgotten once it has been silent for a
// while; those of a camera in the registry, silent as long, are kept.
func TestForgetStrays(t *testing.T) {
	defer func(every, quiet time.Duration) { strayEvery, strayQuiet = every, quiet }(strayEvery, strayQuiet)
	// Quiet is 2 s against frames 50 ms apart: a loaded machine may hold
	// the sending loop up for a while without the stray going silent.
	strayEvery, strayQuiet = 20*time.Millisecond, 2*time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc := natstest.Connect(t, natstest.Start(t))
	registryWith(t, ctx, nc, "kept")
	var told sync.Map
	go forgetDetached(ctx, nc, 1, natstest.Discard(), func(id string) { told.Store(id, true) })
	series := func(id string) bool {
		return slices.ContainsFunc(testenv.Series(t, "patchline_frames_in_total"), func(l map[string]string) bool { return l["camera"] == id })
	}
	for _, id := range []string{"kept", "stray"} {
		telemetry.FramesIn.WithLabelValues("test", id).Inc()
		telemetry.ShowCamera("test", id)
	}
	// While frames keep coming, a stray's series stay.
	for range 10 {
		telemetry.Saw("stray")
		time.Sleep(50 * time.Millisecond)
	}
	if !series("stray") {
		t.Fatal("the series of a camera not in the registry, still sending, were forgotten")
	}
	testenv.WaitFor(t, "the silent stray forgotten", 15*time.Second, func() bool {
		_, ok := told.Load("stray")
		return ok && !series("stray")
	})
	if _, ok := told.Load("kept"); ok || !series("kept") {
		t.Error("the series of a camera in the registry were forgotten for being silent")
	}
}

// registryWith opens the camera registry on nc with synthetic cameras ids
// attached.
func registryWith(t *testing.T, ctx context.Context, nc *nats.Conn, ids ...string) *ingest.Registry {
	t.Helper()
	reg, err := ingest.OpenRegistry(ctx, nc, 1, natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	for _, id := range ids {
		if err := reg.Attach(ctx, config.Camera{ID: id, URL: "synthetic://"}); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}
