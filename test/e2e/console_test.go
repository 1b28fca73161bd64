package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/rtsptest"
	"github.com/patchline/patchline/internal/testenv"
)

// liveStats is what the console page counts (window.patchline).
type liveStats struct {
	FramesDrawn     int    `json:"framesDrawn"`
	BoxesDrawn      int    `json:"boxesDrawn"`
	LastBoxes       int    `json:"lastBoxes"`
	FramesBoxed     int    `json:"framesBoxed"`     // frames drawn with boxes
	FramesOwnBoxes  int    `json:"framesOwnBoxes"`  // of those, with the boxes of their own seq
	FramesBoxedLate int    `json:"framesBoxedLate"` // of those, whose annotation came after the hold
	LastHeatmap     bool   `json:"lastHeatmap"`
	LiveCam         string `json:"liveCam"`
	Published       bool   `json:"published"`
	Banner          string `json:"banner"`
	Caption         string `json:"caption"`
	FPSLabel        string `json:"fpsLabel"`
	Blank           bool   `json:"blank"` // the live view's canvas is all transparent
	Latency         int    `json:"latency"`
}

const statsJS = `({framesDrawn: patchline.framesDrawn, boxesDrawn: patchline.boxesDrawn, lastBoxes: patchline.lastBoxes,
	framesBoxed: patchline.framesBoxed, framesOwnBoxes: patchline.framesOwnBoxes, framesBoxedLate: patchline.framesBoxedLate, lastHeatmap: !!patchline.lastHeatmap,
	liveCam: patchline.liveCam, published: !!patchline.publish, banner: document.querySelector('#banner').textContent,
	caption: document.querySelector('#caption').textContent, fpsLabel: document.querySelector('#live-fps').textContent,
	blank: (() => {
		const c = document.querySelector('#view');
		const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
		for (let i = 3; i < d.length; i += 4) if (d[i]) return false;
		return true;
	})(),
	latency: document.querySelectorAll('#latency tbody tr').length})`

// A real browser (Debian's chromium, headless) with a fake camera playing
// real footage opens the console behind a token, publishes through the
// page's own button (getUserMedia → WHIP), and the DEIMv2 detector's
// annotations for that camera arrive on NATS while the live view draws
// their boxes at ≥ 5 fps. The screenshot is kept as a test artifact.
func TestConsolePublishesBrowserCamera(t *testing.T) {
	assets := sharedAssets(t)
	chromium := testenv.Chromium(t)

	// Chromium's fake capture device plays a Y4M file (in a loop).
	y4m := filepath.Join(t.TempDir(), "people.y4m")
	rtsptest.FFmpeg(t, y4m, "-ss", "6", "-t", "12", "-i", filepath.Join(assets, "video", "people-768x432.mp4"),
		"-vf", "scale=640:360,fps=10", "-pix_fmt", "yuv420p")

	cfg := testConfig(t)
	cfg.HTTP.Token = "console-token"
	cfg.HTTP.TraceURL = "http://127.0.0.1:16686/trace/{trace_id}"
	cfg.Analyze.Model = filepath.Join(repoRoot(t), "models", "deimv2-atto")
	cfg.Decode.Width, cfg.Decode.Height, cfg.Decode.PatchSize = 320, 320, 16
	cfg.Analyze.BatchSize = 2
	cfg.HTTP.MaxViewers = 2
	info := startPipeline(t, cfg)
	const cam = "browser1"
	rec := record(t, natstest.Connect(t, info.NATSURL), cam)

	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1100),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-file-for-fake-video-capture", y4m),
	)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// What the page loads, and how it is answered.
	var netMu sync.Mutex
	var answers []string // "status path"
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventResponseReceived); ok && e.Response != nil {
			path := strings.TrimPrefix(e.Response.URL, "http://"+info.HTTPAddr)
			netMu.Lock()
			answers = append(answers, fmt.Sprintf("%d %s", e.Response.Status, path))
			netMu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	answered := func(match func(string) bool) []string {
		netMu.Lock()
		defer netMu.Unlock()
		var out []string
		for _, a := range answers {
			if match(a) {
				out = append(out, a)
			}
		}
		return out
	}
	page := "http://" + info.HTTPAddr + "/"
	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible("#token")); err != nil {
		t.Fatalf("open the console at %s: %v", page, err)
	}
	// Until the token is entered, the page does not poll the camera list
	// (each time a 401), and a live view it is asked for stops at its 401.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`watch('nosuch')`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if asks := answered(func(a string) bool { return strings.Contains(a, " /v1/cameras") }); len(asks) != 0 {
		t.Errorf("before the token was entered the page asked for the cameras: %v", asks)
	}
	banner, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#banner').textContent`))
	if asks := answered(func(a string) bool { return strings.Contains(a, " /v1/live/") }); err != nil || !slices.Equal(asks, []string{"401 /v1/live/nosuch"}) || !strings.Contains(banner, "unauthorized") {
		t.Errorf("a live view asked for before the token: answers %v, banner %q (%v); want one 401 and the page asking for the token", asks, banner, err)
	}
	// The API wants the token: the page shows the token box; type it in.
	if err := chromedp.Do(ctx,
		chromedp.SetValue("#token", "console-token"),
		chromedp.Evaluate[chromedp.Void](`document.querySelector('#token').dispatchEvent(new Event('change'))`),
		chromedp.SetValue("#publish-id", cam),
		chromedp.Click("#publish"),
	); err != nil {
		t.Fatal(err)
	}

	stats := func() liveStats {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[liveStats](statsJS))
		if err != nil {
			t.Fatalf("read the page's counters: %v", err)
		}
		return s
	}
	deadline := time.Now().Add(120 * time.Second)
	var s liveStats
	for {
		s = stats()
		_, anns, _ := rec.snapshot()
		if s.BoxesDrawn > 0 && s.FramesDrawn >= 20 && len(anns) >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 120s: %d annotations on NATS, page %+v", len(anns), s)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !s.Published || s.LiveCam != cam {
		t.Errorf("page state %+v, want publishing and watching %s", s, cam)
	}
	if st, w, h := cameraState(t, info.HTTPAddr, cfg.HTTP.Token, cam); st != "streaming" || w != 640 || h != 360 {
		t.Errorf("camera %s: %s %dx%d, want streaming 640x360", cam, st, w, h)
	}

	// The live view's rate, measured by the page's own drawing, while
	// whoever can publish on the bus sends malformed annotations and
	// statuses for the camera: the page skips them and goes on.
	junk := natstest.Connect(t, info.NATSURL)
	stopJunk := make(chan struct{})
	junkDone := make(chan struct{})
	go func() {
		defer close(junkDone)
		send := func(subject, data string) {
			m := nats.NewMsg(subject)
			m.Header.Set(junkHeader, "1")
			m.Data = []byte(data)
			_ = junk.PublishMsg(m)
		}
		for {
			send(bus.AnnotationSubject(cam), "not json")
			send(bus.AnnotationSubject(cam), `{"camera":"`+cam+`","seq":1,"source_width":640,"source_height":360,"detections":[{"box":"x"},null],"labels":"y","latency_ms":{"total":"slow"}}`)
			send(bus.StatusSubject(cam), `{"state":"streaming","fps":"x"}`)
			select {
			case <-stopJunk:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	f0, t0 := s.FramesDrawn, time.Now()
	time.Sleep(4 * time.Second)
	s = stats()
	close(stopJunk)
	<-junkDone
	if fps := float64(s.FramesDrawn-f0) / time.Since(t0).Seconds(); fps < 5 {
		t.Errorf("live view drew %.1f fps, want ≥ 5", fps)
	}
	if s.Banner != "" {
		t.Errorf("the page shows %q after malformed annotations and statuses", s.Banner)
	}
	// A preview comes before its frame's annotation: the page holds it
	// until that comes (up to 500 ms), so the boxes drawn over a frame are
	// its own. Frames whose annotation took longer (a loaded machine) are
	// left out of the count.
	if timely := s.FramesBoxed - s.FramesBoxedLate; timely < 10 {
		t.Logf("only %d frames drawn with boxes had their annotation within the hold (%d late): too slow a machine to check the pairing", timely, s.FramesBoxedLate)
	} else if s.FramesOwnBoxes*10 < timely*8 {
		t.Errorf("%d of %d frames drawn with boxes (and their annotation in time) had their own seq's, want ≥ 80%%", s.FramesOwnBoxes, timely)
	}

	// A caption shows its age; an anomaly's heatmap goes after 3 s.
	for _, a := range []string{
		`{"schema":"patchline.annotation/v1","kind":"caption","camera":"` + cam + `","seq":1,"caption":{"text":"a test caption"}}`,
		`{"schema":"patchline.annotation/v1","kind":"anomaly","camera":"` + cam + `","seq":1,"anomaly":{"score":0.9,"threshold":0.5,"grid_w":2,"grid_h":2,"patch_scores":[1,0,0,1]}}`,
	} {
		m := nats.NewMsg(bus.AnnotationSubject(cam))
		m.Header.Set(junkHeader, "1") // not the pipeline's: the recorder skips it
		m.Data = []byte(a)
		if err := junk.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if s = stats(); s.LastHeatmap && strings.HasPrefix(s.Caption, "a test caption (") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("10 s after an anomaly and a caption: heatmap drawn %v, caption %q; want the heatmap, the caption with its age", s.LastHeatmap, s.Caption)
			break
		}
	}
	// The heatmap goes after 3 s, at the next frame drawn.
	time.Sleep(3 * time.Second)
	testenv.Poll(3*time.Second, func() bool { s = stats(); return !s.LastHeatmap })
	age := regexp.MustCompile(`^a test caption \((\d+) s ago\)$`).FindStringSubmatch(s.Caption)
	if s.LastHeatmap || age == nil || age[1] < "3" || len(age[1]) > 1 {
		t.Errorf("3 to 6 s after an anomaly and a caption the page draws the heatmap: %v, caption %q; want none, the caption with its age (3 to 9 s)", s.LastHeatmap, s.Caption)
	}
	// After a minute (made to have passed) the caption goes.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`patchline.caption.receivedAt -= 60000`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if s = stats(); s.Caption != "" {
		t.Errorf("a caption of a minute ago is still shown: %q", s.Caption)
	}
	_, anns, _ := rec.snapshot()
	persons := 0
	for _, a := range anns {
		for _, d := range a.Detections {
			if d.Label == "person" {
				persons++
			}
		}
	}
	if persons == 0 {
		t.Errorf("no person detected in %d annotations of real footage", len(anns))
	}
	if s.Latency == 0 {
		t.Errorf("latency panel is empty")
	}
	traceLinks, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#latency a[href^="http://127.0.0.1:16686/trace/"]').length`))
	if err != nil || traceLinks == 0 {
		t.Errorf("latency panel has %d trace links (%v)", traceLinks, err)
	}

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(testenv.Artifacts(t), "console.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s; page %+v; %d annotations, %d person boxes", shot, s, len(anns), persons)

	// Stop publishing from the page: the camera goes offline.
	if err := chromedp.Do(ctx, chromedp.Click("#unpublish")); err != nil {
		t.Fatal(err)
	}
	waitState(t, info.HTTPAddr, cfg.HTTP.Token, cam, "offline", 15*time.Second)

	// watchOnce has the page watch c, waits for its banner to say want, and
	// returns how often it asked for c's live view within 2.5 s (a retry
	// without a reason to wait would come after 1 s).
	watchOnce := func(c, want string) int {
		t.Helper()
		js := fmt.Sprintf(`(() => {
			window.liveAsks = 0;
			const f = window.fetch;
			window.fetch = (u, o) => { if (String(u).endsWith('/v1/live/' + %[1]s)) window.liveAsks++; return f(u, o); };
			watch(%[1]s);
		})()`, jsString(c))
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, "the page's banner: "+want, 10*time.Second, func() bool {
			return strings.Contains(stats().Banner, want)
		})
		time.Sleep(2500 * time.Millisecond)
		// The camera list, refreshed every second meanwhile, left it there.
		if b := stats().Banner; !strings.Contains(b, want) {
			t.Errorf("2.5 s after it said %q the page's banner is %q", want, b)
		}
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.liveAsks`))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The live view of a camera that is not attached: the server answers
	// 404, and the page says so once and stops asking.
	if n := watchOnce("nosuch", "camera not found: nosuch"); n != 1 {
		t.Errorf("the page asked for the live view of an unattached camera %d times, want once", n)
	}

	// With http.max_viewers (2) views streaming already, the page's is
	// refused: it shows why and asks again when Retry-After says (10 s),
	// not every second.
	var held []*http.Response
	defer func() {
		for _, r := range held {
			r.Body.Close()
		}
	}()
	testenv.WaitFor(t, "two live views held", 10*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, "http://"+info.HTTPAddr+"/v1/live/"+cam, nil)
		req.Header.Set("Authorization", "Bearer "+cfg.HTTP.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return false
		}
		held = append(held, resp)
		return len(held) == 2
	})
	if n := watchOnce(cam, "too many live viewers"); n != 1 {
		t.Errorf("the page asked %d times within 2.5 s for a live view refused with Retry-After: 10, want once", n)
	}
	for _, r := range held {
		r.Body.Close()
	}
	held = nil

	// Every load was answered (the icon is inline), but for the live view
	// of the camera that was never attached.
	if bad := answered(func(a string) bool { return strings.HasPrefix(a, "404 ") && a != "404 /v1/live/nosuch" }); len(bad) > 0 {
		t.Errorf("the page got 404 for %v", bad)
	}

	// A camera detached (through the API) while the page watches it: the
	// page says so, stops the live view and blanks it.
	const synth = "synth1"
	if code := apiCall(t, http.MethodPost, info.HTTPAddr, "/v1/cameras", cfg.HTTP.Token, `{"id":"`+synth+`","url":"synthetic://?seed=1","fps":2}`); code != http.StatusCreated {
		t.Fatalf("attach %s: %d", synth, code)
	}
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`watch(`+jsString(synth)+`)`)); err != nil {
		t.Fatal(err)
	}
	f0 = stats().FramesDrawn
	testenv.WaitFor(t, "the page drawing "+synth, 30*time.Second, func() bool {
		s = stats()
		return s.FramesDrawn >= f0+5 && !s.Blank && s.Banner == ""
	})
	if code := apiCall(t, http.MethodDelete, info.HTTPAddr, "/v1/cameras/"+synth, cfg.HTTP.Token, ""); code != http.StatusNoContent && code != http.StatusOK {
		t.Fatalf("detach %s: %d", synth, code)
	}
	want := "camera " + synth + " was detached"
	testenv.WaitFor(t, "the page's banner: "+want, 10*time.Second, func() bool {
		return strings.Contains(stats().Banner, want)
	})
	time.Sleep(2 * time.Second)
	if s = stats(); !strings.Contains(s.Banner, want) || s.LiveCam != "" || !s.Blank || s.FPSLabel != "" {
		t.Errorf("2 s after %s was detached: page %+v, want the banner, no live camera, a blank view, no fps", synth, s)
	}

}

// apiCall sends method path (with body, JSON, when not empty) to the API
// at httpAddr with the bearer token, and returns the status code.
func apiCall(t *testing.T, method, httpAddr, path, token, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+httpAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
