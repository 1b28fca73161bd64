package telemetry

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/patchline/patchline/internal/config"
)

// upperBounds returns a histogram's finite bucket bounds.
func upperBounds(t *testing.T, h prometheus.Histogram) []float64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	var b []float64
	for _, bk := range m.GetHistogram().GetBucket() {
		b = append(b, bk.GetUpperBound())
	}
	return b
}

// TestHistogramBuckets: a tokenize step (~10 µs) does not share the first
// latency bucket with everything under half a millisecond, every batch
// size the config allows has a bucket of its own range, and neither
// histogram grows past a few dozen series.
func TestHistogramBuckets(t *testing.T) {
	lat := upperBounds(t, StageLatency.WithLabelValues("buckets-test").(prometheus.Histogram))
	defer StageLatency.DeleteLabelValues("buckets-test")
	if lat[0] > 10e-6 {
		t.Errorf("first latency bucket is %v s, want ≤ 10 µs", lat[0])
	}
	under := 0
	for _, b := range lat {
		if b < 0.0005 {
			under++
		}
	}
	if under < 3 {
		t.Errorf("%d latency buckets below 0.5 ms (%v), want ≥ 3", under, lat)
	}
	if lat[len(lat)-1] < 10 {
		t.Errorf("last latency bucket is %v s, want ≥ 10 s", lat[len(lat)-1])
	}
	batch := upperBounds(t, BatchSize)
	if last := batch[len(batch)-1]; last < config.MaxBatchSize {
		t.Errorf("last batch_size bucket is %v, want ≥ analyze.batch_size's maximum %d", last, config.MaxBatchSize)
	}
	for name, b := range map[string][]float64{"latency": lat, "batch": batch} {
		if len(b) > 24 {
			t.Errorf("%s histogram has %d buckets, want ≤ 24", name, len(b))
		}
	}
}
