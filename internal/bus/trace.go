package bus

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

var propagator = propagation.TraceContext{}

// headerCarrier adapts nats.Header to the OpenTelemetry text-map carrier.
type headerCarrier nats.Header

func (c headerCarrier) Get(k string) string { return nats.Header(c).Get(k) }
func (c headerCarrier) Set(k, v string)     { nats.Header(c).Set(k, v) }
func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// InjectTrace writes ctx's span context into h as W3C traceparent.
func InjectTrace(ctx context.Context, h nats.Header) {
	propagator.Inject(ctx, headerCarrier(h))
}

// ExtractTrace returns ctx carrying the remote span context found in h.
func ExtractTrace(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return propagator.Extract(ctx, headerCarrier(h))
}
