package decode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchline/patchline/ingest"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/lease"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/rtsptest"
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/internal/testenv"
)

// Decode replicas on one NATS share the registry's cameras, each camera
// decoded by one of them; when one dies (its leases expire) or leaves
// (gives them back), the others take its cameras.
func TestStageReplicasShareCameras(t *testing.T) {
	url := natstest.Start(t)
	ctx := context.Background()
	reg, err := ingest.OpenRegistry(ctx, natstest.Connect(t, url), 1, natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for i := range 4 {
		id := fmt.Sprintf("c%d", i)
		all = append(all, id)
		if err := reg.Put(ctx, config.Camera{ID: id, URL: fmt.Sprintf("synthetic://?seed=%d&fps=10", i), FPS: 2}); err != nil {
			t.Fatal(err)
		}
	}
	type replica struct {
		st     *Stage
		nc     *nats.Conn
		cancel context.CancelFunc
		done   chan struct{}
	}
	startCapped := func(maxCameras int, log *slog.Logger) *replica {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		r := &replica{st: NewStage(Options{NC: nc, Decode: config.Decode{LeaseTTL: 2 * time.Second, MaxCameras: maxCameras}, Logger: log}), nc: nc, done: make(chan struct{})}
		rctx, cancel := context.WithCancel(ctx)
		r.cancel = cancel
		go func() { defer close(r.done); _ = r.st.Run(rctx) }()
		t.Cleanup(func() { cancel(); <-r.done; nc.Close() })
		return r
	}
	start := func() *replica { return startCapped(0, natstest.Discard()) }
	cams := func(r *replica) []string {
		var ids []string
		for _, s := range r.st.Statuses() {
			ids = append(ids, s.ID)
		}
		slices.Sort(ids)
		return ids
	}
	waitSplit := func(what string, rs []*replica, want ...int) {
		t.Helper()
		var got []int
		var union []string
		split := testenv.Poll(40*time.Second, func() bool {
			got, union = nil, nil
			for _, r := range rs {
				got = append(got, len(cams(r)))
				union = append(union, cams(r)...)
			}
			slices.Sort(union)
			return slices.Equal(got, want) && slices.Equal(union, all)
		})
		if !split {
			t.Fatalf("%s: replicas decode %v cameras (%v), want %v of %v, each once", what, got, union, want, all)
		}
	}

	a := start()
	waitSplit("one replica", []*replica{a}, 4)
	b := start()
	waitSplit("a second replica", []*replica{a, b}, 2, 2)

	// b dies: its connection goes, its leases are never given back. Its
	// cameras move within about a lease TTL (2 s here, long enough for a
	// loaded machine's renewals; the 10 s default would fail the check
	// below).
	died := time.Now()
	b.nc.Close()
	b.cancel()
	<-b.done
	waitSplit("after b died", []*replica{a}, 4)
	if took := time.Since(died); took > 9*time.Second {
		t.Errorf("b's cameras moved %v after it died, want about decode.lease_ttl (2s)", took.Round(time.Millisecond))
	}

	c := start()
	waitSplit("a third replica", []*replica{a, c}, 2, 2)
	c.cancel() // leaves: gives its cameras back at once
	<-c.done
	waitSplit("after c left", []*replica{a}, 4)

	// A replica with decode.max_cameras 1 takes one camera, the uncapped
	// one the rest; alone, it decodes one and says the others wait.
	var logs testenv.Buffer
	d := startCapped(1, slog.New(slog.NewTextHandler(&logs, nil)))
	waitSplit("beside a replica with max_cameras 1", []*replica{a, d}, 3, 1)
	a.cancel()
	<-a.done
	testenv.WaitFor(t, "the capped replica's warning", 20*time.Second, func() bool {
		return strings.Contains(logs.String(), "more cameras than the replicas take") && strings.Contains(logs.String(), "waiting=3")
	})
	if got := cams(d); len(got) != 1 {
		t.Errorf("alone, the replica with max_cameras 1 decodes %v", got)
	}
}

// TestFramesMustFitMaxPayload: a decode size whose frames the server
// cannot carry is an error at start naming both sizes, not every frame
// dropped while the camera shows "streaming".
func TestFramesMustFitMaxPayload(t *testing.T) {
	nc := natstest.Connect(t, smallServer(t, 64<<10))
	st := NewStage(Options{NC: nc, Decode: config.Decode{Width: 224, Height: 224, PatchSize: 16}, Logger: natstest.Discard()})
	err := st.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "a 224x224 frame is 150528 bytes of patch tokens, over the NATS server's max_payload of 65536 bytes") {
		t.Errorf("Run = %v, want the max_payload error", err)
	}
}

// smallServer starts a nats-server whose max_payload is maxPayload bytes.
func smallServer(t *testing.T, maxPayload int32) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, MaxPayload: maxPayload})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return srv.ClientURL()
}

// TestPublishFailuresThinned: frames the server refuses (its max_payload
// lowered under a running stage) are each a counted drop, the camera's
// status names the error, and the log says so the 1st, 2nd, 4th… time, not
// for every frame, then once that frames go again.
func TestPublishFailuresThinned(t *testing.T) {
	nc := natstest.Connect(t, smallServer(t, 4<<10))
	var logs testenv.Buffer
	cam, err := NewCamera(config.Camera{ID: "refused", URL: "synthetic://"}, Options{NC: nc, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(seq uint64, size int) {
		now := time.Now()
		f := &frame.Frame{Camera: "refused", Seq: seq, CapturedAt: now, SourceW: size, SourceH: size,
			Width: size, Height: size, Patch: 8, Resize: frame.ResizeStretch,
			Transform: frame.Stretch(size, size, size, size), Tokens: make([]byte, size*size*3)}
		cam.publish(&item{f: f, decStart: now, decEnd: now, tokStart: now, tokEnd: now})
	}
	dropped := telemetry.FramesDropped.WithLabelValues(stageName, "refused", "publish_error")
	before := testutil.ToFloat64(dropped)
	for seq := range uint64(10) {
		publish(seq+1, 96) // 27 KB: over the 4 KB limit
	}
	if st := cam.Status(); !strings.Contains(st.LastError, "maximum payload") || st.FramesDropped != 10 {
		t.Errorf("status after 10 refused frames: last error %q, %d dropped; want the payload error and 10", st.LastError, st.FramesDropped)
	}
	if d := testutil.ToFloat64(dropped) - before; d != 10 {
		t.Errorf("patchline_frames_dropped_total{reason=publish_error} rose by %v, want 10", d)
	}
	publish(11, 16) // 768 bytes: fits
	out := logs.String()
	if n := strings.Count(out, "publish frame failed"); n != 4 {
		t.Errorf("%d lines for 10 failed publishes, want 4 (the 1st, 2nd, 4th and 8th):\n%s", n, out)
	}
	if !strings.Contains(out, "publishing frames again") || !strings.Contains(out, "failed=10") {
		t.Errorf("no line saying frames go again after 10 failures:\n%s", out)
	}
}

// TestNoStartOfADetachedCamera: a replica whose view of the registry lags
// (back from an outage during which the camera was detached, the watch
// not caught up yet) does not start the camera it took a free lease of:
// it asks the registry, drops the camera from its view, and starts the
// ones still attached.
func TestNoStartOfADetachedCamera(t *testing.T) {
	ctx := context.Background()
	nc := natstest.Connect(t, natstest.Start(t))
	kv, err := ingest.CamerasBucket(ctx, nc, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	spec := []byte(`{"id":"ghost","url":"synthetic://"}`)
	st := NewStage(Options{NC: nc, Decode: config.Decode{Width: 96, Height: 96, PatchSize: 8}, Logger: natstest.Discard()})
	st.kv = kv               // as Run sets it
	st.specs["ghost"] = spec // the stale view: detached meanwhile
	st.start(ctx, "ghost", spec)
	st.mu.Lock()
	_, running := st.workers["ghost"]
	_, known := st.specs["ghost"]
	st.mu.Unlock()
	if running || known {
		t.Errorf("a camera gone from the registry: running %v, in the view %v; want neither", running, known)
	}

	// A handle opened before ingest turned the bucket's direct gets off
	// (decode started first) reads through a fresh one.
	reg, err := ingest.OpenRegistry(ctx, nc, 1, natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if err := reg.Attach(ctx, config.Camera{ID: "door", URL: "synthetic://"}); err != nil {
		t.Fatal(err)
	}
	st.opts.Control = nc
	if ok, err := st.stillAttached(ctx, "door"); !ok || err != nil {
		t.Errorf("an attached camera, read through a handle from before direct gets went off: %v, %v", ok, err)
	}
}

// TestCameraThatCannotStart: a spec in the registry that its camera cannot
// start with (written past ingest's checks, or by an older version) is
// reported as failed, with why, where camera states are read.
func TestCameraThatCannotStart(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := ingest.CamerasBucket(ctx, nc, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	statuses := make(chan *nats.Msg, 4)
	sub, err := nc.ChanSubscribe(bus.StatusSubject("odd"), statuses)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	leaky, err := nc.SubscribeSync(bus.StatusSubject("leaky"))
	if err != nil {
		t.Fatal(err)
	}
	for id, u := range map[string]string{"odd": "synthetic://?objects=99", "leaky": "http://u:SECRET@example.com/a.mp4"} {
		if _, err := kv.Put(ctx, id, []byte(`{"id":"`+id+`","url":"`+u+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(ctx, "old.entry", []byte("not a camera")); err != nil { // put by hand: skipped, said once
		t.Fatal(err)
	}
	var logs testenv.Buffer
	st := NewStage(Options{NC: natstest.Connect(t, url), Decode: config.Decode{Width: 96, Height: 96, PatchSize: 8, LeaseTTL: 3 * time.Second},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	for i := range 3 { // reported at once, then with the others' statuses every second
		select {
		case m := <-statuses:
			var s Status
			if err := json.Unmarshal(m.Data, &s); err != nil {
				t.Fatal(err)
			}
			if s.State != StateFailed || !strings.Contains(s.LastError, "objects") {
				t.Errorf("status %d: %+v, want failed with the reason", i, s)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d statuses for the camera that cannot start, want 3", i)
		}
	}
	if n := strings.Count(logs.String(), `cannot start camera" camera=odd`); n != 1 {
		t.Errorf("logged %d times that the camera cannot start, want once (it is not retried):\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), `not a camera; remove it with patchline detach --api URL -- <key>" key=old.entry`); n != 1 {
		t.Errorf("logged %d times that old.entry is not a camera, want once:\n%s", n, logs.String())
	}
	// A password in the spec of a camera that cannot start is hidden in
	// its status (the API, `patchline cameras`) and the log.
	m, err := leaky.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(m.Data), "SECRET") || !strings.Contains(string(m.Data), `"failed"`) || strings.Contains(logs.String(), "SECRET") {
		t.Errorf("status %s and log show the password, or the camera is not failed:\n%s", m.Data, logs.String())
	}
	// Its state series says failed, and goes once the camera does.
	if v := testutil.ToFloat64(telemetry.CameraState.WithLabelValues("odd", StateFailed)); v != 1 {
		t.Errorf("patchline_camera_state{camera=odd,state=failed} = %v, want 1", v)
	}
	if err := kv.Delete(ctx, "odd"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "odd's state series gone", 10*time.Second, func() bool {
		return !slices.ContainsFunc(testenv.Series(t, "patchline_camera_state"), func(l map[string]string) bool { return l["camera"] == "odd" })
	})
	cancel()
	<-done
}

// TestSlowStopKeepsTheOtherCameras: a camera whose stop takes longer than
// the lease TTL (its read blocked on a frozen stream, up to the stall
// timeout) holds up neither the replica's lease rounds nor its other
// cameras, whose leases are renewed meanwhile: for a new spec and for a
// detach alike.
func TestSlowStopKeepsTheOtherCameras(t *testing.T) {
	rtsptest.RequireFFmpeg(t)
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg, err := ingest.OpenRegistry(ctx, nc, 1, natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	srv := rtsptest.Start(t)
	rtsptest.Publish(t, ctx, rtsptest.MakeClip(t, t.TempDir(), rtsptest.ClipOptions{Seconds: 2}), srv.URL("live"))
	put := func(c config.Camera) {
		t.Helper()
		if err := reg.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	put(config.Camera{ID: "syn", URL: "synthetic://?fps=10", FPS: 2})
	put(config.Camera{ID: "live", URL: srv.URL("live"), FPS: 2})

	var logs testenv.Buffer
	st := NewStage(Options{NC: natstest.Connect(t, url), Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Decode: config.Decode{Width: 96, Height: 96, PatchSize: 8, LeaseTTL: 2 * time.Second, StallTimeout: 5 * time.Second}})
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	defer func() { cancel(); <-done }()
	status := func(id string) (Status, bool) {
		for _, s := range st.Statuses() {
			if s.ID == id {
				return s, true
			}
		}
		return Status{}, false
	}
	streaming := func(id string) bool { s, ok := status(id); return ok && s.State == StateStreaming }
	testenv.WaitFor(t, "both cameras streaming", 20*time.Second, func() bool { return streaming("syn") && streaming("live") })
	syn, _ := status("syn")

	// A new spec while the stream is frozen: the old worker's stop waits
	// for its blocked read, over two lease TTLs.
	srv.Freeze("live", true)
	time.Sleep(300 * time.Millisecond)
	put(config.Camera{ID: "live", URL: srv.URL("live"), FPS: 3})
	time.Sleep(6 * time.Second)
	srv.Freeze("live", false)
	testenv.WaitFor(t, "live streaming again", 20*time.Second, func() bool { return streaming("live") })

	// A detach while it is frozen.
	srv.Freeze("live", true)
	time.Sleep(300 * time.Millisecond)
	if err := reg.Detach(ctx, "live"); err != nil {
		t.Fatal(err)
	}
	// Its lease is given back once its stop is over.
	leases, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := leases.KeyValue(ctx, bus.LeasesBucket)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "live stopped and its lease given back", 15*time.Second, func() bool {
		_, err := kv.Get(ctx, lease.KeyPrefix+"live")
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})

	if now, _ := status("syn"); now.State != StateStreaming || !now.Since.Equal(syn.Since) {
		t.Errorf("syn: %+v, want streaming since %v, never stopped", now, syn.Since)
	}
	if strings.Contains(logs.String(), "lease lost") {
		t.Errorf("a lease was lost while a camera stopped slowly:\n%s", logs.String())
	}
}

// TestStopSaysWhatItWaitsFor: a stop held up by a camera opening a stream
// that sends nothing (up to the stall timeout) says, after a moment, what
// it waits for.
func TestStopSaysWhatItWaitsFor(t *testing.T) {
	rtsptest.RequireFFmpeg(t)
	srv := rtsptest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv.PublishSilent(t, ctx, "quiet")
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	kv, err := ingest.CamerasBucket(ctx, nc, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "quiet", []byte(`{"id":"quiet","url":"`+srv.URL("quiet")+`"}`)); err != nil {
		t.Fatal(err)
	}
	var logs testenv.Buffer
	st := NewStage(Options{NC: natstest.Connect(t, url), Decode: config.Decode{Width: 96, Height: 96, PatchSize: 8, StallTimeout: 5 * time.Second},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(sctx) }()
	testenv.WaitFor(t, "the camera opening", 10*time.Second, func() bool {
		return slices.ContainsFunc(st.Statuses(), func(s Status) bool { return s.ID == "quiet" && s.State == StateConnecting })
	})
	time.Sleep(500 * time.Millisecond) // into OpenCV's open, which waits for packets
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `waiting for cameras to stop`) {
		t.Errorf("a stop held up by an open did not say what it waits for:\n%s", logs.String())
	}
}
