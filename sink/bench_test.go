package sink

import (
	"net/http"
	"testing"
	"time"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
)

// BenchmarkWebhookDelivery is one analysis annotation through the sink
// (published live, stored in the stream) and delivered to a local
// endpoint that answers 200 at once, for each delivery: b.N annotations
// sent, then every one of them delivered.
func BenchmarkWebhookDelivery(b *testing.B) {
	for _, delivery := range []string{config.DeliveryMemory, config.DeliveryDurable} {
		b.Run(delivery, func(b *testing.B) {
			url := natstest.Start(b)
			nc := natstest.Connect(b, url)
			hook := newHookServer(b, func(string, int) int { return http.StatusOK })
			stream := testStream
			stream.MaxBytes = 1 << 30 // the test stream's 1 MiB would drop annotations before their delivery
			cfg := config.Sink{Stream: stream, Webhooks: []config.Webhook{{URL: hook.URL, Delivery: delivery, QueueSize: 100000}}}
			startSink(b, url, cfg)
			b.ResetTimer()
			for i := range b.N {
				if err := nc.Publish(bus.AnalyzedSubject("cam1"), analysis("cam1", i+1)); err != nil {
					b.Fatal(err)
				}
			}
			testenv.WaitFor(b, "every annotation delivered", time.Minute, func() bool { return len(hook.received()) >= b.N })
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}
