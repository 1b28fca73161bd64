package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
)

// openRegistry opens a registry of one replica on nc, closed when the test
// ends.
func openRegistry(t testing.TB, nc *nats.Conn) *Registry {
	t.Helper()
	r, err := OpenRegistry(context.Background(), nc, 1, natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func TestRetryWaitsOutAnUnavailableBucket(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	calls := 0
	err := retry(ctx, func() error {
		calls++
		switch calls {
		case 1:
			return fmt.Errorf("put: %w", jetstream.ErrNoStreamResponse) // no leader yet
		case 2:
			return &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
		case 3:
			return nats.ErrConnectionReconnecting
		}
		return nil
	})
	if err != nil || calls != 4 {
		t.Fatalf("retry = %v after %d calls, want nil after 4", err, calls)
	}

	calls = 0
	err = retry(ctx, func() error { calls++; return jetstream.ErrKeyExists })
	if !errors.Is(err, jetstream.ErrKeyExists) || calls != 1 {
		t.Fatalf("retry of a definite error = %v after %d calls, want it at once", err, calls)
	}

	ctx, cancel := context.WithTimeout(ctx, 600*time.Millisecond)
	defer cancel()
	err = retry(ctx, func() error { return nats.ErrNoResponders })
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("retry until the caller gives up = %v, want ErrUnavailable wrapping the cause", err)
	}
}

func TestUnavailableIs503(t *testing.T) {
	t.Parallel()
	w := httptest.NewRecorder()
	writeErr(w, fmt.Errorf("attach cam1: %w: %w", ErrUnavailable, jetstream.ErrNoStreamResponse))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("got %d, Retry-After %q; want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}
}

// TestListManyCameras: List returns every camera once, sorted by id, with
// more cameras than it reads at once.
func TestListManyCameras(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := openRegistry(t, natstest.Connect(t, natstest.Start(t)))
	var want []string
	for i := range 3*listGets + 5 {
		id := fmt.Sprintf("cam%03d", i)
		want = append(want, id)
		if err := r.Attach(ctx, config.Camera{ID: id, URL: "synthetic://?seed=1"}); err != nil {
			t.Fatal(err)
		}
	}
	cams, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cams {
		got = append(got, c.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("List gave %v, want %v", got, want)
	}
}

// TestAPIMissesAreJSON: a path or method no route takes is answered as
// every other API error is, JSON with the status (405 with Allow), not
// net/http's plain text.
func TestAPIMissesAreJSON(t *testing.T) {
	t.Parallel()
	h := openRegistry(t, natstest.Connect(t, natstest.Start(t))).Handler(1 << 16)
	for _, c := range []struct {
		method, path string
		code         int
		allow        string
	}{
		{"PUT", "/v1/cameras", http.StatusMethodNotAllowed, "GET, HEAD, POST"},
		{"POST", "/v1/cameras/x", http.StatusMethodNotAllowed, "DELETE, GET, HEAD"},
		{"GET", "/v1/cameras/x/", http.StatusNotFound, ""},
		{"GET", "/v1/nope", http.StatusNotFound, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		var body struct{ Error string }
		err := json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != c.code || err != nil || !strings.Contains(body.Error, c.path) || rec.Header().Get("Allow") != c.allow || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %q (Allow %q), want %d with a JSON error naming the path (Allow %q)", c.method, c.path, rec.Code, rec.Body, rec.Header().Get("Allow"), c.code, c.allow)
		}
	}
	// A path to clean is redirected, as net/http does, with its Location.
	for _, path := range []string{"/v1//nope", "/v1//cameras"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("PUT", path, nil))
		if rec.Code < 300 || rec.Code > 399 || rec.Header().Get("Location") == "" {
			t.Errorf("PUT %s: %d, Location %q; want a redirect to the clean path", path, rec.Code, rec.Header().Get("Location"))
		}
	}
}

// failingGet is a camera bucket whose reads of one key fail.
type failingGet struct {
	jetstream.KeyValue
	key string
	err error
}

func (f failingGet) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if key == f.key {
		return nil, f.err
	}
	return f.KeyValue.Get(ctx, key)
}

// TestListIsWholeOrFails: a camera that cannot be read makes the list fail
// (503 while the bucket is unavailable), not a list without it, as if it
// had been detached; an entry that is not a camera's spec (put by hand) is
// skipped.
func TestListIsWholeOrFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := openRegistry(t, natstest.Connect(t, natstest.Start(t)))
	for _, id := range []string{"a", "b", "c"} {
		if err := r.Attach(ctx, config.Camera{ID: id, URL: "synthetic://?seed=1"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.kv.Put(ctx, "junk", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	cams, err := r.List(ctx)
	if err != nil || len(cams) != 3 {
		t.Fatalf("List with a junk entry = %v, %v; want the 3 cameras", cams, err)
	}
	kv := r.kv
	r.kv = failingGet{KeyValue: kv, key: "b", err: nats.ErrTimeout}
	defer func() { r.kv = kv }()
	rec := httptest.NewRecorder()
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond) // a client that gives up before the retries do
	defer cancel()
	r.Handler(1<<16).ServeHTTP(rec, httptest.NewRequest("GET", "/v1/cameras", nil).WithContext(short))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "camera b") {
		t.Errorf("list with camera b unreadable: %d %s, want 503 naming it", rec.Code, rec.Body)
	}
}

// TestBadIDIs404: an id no camera can have (a space, a wildcard, a trailing
// dot) is not found, for DELETE as for GET, not a 500 with NATS' error.
func TestBadIDIs404(t *testing.T) {
	t.Parallel()
	r := openRegistry(t, natstest.Connect(t, natstest.Start(t)))
	h := r.Handler(1 << 16)
	for _, id := range []string{"sp%20ace", "%2A", "%3E", "r13."} {
		for _, method := range []string{"GET", "DELETE"} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(method, "/v1/cameras/"+id, nil))
			if rec.Code != http.StatusNotFound {
				t.Errorf("%s /v1/cameras/%s: %d %s, want 404", method, id, rec.Code, rec.Body)
			}
		}
	}
}

// TestAttachDuringOutageDoesNotLandLater: on ingest's connection (no
// reconnect buffer, as internal/app makes it) an attach while NATS is down
// is unavailable (503) and is not sent when NATS is back: buffered, it
// happened after its caller was told it failed, and the caller's retry got
// 409.
func TestAttachDuringOutageDoesNotLandLater(t *testing.T) {
	t.Parallel()
	cfg := config.Embedded{Host: "127.0.0.1", Port: testenv.FreePort(t, "127.0.0.1"), StoreDir: t.TempDir()}
	e, err := bus.StartEmbedded(cfg, "", natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := bus.Connect(config.NATS{}, e.URL(), "ingest", natstest.Discard(), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := openRegistry(t, nc)
	e.Shutdown()
	testenv.WaitFor(t, "the connection to see NATS go", 5*time.Second, func() bool { return !nc.IsConnected() })
	start := time.Now()
	if err := r.Attach(context.Background(), config.Camera{ID: "cam8", URL: "synthetic://"}); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "NATS is not reachable") {
		t.Fatalf("attach with NATS down: %v, want ErrUnavailable saying NATS is not reachable", err)
	}
	if took := time.Since(start); took > disconnectedWait+2*time.Second {
		t.Errorf("attach with NATS down answered after %v, want about %v (not the %v a leader election gets)", took, disconnectedWait, unavailableWait)
	}
	if e, err = bus.StartEmbedded(cfg, "", natstest.Discard()); err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	testenv.WaitFor(t, "the reconnect", 10*time.Second, nc.IsConnected)
	time.Sleep(300 * time.Millisecond) // what a buffer would have sent is in by now
	if _, err := r.Get(context.Background(), "cam8"); !errors.Is(err, ErrNotFound) {
		t.Errorf("camera cam8 after NATS came back: %v, want not found (the failed attach must not land)", err)
	}
}

// TestAPIHidesRTSPPassword: a camera attached with a password in its URL
// never shows it through the API: not in the attach answer, not in GET
// /v1/cameras/{id}, not in the list. The user name and the rest stay.
func TestAPIHidesRTSPPassword(t *testing.T) {
	t.Parallel()
	r := openRegistry(t, natstest.Connect(t, natstest.Start(t)))
	h := r.Handler(1 << 16)
	const password = "hunter2pw"
	serve := func(method, path, body string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec.Code, rec.Body.String()
	}
	code, attached := serve("POST", "/v1/cameras", `{"id":"door","url":"rtsp://viewer:`+password+`@192.0.2.10:554/s"}`)
	if code != http.StatusCreated {
		t.Fatalf("attach: %d %s", code, attached)
	}
	// Attached through the registry as pipeline.yaml's cameras are.
	if err := r.Put(context.Background(), config.Camera{ID: "yard", URL: "rtsp://viewer:" + password + "@192.0.2.11/s?channel=1"}); err != nil {
		t.Fatal(err)
	}
	code, door := serve("GET", "/v1/cameras/door", "")
	if code != http.StatusOK {
		t.Fatalf("GET door: %d %s", code, door)
	}
	code, list := serve("GET", "/v1/cameras", "")
	if code != http.StatusOK {
		t.Fatalf("GET list: %d %s", code, list)
	}
	for what, body := range map[string]string{"attach answer": attached, "GET door": door, "list": list} {
		if strings.Contains(body, password) {
			t.Errorf("the %s shows the password: %s", what, body)
		}
	}
	if !strings.Contains(door, `"url":"rtsp://viewer:xxxxx@192.0.2.10:554/s"`) {
		t.Errorf("GET door = %s, want the URL with only its password hidden", door)
	}
	if !strings.Contains(list, `"rtsp://viewer:xxxxx@192.0.2.11/s?channel=1"`) || !strings.Contains(list, `"id":"door"`) {
		t.Errorf("list = %s, want both cameras, passwords hidden", list)
	}
}

// TestAttachRefusesMalformedBodies: a misspelt field in an attach body is
// a 400 naming it, not a camera attached with that setting left at its
// default; so is anything after the camera's object (a body cut and pasted
// twice, say), which was attached as if it were not there.
func TestAttachRefusesMalformedBodies(t *testing.T) {
	t.Parallel()
	r := openRegistry(t, natstest.Connect(t, natstest.Start(t)))
	for body, want := range map[string]string{
		`{"id":"a","url":"synthetic://","fsp":5}`:                `unknown field \"fsp\"`,
		`{"id":"a","url":"synthetic://"} trailing`:               "more than one JSON value",
		`{"id":"a","url":"synthetic://"}{"id":"b","url":"x://"}`: "more than one JSON value",
		`{"id":"a","fps":"5"}`:                                   `field \"fps\": want a number, got string`,
	} {
		rec := httptest.NewRecorder()
		r.Handler(1<<16).ServeHTTP(rec, httptest.NewRequest("POST", "/v1/cameras", strings.NewReader(body)))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("attach %s: %d %s, want 400 saying %s", body, rec.Code, rec.Body, want)
		}
	}
	if _, err := r.Get(context.Background(), "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("camera a after a refused attach: %v, want not found", err)
	}
}

// TestSyncConfig: the configuration's cameras are put in the registry,
// marked from_config; at the next start, one the configuration no longer
// lists is detached, while cameras attached through the API stay, and the
// API cannot mark a camera as the configuration's.
func TestSyncConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := openRegistry(t, natstest.Connect(t, natstest.Start(t)))
	a := config.Camera{ID: "a", URL: "synthetic://?seed=1"}
	b := config.Camera{ID: "b", URL: "synthetic://?seed=2"}
	// An entry that is not a camera (an old version stored an empty spec
	// for a WHIP camera of fps NaN) is skipped, not a start that fails.
	if _, err := r.kv.Put(ctx, "nancam", nil); err != nil {
		t.Fatal(err)
	}
	if err := r.SyncConfig(ctx, []config.Camera{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := r.Detach(ctx, "nancam"); err != nil {
		t.Fatalf("detach of the entry that is not a camera: %v", err)
	}
	if err := r.Attach(ctx, config.Camera{ID: "api", URL: "synthetic://?seed=3"}); err != nil {
		t.Fatal(err)
	}
	if err := r.SyncConfig(ctx, []config.Camera{a}); err != nil { // b taken out of the file
		t.Fatal(err)
	}
	views, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range views {
		got = append(got, fmt.Sprintf("%s:%v", v.ID, v.FromConfig))
	}
	if fmt.Sprint(got) != "[a:true api:false]" {
		t.Errorf("cameras after the second start %v, want [a:true api:false] (b detached)", got)
	}
	rec := httptest.NewRecorder()
	r.Handler(1<<16).ServeHTTP(rec, httptest.NewRequest("POST", "/v1/cameras", strings.NewReader(`{"id":"c","url":"synthetic://","from_config":true}`)))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "from_config is set by patchline") {
		t.Errorf("attach with from_config: %d %s, want 400", rec.Code, rec.Body.String())
	}
}
