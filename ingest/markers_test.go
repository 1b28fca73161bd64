package ingest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
)

// TestPurgeMarkers: the delete markers of detached cameras go from the
// registry's stream, but a camera attached again keeps its spec, and one
// attached keeps its own.
func TestPurgeMarkers(t *testing.T) {
	ctx := context.Background()
	nc := natstest.Connect(t, natstest.Start(t))
	r := openRegistry(t, nc)
	for _, id := range []string{"gone1", "gone2", "back", "kept"} {
		if err := r.Attach(ctx, config.Camera{ID: id, URL: "synthetic://"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"gone1", "gone2", "back"} {
		if err := r.Detach(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Attach(ctx, config.Camera{ID: "back", URL: "synthetic://?seed=2"}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "KV_"+bus.CamerasBucket)
	if err != nil {
		t.Fatal(err)
	}
	msgs := func() uint64 {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	before := msgs()
	n, err := purgeMarkers(ctx, js, r.kv, -1) // every marker, whatever its age
	if err != nil || n != 2 {
		t.Fatalf("purged %d markers (%v), want gone1's and gone2's", n, err)
	}
	if after := msgs(); after != before-2 {
		t.Errorf("stream holds %d messages after the purge, %d before; want 2 fewer", after, before)
	}
	for _, id := range []string{"gone1", "gone2"} {
		if _, err := r.kv.Get(ctx, id); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("%s: %v, want not found", id, err)
		}
	}
	for id, url := range map[string]string{"back": "synthetic://?seed=2", "kept": "synthetic://"} {
		if v, err := r.Get(ctx, id); err != nil || v.URL != url {
			t.Errorf("%s: %+v %v, want url %s", id, v, err, url)
		}
	}
	if n, err := purgeMarkers(ctx, js, r.kv, time.Hour); err != nil || n != 0 {
		t.Errorf("a second purge removed %d (%v)", n, err)
	}
}
