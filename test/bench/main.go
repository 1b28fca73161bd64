// Command bench measures, from one run on one clip, for the default model
// (scene-vit, 96×96) and a large one (DEIMv2-Atto, 320×320), what the
// pipeline's stages cost over their bare building blocks:
//
//   - a plain OpenCV read loop vs the decode stage (decode, sample, resize,
//     tokenize, publish to NATS), frames/s;
//   - a bare ONNX Runtime loop (batches straight into the model) vs the
//     analyze stage fed through NATS with batching, frames/s.
//
// Each pair runs -reps times, interleaved; the frames/s are medians and the
// ratio is the median of each repetition's ratio (its two loops ran back to
// back, so the machine's drift hits both alike), with the range of those
// ratios. A control runs the read loop once more after each decode stage
// run: its ratio to the read loop before it is 1 but for the machine's
// noise, so its range shows how much one repetition can be trusted.
//
// It uses ../shared/assets (real footage, DEIMv2-Atto) when present, else a
// clip made with ffmpeg and vit-tiny (224×224) as the large model. Run it
// with `make bench`.
//
// To see where a decode loop's CPU goes, run one loop alone under a
// sampling profiler (BENCHMARKS.md shows the figures):
//
//	go build -o bin/bench ./test/bench
//	perf record -F 2000 -e cpu-clock -g -- bin/bench -only stage -model scene-vit
//	perf report --no-children --sort dso
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"gocv.io/x/gocv"

	"github.com/patchline/patchline/analyze"
	"github.com/patchline/patchline/decode"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
)

// reps is how many times each loop runs, interleaved (plain, stage, plain,
// stage, ...) so that drift on a shared machine hits both alike; the
// figures are the medians.
var (
	reps  = flag.Int("reps", 5, "interleaved repetitions of each measurement (medians are reported)")
	only  = flag.String("only", "", `run only this decode loop, "plain" or "stage", and no analyze loops (to profile one)`)
	model = flag.String("model", "", "measure only the model whose directory name contains this")
)

func main() {
	frames := flag.Int("frames", 0, "frames per analyze measurement; 0 = about 4 s of the bare loop, at least 400")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here")
	flag.Parse()
	if *only != "" && *only != "plain" && *only != "stage" {
		fmt.Fprintf(os.Stderr, "bench: -only %q: want plain or stage\n", *only)
		os.Exit(2)
	}
	bus.TuneGC() // as the patchline binary does
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(*frames); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// benchModel is one model the bench measures, at its input size.
type benchModel struct {
	dir         string
	w, h, patch int
}

func run(nFrames int) error {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	clip := "../shared/assets/video/people-768x432.mp4"
	models := []benchModel{{"models/scene-vit", 96, 96, 8}, {"models/deimv2-atto", 320, 320, 16}}
	if _, err := os.Stat(clip); err != nil {
		dir, _ := os.MkdirTemp("", "patchline-bench")
		defer os.RemoveAll(dir)
		clip = filepath.Join(dir, "clip.mp4")
		models[1] = benchModel{"models/vit-tiny", 224, 224, 16}
		out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=768x432:rate=10", "-t", "60",
			"-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10", "-bf", "0", clip).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ffmpeg: %v: %s", err, out)
		}
	}
	models = slices.DeleteFunc(models, func(m benchModel) bool { return !strings.Contains(filepath.Base(m.dir), *model) })
	if len(models) == 0 {
		return fmt.Errorf("-model %q matches no model", *model)
	}
	fmt.Printf("clip %s, %d cores\n", clip, runtime.NumCPU())

	emb, err := bus.StartEmbedded(config.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: os.TempDir() + "/patchline-bench-js"}, "", log)
	if err != nil {
		return err
	}
	defer emb.Shutdown()
	nc, err := nats.Connect(emb.URL(), emb.InProcess()) // as `patchline run`'s stages connect
	if err != nil {
		return err
	}
	defer nc.Close()
	for _, m := range models {
		if err := runModel(nc, clip, m, nFrames, log); err != nil {
			return fmt.Errorf("%s: %w", m.dir, err)
		}
	}
	return nil
}

// runModel measures decode and analyze at one model's input size.
func runModel(nc *nats.Conn, clip string, m benchModel, nFrames int, log *slog.Logger) error {
	fmt.Printf("\nmodel %s (%dx%d, patch %d), %d interleaved runs: median frames/s, median of the runs' ratios\n", m.dir, m.w, m.h, m.patch, *reps)
	dcfg := config.Default().Decode
	dcfg.Width, dcfg.Height, dcfg.PatchSize, dcfg.QueueSize = m.w, m.h, m.patch, 64
	var plain, again, stage, plainCPU, stageCPU []float64
	var n1, n2 int
	var toks []*frame.Frame
	for r := 0; r < *reps; r++ {
		if *only != "stage" {
			c0 := cpuTime()
			p, n, err := plainRead(clip)
			if err != nil {
				return err
			}
			plain, n1 = append(plain, p), n
			plainCPU = append(plainCPU, float64((cpuTime()-c0).Microseconds())/float64(n))
		}
		if *only != "plain" {
			c0 := cpuTime()
			st, n, kept, err := decodeStage(nc, clip, dcfg, log)
			if err != nil {
				return err
			}
			stage, n2 = append(stage, st), n
			stageCPU = append(stageCPU, float64((cpuTime()-c0).Microseconds())/float64(n))
			if toks == nil {
				toks = kept
			}
		}
		if *only == "" { // the control: the same read loop again
			p, _, err := plainRead(clip)
			if err != nil {
				return err
			}
			again = append(again, p)
		}
	}
	if *only != "stage" {
		fmt.Printf("%-44s %8.1f frames/s (%d frames), %4.0f µs CPU/frame\n", "OpenCV read loop (gocv VideoCapture)", median(plain), n1, median(plainCPU))
	}
	if *only != "plain" {
		fmt.Printf("%-44s %8.1f frames/s (%d frames), %4.0f µs CPU/frame\n", "decode stage (decode+resize+tokenize+publish)", median(stage), n2, median(stageCPU))
	}
	if *only != "" {
		return nil
	}
	printRatio("ratio decode stage / read loop", stage, plain)
	printRatio("control: read loop / read loop before it", again, plain)

	b, err := analyze.LoadBundle(m.dir)
	if err != nil {
		return err
	}
	acfg := config.Default().Analyze
	model, err := analyze.OpenModel(b, analyze.OptionsFromConfig(dcfg, acfg))
	if err != nil {
		return err
	}
	defer model.Close()
	if nFrames <= 0 { // about 4 s of the bare loop, whole batches
		fps, err := bareORT(model, toks, acfg.BatchSize, 8*acfg.BatchSize)
		if err != nil {
			return err
		}
		nFrames = max(400, int(fps*4)/acfg.BatchSize*acfg.BatchSize)
	}
	// For the record, the bare loop also runs with ONNX Runtime's own
	// default of spin-waiting threads (analyze.spin: true), which a loop
	// alone on the machine likes and a pipeline does not (config.Analyze.Spin).
	spinCfg := acfg
	spinCfg.Spin = true
	spinModel, err := analyze.OpenModel(b, analyze.OptionsFromConfig(dcfg, spinCfg))
	if err != nil {
		return err
	}
	defer spinModel.Close()
	var bare, staged, spin []float64
	for r := 0; r < *reps; r++ {
		b, err := bareORT(model, toks, acfg.BatchSize, nFrames)
		if err != nil {
			return err
		}
		st, err := analyzeStage(nc, model, acfg, toks, nFrames, log)
		if err != nil {
			return err
		}
		sp, err := bareORT(spinModel, toks, acfg.BatchSize, nFrames)
		if err != nil {
			return err
		}
		bare, staged, spin = append(bare, b), append(staged, st), append(spin, sp)
	}
	fmt.Printf("%-44s %8.1f frames/s (batch %d, %d frames)\n", "bare ONNX Runtime loop", median(bare), acfg.BatchSize, nFrames)
	fmt.Printf("%-44s %8.1f frames/s (batch ≤ %d, wait %s)\n", "analyze stage fed through NATS", median(staged), acfg.BatchSize, acfg.MaxBatchWait)
	printRatio("ratio analyze stage / bare loop", staged, bare)
	fmt.Printf("%-44s %8.1f frames/s (analyze.spin: true)\n", "bare ONNX Runtime loop, spin-waiting threads", median(spin))
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// target is the ratio each stage aims for over its bare loop (BENCHMARKS.md).
const target = 0.9

// printRatio prints the median over repetitions of a[i]/b[i], their
// range, and whether the median meets the target. The control line (the
// read loop over itself, which is 1 but for the machine's noise) has no
// target: its range says how far a single repetition's ratio can be
// trusted here.
func printRatio(name string, a, b []float64) {
	r := make([]float64, len(a))
	for i := range a {
		r[i] = a[i] / b[i]
	}
	m := median(r)
	verdict := ""
	switch {
	case strings.HasPrefix(name, "control"):
	case m >= target:
		verdict = fmt.Sprintf(", target ≥ %.1f: met", target)
	default:
		verdict = fmt.Sprintf(", target ≥ %.1f: not met", target)
	}
	fmt.Printf("%-44s %8.2f  (runs %.2f–%.2f%s)\n", name, m, slices.Min(r), slices.Max(r), verdict)
}

// cpuTime is the CPU time this process has used, all threads (FFmpeg's and
// ONNX Runtime's included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// plainRead opens and decodes the whole clip with OpenCV and nothing else
// (the open is timed, as it is in the stage).
func plainRead(clip string) (float64, int, error) {
	start := time.Now()
	vc, err := gocv.VideoCaptureFileWithAPI(clip, gocv.VideoCaptureFFmpeg)
	if err != nil {
		return 0, 0, err
	}
	defer vc.Close()
	m := gocv.NewMat()
	defer m.Close()
	n := 0
	for vc.Read(&m) && !m.Empty() {
		n++
	}
	return float64(n) / time.Since(start).Seconds(), n, nil
}

// decodeStage runs a real decode camera over the clip, unpaced, keeping
// every frame, and counts what reaches NATS. It keeps some frames' tokens
// for the analyze measurements.
func decodeStage(nc *nats.Conn, clip string, d config.Decode, log *slog.Logger) (float64, int, []*frame.Frame, error) {
	var keep []*frame.Frame
	done := make(chan struct{}, 1)
	sub, err := nc.Subscribe(bus.FrameSubject("bench"), func(m *nats.Msg) {
		if f, err := frame.Decode(m.Header, m.Data); err == nil {
			keep = append(keep, f)
		}
	})
	if err != nil {
		return 0, 0, nil, err
	}
	// Keep 64 frames' tokens, then stop listening: the count comes from the
	// camera, so the measurement does not include a subscriber's copy.
	_ = sub.AutoUnsubscribe(64)
	sub.SetPendingLimits(-1, -1)
	cam, err := decode.NewCamera(config.Camera{ID: "bench", URL: clip, FPS: 120}, decode.Options{NC: nc, Decode: d, Logger: log, NoPacing: true})
	if err != nil {
		return 0, 0, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	go func() { cam.Run(ctx); done <- struct{}{} }()
	for cam.Status().State != decode.StateEnded {
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cancel()
	<-done
	_ = nc.Flush()
	time.Sleep(200 * time.Millisecond)
	st := cam.Status()
	if st.FramesDropped > 0 {
		fmt.Printf("(decode stage dropped %d frames)\n", st.FramesDropped)
	}
	return float64(st.FramesOut) / elapsed.Seconds(), int(st.FramesOut), keep, nil
}

func bareORT(model *analyze.Model, toks []*frame.Frame, batch, n int) (float64, error) {
	in := make([]*frame.Frame, batch)
	start := time.Now()
	for done := 0; done < n; done += batch {
		for i := range in {
			in[i] = toks[(done+i)%len(toks)]
		}
		if _, err := model.Run(in); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// analyzeStage publishes n frames to the analyze stage through NATS, at most
// a queue's worth in flight so none is dropped, and times the annotations.
func analyzeStage(nc *nats.Conn, model *analyze.Model, cfg config.Analyze, toks []*frame.Frame, n int, log *slog.Logger) (float64, error) {
	st := analyze.NewStage(nc, model, cfg, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = st.Run(ctx) }()
	var got atomic.Int64
	sub, err := nc.Subscribe(bus.AnalyzedPrefix+"*", func(*nats.Msg) { got.Add(1) })
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	_ = nc.Flush()
	time.Sleep(200 * time.Millisecond)
	window := int64(cfg.QueueSize * 3 / 4)
	start := time.Now()
	for i := 0; i < n; i++ {
		for int64(i)-got.Load() >= window {
			time.Sleep(200 * time.Microsecond)
		}
		f := *toks[i%len(toks)]
		f.Seq, f.PublishedAt = uint64(i+1), time.Now()
		if err := nc.PublishMsg(f.Encode(bus.FrameSubject(f.Camera))); err != nil {
			return 0, err
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for got.Load() < int64(n) {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("analyze stage produced %d of %d annotations", got.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
