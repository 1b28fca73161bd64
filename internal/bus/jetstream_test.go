package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/testenv"
)

func TestTransient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	done, cancel := context.WithCancel(ctx)
	cancel()
	for _, c := range []struct {
		ctx  context.Context
		err  error
		want bool
	}{
		{ctx, nil, false},
		{ctx, fmt.Errorf("put: %w", jetstream.ErrNoStreamResponse), true},
		{ctx, &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{ctx, &jetstream.APIError{Code: 503, ErrorCode: jetstream.JSErrCodeJetStreamNotEnabled, Description: "jetstream not enabled"}, false},
		{ctx, nats.ErrConnectionReconnecting, true},
		{ctx, nats.ErrReconnectBufExceeded, true}, // disconnected, on a connection without a reconnect buffer
		{ctx, nats.ErrNoResponders, true},
		{ctx, context.DeadlineExceeded, true}, // a request's own timeout
		{done, context.Canceled, false},       // the caller gave up
		{done, nats.ErrTimeout, false},
		{ctx, jetstream.ErrKeyExists, false},
		{ctx, &jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use"}, false},
		// A forming cluster whose leader has not heard from every server yet
		// (seen starting the three-server cluster of the multi-process test).
		{ctx, &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, peer offline"}, true},
		{ctx, &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, insufficient storage"}, false},
	} {
		if got := Transient(c.ctx, c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// A server without JetStream is an error at once, not a minute of retries,
// whichever way the server says so.
func TestSetupRetryWithoutJetStream(t *testing.T) {
	t.Parallel()
	_, js := serverConn(t, &server.Options{})
	ctx := context.Background()
	for name, op := range map[string]func() error{
		"key-value": func() error {
			_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b"})
			return err
		},
		"object store": func() error {
			_, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "o"})
			return err
		},
	} {
		calls := 0
		err := SetupRetry(ctx, js, func() error { calls++; return op() })
		if !errors.Is(err, jetstream.ErrJetStreamNotEnabled) || calls != 1 {
			t.Errorf("%s: SetupRetry = %v after %d calls, want jetstream not enabled after 1", name, err, calls)
		}
	}
}

// TestSetupWaitsForTheServer: a stage started before its NATS server waits
// for it however long that takes: time without a connection does not count
// against the wait for JetStream to answer.
func TestSetupWaitsForTheServer(t *testing.T) {
	port := testenv.FreePort(t, "127.0.0.1")
	nc, err := Connect(config.NATS{}, fmt.Sprintf("nats://127.0.0.1:%d", port), "test", discard())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc) // fails only for bad options
	done := make(chan error, 1)
	go func() {
		done <- setupRetryFor(context.Background(), js, 300*time.Millisecond, func() error {
			_, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "late"})
			return err
		})
	}()
	time.Sleep(1500 * time.Millisecond) // five times the wait, with no server
	select {
	case err := <-done:
		t.Fatalf("gave up before the server came: %v", err)
	default:
	}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no bucket 15 s after the server started")
	}
}

// TestWatchStreams: a stream that is there is watched quietly; one that
// goes (a server back on an empty store) is reported after two checks.
func TestWatchStreams(t *testing.T) {
	nc, js := jetStreamConn(t)
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "watched"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- WatchStreams(ctx, nc, []string{"KV_watched"}, 100*time.Millisecond) }()
	select {
	case err := <-done:
		t.Fatalf("watching a stream that is there: %v", err)
	case <-time.After(time.Second):
	}
	if err := js.DeleteKeyValue(ctx, "watched"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "JetStream stream KV_watched is gone") {
			t.Errorf("after the bucket went: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the missing bucket not reported within 5 s")
	}
}

// jetStreamConn connects to a new JetStream server, closed at the end.
func jetStreamConn(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return serverConn(t, &server.Options{JetStream: true, StoreDir: t.TempDir()})
}

// connectJS connects with Connect to url, closed at the end.
func connectJS(t *testing.T, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := Connect(config.NATS{}, url, "test", discard(), opts...)
	return withJS(t, nc, err)
}

// serverConn connects to a new server of opts (startServer), closed at the
// end.
func serverConn(t *testing.T, opts *server.Options) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(startServer(t, opts))
	return withJS(t, nc, err)
}

// withJS fails t on a connection's err, closes nc at the end and returns
// it with its JetStream.
func withJS(t *testing.T, nc *nats.Conn, err error) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// TestObjectPutLeavesNoGoroutines guards the NATS client patchline runs
// with: generate stores every generated frame with an Object Store Put,
// and in nats.go v1.55 each Put could leave a goroutine blocked for good
// (its reconnect listener read a channel that the Put's cleanup had
// already set to nil, when the cleanup won the race), a few hundred an
// hour on a busy pipeline. With other traffic on the connection and the
// CPU busy, as in a running pipeline, 600 Puts leave no goroutine behind.
func TestObjectPutLeavesNoGoroutines(t *testing.T) {
	nc, js := jetStreamConn(t)
	ctx := context.Background()
	obj, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "frames"})
	if err != nil {
		t.Fatal(err)
	}
	png := make([]byte, 15000)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for x := 0; ; x++ {
				select {
				case <-stop:
					return
				default:
				}
				_ = nc.Publish("noise", png[:2000])
				for j := range 20000 {
					x += j
				}
			}
		}()
	}
	settle := func() int { // the goroutines a Put starts end shortly after it
		n := runtime.NumGoroutine()
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			n = min(n, runtime.NumGoroutine())
		}
		return n
	}
	before := settle()
	for i := range 600 {
		if _, err := obj.PutBytes(ctx, fmt.Sprintf("cam/%d.png", i), png); err != nil {
			t.Fatal(err)
		}
	}
	after := settle()
	close(stop)
	wg.Wait()
	if after > before+3 {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines before 600 Puts, %d after; %d wait in resetPendingAcksOnReconnect", before, after, bytes.Count(buf, []byte("resetPendingAcksOnReconnect(")))
	}
}

// TestExplainStorage: a stream the server's JetStream storage cannot take
// is refused with code 10047, which says only "insufficient storage
// resources"; ExplainStorage says why and what to do, naming the store
// and its free space. Other errors pass unchanged.
func TestExplainStorage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, js := serverConn(t, &server.Options{JetStream: true, StoreDir: dir, JetStreamMaxStore: 1 << 20})
	_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, MaxBytes: 8 << 20})
	if err == nil {
		t.Fatal("an 8 MiB stream fitted a 1 MiB store")
	}
	got := ExplainStorage(err, dir, 8<<20)
	for _, want := range []string{"insufficient storage", "sink.stream.max_bytes is 8 MiB", dir + " (", "MiB free)"} {
		if !strings.Contains(got.Error(), want) {
			t.Errorf("ExplainStorage = %v, want it to say %q", got, want)
		}
	}
	if !errors.Is(got, err) {
		t.Error("the explained error does not wrap JetStream's")
	}
	// The files of a stream could not be made (ENOSPC, EMFILE): the
	// server's answer does not say why, its log does.
	create := &jetstream.APIError{Code: 500, ErrorCode: 10049, Description: "error creating store for stream"}
	got = ExplainStorage(fmt.Errorf("bucket patchline_leases: %w", create), dir, 8<<20)
	for _, want := range []string{"error creating store", "could not create the stream's files in " + dir, "ulimit -n", "its log line says which"} {
		if !strings.Contains(got.Error(), want) {
			t.Errorf("ExplainStorage(10049) = %v, want it to say %q", got, want)
		}
	}
	other := errors.New("nats: timeout")
	if ExplainStorage(other, dir, 8<<20) != other {
		t.Error("another error was changed")
	}
}
