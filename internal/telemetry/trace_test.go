package telemetry

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/patchline/patchline/internal/otlptest"
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
		{0, 0.05, 0.15, "TraceIdRatio"}, {1, 0, 0, "parentbased_always_off"},
	} {
		t.Setenv("OTEL_TRACES_SAMPLER", c.sampler)
		t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
		shutdown, err := SetupTracing(context.Background(), Settings{ServiceName: "test", SampleRatio: c.ratio})
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

// exportOne sets tracing up as the environment says, ends one span and
// shuts down (which flushes).
func exportOne(t *testing.T, s Settings) error {
	t.Helper()
	ctx := context.Background()
	shutdown, err := SetupTracing(ctx, s)
	if err != nil {
		return err
	}
	_, sp := Tracer().Start(ctx, "exported")
	sp.End()
	return shutdown(ctx)
}

// TestExporters: OTEL_TRACES_EXPORTER and OTEL_SDK_DISABLED decide whether
// spans leave the process, whatever OTEL_EXPORTER_OTLP_ENDPOINT says.
func TestExporters(t *testing.T) {
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)
	for _, c := range []struct {
		env          []string // name, value, …
		otlp, stdout int      // spans each should get
	}{
		{nil, 1, 0}, // an endpoint alone means otlp
		{[]string{"OTEL_TRACES_EXPORTER", "otlp"}, 1, 0},
		{[]string{"OTEL_TRACES_EXPORTER", "none"}, 0, 0},
		{[]string{"OTEL_TRACES_EXPORTER", "console"}, 0, 1},
		{[]string{"OTEL_TRACES_EXPORTER", "otlp, console"}, 1, 1},
		{[]string{"OTEL_SDK_DISABLED", "TRUE"}, 0, 0},
		{[]string{"OTEL_SDK_DISABLED", "true", "OTEL_TRACES_EXPORTER", "console"}, 0, 0},
		{[]string{"OTEL_SDK_DISABLED", "false"}, 1, 0},
	} {
		t.Run(strings.Join(c.env, "="), func(t *testing.T) {
			recv := otlptest.Start(t)
			recv.Use(t)
			for i := 0; i < len(c.env); i += 2 {
				t.Setenv(c.env[i], c.env[i+1])
			}
			var out bytes.Buffer
			consoleOut = &out
			defer func() { consoleOut = os.Stdout }()
			if err := exportOne(t, Settings{ServiceName: "test", SampleRatio: 1}); err != nil {
				t.Fatal(err)
			}
			if got := len(recv.Spans()); got != c.otlp {
				t.Errorf("the OTLP receiver got %d spans, want %d", got, c.otlp)
			}
			if got := strings.Count(out.String(), `"Name":"exported"`); got != c.stdout {
				t.Errorf("standard output got %d spans, want %d:\n%s", got, c.stdout, out.String())
			}
		})
	}
}

// TestTracingSettingErrors: a value patchline cannot honour stops it at
// start, with the variable and what it accepts.
func TestTracingSettingErrors(t *testing.T) {
	for _, c := range []struct{ name, value, want string }{
		{"OTEL_TRACES_SAMPLER_ARG", "ten percent", `OTEL_TRACES_SAMPLER_ARG "ten percent": want a ratio from 0 to 1 for OTEL_TRACES_SAMPLER parentbased_traceidratio`},
		{"OTEL_TRACES_SAMPLER_ARG", "1.5", `OTEL_TRACES_SAMPLER_ARG "1.5": want a ratio from 0 to 1`},
		{"OTEL_TRACES_SAMPLER_ARG", "NaN", `OTEL_TRACES_SAMPLER_ARG "NaN": want a ratio from 0 to 1`},
		{"OTEL_TRACES_EXPORTER", "zipkin", `OTEL_TRACES_EXPORTER "zipkin": want otlp, console or none`},
		{"OTEL_TRACES_EXPORTER", "otlp,jaeger", `OTEL_TRACES_EXPORTER "jaeger": want otlp, console or none`},
		{"OTEL_SDK_DISABLED", "yes", `OTEL_SDK_DISABLED "yes": want true or false`},
		{"OTEL_TRACES_SAMPLER", "bogus", `OTEL_TRACES_SAMPLER "bogus": want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio, or unset for telemetry.sample_ratio`},
		{"OTEL_TRACES_SAMPLER", "jaeger_remote", `OTEL_TRACES_SAMPLER "jaeger_remote": want always_on`},
	} {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			if c.name == "OTEL_TRACES_SAMPLER_ARG" {
				t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
			}
			t.Setenv(c.name, c.value)
			_, err := SetupTracing(context.Background(), Settings{ServiceName: "test", SampleRatio: 1})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one saying %s", err, c.want)
			}
		})
	}
}

// TestResource: spans say which process sent them (instance, host, pid,
// stages, version), and the standard variables win over the config file's
// service name: OTEL_SERVICE_NAME, then OTEL_RESOURCE_ATTRIBUTES, then
// telemetry.service_name.
func TestResource(t *testing.T) {
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)
	host, _ := os.Hostname()
	settings := Settings{ServiceName: "from-file", SampleRatio: 1, Version: "v9.9.9", Stages: []string{"decode", "analyze"}}
	resource := func(t *testing.T, env ...string) map[string]string {
		t.Helper()
		recv := otlptest.Start(t)
		recv.Use(t)
		for i := 0; i < len(env); i += 2 {
			t.Setenv(env[i], env[i+1])
		}
		if err := exportOne(t, settings); err != nil {
			t.Fatal(err)
		}
		spans := recv.Spans()
		if len(spans) != 1 {
			t.Fatalf("%d spans exported, want 1", len(spans))
		}
		return spans[0].Resource
	}

	first := resource(t)
	for k, want := range map[string]string{
		"service.name": "from-file", "service.version": "v9.9.9", "patchline.stages": "decode,analyze",
		"host.name": host, "process.pid": fmt.Sprint(os.Getpid()),
	} {
		if first[k] != want {
			t.Errorf("resource %s = %q, want %q", k, first[k], want)
		}
	}
	if id := first["service.instance.id"]; len(id) < 16 {
		t.Errorf("service.instance.id %q, want a random id", id)
	} else if again := resource(t)["service.instance.id"]; again == id {
		t.Errorf("two setups share service.instance.id %q", id)
	}

	for _, c := range []struct {
		env     []string
		key     string
		want    string
		because string
	}{
		{[]string{"OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,deployment.environment=test"}, "service.name", "from-attrs", "OTEL_RESOURCE_ATTRIBUTES beats the file"},
		{[]string{"OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs", "OTEL_SERVICE_NAME", "from-env"}, "service.name", "from-env", "OTEL_SERVICE_NAME beats OTEL_RESOURCE_ATTRIBUTES"},
		{[]string{"OTEL_SERVICE_NAME", "from-env"}, "service.name", "from-env", "OTEL_SERVICE_NAME beats the file"},
		{[]string{"OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7"}, "service.instance.id", "pod-7", "OTEL_RESOURCE_ATTRIBUTES beats the generated id"},
	} {
		t.Run(strings.Join(c.env, "="), func(t *testing.T) {
			if got := resource(t, c.env...)[c.key]; got != c.want {
				t.Errorf("%s = %q, want %q: %s", c.key, got, c.want, c.because)
			}
		})
	}
}
