package textgen

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// benchBundle is $PATCHLINE_CAPTION_BUNDLE, else the trained models/caption
// bundle when it exists, else the tiny random-weight test bundle.
func benchBundle() string {
	if d := os.Getenv("PATCHLINE_CAPTION_BUNDLE"); d != "" {
		return d
	}
	if d := filepath.Join("..", "..", "models", "caption"); fileExists(filepath.Join(d, DecoderPastFile)) {
		return d
	}
	return tinyDir
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// BenchmarkCaption decodes one batch of inputs per iteration, greedy, with
// and without the KV cache, and reports generated tokens per second (all
// rows together), time to first token and the latency of one caption call.
func BenchmarkCaption(b *testing.B) {
	dir := benchBundle()
	c, err := Open(dir, Options{Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.Logf("bundle %s", dir)
	for _, batch := range []int{1, 4} {
		in := randomInputs(c, batch, 1)
		for _, mode := range []struct {
			name    string
			noCache bool
		}{{"cache", false}, {"nocache", true}} {
			b.Run(mode.name+"/batch"+strconv.Itoa(batch), func(b *testing.B) {
				var tokens int
				var ttft time.Duration
				for b.Loop() {
					caps, err := c.Caption(context.Background(), in, Sampling{NoCache: mode.noCache})
					if err != nil {
						b.Fatal(err)
					}
					for _, cp := range caps {
						tokens += len(cp.Tokens)
					}
					ttft += caps[0].TimeToFirstToken
				}
				b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
				b.ReportMetric(float64(tokens)/float64(b.N), "tokens/op")
				b.ReportMetric(float64(ttft.Microseconds())/1000/float64(b.N), "ttft-ms")
			})
		}
	}
}
