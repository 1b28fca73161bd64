package decode

import (
	"fmt"
	"runtime/debug"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"gocv.io/x/gocv"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/rtsptest"
)

// benchInputs are the bench's two model inputs: the default model's
// (scene-vit) and DEIMv2-Atto's.
var benchInputs = []struct{ size, patch int }{{96, 8}, {320, 16}}

// BenchmarkPreprocess is the worker's per-frame work on a 768×432 source
// frame (the bench clip's size): resize, BGR→RGB and tokenize.
func BenchmarkPreprocess(b *testing.B) {
	src, err := OpenSource("synthetic://?seed=1&width=768&height=432", SourceOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	raw := gocv.NewMat()
	defer raw.Close()
	if _, err := readFrame(src, &raw); err != nil {
		b.Fatal(err)
	}
	for _, in := range benchInputs {
		b.Run(fmt.Sprintf("%dx%d", in.size, in.size), func(b *testing.B) {
			d := withDefaults(config.Decode{Width: in.size, Height: in.size, PatchSize: in.patch})
			m := newMats()
			defer m.close()
			tokens := make([]byte, in.size*in.size*3)
			for b.Loop() {
				_, rgb, err := preprocess(d, raw, m)
				if err != nil {
					b.Fatal(err)
				}
				if err := frame.Tokenize(tokens, rgb, in.size, in.size, in.patch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGrab is a camera's cost per source frame of a 1080p H.264 file
// (OpenCV/FFmpeg, as many decoder threads as cores): grab only (a frame the
// sampler drops) and grab + retrieve (a kept frame: colour conversion to
// BGR and copy).
func BenchmarkGrab(b *testing.B) {
	clip := rtsptest.MakeClip(b, b.TempDir(), rtsptest.ClipOptions{Width: 1920, Height: 1080, FPS: 30, Seconds: 4, GOP: 30})
	for _, retrieve := range []bool{false, true} {
		name := "grab"
		if retrieve {
			name = "grab+retrieve"
		}
		b.Run(name, func(b *testing.B) {
			src, err := OpenSource(clip, SourceOptions{Loop: true})
			if err != nil {
				b.Fatal(err)
			}
			defer src.Close()
			img := gocv.NewMat()
			defer img.Close()
			for b.Loop() {
				if _, err := src.Grab(); err != nil {
					b.Fatal(err)
				}
				if retrieve {
					if err := src.Retrieve(&img); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkPublish is the publisher's per-frame work: trace spans, frame
// headers and the publish to an embedded server with no subscriber, through
// a loopback socket (another process's stage) and through memory (a stage
// of `patchline run`), at Go's default GOGC and at bus.GCPercent (what the
// patchline binary sets). The server's side of the copy runs concurrently.
func BenchmarkPublish(b *testing.B) {
	e, err := bus.StartEmbedded(config.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: b.TempDir()}, "", natstest.Discard())
	if err != nil {
		b.Fatal(err)
	}
	defer e.Shutdown()
	for _, conn := range []struct {
		name string
		opts []nats.Option
	}{{"socket", nil}, {"in-process", []nats.Option{e.InProcess()}}} {
		nc, err := nats.Connect(e.URL(), conn.opts...)
		if err != nil {
			b.Fatal(err)
		}
		for _, in := range benchInputs {
			for _, gc := range []int{100, bus.GCPercent} {
				b.Run(fmt.Sprintf("%s/%dx%d/gogc=%d", conn.name, in.size, in.size, gc), func(b *testing.B) {
					defer debug.SetGCPercent(debug.SetGCPercent(gc))
					benchPublish(b, nc, in.size, in.patch)
				})
			}
		}
		nc.Close()
	}
}

// benchPublish publishes frames of size×size until the benchmark ends.
func benchPublish(b *testing.B, nc *nats.Conn, size, patch int) {
	d := config.Decode{Width: size, Height: size, PatchSize: patch}
	cam, err := NewCamera(config.Camera{ID: "bench", URL: "synthetic://"}, Options{NC: nc, Decode: d})
	if err != nil {
		b.Fatal(err)
	}
	tokens := make([]byte, size*size*3)
	b.SetBytes(int64(len(tokens)))
	var seq uint64
	for b.Loop() {
		seq++
		now := time.Now()
		f := &frame.Frame{Camera: "bench", Seq: seq, CapturedAt: now, SourceW: 768, SourceH: 432,
			Width: size, Height: size, Patch: patch, Resize: frame.ResizeStretch,
			Transform: frame.Stretch(768, 432, size, size),
			Latency:   map[string]float64{"decode": 1, "tokenize": 0.1}, Tokens: tokens}
		cam.publish(&item{f: f, decStart: now, decEnd: now, tokStart: now, tokEnd: now})
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
}
