package sink

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/queue"
)

// Webhook headers.
const (
	HdrWebhookID        = "X-Patchline-Id"        // the annotation's Nats-Msg-Id: camera:seq[:kind]
	HdrWebhookSignature = "X-Patchline-Signature" // sha256=<hex HMAC-SHA256(secret, body)>
)

// maxRetryAfter caps how long a Retry-After header may hold a webhook.
const maxRetryAfter = 30 * time.Second

var webhookDeliveries = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "patchline_webhook_deliveries_total",
	Help: "Annotations per webhook by result: delivered, failed (every attempt failed), dropped (queue full, or pending at shutdown).",
}, []string{"webhook", "result"})

// delivery is one annotation on its way to a webhook.
type delivery struct {
	id   string // Nats-Msg-Id
	body []byte
}

// webhook delivers matching annotations to one URL, in order, from a
// bounded queue that drops the oldest.
type webhook struct {
	cfg    config.Webhook
	name   string // the URL without credentials or query, for logs and metrics
	q      *queue.Ring[delivery]
	client *http.Client
	log    *slog.Logger

	failures, drops atomic.Uint64
}

func newWebhook(cfg config.Webhook, log *slog.Logger) *webhook {
	cfg = cfg.WithDefaults()
	name := cfg.URL
	if u, err := url.Parse(cfg.URL); err == nil {
		name = u.Scheme + "://" + u.Host + u.Path
	}
	return &webhook{
		cfg: cfg, name: name, q: queue.NewRing[delivery](cfg.QueueSize),
		// A redirect would turn the POST into a GET: answer it as it is (a
		// failure, not retried) and let the configuration name the URL.
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		log:    log.With("webhook", name),
	}
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
func (w *webhook) enqueue(id string, body []byte) {
	if old, dropped := w.q.Push(delivery{id: id, body: body}); dropped {
		w.dropped(1, "queue full", old.id)
	}
}

func (w *webhook) dropped(n uint64, why, id string) {
	webhookDeliveries.WithLabelValues(w.name, "dropped").Add(float64(n))
	if total := w.drops.Add(n); total&(total-1) == 0 || n > 1 { // the 1st, 2nd, 4th, ...
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
		if w.deliver(ctx, d) {
			webhookDeliveries.WithLabelValues(w.name, "delivered").Inc()
		} else {
			webhookDeliveries.WithLabelValues(w.name, "failed").Inc()
		}
	}
}

// deliver POSTs d, retrying network errors, 429 and 5xx with exponential
// backoff (or the server's Retry-After) up to cfg.Attempts tries.
func (w *webhook) deliver(ctx context.Context, d delivery) bool {
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		retry, wait, err := w.post(ctx, d)
		if err == nil {
			return true
		}
		if !retry || attempt >= w.cfg.Attempts || ctx.Err() != nil {
			if n := w.failures.Add(1); n&(n-1) == 0 {
				w.log.Warn("webhook delivery failed", "id", d.id, "attempts", attempt, "err", err, "failed_total", n)
			}
			return false
		}
		if wait == 0 {
			wait = time.Duration(float64(backoff) * (0.75 + 0.5*rand.Float64()))
			backoff = min(2*backoff, 10*time.Second)
		}
		select {
		case <-ctx.Done():
			return false
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
	if w.cfg.Secret != "" {
		req.Header.Set(HdrWebhookSignature, Sign(w.cfg.Secret, d.body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
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

// retryAfter reads a Retry-After of delay seconds (capped); 0 otherwise.
func retryAfter(h string) time.Duration {
	s, err := strconv.Atoi(h)
	if err != nil || s < 0 {
		return 0
	}
	return min(time.Duration(s)*time.Second, maxRetryAfter)
}

// Sign is a webhook body's signature: "sha256=" and the hex HMAC-SHA256
// of body with secret. A receiver computes the same and compares them with
// hmac.Equal.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
