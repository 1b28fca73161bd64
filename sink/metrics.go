package sink

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var jsonlDropped = promauto.NewCounter(prometheus.CounterOpts{
	Name: "patchline_jsonl_lines_dropped_total",
	Help: "Annotation lines the JSON Lines file output could not write (a full disk, a file that cannot be written), dropped.",
})
