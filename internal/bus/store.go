package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/queue"
)

var storeDropped = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "patchline_stream_store_dropped_total",
	Help: "Annotations published live but not stored in the annotation stream, by reason: queue_full (the stream was unavailable for long), gave_up (not acknowledged within the duplicate window), shutdown (not acknowledged when a stop's 2 s ran out: the last of these may have been stored, their acknowledgements cut off).",
}, []string{"reason"})

// storeBatch is how many messages a Storer has in flight at once.
const storeBatch = 64

// Storer makes sure annotations published live are kept in the annotation
// stream. The stream stores what is published on the public subject
// patchline.annotations.<camera> while it can, and also listens on
// StoredPrefix+"*", storing those messages as patchline.annotations.<camera>:
// the Storer publishes a copy there with JetStream (acknowledged, retried
// while the stream has no leader or does not answer), which no live
// subscriber sees, and the stream keeps one of the two (it dedupes by
// Nats-Msg-Id). It never holds up the live path: it queues up to
// storeQueue messages, dropping (and counting) the oldest beyond.
type Storer struct {
	js      jetstream.JetStream
	q       *queue.Ring[*stored]
	giveUp  time.Duration
	log     *slog.Logger
	dropped atomic.Uint64
	atStop  atomic.Uint64 // dropped for reason shutdown, said once at the end
}

type stored struct {
	msg    *nats.Msg
	queued time.Time
}

// storeQueue is how many messages a Storer keeps while the stream is
// unavailable.
const storeQueue = 10000

// NewStorer stores through nc into stream st. A message not acknowledged
// within half the stream's duplicate window of being queued (so that no
// retry can store a second copy) is dropped and counted.
func NewStorer(nc *nats.Conn, st config.Stream, log *slog.Logger) (*Storer, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second), jetstream.WithPublishAsyncMaxPending(2*storeBatch))
	if err != nil {
		return nil, fmt.Errorf("annotation stream %s: %w", st.Name, err)
	}
	for _, reason := range []string{"queue_full", "gave_up", "shutdown"} {
		storeDropped.WithLabelValues(reason) // shown at 0, so that an alert on it has a series
	}
	return &Storer{js: js, q: queue.NewRing[*stored](storeQueue), giveUp: st.DuplicateWindow / 2, log: log}, nil
}

// StartStorer runs a Storer for stream st until stop, which stores what is
// still queued (for up to two seconds) and returns. Call stop once the
// caller publishes no more.
func StartStorer(nc *nats.Conn, st config.Stream, log *slog.Logger) (s *Storer, stop func(), err error) {
	if s, err = NewStorer(nc, st, log); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	return s, func() { cancel(); <-done }, nil
}

// Store queues a copy of m, a message on the public annotation subject
// patchline.annotations.<camera>, for the stream.
func (s *Storer) Store(m *nats.Msg) {
	c := &nats.Msg{Subject: StoredPrefix + strings.TrimPrefix(m.Subject, AnnotationsPrefix), Data: m.Data, Header: nats.Header{}}
	for k, v := range m.Header {
		c.Header[k] = v
	}
	if _, dropped := s.q.Push(&stored{msg: c, queued: time.Now()}); dropped {
		s.drop("queue_full", 1, nil)
	}
}

// drop counts n messages not stored for reason; cause is the last error
// the stream answered, if any (a full disk, say), for the log.
func (s *Storer) drop(reason string, n int, cause error) {
	storeDropped.WithLabelValues(reason).Add(float64(n))
	if reason == "shutdown" {
		s.atStop.Add(uint64(n))
	}
	before := s.dropped.Add(uint64(n)) - uint64(n)
	if before == 0 || bits.Len64(before) != bits.Len64(before+uint64(n)) { // the 1st, then each time the total doubles
		args := []any{"reason", reason, "count", n, "dropped_total", before + uint64(n)}
		if cause != nil {
			args = append(args, "err", cause)
		}
		if errors.Is(cause, jetstream.ErrAsyncPublishTimeout) {
			// A stream whose store failed to write answers nothing, as an
			// unreachable or overloaded server does.
			args = append(args, "hint", "the stream acknowledged nothing: nats-server is unreachable or overloaded, or cannot write the stream (a full disk; it says so in its log and health check, and /readyz of an embedded server)")
		}
		s.log.Warn("annotations not stored in the stream", args...)
	}
}

// stopGrace is how long what is queued or under way when a Storer stops
// has to be stored; a variable for tests on a loaded machine.
var stopGrace = 2 * time.Second

// Run stores queued messages until ctx is done, then tries for up to
// stopGrace more to store what is left.
func (s *Storer) Run(ctx context.Context) {
	// What is queued or under way when ctx ends gets stopGrace more to be
	// stored, and is dropped (counted) after that: a stop must not wait
	// on a server that does not answer.
	fctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer func() {
		if n := s.atStop.Load(); n > 0 {
			s.log.Warn("annotations not stored in the stream at shutdown", "count", n)
		}
	}()
	defer context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, cancel) })()
	for {
		first, err := s.q.Pop(ctx)
		if err != nil {
			break
		}
		s.storeBatch(fctx, s.next(first))
	}
	for {
		first, ok := s.q.TryPop()
		if !ok {
			return
		}
		if fctx.Err() != nil {
			n := 1
			for _, ok := s.q.TryPop(); ok; _, ok = s.q.TryPop() {
				n++
			}
			s.drop("shutdown", n, nil)
			return
		}
		s.storeBatch(fctx, s.next(first))
	}
}

// next is first and the messages queued behind it, up to storeBatch.
func (s *Storer) next(first *stored) []*stored {
	batch := []*stored{first}
	for len(batch) < storeBatch {
		m, ok := s.q.TryPop()
		if !ok {
			break
		}
		batch = append(batch, m)
	}
	return batch
}

// storeBatch publishes batch and waits for the acknowledgements, retrying
// those that failed with backoff until they are stored, too old (giveUp),
// or ctx is done.
func (s *Storer) storeBatch(ctx context.Context, batch []*stored) {
	backoff := 100 * time.Millisecond
	var lastErr error
	for len(batch) > 0 {
		futures := make([]jetstream.PubAckFuture, len(batch))
		for i, m := range batch {
			if ctx.Err() != nil {
				break // each publish may stall while acknowledgements are pending
			}
			futures[i], lastErr = s.js.PublishMsgAsync(m.msg)
		}
		var failed []*stored
		gaveUp := 0
		for i, f := range futures {
			ok := false
			if f != nil {
				select {
				case <-f.Ok():
					ok = true
				case lastErr = <-f.Err():
				case <-ctx.Done():
					lastErr = ctx.Err()
				}
			}
			switch {
			case ok:
			case time.Since(batch[i].queued) > s.giveUp:
				gaveUp++
			default:
				failed = append(failed, batch[i])
			}
		}
		if gaveUp > 0 {
			s.drop("gave_up", gaveUp, lastErr)
		}
		if len(failed) > 0 {
			if errors.Is(lastErr, nats.ErrConnectionClosed) {
				s.drop("shutdown", len(failed), lastErr)
				return
			}
			s.log.Debug("storing annotations: retrying", "count", len(failed), "err", lastErr)
			select {
			case <-ctx.Done():
				s.drop("shutdown", len(failed), lastErr)
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
		batch = failed
	}
}
