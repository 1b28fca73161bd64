package generate

import (
	"fmt"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestGenerationIsASpanInTheFrameTrace: a caption and a generated frame are
// each a recorded span in the trace of the newest frame they used, with a
// queue_wait child.
func TestGenerationIsASpanInTheFrameTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	defer otel.SetTracerProvider(prev)

	cfg := captionConfig()
	nc := startStage(t, cfg, openTiny(t), openCaptioner(t))
	publishFrames(t, nc, "cam1", 1, 5)
	waitWindow(t, nc, `{"camera":"cam1","kind":"frame"}`, 5)
	for _, kind := range []string{KindCaption, KindFrame} {
		if r := request(t, nc, `{"camera":"cam1","kind":"`+kind+`"}`); r.Error != "" {
			t.Fatal(r.Error)
		}
	}
	frameTrace := fmt.Sprintf("%032x", 5+0xabc0000) // testFrame's trace id of seq 5
	for _, name := range []string{"generate.caption", "generate.frame"} {
		var found bool
		for _, s := range rec.Ended() {
			if s.Name() != name || s.SpanContext().TraceID().String() != frameTrace {
				continue
			}
			found = true
			if s.Parent().SpanID().String() != fmt.Sprintf("%016x", 5+1) {
				t.Errorf("%s: parent span %s, want the frame's", name, s.Parent().SpanID())
			}
			var child bool
			for _, c := range rec.Ended() {
				child = child || (c.Name() == "queue_wait" && c.Parent().SpanID() == s.SpanContext().SpanID())
			}
			if !child {
				t.Errorf("%s has no queue_wait child", name)
			}
		}
		if !found {
			t.Errorf("no %s span in the frame's trace %s", name, frameTrace)
		}
	}
}
