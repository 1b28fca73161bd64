package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/lease"
	"github.com/patchline/patchline/internal/testenv"
)

// buildBinaries builds the real nats-server (from the module) and
// patchline, once for the package's tests (TestMain removes them).
func buildBinaries(t testing.TB) (natsServer, patchline string) {
	t.Helper()
	root := repoRoot(t) // not in Do: a failure there would leave it done, with nothing built
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "patchline-e2e-bin-"); built.err != nil {
			return
		}
		for _, pkg := range []string{"github.com/nats-io/nats-server/v2", "./cmd/patchline"} {
			cmd := exec.Command("go", "build", "-o", built.dir, pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				built.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return filepath.Join(built.dir, "nats-server"), filepath.Join(built.dir, "patchline")
}

// built is what buildBinaries built.
var built struct {
	once sync.Once
	dir  string
	err  error
}

// startProc runs a process until the test ends (or stop is called); its
// output goes to a log file printed when the test fails.
func startProc(t testing.TB, name string, bin string, args ...string) (stop func()) {
	t.Helper()
	_, stop = startProcEnv(t, name, nil, bin, args...)
	return stop
}

// startProcEnv is startProc with env (KEY=VALUE) added to the environment;
// it also returns the process.
func startProcEnv(t testing.TB, name string, env []string, bin string, args ...string) (cmd *exec.Cmd, stop func()) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(bin, args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { stopProc(t, name, cmd, logf, logPath) }) }
	t.Cleanup(stop)
	return cmd, stop
}

func stopProc(t testing.TB, name string, cmd *exec.Cmd, logf *os.File, logPath string) {
	// Still running when asked to stop, and stopped in time: it says so.
	graceful := cmd.Process.Signal(os.Interrupt) == nil
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		graceful = false
		_ = cmd.Process.Kill()
		<-done
	}
	logf.Close()
	b, _ := os.ReadFile(logPath)
	if graceful && strings.HasPrefix(filepath.Base(cmd.Path), "patchline") && !strings.Contains(string(b), "msg=stopped") {
		t.Errorf("%s stopped on SIGINT without logging that it did", name)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k := repeatedLogKey(line); k != "" {
			t.Errorf("%s logs %q twice in: %s", name, k, line)
			break
		}
	}
	if t.Failed() {
		t.Logf("---- %s log ----\n%s", name, tail(string(b), 3000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// The distributed system, unfolded: a separate nats-server process and one
// process per stage, with two analyze replicas splitting the frames and two
// decode replicas splitting the cameras; a durable webhook goes on
// delivering after the server restarts.
func TestMultiProcessTwoAnalyzeReplicas(t *testing.T) {
	var hookHits atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hookHits.Add(1) }))
	defer hook.Close()
	natsBin, plBin := buildBinaries(t)
	port := testenv.FreePort(t, "127.0.0.1")
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	store := t.TempDir()
	natsArgs := []string{"-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", store}
	stopNATS := startProc(t, "nats-server", natsBin, natsArgs...)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))

	cfgPath := writeConfig(t, fmt.Sprintf(`
nats: {url: %q}
http: {addr: "127.0.0.1:%d"}
cameras:
  - {id: cam1, url: "synthetic://?seed=11&fps=10", fps: 10}
  - {id: cam2, url: "synthetic://?seed=12&fps=10", fps: 10}
decode: {width: 224, height: 224, patch_size: 16}
analyze: {model: %q, batch_size: 4, max_batch_wait: 10ms}
sink:
  webhooks: [{url: %q, cameras: [cam1], delivery: durable}]
`, url, testenv.FreePort(t, "127.0.0.1"), filepath.Join(repoRoot(t), "models", "vit-tiny"), hook.URL))
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rec1, rec2 := record(t, nc, "cam1"), record(t, nc, "cam2")
	for _, st := range []string{"analyze", "analyze", "sink", "ingest", "decode", "decode"} {
		startProc(t, st, plBin, "stage", st, "-c", cfgPath, "--nats", url)
	}
	rec1.waitAnnotations(t, 60, 90*time.Second)
	rec2.waitAnnotations(t, 60, 90*time.Second)

	replicas := map[string]int{}
	for _, rec := range []*recorder{rec1, rec2} {
		frames, anns, _ := rec.snapshot()
		for i := 1; i < len(frames); i++ {
			if frames[i] <= frames[i-1] {
				t.Errorf("%s: frame seq %d came after %d: two decoders at once?", anns[0].Camera, frames[i], frames[i-1])
				break
			}
		}
		seen := map[uint64]int{}
		for _, a := range anns {
			seen[a.Seq]++
			replicas[a.AnalyzedBy]++
		}
		for seq, n := range seen {
			if n != 1 {
				t.Errorf("%s seq %d analyzed %d times, want once", anns[0].Camera, seq, n)
			}
		}
		// Between the first and last frames analyzed (two replicas: not
		// in order): frames published while analyze was still loading its
		// model went to no replica.
		first, last := anns[0].Seq, anns[0].Seq
		for _, a := range anns {
			first, last = min(first, a.Seq), max(last, a.Seq)
		}
		missing, between := 0, 0
		for _, seq := range frames {
			if seq > first && seq < last {
				between++
				if seen[seq] == 0 {
					missing++
				}
			}
		}
		if missing > between/10 {
			t.Errorf("%s: %d of %d frames never analyzed", anns[0].Camera, missing, between)
		}
	}
	if len(replicas) != 2 {
		t.Errorf("annotations came from %d analyze replicas (%v), want 2", len(replicas), replicas)
	}
	t.Logf("work split across replicas: %v", replicas)

	// The two decode replicas took one camera each.
	waitSplitLeases(t, nc, bus.LeasesBucket)

	// A NATS restart: every stage reconnects by itself and annotations flow again.
	stopNATS()
	time.Sleep(time.Second)
	startProc(t, "nats-server-restarted", natsBin, natsArgs...)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
	_, before1, _ := rec1.snapshot()
	_, before2, _ := rec2.snapshot()
	hitsBefore := hookHits.Load()
	rec1.waitAnnotations(t, len(before1)+30, 60*time.Second)
	rec2.waitAnnotations(t, len(before2)+30, 60*time.Second)
	testenv.WaitFor(t, "webhook deliveries after the restart", 30*time.Second, func() bool { return hookHits.Load() >= hitsBefore+20 })
	if hitsBefore == 0 {
		t.Error("the webhook got nothing before the restart")
	}
}

// waitSplitLeases waits until the leases of cam1 and cam2 in bucket are
// held by two different replicas.
func waitSplitLeases(t *testing.T, nc *nats.Conn, bucket string) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var leases jetstream.KeyValue
	owners := map[string]string{}
	split := testenv.Poll(30*time.Second, func() bool {
		if leases == nil {
			if leases, _ = js.KeyValue(context.Background(), bucket); leases == nil {
				return false
			}
		}
		for _, cam := range []string{"cam1", "cam2"} {
			if e, err := leases.Get(context.Background(), lease.KeyPrefix+cam); err == nil {
				owners[cam] = string(e.Value())
			}
		}
		return owners["cam1"] != "" && owners["cam2"] != "" && owners["cam1"] != owners["cam2"]
	})
	if !split {
		t.Fatalf("%s: leases %v, want cam1 and cam2 held by different replicas", bucket, owners)
	}
	t.Logf("%s: %v", bucket, owners)
}

// repeatedLogKey returns a key that a patchline log line (slog's text
// format: key=value, values with spaces quoted) carries more than once.
func repeatedLogKey(line string) string {
	if !strings.HasPrefix(line, "time=") {
		return "" // not patchline's (nats-server, ffmpeg)
	}
	seen := map[string]bool{}
	for rest := line; rest != ""; {
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			break
		}
		key := rest[:eq]
		if seen[key] {
			return key
		}
		seen[key] = true
		rest = rest[eq+1:]
		if strings.HasPrefix(rest, `"`) { // a quoted value: skip to its closing quote
			if n, err := strconv.QuotedPrefix(rest); err == nil {
				rest = rest[len(n):]
			}
		}
		if sp := strings.IndexByte(rest, ' '); sp >= 0 {
			rest = rest[sp+1:]
		} else {
			rest = ""
		}
	}
	return ""
}

func TestRepeatedLogKey(t *testing.T) {
	for line, want := range map[string]string{
		`time=2026-11-29T14:50:28Z level=INFO msg="analyze ready" stage=analyze model=scene-vit`:               "",
		`time=2026-11-29T14:50:28Z level=INFO msg="analyze ready" stage=analyze stage=analyze model=scene-vit`: "stage",
		`time=2026-11-29T14:50:28Z level=WARN msg="x stage=y" stage=decode err="a \"q\" b=c"`:                  "",
		`[1234] 2026/11/29 14:50:28 [INF] Server is ready`:                                                     "",
	} {
		if got := repeatedLogKey(line); got != want {
			t.Errorf("repeatedLogKey(%s) = %q, want %q", line, got, want)
		}
	}
}

func waitTCP(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not listening within 20s", addr)
}
