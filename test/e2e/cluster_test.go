package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/testenv"
)

// TestNATSClusterNodeLoss runs patchline on the three-server JetStream
// cluster of deploy/, started the way its systemd units start it: each
// server is patchline-nats.service's command line with deploy/nats/node.conf
// and patchline-nats.env's variables (local ports), each stage is
// patchline-stage@.service's. With nats.replicas: 3, stopping the server
// that leads the cameras bucket loses nothing: annotations keep flowing,
// a camera attached afterwards is stored and streams, and the annotation
// stream keeps its annotations.
func TestNATSClusterNodeLoss(t *testing.T) {
	natsBin, plBin := buildBinaries(t)
	root := repoRoot(t)
	natsCmd := unitExecStart(t, filepath.Join(root, "deploy/systemd/patchline-nats.service"), map[string]string{
		"/usr/bin/nats-server":     natsBin,
		"/etc/patchline/nats.conf": filepath.Join(root, "deploy/nats/node.conf"),
	})
	baseEnv := envFile(t, filepath.Join(root, "deploy/systemd/patchline-nats.env"))

	names := []string{"nats-a", "nats-b", "nats-c"}
	var clientURLs, routeURLs []string
	clientAddrs := make([]string, len(names))
	routeAddrs := make([]string, len(names))
	for i := range names {
		clientAddrs[i] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
		routeAddrs[i] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
		clientURLs = append(clientURLs, "nats://"+clientAddrs[i])
		routeURLs = append(routeURLs, "nats://"+routeAddrs[i])
	}
	servers := make([]*exec.Cmd, len(names))
	for i, name := range names {
		env := withEnv(baseEnv, map[string]string{
			"NATS_NAME": name, "NATS_LISTEN": clientAddrs[i], "NATS_STORE": t.TempDir(),
			"NATS_CLUSTER_LISTEN": routeAddrs[i],
			"NATS_ROUTE_1":        routeURLs[0], "NATS_ROUTE_2": routeURLs[1], "NATS_ROUTE_3": routeURLs[2],
		})
		servers[i], _ = startProcEnv(t, name, env, natsCmd[0], natsCmd[1:]...)
	}
	for _, a := range clientAddrs {
		waitTCP(t, a)
	}

	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	cfgPath := writeConfig(t, fmt.Sprintf(`
nats: {url: %q, replicas: 3}
http: {addr: %q}
cameras:
  - {id: cam1, url: "synthetic://?seed=21&fps=10", fps: 5}
generate: {auto: false}
`, strings.Join(clientURLs, ","), httpAddr))
	// analyze serves its metrics where its environment file says, the
	// others (but ingest) serve none.
	analyzeHTTP := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	for _, st := range []string{"ingest", "decode", "analyze", "sink", "generate"} {
		stageHTTP := ""
		if st == "analyze" {
			stageHTTP = analyzeHTTP
		}
		cmd := unitExecStart(t, filepath.Join(root, "deploy/systemd/patchline-stage@.service"), map[string]string{
			"/usr/local/bin/patchline":     plBin,
			"%i":                           st,
			"/etc/patchline/pipeline.yaml": cfgPath,
			"${PATCHLINE_STAGE_HTTP}":      stageHTTP,
		})
		startProc(t, st, cmd[0], cmd[1:]...)
	}

	nc, err := nats.Connect(strings.Join(clientURLs, ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rec1 := record(t, nc, "cam1")
	rec1.waitAnnotations(t, 10, 90*time.Second)
	if m := get(t, "http://"+analyzeHTTP+"/metrics"); !strings.Contains(m, `patchline_stage_latency_seconds_count{stage="inference"}`) {
		t.Errorf("analyze's /metrics at PATCHLINE_STAGE_HTTP lacks its inference latency:\n%s", grepLines(m, "patchline_"))
	}

	// Every bucket and the annotation stream are kept by all three servers.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	camStream := "KV_" + bus.CamerasBucket
	var leader string
	for _, stream := range []string{camStream, "KV_" + bus.DecodeBucket, "KV_" + bus.LeasesBucket, "OBJ_" + bus.GeneratedBucket, config.DefaultStream} {
		info := waitStream(t, ctx, js, stream)
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream %s: replicas %d, cluster %+v; want 3 replicas", stream, info.Config.Replicas, info.Cluster)
		}
		if stream == camStream {
			leader = info.Cluster.Leader
		}
		if stream == config.DefaultStream {
			t.Logf("%s is led by %s", stream, info.Cluster.Leader)
		}
	}

	// Kill the server that leads the cameras bucket, as a crash would.
	i := slices.Index(names, leader)
	if i < 0 {
		t.Fatalf("cameras bucket leader %q is none of %v", leader, names)
	}
	t.Logf("killing %s, the cameras bucket's leader", leader)
	if err := servers[i].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_, before, _ := rec1.snapshot()
	rec1.waitAnnotations(t, len(before)+10, 60*time.Second)

	// The registry still takes cameras: the API waits out the election of
	// a new leader for the bucket (a few seconds) instead of failing.
	rec2 := record(t, nc, "cam2")
	start := time.Now()
	if err := postCamera(httpAddr, config.Camera{ID: "cam2", URL: "synthetic://?seed=22&fps=10", FPS: 5}); err != nil {
		t.Fatalf("attach after losing %s: %v", leader, err)
	}
	t.Logf("cam2 attached %s after the kill (the request took %s)", time.Since(killed).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	rec2.waitAnnotations(t, 10, 60*time.Second)
	kv, err := js.KeyValue(ctx, bus.CamerasBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"cam1", "cam2"} {
		if _, err := kv.Get(ctx, id); err != nil {
			t.Errorf("camera %s in the bucket after the loss: %v", id, err)
		}
	}
	// The annotation stream went on keeping annotations, and keeps every
	// one delivered live across the loss (those of its own election too).
	if storedAnnotations(t, ctx, js, "cam2") == 0 {
		t.Errorf("stream %s kept no annotation of cam2 after the loss", config.DefaultStream)
	}
	_, live, _ := rec1.snapshot()
	var stored uint64
	testenv.Poll(30*time.Second, func() bool {
		stored = storedAnnotations(t, ctx, js, "cam1")
		return stored >= uint64(len(live))
	})
	if stored < uint64(len(live)) {
		t.Errorf("stream %s kept %d annotations of cam1, fewer than the %d delivered live", config.DefaultStream, stored, len(live))
	}
}

// waitStream returns a stream's info once it exists and all of its
// replicas are current.
func waitStream(t *testing.T, ctx context.Context, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	for {
		s, err := js.Stream(ctx, name)
		if err == nil {
			info, err = s.Info(ctx)
			if err == nil && info.Cluster != nil && len(info.Cluster.Replicas) == info.Config.Replicas-1 &&
				!slices.ContainsFunc(info.Cluster.Replicas, func(p *jetstream.PeerInfo) bool { return !p.Current }) {
				return info
			}
		}
		if ctx.Err() != nil {
			if info != nil {
				t.Fatalf("stream %s: %v; last: replicas %d, cluster %+v", name, err, info.Config.Replicas, info.Cluster)
			}
			t.Fatalf("stream %s: %v", name, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// unitExecStart is a systemd unit's ExecStart command line, split at
// spaces, with each key of repl replaced by its value.
func unitExecStart(t *testing.T, unit string, repl map[string]string) []string {
	t.Helper()
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		cmd, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStart=")
		if !ok {
			continue
		}
		for k, v := range repl {
			cmd = strings.ReplaceAll(cmd, k, v)
		}
		return strings.Fields(cmd)
	}
	t.Fatalf("%s has no ExecStart", unit)
	return nil
}

// envFile reads a systemd EnvironmentFile (KEY=VALUE lines, # comments).
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[k] = v
		}
	}
	return env
}

// withEnv returns base with set applied, as KEY=VALUE; every key of set
// must be in base (the example file documents every variable).
func withEnv(base, set map[string]string) []string {
	var env []string
	for k, v := range base {
		if s, ok := set[k]; ok {
			v = s
		}
		env = append(env, k+"="+v)
	}
	for k := range set {
		if _, ok := base[k]; !ok {
			panic("deploy/systemd/patchline-nats.env lacks " + k)
		}
	}
	return env
}
