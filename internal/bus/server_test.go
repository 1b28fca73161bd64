package bus

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/testenv"
)

// TestEmbeddedHost checks that nats.embedded.host is the one address the
// embedded server listens on: clients reach it there and not on another
// loopback address at the same port.
func TestEmbeddedHost(t *testing.T) {
	port := testenv.FreePort(t, "127.0.0.2")
	e, err := StartEmbedded(config.Embedded{Host: "127.0.0.2", Port: port, StoreDir: t.TempDir()}, "", discard())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if want := fmt.Sprintf("nats://127.0.0.2:%d", port); e.URL() != want {
		t.Errorf("URL = %s, want %s", e.URL(), want)
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.2:%d", port), nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("connect on the configured host: %v", err)
	}
	nc.Close()
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second); err == nil {
		c.Close()
		t.Errorf("the server also answers on 127.0.0.1:%d; want only 127.0.0.2", port)
	}
}

// TestEmbeddedPortTaken checks that a port already in use fails the start
// with the listener's reason (at once: before, it waited out the 10 s
// readiness limit and then guessed).
func TestEmbeddedPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	e, err := StartEmbedded(config.Embedded{Host: "127.0.0.1", Port: port, StoreDir: t.TempDir()}, "", discard())
	if err == nil {
		e.Shutdown()
		t.Fatalf("started on a port in use")
	}
	if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), fmt.Sprint(port)) {
		t.Errorf("error %q does not name the port and why", err)
	}
}

// TestEmbeddedToken: with nats.token the embedded server refuses clients
// without it, over TCP and in-process alike, and serves those with it.
func TestEmbeddedToken(t *testing.T) {
	e, err := StartEmbedded(config.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir()}, "s3cret", discard())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if nc, err := nats.Connect(e.URL(), nats.Timeout(2*time.Second), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("a client without the token connected")
	}
	if nc, err := nats.Connect(e.URL(), nats.Timeout(2*time.Second), nats.MaxReconnects(0), nats.Token("guess"), e.InProcess()); err == nil {
		nc.Close()
		t.Error("an in-process client with a wrong token connected")
	}
	nc, err := Connect(config.NATS{Token: "s3cret"}, e.URL(), "test", discard(), e.InProcess())
	if err != nil {
		t.Fatalf("with the token: %v", err)
	}
	nc.Close()
}

// TestEmbeddedStoreInUse: a second embedded server on a store directory
// in use is refused, naming the holder, instead of sharing (and
// corrupting) its JetStream files; once the first stops, the store is free.
func TestEmbeddedStoreInUse(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: dir}
	first, err := StartEmbedded(cfg, "", discard())
	if err != nil {
		t.Fatal(err)
	}
	second, err := StartEmbedded(cfg, "", discard())
	if err == nil {
		second.Shutdown()
		first.Shutdown()
		t.Fatal("a second server started on a store in use")
	}
	if want := fmt.Sprintf("store %s is in use by process %d", dir, os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("second server: %v, want it to say %q", err, want)
	}
	first.Shutdown()
	third, err := StartEmbedded(cfg, "", discard())
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	third.Shutdown()
}

// TestEmbeddedHealthyWriteError: once a stream's store fails to write (here
// a file over RLIMIT_FSIZE; a full disk or the open-files limit does the
// same), nats-server keeps it failing; Healthy, which /readyz of
// `patchline run` asks, says so and what to do, where before only the
// server's log did.
func TestEmbeddedHealthyWriteError(t *testing.T) {
	dir := t.TempDir()
	e, err := StartEmbedded(config.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: dir}, "", discard())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if err := e.Healthy(); err != nil {
		t.Fatalf("a fresh server: %v", err)
	}
	nc, js := connectJS(t, e.URL(), e.InProcess())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FULL", Subjects: []string{"full.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "full.a", []byte("fits")); err != nil {
		t.Fatal(err)
	}
	if err := e.Healthy(); err != nil {
		t.Fatalf("a stream that stores: %v", err)
	}

	// Files of this process may not grow past 64 KiB while the stream
	// fills (the test's own files are smaller; nothing runs beside it).
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	small := lim
	small.Cur = 64 << 10
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &small); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()
	payload := make([]byte, 4<<10)
	for i := 0; i < 64; i++ {
		if err := nc.Publish("full.a", payload); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, "Healthy to report the stream's write error", 10*time.Second, func() bool { return e.Healthy() != nil })
	restore()
	err = e.Healthy()
	for _, want := range []string{"FULL", "write error", "until it restarts", "file-size limit"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Healthy() = %q, want it to say %q", err, want)
		}
	}
	// The server does not take the stream back by itself once files may
	// grow again: it stays unhealthy until a restart.
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if _, err := js.Publish(short, "full.a", []byte("again"), jetstream.WithRetryAttempts(0)); err == nil {
		t.Error("the failed stream stored a message again")
	}
	if e.Healthy() == nil {
		t.Error("healthy again without a restart")
	}
}

// TestEmbeddedHealthyWaitsOutPassingFailures: a failure of the health
// check other than a write error (here a stream directory without its
// stream, as while one is made or deleted) is said only once it has lasted
// sickFor: /readyz must not flap while an operator adds a bucket.
func TestEmbeddedHealthyWaitsOutPassingFailures(t *testing.T) {
	dir := t.TempDir()
	e, err := StartEmbedded(config.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: dir}, "", discard())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	_, js := connectJS(t, e.URL(), e.InProcess())
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "REAL", Subjects: []string{"real.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.store, "jetstream", "$G", "streams", "GHOST"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := e.Healthy(); err != nil {
		t.Fatalf("a failure just seen: %v, want it waited out", err)
	}
	e.mu.Lock()
	e.sickSince = time.Now().Add(-sickFor - time.Second)
	e.mu.Unlock()
	if err := e.Healthy(); err == nil || !strings.Contains(err.Error(), "GHOST") {
		t.Errorf("a failure lasting %v: %v, want it said, naming the stream", sickFor, err)
	}
	if err := os.Remove(filepath.Join(e.store, "jetstream", "$G", "streams", "GHOST")); err != nil {
		t.Fatal(err)
	}
	if err := e.Healthy(); err != nil {
		t.Errorf("healthy again: %v", err)
	}
}
