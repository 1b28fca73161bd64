package e2e

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
	"github.com/patchline/patchline/schema"
	"github.com/patchline/patchline/sink"
)

// The whole pipeline's annotations reach a webhook (durable delivery from
// the stream, the default: signed, in order, each with its id) and the
// annotation stream; a camera detached and attached
// again goes on with higher seq numbers, so neither the stream nor a
// webhook receiver ever sees one id twice.
func TestAnnotationsReachWebhookAndStream(t *testing.T) {
	type hit struct {
		id, sig string
		body    []byte
	}
	var mu sync.Mutex
	var hits []hit
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		hits = append(hits, hit{r.Header.Get(sink.HdrWebhookID), r.Header.Get(sink.HdrWebhookSignature), b})
		mu.Unlock()
	}))
	defer srv.Close()
	waitHits := func(n int) []hit {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			mu.Lock()
			got := append([]hit(nil), hits...)
			mu.Unlock()
			if len(got) >= n {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("webhook got %d deliveries, want %d", len(got), n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	cfg := testConfig(t)
	cfg.Sink.Webhooks = []config.Webhook{{URL: srv.URL + "/hook", Cameras: []string{"syn"}, Kinds: []string{"analysis"}, Secret: "k3y"}}
	info := startPipeline(t, cfg)
	cam := config.Camera{ID: "syn", URL: "synthetic://?seed=5&fps=10", FPS: 5}
	attach(t, info.HTTPAddr, cam)
	first := waitHits(8)

	sch, err := schema.CompileAnnotation()
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for _, h := range first {
		var a annotation.Annotation
		if err := json.Unmarshal(h.body, &a); err != nil {
			t.Fatal(err)
		}
		if err := schema.ValidateAnnotation(sch, h.body); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		if want := a.Camera + ":" + strconv.FormatUint(a.Seq, 10); h.id != want || a.Seq <= last {
			t.Errorf("delivery %s of seq %d after seq %d", h.id, a.Seq, last)
		}
		if !hmac.Equal([]byte(h.sig), []byte(sink.Sign("k3y", h.body))) {
			t.Errorf("%s: bad signature", h.id)
		}
		last = a.Seq
	}

	// Detach and attach again: seq goes on after the camera's last block.
	req, _ := http.NewRequest(http.MethodDelete, "http://"+info.HTTPAddr+"/v1/cameras/syn", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("detach: %v %v", err, resp)
	}
	resp.Body.Close()
	// Its worker has stopped once decode forgets its gauge (an attach
	// before that, with the same spec, would find it still running), and
	// every stage forgets its series.
	testenv.WaitFor(t, "syn's worker stopped and its series gone", 20*time.Second, func() bool {
		return !strings.Contains(get(t, "http://"+info.HTTPAddr+"/metrics"), `camera="syn"`)
	})
	attach(t, info.HTTPAddr, cam)
	// Deliveries of the first block may still come: the new block's
	// follow them, in order.
	seqs := func(hs []hit) []uint64 {
		out := make([]uint64, len(hs))
		for i, h := range hs {
			var a annotation.Annotation
			if err := json.Unmarshal(h.body, &a); err != nil {
				t.Fatal(err)
			}
			out[i] = a.Seq
		}
		return out
	}
	var all []uint64
	testenv.WaitFor(t, "3 deliveries after re-attaching", 60*time.Second, func() bool {
		mu.Lock()
		all = seqs(hits)
		mu.Unlock()
		return len(all) > 0 && all[len(all)-1] > 10000 && len(all)-slices.IndexFunc(all, func(s uint64) bool { return s > 10000 }) >= 3
	})
	if !slices.IsSorted(all) || slices.Index(all, last) < 0 {
		t.Errorf("after re-attaching, seqs %v (before: up to %d), want increasing and then past the first block (> 10000)", all, last)
	}

	// The stream kept at least the annotations the webhook got.
	nc := natstest.Connect(t, info.NATSURL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got := storedAnnotations(t, ctx, js, "syn"); got < uint64(len(all)) {
		t.Errorf("stream kept %d annotations of syn, want at least the %d delivered", got, len(all))
	}
}
