// Package natstest starts a real, embedded nats-server with JetStream for
// tests: a free port on 127.0.0.1, storage in the test's temp dir.
package natstest

import (
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
)

// Start runs a server for the test and returns its client URL.
func Start(t testing.TB) string {
	t.Helper()
	e, err := bus.StartEmbedded(config.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir()}, Discard())
	if err != nil {
		t.Fatalf("embedded nats: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e.URL()
}

// Connect opens a client connection closed at cleanup.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Discard is a logger that drops everything.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
