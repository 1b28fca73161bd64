package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// sampledShare starts n root spans and returns the share sampled.
func sampledShare(n int) float64 {
	sampled := 0
	for range n {
		_, sp := Tracer().Start(context.Background(), "frame", trace.WithNewRoot())
		if sp.SpanContext().IsSampled() {
			sampled++
		}
		sp.End()
	}
	return float64(sampled) / float64(n)
}

// TestSampling: telemetry.sample_ratio samples that share of frames at the
// root, children follow their root, and OTEL_TRACES_SAMPLER overrides it.
func TestSampling(t *testing.T) {
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)
	for _, c := range []struct {
		ratio, lo, hi float64
		sampler       string
	}{
		{1, 1, 1, ""}, {0, 0, 0, ""}, {0.25, 0.2, 0.3, ""},
		{1, 0, 0, "always_off"}, {0, 1, 1, "always_on"}, {1, 0.05, 0.15, "parentbased_traceidratio"},
	} {
		t.Setenv("OTEL_TRACES_SAMPLER", c.sampler)
		t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
		shutdown, err := SetupTracing(context.Background(), "test", c.ratio)
		if err != nil {
			t.Fatal(err)
		}
		if got := sampledShare(4000); got < c.lo || got > c.hi {
			t.Errorf("ratio %v, OTEL_TRACES_SAMPLER %q: %.3f of frames sampled, want %v..%v", c.ratio, c.sampler, got, c.lo, c.hi)
		}
		// A child follows its root, whatever the ratio.
		for _, parentSampled := range []bool{true, false} {
			flags := trace.TraceFlags(0)
			if parentSampled {
				flags = trace.FlagsSampled
			}
			parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: flags, Remote: true})
			_, sp := Tracer().Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "child")
			if c.sampler == "" && sp.SpanContext().IsSampled() != parentSampled {
				t.Errorf("ratio %v: a child of a parent sampled=%v is sampled=%v", c.ratio, parentSampled, sp.SpanContext().IsSampled())
			}
			sp.End()
		}
		_ = shutdown(context.Background())
	}
}
