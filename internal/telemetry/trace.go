package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracerName is the instrumentation scope of every patchline span.
const TracerName = "github.com/patchline/patchline"

// Tracer returns patchline's tracer from the global provider.
func Tracer() trace.Tracer { return otel.Tracer(TracerName) }

// Settings are what SetupTracing takes from the process and its config.
type Settings struct {
	ServiceName string   // telemetry.service_name
	SampleRatio float64  // telemetry.sample_ratio
	Version     string   // the build's version, service.version ("" leaves it out)
	Stages      []string // the stages this process runs, patchline.stages
	// Logger gets OpenTelemetry's errors (see errorLog) and warnings;
	// nil is slog.Default().
	Logger *slog.Logger
}

// SetupTracing installs a global tracer provider. Each frame is one trace:
// sampling is decided at the root (ratio) and followed by every child;
// the standard OTEL_TRACES_SAMPLER (and OTEL_TRACES_SAMPLER_ARG), when
// set, replaces that (see sampler).
// OTEL_SDK_DISABLED=true installs a no-op provider: no span is recorded or
// exported (the W3C trace context of incoming messages is still passed on).
// Otherwise spans go to the exporters that OTEL_TRACES_EXPORTER lists (see
// spanExporters); the exporters read the other standard OTEL_* variables
// themselves.
// The returned function flushes and shuts the provider down.
func SetupTracing(ctx context.Context, s Settings) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otelErrors.use(logger(s.Logger))
	if off, err := sdkDisabled(); err != nil {
		return nil, err
	} else if off {
		otel.SetTracerProvider(noop.NewTracerProvider())
		return func(context.Context) error { return nil }, nil
	}
	res, err := newResource(ctx, s)
	if err != nil {
		return nil, err
	}
	smp, err := sampler(s.SampleRatio)
	if err != nil {
		return nil, err
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(smp)}
	exps, err := spanExporters(ctx)
	if err != nil {
		return nil, err
	}
	for _, exp := range exps {
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	if os.Getenv("OTEL_TRACES_SAMPLER") == "" && os.Getenv("OTEL_TRACES_SAMPLER_ARG") != "" {
		logger(s.Logger).Warn("telemetry: OTEL_TRACES_SAMPLER_ARG is ignored without OTEL_TRACES_SAMPLER; telemetry.sample_ratio applies", "ratio", s.SampleRatio)
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	return func(ctx context.Context) error {
		defer otelErrors.flush()
		return tp.Shutdown(ctx)
	}, nil
}

// newResource describes this process: service.name (telemetry.service_name
// unless the environment names one), service.version, a service.instance.id
// of its own (a random UUID), host.name, process.pid, patchline.stages and
// the SDK's telemetry.sdk.*. OTEL_RESOURCE_ATTRIBUTES and then
// OTEL_SERVICE_NAME are read last, so they win over all of these.
func newResource(ctx context.Context, s Settings) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{
		semconv.ServiceName(s.ServiceName),
		semconv.ServiceInstanceID(uuid.NewString()),
		attribute.String("patchline.stages", strings.Join(s.Stages, ",")),
	}
	if s.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(s.Version))
	}
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(), resource.WithHost(), resource.WithProcessPID(),
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource (OTEL_RESOURCE_ATTRIBUTES?): %w", err)
	}
	return res, nil
}

// samplers are the OTEL_TRACES_SAMPLER values the SDK implements.
const samplers = "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"

// sampler is telemetry.sample_ratio's sampler (parent-based: a trace is
// kept whole or not at all) or, when OTEL_TRACES_SAMPLER is set, the one it
// names, with OTEL_TRACES_SAMPLER_ARG the ratio of the two ratio samplers
// (1 when unset; the others ignore it, as the specification says). A value
// the SDK does not implement is an error rather than its fallback, always_on.
func sampler(ratio float64) (sdktrace.Sampler, error) {
	name := strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER")))
	if name == "" {
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	}
	if name == "traceidratio" || name == "parentbased_traceidratio" {
		ratio = 1
		if arg := strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER_ARG")); arg != "" {
			v, err := strconv.ParseFloat(arg, 64)
			if err != nil || !(v >= 0 && v <= 1) {
				return nil, fmt.Errorf("telemetry: OTEL_TRACES_SAMPLER_ARG %q: want a ratio from 0 to 1 for OTEL_TRACES_SAMPLER %s", arg, name)
			}
			ratio = v
		}
	}
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	}
	return nil, fmt.Errorf("telemetry: OTEL_TRACES_SAMPLER %q: want %s, or unset for telemetry.sample_ratio", name, samplers)
}

// consoleOut is where the console exporter writes (a test's buffer in tests).
var consoleOut io.Writer = os.Stdout

// sdkDisabled reads OTEL_SDK_DISABLED: true or false (any case), or unset.
func sdkDisabled() (bool, error) {
	v := os.Getenv("OTEL_SDK_DISABLED")
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true":
		return true, nil
	case "", "false":
		return false, nil
	default:
		return false, fmt.Errorf("telemetry: OTEL_SDK_DISABLED %q: want true or false", v)
	}
}

// spanExporters returns the exporters that OTEL_TRACES_EXPORTER lists
// (comma-separated): otlp (protocol from OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
// or OTEL_EXPORTER_OTLP_PROTOCOL: grpc, or http/protobuf by default),
// console (one JSON object a span on standard output) or none. Unset, it is
// otlp when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
// is set and none otherwise, so a process with no collector configured does
// not keep trying the OTLP default, localhost:4318.
func spanExporters(ctx context.Context) ([]sdktrace.SpanExporter, error) {
	list := os.Getenv("OTEL_TRACES_EXPORTER")
	if strings.TrimSpace(list) == "" {
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return nil, nil
		}
		list = "otlp"
	}
	var exps []sdktrace.SpanExporter
	for name := range strings.SplitSeq(list, ",") {
		var (
			exp sdktrace.SpanExporter
			err error
		)
		switch name = strings.TrimSpace(name); name {
		case "none":
			continue
		case "otlp":
			exp, err = otlpExporter(ctx)
		case "console":
			exp, err = stdouttrace.New(stdouttrace.WithWriter(consoleOut))
		default:
			err = fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER %q: want otlp, console or none", name)
		}
		if err != nil {
			for _, e := range exps {
				_ = e.Shutdown(ctx)
			}
			return nil, err
		}
		exps = append(exps, exp)
	}
	return exps, nil
}

// otlpExporter is the OTLP span exporter of the protocol OTEL_* asks for.
func otlpExporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch proto {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, fmt.Errorf("telemetry: OTEL_EXPORTER_OTLP_PROTOCOL %q is not grpc or http/protobuf", proto)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	return exp, nil
}
