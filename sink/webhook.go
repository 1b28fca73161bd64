package sink

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/queue"
	"github.com/patchline/patchline/internal/telemetry"
)

// Webhook headers.
const (
	HdrWebhookID        = "X-Patchline-Id"        // the annotation's Nats-Msg-Id: camera:seq[:kind:trigger[:nonce]]
	HdrWebhookSignature = "X-Patchline-Signature" // sha256=<hex HMAC-SHA256(secret, body)>
)

// maxRetryAfter caps how long a Retry-After header may hold a webhook.
const maxRetryAfter = 30 * time.Second

var (
	webhookDeliveries = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "patchline_webhook_deliveries_total",
		Help: "Annotations per webhook by result: delivered, failed (every attempt failed, or refused with a 4xx), dropped (memory delivery: queue full, or pending at shutdown).",
	}, []string{"webhook", "result"})
	webhookBacklog = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "patchline_webhook_backlog",
		Help: "Durable webhooks: annotations in the stream after the one being delivered (its consumer's pending count).",
	}, []string{"webhook"})
	webhookLag = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "patchline_webhook_lag_seconds",
		Help: "Durable webhooks: age of the annotation being delivered (0 when caught up). The stream drops annotations older than sink.stream.max_age, delivered or not.",
	}, []string{"webhook"})
)

// durableAckWait is how long a durable delivery may go without a sign of
// progress before JetStream hands it out again. A delivery under way says
// it is in progress every third of it; one that no sink finishes (a sink
// killed, a server restarted under it) holds its webhook up this long.
const durableAckWait = 10 * time.Second

// maxBackoff is the longest wait between two attempts of a delivery, bar a
// server's Retry-After.
const maxBackoff = 10 * time.Second

// delivery is one annotation on its way to a webhook.
type delivery struct {
	id    string // Nats-Msg-Id
	body  []byte
	trace context.Context // carries the annotation's trace: the delivery is a span in it
}

// webhook delivers matching annotations to one URL, in order: durable,
// from the annotation stream through a durable consumer that every sink
// replica shares (one delivery in flight, acknowledged once delivered);
// memory, from this replica's bounded queue that drops the oldest.
type webhook struct {
	cfg     config.Webhook
	durable bool
	name    string // the URL without credentials or query, for logs and metrics
	q       *queue.Ring[delivery]
	client  *http.Client
	log     *slog.Logger

	failures, drops atomic.Uint64
	inFlight        atomic.Bool // durable: a delivery is under way

	maxAge    time.Duration // durable: the stream's max age (0: none)
	lagWarned atomic.Bool   // durable: warned that the lag nears maxAge, since last caught up
	// done is the stream sequence up to which annotations are known done
	// with (durable): settled here, or the consumer's ack floor when last
	// read. A consumer made again starts after it.
	done atomic.Uint64
}

func newWebhook(cfg config.Webhook, durable bool, log *slog.Logger) (*webhook, error) {
	cfg = cfg.WithDefaults()
	name := config.WebhookLabel(cfg.URL)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CA != "" {
		pool, err := certPool(cfg.CA)
		if err != nil {
			return nil, fmt.Errorf("webhook %s: ca: %w", name, err)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	for _, result := range []string{"delivered", "failed", "dropped"} { // at 0 from the start, for rate() and alerts
		webhookDeliveries.WithLabelValues(name, result)
	}
	return &webhook{
		cfg: cfg, durable: durable, name: name, q: queue.NewRing[delivery](cfg.QueueSize),
		// A redirect would turn the POST into a GET: answer it as it is (a
		// failure, not retried) and let the configuration name the URL.
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		log:    log.With("webhook", name),
	}, nil
}

// certPool is the system's certificates and those of the PEM file path.
func certPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// wants reports whether a passes the webhook's filters: camera, kind, and
// a label or detection named in Labels (any, if none) with a score of at
// least MinScore.
func (w *webhook) wants(a *annotation.Annotation) bool {
	if len(w.cfg.Cameras) > 0 && !slices.Contains(w.cfg.Cameras, a.Camera) {
		return false
	}
	if len(w.cfg.Kinds) > 0 && !slices.Contains(w.cfg.Kinds, a.Kind) {
		return false
	}
	if len(w.cfg.Labels) == 0 && w.cfg.MinScore == 0 {
		return true
	}
	match := func(label string, score float64) bool {
		return score >= w.cfg.MinScore && (len(w.cfg.Labels) == 0 || slices.Contains(w.cfg.Labels, label))
	}
	for _, l := range a.Labels {
		if match(l.Label, l.Score) {
			return true
		}
	}
	for _, d := range a.Detections {
		if match(d.Label, d.Score) {
			return true
		}
	}
	return false
}

// wantsKind reports whether the webhook takes annotations of kind at all.
func (w *webhook) wantsKind(kind string) bool {
	return len(w.cfg.Kinds) == 0 || slices.Contains(w.cfg.Kinds, kind)
}

// enqueue queues a delivery, dropping (and counting) the oldest when full.
func (w *webhook) enqueue(d delivery) {
	if old, dropped := w.q.Push(d); dropped {
		w.dropped(1, "queue full", old.id)
	}
}

func (w *webhook) dropped(n uint64, why, id string) {
	webhookDeliveries.WithLabelValues(w.name, "dropped").Add(float64(n))
	if total := w.drops.Add(n); telemetry.Thinned(total) || n > 1 {
		w.log.Warn("webhook deliveries dropped", "why", why, "id", id, "count", n, "dropped_total", total)
	}
}

// run delivers queued annotations until ctx ends; what is still queued
// then is counted as dropped.
func (w *webhook) run(ctx context.Context) {
	for {
		d, err := w.q.Pop(ctx)
		if err != nil {
			var n uint64
			for {
				if _, ok := w.q.TryPop(); !ok {
					break
				}
				n++
			}
			if n > 0 {
				w.dropped(n, "shutdown", "")
			}
			return
		}
		w.count(w.deliver(ctx, d, w.cfg.Attempts))
	}
}

// count records a delivery's result.
func (w *webhook) count(err error) {
	if err == nil {
		webhookDeliveries.WithLabelValues(w.name, "delivered").Inc()
	} else {
		webhookDeliveries.WithLabelValues(w.name, "failed").Inc()
	}
}

// consumer is the durable consumer of the webhook on stream st, named by
// a hash of the URL, so that every sink replica with this hook shares it.
// It starts at the annotations that come after its creation, keeps its
// place while no sink runs for up to the stream's max age, and hands out
// one annotation at a time (in order, across replicas).
func (w *webhook) consumer(st config.Stream) jetstream.ConsumerConfig {
	subjects := []string{bus.AnnotationsPrefix + "*"}
	if len(w.cfg.Cameras) > 0 {
		subjects = subjects[:0]
		for _, c := range w.cfg.Cameras {
			subjects = append(subjects, bus.AnnotationSubject(c))
		}
	}
	return jetstream.ConsumerConfig{
		Durable: "patchline_webhook_" + config.WebhookHash(w.cfg.URL), Description: "patchline webhook " + w.name,
		FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: durableAckWait, MaxAckPending: 1, MaxDeliver: -1,
		InactiveThreshold: st.MaxAge,
	}
}

// runDurable delivers from cons until ctx ends, finishing the delivery
// under way (which hard may cut short: it is then handed back). A consumer
// that vanished (deleted by hand, or unused past the stream's max age) is
// made again with reopen.
func (w *webhook) runDurable(ctx, hard context.Context, cons jetstream.Consumer, reopen func() (jetstream.Consumer, error)) {
	var fails uint64
	floorRead := time.Now()
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		got := 0
		if err == nil {
			for m := range batch.Messages() {
				w.handle(ctx, hard, m, cons)
				got++
			}
			err = batch.Error()
		}
		if err == nil || errors.Is(err, nats.ErrTimeout) {
			fails = 0
			if got == 0 && time.Since(floorRead) > floorEvery {
				// Idle here: another replica may be the one delivering.
				floorRead = time.Now()
				w.readConsumer(ctx, cons)
			}
			continue
		}
		if vanished(ctx, cons, err) {
			if c, rerr := reopen(); rerr == nil {
				w.log.Warn("webhook consumer made again", "err", err)
				cons = c
				continue
			}
		}
		if fails++; telemetry.Thinned(fails) && ctx.Err() == nil {
			w.log.Warn("webhook cannot fetch from the annotation stream", "err", err, "tries", fails)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// floorEvery is how often an idle durable webhook reads its consumer's
// ack floor (what the other replicas delivered).
const floorEvery = 5 * time.Second

// readConsumer records the consumer's ack floor as done with (what the
// other replicas delivered), and sets the backlog gauge to what the stream
// holds for the webhook beyond the delivery under way, if any.
func (w *webhook) readConsumer(ctx context.Context, cons jetstream.Consumer) {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if info, err := cons.Info(ictx); err == nil {
		w.handled(info.AckFloor.Stream)
		webhookBacklog.WithLabelValues(w.name).Set(float64(info.NumPending))
	}
}

// vanished reports whether the fetch error err says that cons is no more:
// deleted under a fetch waiting on it, or found missing when a fetch had
// no one to answer it (the consumer went between two fetches).
func vanished(ctx context.Context, cons jetstream.Consumer, err error) bool {
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
		return true
	}
	if !errors.Is(err, nats.ErrNoResponders) {
		return false
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, ierr := cons.Info(ictx)
	return errors.Is(ierr, jetstream.ErrConsumerNotFound)
}

// handle delivers one annotation of the stream if the webhook wants it,
// and acknowledges it: delivered or skipped (ack), refused (term: never
// again), or interrupted by the sink stopping (nak: delivered later, by
// whichever replica fetches next).
func (w *webhook) handle(ctx, hard context.Context, m jetstream.Msg, cons jetstream.Consumer) {
	w.inFlight.Store(true)
	defer w.inFlight.Store(false)
	var stored time.Time // when the stream took the annotation
	var seq uint64       // its stream sequence
	caughtUp := false
	if md, err := m.Metadata(); err == nil {
		webhookBacklog.WithLabelValues(w.name).Set(float64(md.NumPending))
		stored, caughtUp, seq = md.Timestamp, md.NumPending == 0, md.Sequence.Stream
	}
	settle := func(settle func() error) {
		if settle() == nil {
			w.handled(seq)
		}
	}
	if seq > 0 && seq <= w.done.Load() {
		// Known done with, yet handed out again: a consumer made again
		// right after it was deleted can start before its start sequence
		// (the server still clearing the old one; seen ~1 run in 40).
		_ = m.Ack()
		return
	}
	w.lag(stored)
	defer func() {
		if caughtUp {
			webhookLag.WithLabelValues(w.name).Set(0)
			w.lagWarned.Store(false)
		}
	}()
	var a annotation.Annotation
	if err := json.Unmarshal(m.Data(), &a); err != nil || !w.wants(&a) {
		settle(m.Ack)
		return
	}
	if ctx.Err() != nil {
		_ = m.Nak()
		return
	}
	d := delivery{id: m.Headers().Get(nats.MsgIdHdr), body: m.Data(), trace: bus.ExtractTrace(context.Background(), m.Headers())}
	delivered := make(chan struct{})
	go func() { // keep the message ours while attempts and waits go on
		t := time.NewTicker(durableAckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-delivered:
				return
			case <-t.C:
				_ = m.InProgress()
				w.lag(stored)
				w.readConsumer(ctx, cons) // what has piled up behind it
			}
		}
	}()
	err := w.deliver(hard, d, 0)
	close(delivered)
	switch {
	case err == nil:
		settle(m.Ack)
	case hard.Err() != nil:
		_ = m.Nak()
		return
	default:
		settle(m.Term)
	}
	w.count(err)
}

// handled records that the annotation at stream sequence seq is done with
// (acknowledged or terminated), here or, seen in the consumer's ack
// floor, by another replica.
func (w *webhook) handled(seq uint64) {
	for {
		cur := w.done.Load()
		if seq <= cur || w.done.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// lag records how far behind a durable webhook is: the age of the
// annotation it is delivering, stored in the stream at stored. Past half
// the stream's max age it warns (once until caught up again): the stream
// drops annotations at max age whether or not a webhook delivered them.
func (w *webhook) lag(stored time.Time) {
	if stored.IsZero() {
		return
	}
	age := time.Since(telemetry.NotAfter(stageName, stored, time.Now())) // the server's clock, which may be ahead of this one
	webhookLag.WithLabelValues(w.name).Set(age.Seconds())
	if w.maxAge > 0 && age > w.maxAge/2 && !w.lagWarned.Swap(true) {
		w.log.Warn("webhook falls behind the annotation stream: annotations older than its max age are dropped before delivery",
			"lag", age.Round(time.Second), "max_age", w.maxAge)
	}
}

// deliver POSTs d, retrying network errors, 429 and 5xx with exponential
// backoff (or the server's Retry-After): up to attempts tries, or until
// delivered when attempts is 0. It returns nil once delivered, else the
// last error.
func (w *webhook) deliver(ctx context.Context, d delivery, attempts int) (err error) {
	parent := context.Background()
	if d.trace != nil {
		parent = d.trace
	}
	sctx, span := telemetry.Tracer().Start(parent, "webhook", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("webhook", w.name), attribute.String("id", d.id)))
	d.trace = sctx // the request's traceparent: the endpoint may join the frame's trace
	attempt := 0
	defer func() {
		span.SetAttributes(attribute.Int("attempts", attempt))
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	backoff := 250 * time.Millisecond
	for attempt = 1; ; attempt++ {
		retry, wait, err := w.post(ctx, d)
		if err == nil {
			return nil
		}
		if !retry || attempt == attempts || ctx.Err() != nil {
			if ctx.Err() == nil {
				if n := w.failures.Add(1); telemetry.Thinned(n) {
					w.log.Warn("webhook delivery failed", "id", d.id, "attempts", attempt, "err", err, "failed_total", n)
				}
			}
			return err
		}
		if attempts == 0 && telemetry.Thinned(attempt) { // durable: say now and then that it is stuck
			w.log.Warn("webhook delivery retrying", "id", d.id, "attempts", attempt, "err", err)
		}
		if wait == 0 {
			wait = min(time.Duration(float64(backoff)*(0.75+0.5*rand.Float64())), maxBackoff)
			backoff = min(2*backoff, maxBackoff)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// post makes one attempt. retry says whether another may succeed; wait is
// the server's Retry-After, if any.
func (w *webhook) post(ctx context.Context, d delivery) (retry bool, wait time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(d.body))
	if err != nil {
		return false, 0, err
	}
	for k, v := range w.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "patchline")
	req.Header.Set(HdrWebhookID, d.id)
	if d.trace != nil {
		propagation.TraceContext{}.Inject(d.trace, propagation.HeaderCarrier(req.Header))
	}
	if w.cfg.Secret != "" {
		req.Header.Set(HdrWebhookSignature, Sign(w.cfg.Secret, d.body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// Its error quotes the URL, whose path and query may be the
		// secret (Slack's, Discord's): name the hook as the metrics do.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			ue.URL = w.name
		}
		if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
			err = fmt.Errorf("%w (a private or self-signed certificate: set the webhook's ca to its PEM file)", err)
		}
		return true, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return false, 0, nil
	case code == http.StatusTooManyRequests || code >= 500:
		return true, retryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("%s answered %s", w.name, resp.Status)
	default:
		return false, 0, fmt.Errorf("%s answered %s (not retried)", w.name, resp.Status)
	}
}

// retryAfter reads a Retry-After of delay seconds or an HTTP-date, capped
// at maxRetryAfter; 0 (the usual backoff) otherwise.
func retryAfter(h string) time.Duration {
	if s, err := strconv.ParseInt(h, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if at, err := http.ParseTime(h); err == nil { // an HTTP-date
		return min(max(time.Until(at), 0), maxRetryAfter)
	}
	return 0
}

// Sign is a webhook body's signature: "sha256=" and the hex HMAC-SHA256
// of body with secret. A receiver computes the same and compares them with
// hmac.Equal.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
