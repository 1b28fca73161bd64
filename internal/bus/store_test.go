package bus

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchline/patchline/internal/config"
)

// TestStorerGivesUp: with no stream to take them, a Storer retries each
// message until half the duplicate window has passed, then counts it as
// not stored (gave_up), and goes on.
func TestStorerGivesUp(t *testing.T) {
	url := startServer(t, &server.Options{JetStream: true, StoreDir: t.TempDir()})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	gaveUp := storeDropped.WithLabelValues("gave_up")
	before := testutil.ToFloat64(gaveUp)
	s, stop, err := StartStorer(nc, config.Stream{Name: "NONE", DuplicateWindow: 400 * time.Millisecond}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(storeDropped); n != 3 {
		t.Errorf("%d series of %s before any drop, want one per reason (3)", n, "patchline_stream_store_dropped_total")
	}
	for seq := range 3 {
		m := nats.NewMsg(AnnotationSubject("cam1"))
		m.Data = []byte(`{}`)
		m.Header.Set(nats.MsgIdHdr, "cam1:"+strconv.Itoa(seq+1))
		s.Store(m)
	}
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(gaveUp)-before < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := testutil.ToFloat64(gaveUp) - before; got != 3 {
		t.Errorf("gave up on %v messages, want 3", got)
	}
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not return")
	}
}
