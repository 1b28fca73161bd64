package ingest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/natstest"
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
	do := func(method, path, body string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 60 {
		id := fmt.Sprintf("cam%d", i)
		if code := do("POST", "/v1/cameras", fmt.Sprintf(`{"id":%q,"url":"synthetic://?seed=%d"}`, id, i)); code != http.StatusCreated {
			t.Fatalf("attach %s: %d", id, code)
		}
		if code := do("GET", "/v1/cameras/"+id, ""); code != http.StatusOK {
			t.Fatalf("get %s right after attaching it: %d", id, code)
		}
		if code := do("DELETE", "/v1/cameras/"+id, ""); code != http.StatusNoContent {
			t.Fatalf("detach %s right after attaching it: %d", id, code)
		}
		if code := do("GET", "/v1/cameras/"+id, ""); code != http.StatusNotFound {
			t.Fatalf("get %s right after detaching it: %d", id, code)
		}
	}
}
