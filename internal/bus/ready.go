package bus

import (
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// readyFlush bounds how long SetReady waits for the server to confirm a
// stage's subscriptions.
const readyFlush = 2 * time.Second

// Readiness tells when a stage is subscribed. A stage embeds it and calls
// SetReady once its subscriptions are made; internal/app waits on Ready
// before it reports the pipeline started, so a message published after
// that reaches every stage. The zero value is ready to use.
type Readiness struct {
	mu   sync.Mutex
	ch   chan struct{}
	once sync.Once
}

func (r *Readiness) channel() chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ch == nil {
		r.ch = make(chan struct{})
	}
	return r.ch
}

// Ready is closed once the stage is subscribed.
func (r *Readiness) Ready() <-chan struct{} { return r.channel() }

// SetReady flushes nc, so that the server has the subscriptions made on it,
// and closes Ready. It reports whether the server confirmed them: while
// NATS is unreachable they are sent on reconnect, and the stage should not
// claim to be ready.
func (r *Readiness) SetReady(nc *nats.Conn) bool {
	confirmed := nc.FlushTimeout(readyFlush) == nil
	r.once.Do(func() { close(r.channel()) })
	return confirmed
}

// Announce is SetReady, logging "<stage> ready" with attrs, or a warning
// that the stage subscribes once NATS is back when the server did not
// confirm the subscriptions.
func (r *Readiness) Announce(nc *nats.Conn, log *slog.Logger, stage string, attrs ...any) {
	if r.SetReady(nc) {
		log.Info(stage+" ready", attrs...)
	} else {
		log.Warn(stage+" started, but NATS is not reachable: it subscribes when NATS is back", attrs...)
	}
}
