package bus

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/testenv"
)

// TestStorerGivesUp: with no stream to take them, a Storer retries each
// message until half the duplicate window has passed, then counts it as
// not stored (gave_up), and goes on.
func TestStorerGivesUp(t *testing.T) {
	nc, _ := jetStreamConn(t)
	gaveUp := storeDropped.WithLabelValues("gave_up")
	before := testutil.ToFloat64(gaveUp)
	var logs testenv.Buffer
	s, stop, err := StartStorer(nc, config.Stream{Name: "NONE", DuplicateWindow: 400 * time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(storeDropped); n != 3 {
		t.Errorf("%d series of %s before any drop, want one per reason (3)", n, "patchline_stream_store_dropped_total")
	}
	storeN(s, 3)
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(gaveUp)-before < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := testutil.ToFloat64(gaveUp) - before; got != 3 {
		t.Errorf("gave up on %v messages, want 3", got)
	}
	// The stream's own answer says why (here: there is no such stream).
	if !strings.Contains(logs.String(), "reason=gave_up") || !strings.Contains(logs.String(), "err=") {
		t.Errorf("the warning does not say why the stream refused:\n%s", logs.String())
	}
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not return")
	}
}

// TestStorerDropHint: an acknowledgement that never came (what a stream
// that cannot write answers, as a server that is away does) is logged
// with what it may mean; another cause is logged as it is.
func TestStorerDropHint(t *testing.T) {
	var logs testenv.Buffer
	s := &Storer{log: slog.New(slog.NewTextHandler(&logs, nil))}
	s.drop("gave_up", 1, jetstream.ErrAsyncPublishTimeout)
	if got := logs.String(); !strings.Contains(got, "timeout waiting for ack") || !strings.Contains(got, "cannot write the stream") {
		t.Errorf("a timeout is logged without the hint:\n%s", got)
	}
	first := len(logs.String())
	s.drop("gave_up", 1, jetstream.ErrStreamNotFound) // the total doubled: logged
	if got := logs.String()[first:]; got == "" || !strings.Contains(got, "stream not found") || strings.Contains(got, "hint=") {
		t.Errorf("another cause is logged with the hint, or without itself:\n%s", got)
	}
}

// TestStorerStopsWithoutItsServer: stopping a Storer whose server is gone
// returns within a few seconds, counting what it could not store as
// dropped at shutdown; it waited for every acknowledgement, for minutes.
func TestStorerStopsWithoutItsServer(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	defer srv.Shutdown()
	nc, js := connectJS(t, srv.ClientURL())
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "GONE", Subjects: []string{AnnotationsPrefix + ">"}}); err != nil {
		t.Fatal(err)
	}
	s, stop, err := StartStorer(nc, config.Stream{Name: "GONE", DuplicateWindow: time.Hour}, discard())
	if err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	shutdown := storeDropped.WithLabelValues("shutdown")
	before := testutil.ToFloat64(shutdown)
	const n = 300
	storeN(s, n)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("stop took %v with the server gone, want a few seconds", took)
	}
	if got := testutil.ToFloat64(shutdown) - before; got != n {
		t.Errorf("dropped at shutdown: %v, want %d", got, n)
	}
}

// TestStorerStoresWhatIsQueuedAtStop: a stop right after a burst stores
// what is queued, dropping nothing. The grace is a minute here: the
// property is that the queue is drained, not that a loaded machine does
// it in 2 s (3000 took 0.2 s alone, over 2 s under load).
func TestStorerStoresWhatIsQueuedAtStop(t *testing.T) {
	defer func(d time.Duration) { stopGrace = d }(stopGrace)
	stopGrace = time.Minute
	nc, js := jetStreamConn(t)
	st, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "BURST", Subjects: []string{StoredPrefix + ">"}})
	if err != nil {
		t.Fatal(err)
	}
	s, stop, err := StartStorer(nc, config.Stream{Name: "BURST", DuplicateWindow: time.Hour}, discard())
	if err != nil {
		t.Fatal(err)
	}
	shutdown := storeDropped.WithLabelValues("shutdown")
	before := testutil.ToFloat64(shutdown)
	const n = 3000
	storeN(s, n)
	stop()
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n || testutil.ToFloat64(shutdown) != before {
		t.Errorf("stored %d of %d, %v dropped at shutdown; want all stored", info.State.Msgs, n, testutil.ToFloat64(shutdown)-before)
	}
}

// storeN stores annotations cam1:1 to cam1:n with s.
func storeN(s *Storer, n int) {
	for seq := range n {
		m := nats.NewMsg(AnnotationSubject("cam1"))
		m.Data = []byte(`{}`)
		m.Header.Set(nats.MsgIdHdr, "cam1:"+strconv.Itoa(seq+1))
		s.Store(m)
	}
}
