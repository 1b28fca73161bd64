package console

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
)

// The live stream asks decode for previews (watch pings on NATS) and relays
// a camera's previews and annotations as Server-Sent Events; it ends with
// the server's context.
func TestLiveRelaysPreviewsAndAnnotations(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := httptest.NewServer(New(ctx, nc, Options{TraceURL: "http://t/{trace_id}", Auth: true}).API())
	defer srv.Close()

	watched := make(chan struct{}, 16)
	sub, err := nc.Subscribe(bus.WatchSubject("cam1"), func(*nats.Msg) { watched <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	var cfg map[string]any
	resp, err := http.Get(srv.URL + "/v1/console")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&cfg)
	resp.Body.Close()
	if cfg["trace_url"] != "http://t/{trace_id}" || cfg["auth"] != true {
		t.Errorf("/v1/console = %v", cfg)
	}
	if resp, err := http.Get(srv.URL + "/v1/live/a.b"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad camera id: %v %v, want 400", resp.Status, err)
	}

	resp, err = http.Get(srv.URL + "/v1/live/cam1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	select {
	case <-watched:
	case <-time.After(5 * time.Second):
		t.Fatal("no watch message on NATS")
	}
	jpeg := []byte{0xff, 0xd8, 0xff, 0xe0, 1, 2, 3}
	m := nats.NewMsg(bus.PreviewSubject("cam1"))
	m.Data = jpeg
	m.Header.Set(frame.HdrSeq, "7")
	m.Header.Set(frame.HdrSourceSize, "640x360")
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	ann := `{"camera":"cam1","seq":7,"detections":[{"label":"person","box":[1,2,3,4]}]}`
	if err := nc.Publish(bus.AnnotationSubject("cam1"), []byte(ann)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(bus.AnnotationSubject("other"), []byte(`{"camera":"other"}`)); err != nil {
		t.Fatal(err)
	}

	events := map[string]string{}
	r := bufio.NewReader(resp.Body)
	var name string
	deadline := time.AfterFunc(10*time.Second, func() { resp.Body.Close() })
	defer deadline.Stop()
	for len(events) < 2 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended with %v after %v", err, events)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			events[name] = strings.TrimPrefix(line, "data: ")
		}
	}
	if events["annotation"] != ann {
		t.Errorf("annotation event %q, want %q", events["annotation"], ann)
	}
	var p previewEvent
	if err := json.Unmarshal([]byte(events["frame"]), &p); err != nil {
		t.Fatal(err)
	}
	if got, _ := base64.StdEncoding.DecodeString(p.JPEG); string(got) != string(jpeg) || p.Seq != "7" || p.SourceSize != "640x360" {
		t.Errorf("frame event %+v", p)
	}

	cancel() // the server stops: the stream ends
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, r); done <- err }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("live stream did not end with the server's context")
	}
}

// The pages are embedded and served, with headers that keep other sites'
// scripts out of them and them out of other sites' frames.
func TestAssets(t *testing.T) {
	srv := httptest.NewServer(Assets())
	defer srv.Close()
	for path, want := range map[string]string{"/": "Publish this browser's camera", "/console.js": "/whip/", "/console.css": "#view"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("%s: %s, want it to contain %q", path, resp.Status, want)
		}
		h := resp.Header
		if !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: security headers %v", path, h)
		}
	}
}

// The page names its icon inline, as a data: URL the policy's img-src
// allows, so a browser does not ask for /favicon.ico (a 404) at each load.
func TestAssetsFavicon(t *testing.T) {
	b, err := static.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `<link rel="icon" href="data:,">`) {
		t.Errorf("index.html has no inline icon link")
	}
	if !strings.Contains(contentSecurityPolicy, "img-src 'self' data:") {
		t.Errorf("the policy's img-src does not allow the data: icon: %s", contentSecurityPolicy)
	}
}

// TestLiveCutsOffAStuckViewer: a viewer that stops reading is cut off
// after liveWriteTimeout, and its subscriptions go.
func TestLiveCutsOffAStuckViewer(t *testing.T) {
	defer func(d time.Duration) { liveWriteTimeout = d }(liveWriteTimeout)
	liveWriteTimeout = 300 * time.Millisecond
	nc := natstest.Connect(t, natstest.Start(t))
	srv := httptest.NewServer(New(context.Background(), nc, Options{}).API())
	defer srv.Close()
	before := nc.NumSubscriptions()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	if _, err := conn.Write([]byte("GET /v1/live/cam1 HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the viewer subscribed", 5*time.Second, func() bool { return nc.NumSubscriptions() == before+2 })
	preview := make([]byte, 512<<10)
	_, _ = rand.Read(preview)
	testenv.WaitFor(t, "the stuck viewer cut off", 20*time.Second, func() bool {
		_ = nc.Publish(bus.PreviewSubject("cam1"), preview) // never read: buffers fill, the write times out
		return nc.NumSubscriptions() == before
	})
}

// TestLiveUnknownCamera: with Known set, the live view of a camera that is
// not attached is a 404, and a registry that cannot answer a 503.
func TestLiveUnknownCamera(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	known := func(_ context.Context, cam string) (bool, error) {
		if cam == "broken" {
			return false, errors.New("no quorum")
		}
		return cam == "door", nil
	}
	srv := httptest.NewServer(New(context.Background(), nc, Options{Known: known}).API())
	defer srv.Close()
	for cam, want := range map[string]int{"door": http.StatusOK, "nosuch": http.StatusNotFound, "broken": http.StatusServiceUnavailable} {
		resp, err := http.Get(srv.URL + "/v1/live/" + cam)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("live %s: %d, want %d", cam, resp.StatusCode, want)
		}
	}
}

// TestLiveEndsOnDetach: the live view of a camera detached while it
// streams ends with a "detached" event and frees its viewer's place; a
// registry that cannot answer meanwhile does not end it.
func TestLiveEndsOnDetach(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	var attached, broken atomic.Bool
	attached.Store(true)
	known := func(_ context.Context, cam string) (bool, error) {
		if broken.Load() {
			return false, errors.New("no quorum")
		}
		return attached.Load(), nil
	}
	srv := httptest.NewServer(New(context.Background(), nc, Options{Known: known, MaxViewers: 1}).API())
	defer srv.Close()
	client := &http.Client{Timeout: 20 * time.Second} // the whole view, and ReadAll below
	resp, err := client.Get(srv.URL + "/v1/live/door")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("live door: %s", resp.Status)
	}
	broken.Store(true)
	r := bufio.NewReader(resp.Body)
	keepalives := 0
	for keepalives < 2 { // two registry checks that could not answer
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("the view ended while the registry could not answer: %v", err)
		}
		if strings.HasPrefix(line, ": keepalive") {
			keepalives++
		}
	}
	broken.Store(false)
	attached.Store(false)
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("the view did not end on detach: %v", err)
	}
	if !strings.Contains(string(rest), "event: detached\ndata: {\"camera\":\"door\"}") {
		t.Errorf("the view ended without a detached event:\n%s", rest)
	}
	testenv.WaitFor(t, "the viewer's place free again", 5*time.Second, func() bool {
		attached.Store(true)
		r, err := http.Get(srv.URL + "/v1/live/door")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
}

// TestLiveMaxViewers: one live view more than MaxViewers is refused with
// 503 and Retry-After, naming the setting; when a view ends its place is
// free again.
func TestLiveMaxViewers(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t))
	srv := httptest.NewServer(New(context.Background(), nc, Options{MaxViewers: 2}).API())
	defer srv.Close()
	open := func() *http.Response {
		t.Helper()
		resp, err := http.Get(srv.URL + "/v1/live/cam1")
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	a, b := open(), open()
	defer b.Body.Close()
	for _, r := range []*http.Response{a, b} {
		if r.StatusCode != http.StatusOK {
			t.Fatalf("viewer within the limit: %s", r.Status)
		}
	}
	c := open()
	body, _ := io.ReadAll(c.Body)
	c.Body.Close()
	if c.StatusCode != http.StatusServiceUnavailable || c.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "http.max_viewers") {
		t.Errorf("third viewer of 2: %s, Retry-After %q, %s; want 503 naming http.max_viewers", c.Status, c.Header.Get("Retry-After"), body)
	}
	a.Body.Close() // the server notices when it next writes (keepalive) or the request ends
	testenv.WaitFor(t, "a place free again", 10*time.Second, func() bool {
		r := open()
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
}
