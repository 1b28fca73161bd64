package generate

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/patchline/patchline/internal/textgen"
)

// benchDir is $env, else the trained bundle under models/ when it exists,
// else the tiny random-weight test bundle.
func benchDir(env, trained, tiny string) string {
	if d := os.Getenv(env); d != "" {
		return d
	}
	if _, err := os.Stat(filepath.Join("..", "models", trained, "config.json")); err == nil {
		return filepath.Join("..", "models", trained)
	}
	return tiny
}

// BenchmarkGenerate is the latency of one generation through the stage, as
// a requester sees it: a NATS request on patchline.generate.request to the
// reply, for one caption (greedy, KV cache) and for one generated frame
// (framegen, PNG, Object Store put, patchline.generated publish).
func BenchmarkGenerate(b *testing.B) {
	capDir := benchDir("PATCHLINE_CAPTION_BUNDLE", "caption", tinyCaption)
	fgDir := benchDir("PATCHLINE_FRAMEGEN_BUNDLE", "framegen", tinyFramegen)
	capt, err := textgen.Open(capDir, textgen.Options{Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer capt.Close()
	fg, err := OpenFramegen(fgDir, ModelOptions{Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer fg.Close()
	b.Logf("caption bundle %s, framegen bundle %s", capDir, fgDir)
	cfg := testGenerate()
	cfg.CaptionModel = capDir
	nc := startStage(b, cfg, fg, capt)
	publishFrames(b, nc, "bench", 1, 8)
	waitFor(b, "window", func() bool { return request(b, nc, `{"camera":"bench","kind":"frame"}`).Error == "" })
	for _, kind := range []string{KindCaption, KindFrame} {
		b.Run(kind, func(b *testing.B) {
			body := `{"camera":"bench","kind":"` + kind + `"}`
			for b.Loop() {
				if r := request(b, nc, body); r.Error != "" {
					b.Fatal(r.Error)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/generation")
		})
	}
}
