package ingest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/pion/turn/v5"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
	"github.com/patchline/patchline/internal/whiptest"
)

const testMaxBody = 64 << 10

type whipEnv struct {
	base string
	reg  *Registry
	whip *WHIP
	nc   *nats.Conn
}

// startWHIP serves the camera API and WHIP, as the app mounts them, over a
// real NATS server.
func startWHIP(t *testing.T, token string, cfg config.WHIP) *whipEnv {
	t.Helper()
	nc := natstest.Connect(t, natstest.Start(t))
	reg := openRegistry(t, nc)
	w, err := NewWHIP(reg, nc, cfg, natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", RequireToken(token, reg.Handler(testMaxBody)))
	mux.Handle("/whip/", w.Handler(token, testMaxBody))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		w.Close()
		reg.Close()
	})
	return &whipEnv{base: srv.URL, reg: reg, whip: w, nc: nc}
}

func (e *whipEnv) cameras(t *testing.T) []CameraView {
	t.Helper()
	cams, err := e.reg.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cams
}

func do(t *testing.T, method, url, token, ctype, origin string, body io.Reader) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// rtpWatch counts what ingest publishes on a camera's RTP subject.
type rtpWatch struct {
	mu      sync.Mutex
	packets int
	codecs  map[string]int
	byes    int
}

func watchRTP(t *testing.T, nc *nats.Conn, cam string) *rtpWatch {
	t.Helper()
	w := &rtpWatch{codecs: map[string]int{}}
	sub, err := nc.Subscribe(bus.RTPSubject(cam), func(m *nats.Msg) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if m.Header.Get(bus.RTPByeHeader) != "" {
			w.byes++
			return
		}
		w.packets++
		w.codecs[m.Header.Get(bus.RTPCodecHeader)]++
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

func (w *rtpWatch) get() (int, int, map[string]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := map[string]int{}
	for k, v := range w.codecs {
		c[k] = v
	}
	return w.packets, w.byes, c
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, what, within, cond)
}

// A real pion publisher: its RTP reaches NATS, decode's keyframe requests
// reach it as PLI, DELETE ends the session (bye on NATS, camera kept,
// offline), a second publisher is refused while one is live, publishing
// again works, and detaching the camera ends the session.
func TestWHIPPublishForwardsRTP(t *testing.T) {
	e := startWHIP(t, "", config.WHIP{})
	clip := whiptest.MakeClip(t, t.TempDir(), whiptest.VP8, 320, 240, 10, 2)
	rtp := watchRTP(t, e.nc, "cam1")

	p, err := whiptest.Publish(e.base+"/whip/cam1?fps=5", whiptest.Options{Codec: whiptest.VP8, File: clip, FPS: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !strings.HasPrefix(p.Location(), e.base+"/whip/cam1/") {
		t.Errorf("Location %s, want %s/whip/cam1/<session>", p.Location(), e.base)
	}
	waitFor(t, "50 RTP packets on "+bus.RTPSubject("cam1"), 15*time.Second, func() bool { n, _, _ := rtp.get(); return n >= 50 })
	if _, _, codecs := rtp.get(); len(codecs) != 1 || codecs["vp8"] == 0 {
		t.Errorf("codec headers %v, want only vp8", codecs)
	}
	cams := e.cameras(t)
	if len(cams) != 1 || cams[0].ID != "cam1" || cams[0].URL != WHIPURL || cams[0].FPS != 5 {
		t.Fatalf("cameras %+v, want cam1 whip:// fps 5", cams)
	}

	// With keyframe_interval 0 a PLI goes out at the start and on request only.
	waitFor(t, "the first PLI", 5*time.Second, func() bool { return p.PLIs() >= 1 })
	before := p.PLIs()
	if err := e.nc.Publish(bus.KeyframeSubject("cam1"), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a PLI after a keyframe request", 5*time.Second, func() bool { return p.PLIs() > before })

	offer, err := whiptest.Offer(webrtc.MimeTypeVP8)
	if err != nil {
		t.Fatal(err)
	}
	if code, body, h := do(t, "POST", e.base+"/whip/cam1", "", "application/sdp", "", strings.NewReader(offer)); code != http.StatusConflict ||
		!strings.Contains(body, "receiving from another WHIP publisher") || h.Get("Retry-After") != "2" {
		t.Errorf("second publisher while the first streams: %d %s (Retry-After %q), want 409, Retry-After 2", code, body, h.Get("Retry-After"))
	}

	code, err := p.Stop()
	if err != nil || code != http.StatusOK {
		t.Fatalf("DELETE session: %d %v, want 200", code, err)
	}
	waitFor(t, "a bye on the RTP subject", 5*time.Second, func() bool { _, byes, _ := rtp.get(); return byes == 1 })
	if n := e.whip.Sessions(); n != 0 {
		t.Errorf("%d sessions after DELETE, want 0", n)
	}
	if code, _, _ := do(t, "DELETE", p.Location(), "", "", "", nil); code != http.StatusNotFound {
		t.Errorf("DELETE of an ended session: %d, want 404", code)
	}
	if cams := e.cameras(t); len(cams) != 1 {
		t.Errorf("cameras after the publisher left: %+v, want cam1 kept (offline)", cams)
	}

	// The camera keeps the fps it was made with: another is refused, not ignored.
	if code, body, _ := do(t, "POST", e.base+"/whip/cam1?fps=2", "", "application/sdp", "", strings.NewReader(offer)); code != http.StatusConflict || !strings.Contains(body, "exists with fps 5") {
		t.Errorf("publishing with another fps: %d %s, want 409 naming fps 5", code, body)
	}
	p2, err := whiptest.Publish(e.base+"/whip/cam1", whiptest.Options{Codec: whiptest.VP8, File: clip, FPS: 10})
	if err != nil {
		t.Fatalf("publishing again: %v", err)
	}
	defer p2.Close()
	n0, _, _ := rtp.get()
	waitFor(t, "RTP from the second session", 10*time.Second, func() bool { n, _, _ := rtp.get(); return n > n0+20 })
	if code, body, _ := do(t, "DELETE", e.base+"/v1/cameras/cam1", "", "", "", nil); code != http.StatusNoContent {
		t.Fatalf("detach: %d %s", code, body)
	}
	waitFor(t, "detach ends the session", 5*time.Second, func() bool { _, byes, _ := rtp.get(); return byes == 2 && e.whip.Sessions() == 0 })
}

// TestWHIPStaleSessionGivesWay: a session whose publisher stopped sending
// (hung, or crashed and reconnects) holds its camera against a new POST for
// staleAfter after its last packet only, not until ICE gives up on it (if
// ever); a POST that is refused for another reason ends nothing.
func TestWHIPStaleSessionGivesWay(t *testing.T) {
	e := startWHIP(t, "", config.WHIP{})
	clip := whiptest.MakeClip(t, t.TempDir(), whiptest.H264, 320, 240, 10, 2)
	rtp := watchRTP(t, e.nc, "cam1")
	p, err := whiptest.Publish(e.base+"/whip/cam1?fps=5", whiptest.Options{Codec: whiptest.H264, File: clip, FPS: 10})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "RTP from the first publisher", 15*time.Second, func() bool { n, _, _ := rtp.get(); return n >= 20 })
	defer p.Close()
	p.Mute() // silent, its connection up
	crashed := time.Now()
	offer, err := whiptest.Offer(webrtc.MimeTypeH264)
	if err != nil {
		t.Fatal(err)
	}
	code, body, _ := do(t, "POST", e.base+"/whip/cam1", "", "application/sdp", "", strings.NewReader(offer))
	if code != http.StatusConflict && time.Since(crashed) < staleAfter {
		t.Fatalf("a new POST within %s of the last packet: %d %s, want 409", staleAfter, code, body)
	}
	time.Sleep(time.Until(crashed.Add(staleAfter + 200*time.Millisecond)))
	// Refused for its fps: the stale session is left as it was.
	if code, body, _ := do(t, "POST", e.base+"/whip/cam1?fps=7", "", "application/sdp", "", strings.NewReader(offer)); code != http.StatusConflict || e.whip.Sessions() != 1 {
		t.Fatalf("a POST with another fps: %d %s, %d sessions; want 409 and the old session kept", code, body, e.whip.Sessions())
	}
	n0, _, _ := rtp.get()
	p2, err := whiptest.Publish(e.base+"/whip/cam1", whiptest.Options{Codec: whiptest.H264, File: clip, FPS: 10})
	if err != nil {
		t.Fatalf("a new publisher %s after the last packet of one that crashed: %v, want it to take the camera",
			time.Since(crashed).Round(time.Millisecond), err)
	}
	defer p2.Close()
	waitFor(t, "RTP from the new publisher", 15*time.Second, func() bool { n, _, _ := rtp.get(); return n >= n0+20 })
	if n := e.whip.Sessions(); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
}

// TestWHIPAudioBeforeVideo: a publisher that offers audio first (browsers
// with a microphone, OBS) connects; its video is forwarded and its audio,
// read and thrown away, is not.
func TestWHIPAudioBeforeVideo(t *testing.T) {
	e := startWHIP(t, "", config.WHIP{})
	clip := whiptest.MakeClip(t, t.TempDir(), whiptest.H264, 320, 240, 10, 2)
	rtp := watchRTP(t, e.nc, "cam1")
	p, err := whiptest.Publish(e.base+"/whip/cam1", whiptest.Options{Codec: whiptest.H264, File: clip, FPS: 10, Audio: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	waitFor(t, "50 RTP packets on "+bus.RTPSubject("cam1"), 15*time.Second, func() bool { n, _, _ := rtp.get(); return n >= 50 })
	if _, _, codecs := rtp.get(); len(codecs) != 1 || codecs["h264"] == 0 {
		t.Errorf("codec headers %v, want only h264", codecs)
	}
	if err := p.Err(); err != nil {
		t.Errorf("publisher: %v", err)
	}
}

// A camera of another kind cannot be published to.
func TestWHIPRefusesNonWHIPCamera(t *testing.T) {
	e := startWHIP(t, "", config.WHIP{})
	if err := e.reg.Attach(context.Background(), config.Camera{ID: "door", URL: "rtsp://192.0.2.1/s"}); err != nil {
		t.Fatal(err)
	}
	offer, err := whiptest.Offer(webrtc.MimeTypeH264)
	if err != nil {
		t.Fatal(err)
	}
	code, body, _ := do(t, "POST", e.base+"/whip/door", "", "application/sdp", "", strings.NewReader(offer))
	if code != http.StatusConflict || !strings.Contains(body, "rtsp://192.0.2.1/s") {
		t.Errorf("%d %s, want 409 naming the camera's url", code, body)
	}
	// A scheme is one in any case: a camera attached as WHIP:// takes a publish.
	if err := e.reg.Attach(context.Background(), config.Camera{ID: "upper", URL: "WHIP://"}); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := do(t, "POST", e.base+"/whip/upper", "", "application/sdp", "", strings.NewReader(offer)); code != http.StatusCreated {
		t.Errorf("publish to a WHIP:// camera: %d %s, want 201", code, body)
	}
}

// Bad offers get a 4xx that says what is wrong; no camera, no session and
// no goroutine is left behind, including for an offer pion itself rejects
// after the camera was registered.
func TestWHIPBadInput(t *testing.T) {
	e := startWHIP(t, "", config.WHIP{})
	good, err := whiptest.Offer(webrtc.MimeTypeVP8)
	if err != nil {
		t.Fatal(err)
	}
	audioOnly, err := whiptest.Offer("")
	if err != nil {
		t.Fatal(err)
	}
	vp9, err := whiptest.Offer(webrtc.MimeTypeVP9)
	if err != nil {
		t.Fatal(err)
	}
	var noFingerprint []string
	for _, l := range strings.Split(good, "\r\n") {
		if !strings.HasPrefix(l, "a=fingerprint:") {
			noFingerprint = append(noFingerprint, l)
		}
	}
	recvOnly := strings.NewReplacer("a=sendonly", "a=recvonly", "a=sendrecv", "a=recvonly").Replace(good)

	cases := []struct {
		name, path, ctype, body string
		code                    int
		want                    string
	}{
		{"garbage", "/whip/cam1", "application/sdp", "hello, I am not SDP", 400, "not an SDP session description"},
		{"empty", "/whip/cam1", "application/sdp", "", 400, "empty body"},
		{"no video", "/whip/cam1", "application/sdp", audioOnly, 400, "the offer has no video track"},
		{"unsupported codec", "/whip/cam1", "application/sdp", vp9, 400, "unsupported video codec(s) VP9"},
		{"receive only", "/whip/cam1", "application/sdp", recvOnly, 400, "the video track is recvonly"},
		{"rejected by pion", "/whip/cam1", "application/sdp", strings.Join(noFingerprint, "\r\n"), 400, "WebRTC rejected the offer"},
		{"wrong content type", "/whip/cam1", "application/json", good, 415, "application/sdp"},
		{"bad camera id", "/whip/a%20b", "application/sdp", good, 400, "camera id"},
		{"bad fps", "/whip/cam1?fps=500", "application/sdp", good, 400, "fps"},
		{"fps not a number", "/whip/cam1?fps=NaN", "application/sdp", good, 400, "fps"},
	}
	// Warm up pion's and net/http's process-wide goroutines, then watch for leaks.
	// Teardown (pion's, NATS subscriptions') may take a while under -race:
	// give it seconds, not goleak's default retries of under a second.
	ignore := goleak.IgnoreCurrent()
	defer func() {
		var leaked error
		testenv.Poll(5*time.Second, func() bool {
			http.DefaultClient.CloseIdleConnections()
			leaked = goleak.Find(ignore)
			return leaked == nil
		})
		if leaked != nil {
			t.Error(leaked)
		}
	}()
	for _, c := range cases {
		code, body, _ := do(t, "POST", e.base+c.path, "", c.ctype, "", strings.NewReader(c.body))
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s, want %d containing %q", c.name, code, body, c.code, c.want)
		}
		if cams := e.cameras(t); len(cams) != 0 {
			t.Errorf("%s: left cameras %+v", c.name, cams)
		}
		if n := e.whip.Sessions(); n != 0 {
			t.Errorf("%s: left %d sessions", c.name, n)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

// With a token, WHIP and the API answer 401 without it and create
// nothing; bodies over the limit get 413 whether declared or streamed.
func TestWHIPAuthAndBodyLimit(t *testing.T) {
	e := startWHIP(t, "s3cret", config.WHIP{})
	offer, err := whiptest.Offer(webrtc.MimeTypeVP8)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"", "wrong"} {
		code, body, h := do(t, "POST", e.base+"/whip/cam1", tok, "application/sdp", "", strings.NewReader(offer))
		if code != http.StatusUnauthorized || h.Get("WWW-Authenticate") == "" || !strings.Contains(body, "bearer token") {
			t.Errorf("WHIP with token %q: %d %s, want 401 with WWW-Authenticate", tok, code, body)
		}
		code, body, _ = do(t, "POST", e.base+"/v1/cameras", tok, "application/json", "", strings.NewReader(`{"id":"x","url":"synthetic://"}`))
		if code != http.StatusUnauthorized {
			t.Errorf("attach with token %q: %d %s, want 401", tok, code, body)
		}
		if code, _, _ := do(t, "GET", e.base+"/v1/cameras", tok, "", "", nil); code != http.StatusUnauthorized {
			t.Errorf("list with token %q: %d, want 401", tok, code)
		}
	}
	if cams := e.cameras(t); len(cams) != 0 || e.whip.Sessions() != 0 {
		t.Fatalf("unauthorized requests created %+v / %d sessions", cams, e.whip.Sessions())
	}

	big := strings.Repeat("a=x-padding\r\n", testMaxBody/10)
	code, body, _ := do(t, "POST", e.base+"/whip/cam1", "s3cret", "application/sdp", "", strings.NewReader(offer+big))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "http.max_body") {
		t.Errorf("oversized offer: %d %s, want 413", code, body)
	}
	// No Content-Length: the limit applies while reading.
	code, body, _ = do(t, "POST", e.base+"/v1/cameras", "s3cret", "application/json", "", io.MultiReader(strings.NewReader(big)))
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized streamed attach: %d %s, want 413", code, body)
	}
	if cams := e.cameras(t); len(cams) != 0 {
		t.Fatalf("oversized requests created %+v", cams)
	}

	clip := whiptest.MakeClip(t, t.TempDir(), whiptest.H264, 320, 240, 10, 1)
	p, err := whiptest.Publish(e.base+"/whip/cam1", whiptest.Options{Codec: whiptest.H264, File: clip, FPS: 10, Token: "s3cret"})
	if err != nil {
		t.Fatalf("publish with the token: %v", err)
	}
	defer p.Close()
	if code, _, _ := do(t, "DELETE", p.Location(), "", "", "", nil); code != http.StatusUnauthorized {
		t.Errorf("DELETE without the token: %d, want 401", code)
	}
	if code, err := p.Stop(); err != nil || code != http.StatusOK {
		t.Errorf("DELETE with the token: %d %v", code, err)
	}
}

// Browsers on allowed origins may publish (preflight, then POST); others
// are refused before anything happens.
func TestWHIPCORS(t *testing.T) {
	e := startWHIP(t, "tok", config.WHIP{AllowedOrigins: []string{"https://studio.example"}})
	code, _, h := do(t, "OPTIONS", e.base+"/whip/cam1", "", "", "https://studio.example", nil)
	if code != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "https://studio.example" ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight from an allowed origin: %d %v", code, h)
	}
	code, _, h = do(t, "OPTIONS", e.base+"/whip/cam1", "", "", "https://evil.example", nil)
	if code != http.StatusForbidden || h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %d %v, want 403 without CORS headers", code, h)
	}
	offer, err := whiptest.Offer(webrtc.MimeTypeVP8)
	if err != nil {
		t.Fatal(err)
	}
	code, body, _ := do(t, "POST", e.base+"/whip/cam1", "tok", "application/sdp", "https://evil.example", strings.NewReader(offer))
	if code != http.StatusForbidden || len(e.cameras(t)) != 0 {
		t.Errorf("POST from another origin: %d %s (cameras %d), want 403 and nothing created", code, body, len(e.cameras(t)))
	}
	code, body, h = do(t, "POST", e.base+"/whip/cam1", "", "application/sdp", "https://studio.example", strings.NewReader(offer))
	if code != http.StatusUnauthorized || h.Get("Access-Control-Allow-Origin") != "https://studio.example" {
		t.Errorf("POST without a token from an allowed origin: %d %s %v, want 401 readable by the page", code, body, h)
	}
	code, body, h = do(t, "POST", e.base+"/whip/cam1", "tok", "application/sdp", "https://studio.example", strings.NewReader(offer))
	if code != http.StatusCreated || !strings.Contains(h.Get("Access-Control-Expose-Headers"), "Location") {
		t.Errorf("POST from an allowed origin: %d %s %v, want 201 exposing Location", code, body, h)
	}
}

// With whip.udp_port every session's media shares that one UDP port, and
// whip.public_ips are announced beside the machine's own addresses.
func TestWHIPOneUDPPortAndPublicIPs(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	e := startWHIP(t, "", config.WHIP{UDPPort: port, PublicIPs: []string{"203.0.113.7"}})

	offer, err := whiptest.Offer(webrtc.MimeTypeVP8)
	if err != nil {
		t.Fatal(err)
	}
	code, answer, _ := do(t, "POST", e.base+"/whip/probe", "", "application/sdp", "", strings.NewReader(offer))
	if code != http.StatusCreated {
		t.Fatalf("offer: %d %s", code, answer)
	}
	var udp, public int
	for line := range strings.Lines(answer) {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "a=candidate:"))
		if !strings.HasPrefix(line, "a=candidate:") || len(f) < 8 || !strings.EqualFold(f[2], "udp") {
			continue
		}
		udp++
		if f[5] != strconv.Itoa(port) {
			t.Errorf("candidate on port %s, want %d: %s", f[5], port, strings.TrimSpace(line))
		}
		if f[4] == "203.0.113.7" {
			public++
		}
	}
	if udp == 0 || public == 0 {
		t.Fatalf("answer has %d UDP candidates, %d on the public IP:\n%s", udp, public, answer)
	}

	// Two publishers at once, both through the one port.
	clip := whiptest.MakeClip(t, t.TempDir(), whiptest.VP8, 320, 240, 10, 2)
	for _, cam := range []string{"cam1", "cam2"} {
		rtp := watchRTP(t, e.nc, cam)
		p, err := whiptest.Publish(e.base+"/whip/"+cam, whiptest.Options{Codec: whiptest.VP8, File: clip, FPS: 10})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		waitFor(t, "RTP of "+cam, 15*time.Second, func() bool { n, _, _ := rtp.get(); return n >= 20 })
	}
}

// whip.keyframe_interval asks the publisher for a keyframe that often; 0
// asks only at the start and when decode asks.
func TestWHIPKeyframeInterval(t *testing.T) {
	clip := whiptest.MakeClip(t, t.TempDir(), whiptest.VP8, 160, 120, 10, 2)
	for _, c := range []struct {
		interval time.Duration
		min, max int64 // PLIs within 1.5 s after the first
	}{{200 * time.Millisecond, 5, 9}, {0, 0, 0}} {
		t.Run(c.interval.String(), func(t *testing.T) {
			e := startWHIP(t, "", config.WHIP{KeyframeInterval: c.interval})
			p, err := whiptest.Publish(e.base+"/whip/cam1", whiptest.Options{Codec: whiptest.VP8, File: clip, FPS: 10})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			waitFor(t, "the first PLI", 5*time.Second, func() bool { return p.PLIs() >= 1 })
			first := p.PLIs()
			time.Sleep(1500 * time.Millisecond)
			if n := p.PLIs() - first; n < c.min || n > c.max {
				t.Errorf("keyframe_interval %v: %d PLIs in 1.5 s after the first, want %d..%d", c.interval, n, c.min, c.max)
			}
		})
	}
}

// startTURN runs a TURN server (pion/turn) on loopback UDP with one user,
// relaying on 127.0.0.1, and returns its URL.
func startTURN(t *testing.T, user, pass string) (string, *turn.Server) {
	t.Helper()
	const realm = "patchline.test"
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	key := turn.GenerateAuthKey(user, realm, pass)
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm: realm,
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			return ra.Username, key, ra.Username == user
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            pc,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{RelayAddress: net.ParseIP("127.0.0.1"), Address: "127.0.0.1"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return fmt.Sprintf("turn:%s?transport=udp", pc.LocalAddr()), srv
}

// With whip.ice_servers naming a TURN server, the endpoint gathers a relay
// candidate through it and names it to publishers in Link headers (RFC
// 9725); a publisher that can only use relays streams through it.
func TestWHIPThroughTURN(t *testing.T) {
	turnURL, turnSrv := startTURN(t, "pl", `s3"cret`)
	e := startWHIP(t, "", config.WHIP{ICEServers: []config.ICEServer{
		{URLs: []string{turnURL}, Username: "pl", Credential: `s3"cret`},
	}})

	offer, err := whiptest.Offer(webrtc.MimeTypeVP8)
	if err != nil {
		t.Fatal(err)
	}
	code, answer, h := do(t, "POST", e.base+"/whip/probe", "", "application/sdp", "", strings.NewReader(offer))
	if code != http.StatusCreated {
		t.Fatalf("offer: %d %s", code, answer)
	}
	wantLink := "<" + turnURL + `>; rel="ice-server"; username="pl"; credential="s3\"cret"; credential-type="password"`
	if links := h.Values("Link"); len(links) != 1 || links[0] != wantLink {
		t.Errorf("Link headers %q, want [%s]", links, wantLink)
	}
	if !strings.Contains(answer, " typ relay") {
		t.Errorf("answer has no relay candidate:\n%s", answer)
	}

	clip := whiptest.MakeClip(t, t.TempDir(), whiptest.VP8, 320, 240, 10, 2)
	rtp := watchRTP(t, e.nc, "cam1")
	p, err := whiptest.Publish(e.base+"/whip/cam1", whiptest.Options{
		Codec: whiptest.VP8, File: clip, FPS: 10, RelayOnly: true,
		ICEServers: []webrtc.ICEServer{{URLs: []string{turnURL}, Username: "pl", Credential: `s3"cret`}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	waitFor(t, "RTP through the relay", 15*time.Second, func() bool { n, _, _ := rtp.get(); return n >= 20 })
	if n := turnSrv.AllocationCount(); n < 2 {
		t.Errorf("TURN allocations %d, want the endpoint's and the publisher's", n)
	}
}
