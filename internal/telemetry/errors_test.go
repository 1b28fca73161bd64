package telemetry

import (
	"bytes"
	"context"
	"errors"
	"log"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
)

// TestErrorLogRateLimit: the first error is logged at once, the next ones
// within the minute are counted into the next line, and shutdown says how
// many were never logged.
func TestErrorLogRateLimit(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	e := &errorLog{every: time.Minute, now: func() time.Time { return now }, log: slog.New(slog.NewTextHandler(&buf, nil))}
	lines := func() []string { return strings.Split(strings.TrimSpace(buf.String()), "\n") }
	e.Handle(errors.New("first"))
	for _, d := range []time.Duration{time.Second, 30 * time.Second, 59 * time.Second} {
		now = time.Unix(0, 0).Add(d)
		e.Handle(errors.New("quiet"))
	}
	if l := lines(); len(l) != 1 || !strings.Contains(l[0], "err=first") {
		t.Fatalf("within the first minute, logged %q, want the first error alone", l)
	}
	now = time.Unix(0, 0).Add(61 * time.Second)
	e.Handle(errors.New("later"))
	e.Handle(errors.New("quiet"))
	e.flush()
	l := lines()
	if len(l) != 3 || !strings.Contains(l[1], "err=later unlogged=3") || !strings.Contains(l[2], "unlogged=1") {
		t.Fatalf("logged %q, want the later error with 3 unlogged, then 1 unlogged at shutdown", l)
	}
	e.flush()
	if len(lines()) != 3 {
		t.Errorf("a flush with nothing unlogged logged %q", lines()[3:])
	}
}

// TestOTelErrorsGoToSlog: after SetupTracing, an OpenTelemetry error (an
// OTLP export failing, say) is a line of the process's slog logger at
// warn, not of Go's standard log; so is the warning that a lone
// OTEL_TRACES_SAMPLER_ARG is ignored.
func TestOTelErrorsGoToSlog(t *testing.T) {
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)
	var std, buf bytes.Buffer
	defer log.SetOutput(log.Writer())
	log.SetOutput(&std)
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0.1") // without OTEL_TRACES_SAMPLER: warned about
	shutdown, err := SetupTracing(context.Background(), Settings{ServiceName: "test", SampleRatio: 1, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = shutdown(context.Background()) }()
	otelErrors.mu.Lock()
	otelErrors.last = time.Time{} // an earlier test's line does not hold this one back
	otelErrors.mu.Unlock()
	otel.Handle(errors.New("traces export: connection refused"))
	if !strings.Contains(buf.String(), `level=WARN msg="telemetry: OpenTelemetry error`) || !strings.Contains(buf.String(), `err="traces export: connection refused"`) {
		t.Errorf("slog got %q, want the export error at warn", buf.String())
	}
	if !strings.Contains(buf.String(), `msg="telemetry: OTEL_TRACES_SAMPLER_ARG is ignored without OTEL_TRACES_SAMPLER; telemetry.sample_ratio applies" ratio=1`) {
		t.Errorf("slog got %q, want a warning that OTEL_TRACES_SAMPLER_ARG is ignored", buf.String())
	}
	if std.Len() > 0 {
		t.Errorf("Go's standard log got %q", std.String())
	}
}
