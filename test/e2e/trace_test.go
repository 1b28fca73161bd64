package e2e

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/patchline/patchline/internal/app"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/otlptest"
)

// With the standard OTEL_EXPORTER_OTLP_ENDPOINT set, every frame's spans —
// from capture to sink — reach an OTLP/HTTP receiver as one trace, and the
// annotation names that trace; the spans' service is telemetry.service_name,
// and their resource names the one process and every stage it runs.
func TestEachFrameIsOneTraceExportedWithOTLP(t *testing.T) {
	recv := otlptest.Start(t)
	recv.Use(t)

	cfg := testConfig(t)
	cfg.Cameras = []config.Camera{{ID: "traced", URL: "synthetic://?seed=3&fps=10", FPS: 10}}
	cfg.Telemetry.ServiceName = "patchline-e2e"
	info, stop := runUntil(t, cfg)
	t.Cleanup(func() { _ = stop() }) // on a failure before the stop below
	rec := record(t, natstest.Connect(t, info.NATSURL), "traced")
	rec.waitAnnotations(t, 10, 60*time.Second)
	if err := stop(); err != nil { // stopping flushes the exporter
		t.Fatal(err)
	}

	_, anns, _ := rec.snapshot()
	want := []string{"decode.frame", "capture", "tokenize", "publish", "analyze", "queue_wait", "batch", "inference", "sink"}
	spans := map[string]map[string]bool{} // trace id → span names
	services := map[string]bool{}
	instances := map[string]string{} // service.instance.id → patchline.stages
	wantKind := map[string]string{"publish": "SPAN_KIND_PRODUCER", "analyze": "SPAN_KIND_CONSUMER", "sink": "SPAN_KIND_CONSUMER"}
	for _, s := range recv.Spans() {
		if k, ok := wantKind[s.Name]; ok && s.Kind != k {
			t.Errorf("%s span of kind %s, want %s", s.Name, s.Kind, k)
			delete(wantKind, s.Name) // once
		}
		services[s.Resource["service.name"]] = true
		instances[s.Resource["service.instance.id"]] = s.Resource["patchline.stages"]
		if spans[s.TraceID] == nil {
			spans[s.TraceID] = map[string]bool{}
		}
		spans[s.TraceID][s.Name] = true
	}
	complete := 0
	for _, a := range anns {
		names := spans[a.TraceID]
		ok := true
		for _, n := range want {
			if !names[n] {
				ok = false
			}
		}
		if ok {
			complete++
		} else if len(names) > 0 {
			t.Logf("trace %s (seq %d) has spans %v", a.TraceID, a.Seq, names)
		}
	}
	if len(services) != 1 || !services["patchline-e2e"] {
		t.Errorf("spans came from services %v, want only telemetry.service_name patchline-e2e", services)
	}
	if ids := slices.Collect(maps.Keys(instances)); len(ids) != 1 || ids[0] == "" || instances[ids[0]] != strings.Join(app.AllStages, ",") {
		t.Errorf("spans came from instances %v, want one service.instance.id running every stage", instances)
	}
	if complete < len(anns)*9/10 || complete == 0 {
		t.Errorf("%d of %d annotated frames have a complete exported trace %v", complete, len(anns), want)
	}
}
