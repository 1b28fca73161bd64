package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
)

// TestRegistryReadsItsWritesInACluster attaches, reads and detaches
// cameras through the API on a replicated cameras bucket of a three-server
// cluster. Every read must see the write before it: with the KV default of
// direct gets, any replica answers a read, and one that has not yet applied
// the attach answered "camera not found" (a GET after a POST, or a DELETE).
func TestRegistryReadsItsWritesInACluster(t *testing.T) {
	urls := natstest.StartCluster(t, 3)
	ctx := context.Background()
	nc := natstest.Connect(t, strings.Join(urls, ","))
	r, err := OpenRegistry(ctx, nc, 3, natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, "KV_"+bus.CamerasBucket)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.AllowDirect || cfg.Replicas != 3 {
		t.Errorf("cameras bucket: allow_direct %v, replicas %d; want reads from the leader of 3 replicas", cfg.AllowDirect, cfg.Replicas)
	}
	srv := httptest.NewServer(r.Handler(1 << 20))
	defer srv.Close()
	call := func(method, path, body string) int {
		code, _, _ := do(t, method, srv.URL+path, "", "application/json", "", strings.NewReader(body))
		return code
	}
	for i := range 60 {
		id := fmt.Sprintf("cam%d", i)
		if code := call("POST", "/v1/cameras", fmt.Sprintf(`{"id":%q,"url":"synthetic://?seed=%d"}`, id, i)); code != http.StatusCreated {
			t.Fatalf("attach %s: %d", id, code)
		}
		if code := call("GET", "/v1/cameras/"+id, ""); code != http.StatusOK {
			t.Fatalf("get %s right after attaching it: %d", id, code)
		}
		if code := call("DELETE", "/v1/cameras/"+id, ""); code != http.StatusNoContent {
			t.Fatalf("detach %s right after attaching it: %d", id, code)
		}
		if code := call("GET", "/v1/cameras/"+id, ""); code != http.StatusNotFound {
			t.Fatalf("get %s right after detaching it: %d", id, code)
		}
	}
}

// TestRegistryBucketReadsFromTheLeader: decode may make the cameras bucket
// first (direct gets on, the KV default); ingest replicas, started together,
// then turn direct gets off and read through handles that ask the leader,
// and a restarted ingest leaves it so. Decode's watch goes on throughout.
func TestRegistryBucketReadsFromTheLeader(t *testing.T) {
	ctx := context.Background()
	nc := natstest.Connect(t, natstest.Start(t))
	decodeKV, err := CamerasBucket(ctx, nc, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	watch, err := decodeKV.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	js, _ := jetstream.New(nc)
	allowDirect := func() bool {
		st, err := js.Stream(ctx, "KV_"+bus.CamerasBucket)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.AllowDirect
	}
	if !allowDirect() {
		t.Fatal("decode's bucket has direct gets off; want the KV default (on)")
	}

	regs := make([]*Registry, 2)
	errs := make(chan error, 2)
	for i := range regs {
		go func() {
			var err error
			regs[i], err = OpenRegistry(ctx, natstest.Connect(t, nc.ConnectedUrl()), 1, natstest.Discard())
			errs <- err
		}()
	}
	for range regs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if allowDirect() {
		t.Error("direct gets still on after ingest opened the registry")
	}
	cam := config.Camera{ID: "door", URL: "synthetic://?seed=3"}
	if err := regs[0].Attach(ctx, cam); err != nil {
		t.Fatal(err)
	}
	if _, err := regs[1].Get(ctx, "door"); err != nil {
		t.Errorf("the other ingest replica reads: %v", err)
	}
	select {
	case e := <-watch.Updates():
		if e == nil || e.Key() != "door" {
			t.Errorf("decode's watch got %v, want door", e)
		}
	case <-time.After(5 * time.Second):
		t.Error("decode's watch saw no attach")
	}

	again, err := OpenRegistry(ctx, nc, 1, natstest.Discard()) // a restarted ingest
	if err != nil {
		t.Fatal(err)
	}
	if allowDirect() {
		t.Error("a restarted ingest turned direct gets back on")
	}
	for _, r := range append(regs, again) {
		if err := r.Detach(ctx, "door"); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("detach through a registry handle: %v", err)
		}
		r.Close()
	}
	if _, err := again.Get(ctx, "door"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get after detach: %v, want not found", err)
	}
}

// TestValidateCamera: the API checks a camera as pipeline.yaml does, NaN
// fps included (it passed a range check, then stored an empty spec that
// decode could not read).
func TestValidateCamera(t *testing.T) {
	for _, c := range []struct {
		cam  config.Camera
		want string
	}{
		{config.Camera{ID: "a", URL: "synthetic://", FPS: math.NaN()}, "fps: NaN out of range"},
		{config.Camera{ID: "a", URL: "synthetic://", FPS: 121}, "fps: 121 out of range"},
		{config.Camera{ID: "a b", URL: "synthetic://"}, "id:"},
		{config.Camera{ID: "a", URL: "htp://x"}, `unknown scheme "htp"`},
	} {
		err := Validate(c.cam)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid saying %q", c.cam, err, c.want)
		}
	}
	if err := Validate(config.Camera{ID: "a", URL: "synthetic://", FPS: 5}); err != nil {
		t.Errorf("a good camera: %v", err)
	}
}

// TestStatusIsBounded: camera status from NATS is kept only when it looks
// like decode's (a camera id, a small JSON object), and forgotten when no
// decode has reported on the camera for the status TTL, so a publisher of
// junk cannot grow ingest's memory without bound.
func TestStatusIsBounded(t *testing.T) {
	ctx := context.Background()
	nc := natstest.Connect(t, natstest.Start(t))
	r := openRegistry(t, nc)
	if err := r.Attach(ctx, config.Camera{ID: "door", URL: "synthetic://"}); err != nil {
		t.Fatal(err)
	}
	pub := func(subj, data string) {
		if err := nc.Publish(subj, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	pub(bus.StatusPrefix+"door", `{"state":"streaming"}`)
	pub(bus.StatusPrefix+"\xff", `{}`)
	pub(bus.StatusPrefix+"big", `"`+strings.Repeat("x", maxStatusBytes)+`"`)
	pub(bus.StatusPrefix+"x", `not json`)
	for i := range 50 {
		pub(fmt.Sprintf("%sjunk%d", bus.StatusPrefix, i), `{}`)
	}
	_ = nc.Flush()
	kept := func() (n int, bad uint64) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.status), r.badStatus
	}
	testenv.WaitFor(t, "the statuses handled", 5*time.Second, func() bool { n, bad := kept(); return n == 51 && bad == 3 })
	if v, _ := r.Get(ctx, "door"); !strings.Contains(string(v.Status), "streaming") {
		t.Errorf("door's status %s", v.Status)
	}
	// Door's decode is silent from now on: past the TTL (shortened now
	// that its status was read) it has no status.
	r.mu.Lock()
	r.statusTTL = 500 * time.Millisecond
	r.mu.Unlock()
	testenv.WaitFor(t, "door's status gone after the TTL", 5*time.Second, func() bool {
		v, _ := r.Get(ctx, "door")
		return string(v.Status) == "null"
	})
	testenv.WaitFor(t, "the expired statuses forgotten", 5*time.Second, func() bool {
		pub(bus.StatusPrefix+"fresh", `{}`) // statuses that still come keep theirs
		_ = nc.Flush()
		n, _ := kept()
		return n == 1
	})
}
