// Package telemetry sets up tracing (OpenTelemetry, OTLP when OTEL_* asks for
// it) and the Prometheus metrics every stage reports.
package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Histogram buckets. Latency: 10 µs to 250 µs for the cheap steps (tokenize,
// batch), then 0.5 ms doubling to about 16 s (the buckets before these were
// added, kept so existing queries still find their le values). Batch size:
// every size to 16, then coarser up to config.MaxBatchSize (256).
var (
	latencyBuckets = append([]float64{0.00001, 0.00005, 0.0001, 0.00025}, prometheus.ExponentialBuckets(0.0005, 2, 16)...)
	batchBuckets   = append(prometheus.LinearBuckets(1, 1, 16), 24, 32, 48, 64, 96, 128, 192, 256)
)

// Metrics, registered on the default Prometheus registry and served at /metrics.
var (
	FramesIn = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "patchline_frames_in_total", Help: "Frames received by a stage.",
	}, []string{"stage", "camera"})
	FramesOut = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "patchline_frames_out_total", Help: "Frames (or annotations) emitted by a stage.",
	}, []string{"stage", "camera"})
	FramesDropped = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "patchline_frames_dropped_total", Help: "Frames dropped by a stage, by reason.",
	}, []string{"stage", "camera", "reason"})
	DetectionsDiscarded = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "patchline_detections_discarded_total", Help: "Detections a model output that analyze left out, by reason (non_finite: a NaN or infinite box or score; empty_box: nothing of it inside the frame).",
	}, []string{"model", "reason"})
	Malformed = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "patchline_malformed_messages_total", Help: "Messages that failed to decode and were dropped.",
	}, []string{"stage", "subject"}) // subject: bus.SubjectFamily, e.g. patchline.frames.*
	StageLatency = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name: "patchline_stage_latency_seconds", Help: "Time spent per frame in each stage step.",
		Buckets: latencyBuckets,
	}, []string{"stage"})
	BatchSize = promauto.NewHistogram(prometheus.HistogramOpts{
		Name: "patchline_batch_size", Help: "Frames per inference batch.",
		Buckets: batchBuckets,
	})
	QueueDepth = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "patchline_queue_depth", Help: "Frames waiting in a stage's bounded queue.",
	}, []string{"stage"})
	CameraUp = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "patchline_camera_up", Help: "1 while a camera is streaming.",
	}, []string{"camera"})
	CameraState = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "patchline_camera_state",
		Help: "1 for the state a camera is in (connecting, streaming, retrying, stalled, ended, stopped, offline, failed), 0 for the others.",
	}, []string{"camera", "state"})
	CamerasAttached = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "patchline_cameras_attached",
		Help: "Cameras in the registry (from the configuration, the API or WHIP), as this process last read it; every process reports it (aggregate with max).",
	})
	CameraReconnects = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "patchline_camera_reconnects_total", Help: "Times a camera's source was opened again after the first open (a failure, a stall, a stream that ended).",
	}, []string{"camera"})
	LastAnnotation = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "patchline_last_annotation_timestamp_seconds",
		Help: "When the sink last published an analysis annotation of a camera (unix seconds): time() minus it is how long nothing came through the whole path.",
	}, []string{"camera"})
	RTPPacketsMissed = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "patchline_rtp_packets_missed_total",
		Help: "RTP packets of a WHIP publisher that its sequence numbers skipped before decode (lost or late).",
	}, []string{"camera"})
)

// ShowMalformed makes stage's malformed-message series of the subject
// families it consumes (bus.SubjectFamily) exist from the start, at 0, so
// that rate() and alerts see them before the first bad message.
func ShowMalformed(stage string, families ...string) {
	for _, f := range families {
		Malformed.WithLabelValues(stage, f)
	}
}

// ShowCamera makes a camera's frame series of stage exist at 0 from its
// start: frames out and a drop counter for each of reasons.
func ShowCamera(stage, camera string, reasons ...string) {
	Saw(camera)
	FramesOut.WithLabelValues(stage, camera)
	for _, r := range reasons {
		FramesDropped.WithLabelValues(stage, camera, r)
	}
}

// SetCameraState sets camera's state series: 1 for state, 0 for the other
// states (all of them, state among them).
func SetCameraState(camera, state string, states []string) {
	for _, s := range states {
		v := 0.0
		if s == state {
			v = 1
		}
		CameraState.WithLabelValues(camera, s).Set(v)
	}
}

// ForgetCameraRun deletes the series a decode replica's worker of camera
// keeps while it runs (up, state, reconnects), once it has stopped: the
// camera was detached, or another replica runs it now.
func ForgetCameraRun(id string) {
	CameraUp.DeleteLabelValues(id)
	CameraState.DeletePartialMatch(prometheus.Labels{"camera": id})
	CameraReconnects.DeleteLabelValues(id)
}

// ForgetCamera deletes every series of a camera (one detached), in every
// stage of this process.
func ForgetCamera(id string) {
	l := prometheus.Labels{"camera": id}
	FramesIn.DeletePartialMatch(l)
	FramesOut.DeletePartialMatch(l)
	FramesDropped.DeletePartialMatch(l)
	ForgetCameraRun(id)
	LastAnnotation.DeleteLabelValues(id)
	RTPPacketsMissed.DeleteLabelValues(id)
	seen.Delete(id)
}
