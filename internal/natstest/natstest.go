// Package natstest starts a real, embedded nats-server with JetStream for
// tests: a free port on 127.0.0.1, storage in the test's temp dir.
package natstest

import (
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/testenv"
)

// Start runs a server for the test and returns its client URL.
func Start(t testing.TB) string {
	t.Helper()
	e, err := bus.StartEmbedded(config.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir()}, "", Discard())
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

// StartCluster runs n JetStream servers in this process, routed to each
// other as one cluster, and returns their client URLs once a JetStream
// meta leader is elected.
func StartCluster(t testing.TB, n int) []string {
	t.Helper()
	routes := make([]*url.URL, n)
	ports := make([]int, n)
	for i := range n {
		ports[i] = testenv.FreePort(t, "127.0.0.1")
		routes[i] = &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])}
	}
	var urls []string
	var servers []*server.Server
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			JetStream: true, StoreDir: t.TempDir(),
			Cluster: server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: ports[i]},
			Routes:  routes,
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Start()
		t.Cleanup(srv.Shutdown)
		servers = append(servers, srv)
	}
	for _, srv := range servers {
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatalf("cluster server %s not ready", srv.Name())
		}
		urls = append(urls, srv.ClientURL())
	}
	testenv.WaitFor(t, "a JetStream meta leader", 20*time.Second, func() bool {
		return slices.ContainsFunc(servers, (*server.Server).JetStreamIsLeader)
	})
	return urls
}
