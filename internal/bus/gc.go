package bus

import (
	"os"
	"runtime/debug"
)

// GCPercent is the garbage collector's target that TuneGC sets: the heap
// may grow to 5× what is live before a collection (Go's default is 2×).
//
// Frames make garbage fast: every message larger than nats-server's 64 KB
// read buffer is assembled in a fresh buffer, and every frame a subscriber
// receives is a fresh copy (300 KB at 320×320, hundreds a second). At
// GOGC=100 the collections that follow cost more than the copies; 400
// cuts the cost of publishing a 320×320 frame by ~40% (decode's
// BenchmarkPublish: ~310 → ~170 µs on 2 cores). The live Go heap is small
// (models live in ONNX Runtime's memory): `patchline run` with the shipped
// pipeline.yaml measured a 12 MB heap and 188 MB RSS, against 6 MB and
// 173 MB at GOGC=100.
const GCPercent = 400

// TuneGC sets GCPercent unless the GOGC environment variable says
// otherwise (Go reads GOGC itself). patchline's binary and bench call it.
func TuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(GCPercent)
	}
}
