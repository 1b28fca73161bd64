package telemetry

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// ClockSkew counts timestamps of another process found later than this
// process's clock: latencies across hosts need their clocks in step.
var ClockSkew = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "patchline_clock_skew_total",
	Help: "Timestamps set by another process (a frame's capture or publish time, an annotation's analysis time) later than this process's clock when it read them: the hosts' clocks differ (keep them in step with NTP). The latencies measured from such a timestamp are counted from when it was read instead.",
}, []string{"stage"})

// NotAfter returns t, a time another process set, unless it is later than
// now (this process's clock): then now, counted as clock skew of stage.
// A latency measured from it is then never negative, nor a span's end
// before its start.
func NotAfter(stage string, t, now time.Time) time.Time {
	if t.After(now) {
		ClockSkew.WithLabelValues(stage).Inc()
		return now
	}
	return t
}
