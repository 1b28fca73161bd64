package generate

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of the generate stage, on the default Prometheus registry.
var (
	metricStarted = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "patchline_generate_started_total", Help: "Generations started (admitted to a budget slot, or an anomaly's frame, scored outside the budget), by kind (caption, frame).",
	}, []string{"kind"})
	metricRejected = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "patchline_generate_rejected_total",
		Help: "Generations not done, by kind (caption, frame, or request: a request refused as bad_request) and reason (overloaded, deadline, unknown_camera, ...); each was answered with the reason, or was an automatic trigger skipped.",
	}, []string{"kind", "reason"})
	metricHandedBack = promauto.NewCounter(prometheus.CounterOpts{
		Name: "patchline_generate_handed_back_total",
		Help: "Requests a replica handed back to the queue group for another to serve: its frame windows were still filling, it lacks the model, or every slot and its queue were full.",
	})
	metricDone = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "patchline_generate_done_total", Help: "Generations finished and published, by kind and trigger.",
	}, []string{"kind", "trigger"})
	metricSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name: "patchline_generate_seconds", Help: "Model time of one generation (a caption batch, a generated frame), by kind.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	}, []string{"kind"})
	metricTTFT = promauto.NewHistogram(prometheus.HistogramOpts{
		Name: "patchline_generate_time_to_first_token_seconds", Help: "Caption time to first token (encoder included).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	metricRunning = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "patchline_generate_running", Help: "Generations running now (at most generate.budget).",
	})
	metricQueued = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "patchline_generate_queued", Help: "Requests waiting for a generation slot (at most generate.queue_size).",
	})
	metricSuppressed = promauto.NewCounter(prometheus.CounterOpts{
		Name: "patchline_generate_anomalies_suppressed_total",
		Help: "Frames scored over the anomaly threshold but not published: within their camera's cooldown, and not escalating past the anomaly that began it.",
	})
	metricScore = promauto.NewHistogram(prometheus.HistogramOpts{
		Name: "patchline_generate_anomaly_score", Help: "Framegen anomaly scores of scored frames.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	metricUnscored = promauto.NewCounter(prometheus.CounterOpts{
		Name: "patchline_generate_frames_unscored_total", Help: "Frames the anomaly scorer skipped because it was still busy with earlier ones.",
	})
)
