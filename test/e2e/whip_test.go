package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
	"github.com/patchline/patchline/internal/whiptest"
)

// cameraState is the state decode reports for a camera, "" before any.
// token is the API's bearer token, if it has one.
func cameraState(t testing.TB, httpAddr, token, id string) (state string, width, height int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+httpAddr+"/v1/cameras/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Status *struct {
			State  string `json:"state"`
			Width  int    `json:"width"`
			Height int    `json:"height"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.Status == nil {
		return "", 0, 0
	}
	return v.Status.State, v.Status.Width, v.Status.Height
}

func waitState(t testing.TB, httpAddr, token, id, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, _, _ := cameraState(t, httpAddr, token, id)
		if st == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("camera %s: state %q after %s, want %q", id, st, within, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// annotatedShare checks that ≥ 90% of the sampled frames up to the last
// annotated one were annotated, and returns how many were sampled.
func annotatedShare(t testing.TB, r *recorder, fromSeq uint64) int {
	t.Helper()
	frames, anns, _ := r.snapshot()
	annotated := map[uint64]bool{}
	var last uint64
	for _, a := range anns {
		annotated[a.Seq] = true
		last = max(last, a.Seq)
	}
	sampled, hit := 0, 0
	for _, seq := range frames {
		if seq >= fromSeq && seq <= last {
			sampled++
			if annotated[seq] {
				hit++
			}
		}
	}
	if sampled == 0 || float64(hit) < 0.9*float64(sampled) {
		t.Errorf("%d of %d sampled frames were annotated, want ≥ 90%%", hit, sampled)
	}
	t.Logf("%d sampled frames, %d annotated", sampled, hit)
	return sampled
}

// A pion WHIP publisher sends an H.264 and a VP8 clip made by ffmpeg; both
// are decoded by OpenCV/FFmpeg from the relayed RTP and analyzed. Stopping
// the publisher (DELETE, or vanishing) takes the camera offline; publishing
// again brings it back.
func TestWHIPPublishersEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	cfg.WHIP.KeyframeInterval = time.Second
	info := startPipeline(t, cfg)
	nc := natstest.Connect(t, info.NATSURL)
	for _, codec := range []string{whiptest.VP8, whiptest.H264} {
		t.Run(codec, func(t *testing.T) {
			cam := "whip-" + codec
			clip := whiptest.MakeClip(t, t.TempDir(), codec, 640, 360, 10, 4)
			endpoint := "http://" + info.HTTPAddr + "/whip/" + cam + "?fps=5"
			rec := record(t, nc, cam)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("camera %s: %s", cam, get(t, "http://"+info.HTTPAddr+"/v1/cameras/"+cam))
				}
			})
			p, err := whiptest.Publish(endpoint, whiptest.Options{Codec: codec, File: clip, FPS: 10})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			rec.waitAnnotations(t, 25, 90*time.Second)
			if st, w, h := cameraState(t, info.HTTPAddr, "", cam); st != "streaming" || w != 640 || h != 360 {
				t.Errorf("status %s %dx%d, want streaming 640x360", st, w, h)
			}
			annotatedShare(t, rec, 0)
			if codec == whiptest.H264 {
				checkPreviews(t, nc, cam)
			}

			if code, err := p.Stop(); err != nil || code != http.StatusOK {
				t.Fatalf("DELETE: %d %v", code, err)
			}
			waitState(t, info.HTTPAddr, "", cam, "offline", 15*time.Second)
			body := get(t, "http://"+info.HTTPAddr+"/v1/cameras/"+cam)
			var v struct {
				Status struct {
					FPS float64 `json:"fps"`
				} `json:"status"`
			}
			if err := json.Unmarshal([]byte(body), &v); err != nil || strings.Contains(body, "read from whip://") || v.Status.FPS != 0 {
				t.Errorf("offline after DELETE: %s (%v); want no failure recorded, fps 0", body, err)
			}
			// Frames decoded before the session ended may still be on
			// their way (decode's queue): settled first, then none more.
			var frames []uint64
			if !testenv.Poll(3*time.Second, func() bool {
				was, _, _ := rec.snapshot()
				time.Sleep(300 * time.Millisecond)
				frames, _, _ = rec.snapshot()
				return len(frames) == len(was)
			}) {
				t.Fatalf("frames still published 3 s after the camera went offline (%d so far)", len(frames))
			}
			time.Sleep(time.Second)
			if after, _, _ := rec.snapshot(); len(after) != len(frames) {
				t.Errorf("%d frames published while offline", len(after)-len(frames))
			}

			// Back: a new session on the same camera.
			_, anns, _ := rec.snapshot()
			lastSeq := anns[len(anns)-1].Seq
			p2, err := whiptest.Publish(endpoint, whiptest.Options{Codec: codec, File: clip, FPS: 10})
			if err != nil {
				t.Fatalf("publish again: %v", err)
			}
			defer p2.Close()
			rec.waitAnnotations(t, len(anns)+15, 60*time.Second)
			waitState(t, info.HTTPAddr, "", cam, "streaming", 5*time.Second)
			annotatedShare(t, rec, lastSeq+1)

			// A publisher that vanishes without DELETE is dropped when ICE fails.
			p2.Close()
			waitState(t, info.HTTPAddr, "", cam, "offline", 30*time.Second)
		})
	}
}

// checkPreviews watches a camera the way the console does and checks JPEG
// previews come at ≥ 5 fps, then stop once nobody watches.
func checkPreviews(t *testing.T, nc *nats.Conn, cam string) {
	t.Helper()
	var (
		mu    sync.Mutex
		times []time.Time
		bad   []string
	)
	sub, err := nc.Subscribe(bus.PreviewSubject(cam), func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if !bytes.HasPrefix(m.Data, []byte{0xff, 0xd8}) || m.Header.Get(frame.HdrSourceSize) != "640x360" || m.Header.Get(frame.HdrCamera) != cam {
			bad = append(bad, fmt.Sprintf("%d bytes, headers %v", len(m.Data), m.Header))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(times) }
	time.Sleep(500 * time.Millisecond)
	if n := count(); n != 0 {
		t.Errorf("%d previews before anyone watched", n)
	}
	start := time.Now()
	for time.Since(start) < 4*time.Second {
		if err := nc.Publish(bus.WatchSubject(cam), nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
	mu.Lock()
	var inWindow int
	for _, ts := range times {
		if ts.After(start.Add(time.Second)) && ts.Before(start.Add(4*time.Second)) {
			inWindow++
		}
	}
	if len(bad) > 0 {
		t.Errorf("bad previews: %v", bad[:min(3, len(bad))])
	}
	mu.Unlock()
	if fps := float64(inWindow) / 3; fps < 5 {
		t.Errorf("previews at %.1f fps while watched, want ≥ 5", fps)
	}
	time.Sleep(bus.PreviewTTL + 500*time.Millisecond)
	n := count()
	time.Sleep(time.Second)
	if extra := count() - n; extra != 0 {
		t.Errorf("%d previews after the watch expired", extra)
	}
}
