package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/internal/rtsptest"
	"github.com/patchline/patchline/internal/testenv"
)

// BenchmarkCameras measures what cameras cost a `patchline run` process,
// for sizing a machine: n RTSP cameras (720p H.264 at 25 fps, a keyframe
// every 2 s, each published by its own ffmpeg to a real RTSP server) sampled
// at 5 frames/s into the default model, scene-vit. Generation is off: its
// cost depends on its triggers, and its own benchmarks measure it.
//
// After every camera's first annotation and a 5 s warm-up, it reads the
// process's CPU time and memory from /proc over a 20 s window:
//
//	cores         CPU time / wall time (every thread: FFmpeg's, Go's, ORT's)
//	MiB-RSS       resident memory at the end of the window
//	MiB-peak      the most resident memory the process ever had (VmHWM)
//	threads       OS threads
//	annotated     annotations received / frames due (n × 5/s): under 1,
//	              the machine did not keep up and frames were dropped
//	MiB-detached  resident memory 10 s after every camera was detached
//
// Run: go test -run XXX -bench Cameras -benchtime 1x ./test/e2e/ (part of
// make bench). The ffmpeg publishers and the RTSP server are outside the
// measured process but on the same machine.
func BenchmarkCameras(b *testing.B) {
	rtsptest.RequireFFmpeg(b)
	_, bin := buildBinaries(b)
	clip := rtsptest.MakeClip(b, b.TempDir(), rtsptest.ClipOptions{Width: 1280, Height: 720, FPS: 25, GOP: 50, Seconds: 20})
	for _, n := range []int{1, 4, 8, 16} {
		b.Run(fmt.Sprintf("cameras=%d", n), func(b *testing.B) { benchCameras(b, bin, clip, n) })
	}
}

const (
	scaleFPS    = 5
	scaleWindow = 20 * time.Second
)

func benchCameras(b *testing.B, bin, clip string, n int) {
	ctx := b.Context()
	srv := rtsptest.Start(b)
	var cams strings.Builder
	for i := range n {
		path := fmt.Sprintf("cam%d", i)
		rtsptest.Publish(b, ctx, clip, srv.URL(path))
		fmt.Fprintf(&cams, "  - {id: %s, url: %q, fps: %d}\n", path, srv.URL(path), scaleFPS)
	}
	natsPort, httpAddr := testenv.FreePort(b, "127.0.0.1"), fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b, "127.0.0.1"))
	cfg := fmt.Sprintf(`nats: {embedded: {port: %d, store_dir: %q}}
http: {addr: %q}
generate: {caption_model: "", framegen_model: ""}
cameras:
%s`, natsPort, b.TempDir(), httpAddr, cams.String())
	cmd, _ := startProcEnv(b, "patchline", nil, bin, "run", "-c", writeConfig(b, cfg))
	waitTCP(b, fmt.Sprintf("127.0.0.1:%d", natsPort))
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	counts := map[string]int{}
	sub, err := nc.Subscribe("patchline.annotations.*", func(m *nats.Msg) {
		mu.Lock()
		counts[strings.TrimPrefix(m.Subject, "patchline.annotations.")]++
		mu.Unlock()
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	total := func() (sum, cameras int) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range counts {
			sum += c
		}
		return sum, len(counts)
	}
	waitUntil(b, "an annotation from every camera", func() bool { _, c := total(); return c == n })
	time.Sleep(5 * time.Second)

	b.ResetTimer()
	for range b.N {
		cpu0, t0 := procCPU(b, cmd.Process.Pid), time.Now()
		ann0, _ := total()
		time.Sleep(scaleWindow)
		cpu1, t1 := procCPU(b, cmd.Process.Pid), time.Now()
		ann1, _ := total()
		st := procStatus(b, cmd.Process.Pid)
		wall := t1.Sub(t0)
		b.ReportMetric((cpu1-cpu0).Seconds()/wall.Seconds(), "cores")
		b.ReportMetric(float64(st["VmRSS"])/1024, "MiB-RSS")
		b.ReportMetric(float64(st["VmHWM"])/1024, "MiB-peak")
		b.ReportMetric(float64(st["Threads"]), "threads")
		b.ReportMetric(float64(ann1-ann0)/(wall.Seconds()*float64(n*scaleFPS)), "annotated")
	}
	b.StopTimer()
	// Every camera detached: what the process gives back.
	for i := range n {
		req, _ := http.NewRequest(http.MethodDelete, fmt.Sprintf("http://%s/v1/cameras/cam%d", httpAddr, i), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			b.Fatalf("detach cam%d: %s", i, resp.Status)
		}
	}
	time.Sleep(10 * time.Second)
	b.ReportMetric(float64(procStatus(b, cmd.Process.Pid)["VmRSS"])/1024, "MiB-detached")
}

// procCPU is the user + system CPU time of process pid, every thread.
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces), from field 3.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	const clkTck = 100                          // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clkTck
}

// procStatus reads the numeric fields of /proc/pid/status (kB for memory).
func procStatus(t testing.TB, pid int) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if f := strings.Fields(v); ok && len(f) > 0 {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				out[k] = n
			}
		}
	}
	return out
}
