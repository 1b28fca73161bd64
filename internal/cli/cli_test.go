package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/ingest"
	"github.com/patchline/patchline/internal/app"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := execute(context.Background(), &out, args...)
	return out.String(), err
}

// execute runs the command line args until ctx is done, writing its output
// and errors to out.
func execute(ctx context.Context, out io.Writer, args ...string) error {
	root := newRoot()
	root.SetOut(out)
	root.SetErr(out)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

func TestValidateShippedConfig(t *testing.T) {
	t.Chdir("../..") // the models' paths are relative to the repository
	out, err := run(t, "validate", "-c", "pipeline.yaml")
	if err != nil || !strings.Contains(out, "ok (1 camera, model models/scene-vit, caption models/caption, framegen models/framegen; models open and match decode)") {
		t.Fatalf("validate pipeline.yaml: %v\n%s", err, out)
	}
}

// TestValidateOpensModels: validate fails where run would for the models:
// a missing bundle, an analyze or generate model that does not take the
// frames decode makes; --no-models checks the file alone.
func TestValidateOpensModels(t *testing.T) {
	t.Chdir("../..")
	vit := "analyze: {model: models/vit-tiny}\ndecode: {width: 224, height: 224, patch_size: 16}\n"
	for name, c := range map[string]struct{ yaml, want string }{
		"no bundle":      {"analyze: {model: models/nosuch}\n", "bundle models/nosuch: not a directory"},
		"analyze shape":  {"analyze: {model: models/vit-tiny}\n", "decode config does not match model bundle vit-tiny"},
		"generate shape": {vit, `generate.framegen_model models/framegen takes 96x96 frames`},
		"no generate":    {vit + "generate: {caption_model: \"\", framegen_model: \"\"}\n", ""},
	} {
		p := filepath.Join(t.TempDir(), "p.yaml")
		if err := os.WriteFile(p, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, "validate", "-c", p)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want it to contain %q", name, err, c.want)
		}
		if c.want != "" {
			if _, err := run(t, "validate", "--no-models", "-c", p); err != nil {
				t.Errorf("%s: validate --no-models: %v", name, err)
			}
		}
	}
}

func TestValidateReportsBadFiles(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct{ yaml, want string }{
		"invalid yaml": {"decode: [\n", "bad.yaml:"},
		"unknown key":  {"analyze:\n  batch_sise: 4\n", `bad.yaml:2: analyze.batch_sise: unknown key`},
		"bad scheme":   {"cameras:\n  - id: a\n    url: htp://x\n", `unknown scheme "htp"`},
	} {
		p := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(p, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, "validate", "-c", p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want it to contain %q", name, err, c.want)
		}
	}
}

func TestReplicasNeedACluster(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(p, []byte("nats:\n  replicas: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "run", "-c", p)
	if err == nil || !strings.Contains(err.Error(), "nats.replicas is 3, but the embedded server is a single node") {
		t.Fatalf("run with replicas 3 on the embedded server: %v", err)
	}
	// validate cannot know whether --nats will be given: it warns.
	out, err := run(t, "validate", "--no-models", "-c", p)
	if err != nil || !strings.Contains(out, "warning: nats.replicas is 3 with no nats.url") {
		t.Errorf("validate with replicas 3 and no nats.url: %v\n%s", err, out)
	}
}

func TestUnknownStage(t *testing.T) {
	_, err := run(t, "stage", "bogus")
	if err == nil || !strings.Contains(err.Error(), `unknown stage "bogus": want one of ingest, decode, analyze, sink, generate`) {
		t.Errorf("stage bogus: %v", err)
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range []string{"run", "stage", "attach", "detach", "cameras", "watch", "validate", "version"} {
		out, err := run(t, c, "--help")
		if err != nil || !strings.Contains(out, "Usage:") {
			t.Errorf("%s --help: %v\n%s", c, err, out)
		}
	}
	if _, err := run(t, "cameras", "--api", "http://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "is `patchline run` running?") {
		t.Errorf("cameras without a pipeline: %v", err)
	}
}

// TestAPIClientErrors: the camera commands say what to do about a 401, and
// refuse an answer that is not patchline's (--api pointed at another
// server that says 200 to anything).
func TestAPIClientErrors(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html>hello</html>"))
	}))
	defer other.Close()
	locked := httptest.NewServer(ingest.RequireToken("s3cret", http.NotFoundHandler()))
	defer locked.Close()

	t.Setenv(tokenEnv, "")
	for _, args := range [][]string{
		{"attach", "cam1", "synthetic://", "--api", other.URL},
		{"detach", "cam1", "--api", other.URL},
		{"cameras", "--api", other.URL},
	} {
		if _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "is --api a patchline server?") {
			t.Errorf("%v against another server: %v, want it refused", args, err)
		}
	}
	if _, err := run(t, "cameras", "--api", locked.URL); err == nil || !strings.Contains(err.Error(), "(set $PATCHLINE_HTTP_TOKEN to the server's http.token)") {
		t.Errorf("cameras without a token: %v", err)
	}
	t.Setenv(tokenEnv, "wrong")
	if _, err := run(t, "cameras", "--api", locked.URL); err == nil || !strings.Contains(err.Error(), "($PATCHLINE_HTTP_TOKEN is not the server's http.token)") {
		t.Errorf("cameras with a wrong token: %v", err)
	}
}

// TestNATSTokenHint: watch and describe against a server that wants a
// token name the variable that sends it.
func TestNATSTokenHint(t *testing.T) {
	e, err := bus.StartEmbedded(config.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir()}, "s3cret", natstest.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	for env, want := range map[string]string{
		"":      "(set $PATCHLINE_NATS_TOKEN to the server's nats.token)",
		"wrong": "($PATCHLINE_NATS_TOKEN is not the server's nats.token)",
	} {
		t.Setenv(natsTokenEnv, env)
		for _, args := range [][]string{{"watch", "--nats", e.URL()}, {"describe", "cam1", "--nats", e.URL()}} {
			if _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%v with $%s=%q: %v, want it to say %q", args, natsTokenEnv, env, err, want)
			}
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "patchline ") || !strings.Contains(out, "OpenCV 4.") || !strings.Contains(out, "ONNX Runtime 1.24.3") {
		t.Errorf("version: %v %q", err, out)
	}
}

// TestPrintWhere: the start-up banner's commands are the binary as invoked.
func TestPrintWhere(t *testing.T) {
	var b bytes.Buffer
	printWhere(&b, "bin/patchline", app.Info{NATSURL: "nats://127.0.0.1:4222", HTTPAddr: "127.0.0.1:8080", Embedded: true, Stages: []string{"ingest"}})
	for _, want := range []string{
		"NATS          nats://127.0.0.1:4222 (embedded)",
		"web console   http://127.0.0.1:8080/",
		"watch it:     bin/patchline watch --nats nats://127.0.0.1:4222\n",
		"cameras:      bin/patchline cameras --api http://127.0.0.1:8080\n",
		"describe:     bin/patchline describe <camera> --nats nats://127.0.0.1:4222\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}
	// Listening everywhere, it shows where a browser and the CLI here reach it.
	b.Reset()
	printWhere(&b, "bin/patchline", app.Info{NATSURL: "nats://0.0.0.0:4222", HTTPAddr: "[::]:8080", Embedded: true, Stages: []string{"ingest"}})
	for _, want := range []string{"NATS          nats://127.0.0.1:4222 (embedded)", "web console   http://127.0.0.1:8080/", "--api http://127.0.0.1:8080\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner of a server listening everywhere lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printWhere(&b, "patchline", app.Info{NATSURL: "nats://u:pw@10.0.0.1:4222", Stages: []string{"sink"}})
	if s := b.String(); strings.Contains(s, "http://") || strings.Contains(s, "pw") || !strings.Contains(s, "HTTP          off") {
		t.Errorf("banner with HTTP off or a NATS password:\n%s", s)
	}
}

// TestCLIHidesCredentials: what the camera and NATS commands print names
// the server without the password or token in its URL.
func TestCLIHidesCredentials(t *testing.T) {
	for _, args := range [][]string{
		{"watch", "--nats", "nats://u:NATSPW1@127.0.0.1:1"},
		{"describe", "cam1", "--nats", "nats://TOKENPW3@127.0.0.1:1"},
		{"cameras", "--api", "http://u:APIPW@127.0.0.1:1"},
		{"detach", "cam1", "--api", "http://u:APIPW@127.0.0.1:1"},
	} {
		out, err := run(t, args...)
		if err == nil {
			t.Errorf("%v: no error with nothing listening", args)
			continue
		}
		if text := out + err.Error(); strings.Contains(text, "PW") {
			t.Errorf("%v shows the credentials: %s", args, text)
		}
	}
}

// TestCameraIDsAreChecked: a camera id that could change the request or
// the subject (detach 'a?b' would detach a; watch '>' every camera's
// subjects and more) is refused before anything is sent, as is an --api
// that is not an http URL.
func TestCameraIDsAreChecked(t *testing.T) {
	var hits []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits = append(hits, r.URL.Path)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	for _, id := range []string{"r19?typo", "x#y", "a/b", "%41", ">", "a b", ".a", "a."} {
		if _, err := run(t, "detach", id, "--api", srv.URL); err == nil || !strings.Contains(err.Error(), "camera id") {
			t.Errorf("detach %q: %v, want the id refused", id, err)
		}
	}
	if len(hits) != 0 {
		t.Errorf("requests sent for bad ids: %v", hits)
	}
	// A registry key that is no camera id (an entry put by hand, which
	// the log says to remove with detach) can be detached.
	if _, err := run(t, "detach", "old.entry", "--api", srv.URL); err != nil || !slices.Equal(hits, []string{"/v1/cameras/old.entry"}) {
		t.Errorf("detach old.entry: %v, requests %v", err, hits)
	}
	for _, id := range []string{">", "a.b", "a b"} {
		if _, err := run(t, "watch", id, "--nats", "nats://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "camera id") {
			t.Errorf("watch %q: %v, want the id refused", id, err)
		}
	}
	for _, api := range []string{"127.0.0.1:8080", "bogus"} {
		if _, err := run(t, "cameras", "--api", api); err == nil || !strings.Contains(err.Error(), "want the patchline HTTP API's URL") {
			t.Errorf("cameras --api %s: %v", api, err)
		}
	}
}

// TestClientDefaults: attach sends a relative file path as an absolute one
// (the server would resolve it against its own directory), and the client
// commands find the server where $PATCHLINE_HTTP_ADDR and
// $PATCHLINE_NATS_URL, which set http.addr and nats.url, put it.
func TestClientDefaults(t *testing.T) {
	var got struct{ ID, URL string }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&got)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(got)
	}))
	defer srv.Close()
	t.Chdir(t.TempDir())
	wd, _ := os.Getwd()
	t.Setenv("PATCHLINE_HTTP_ADDR", "0.0.0.0:"+srv.URL[strings.LastIndex(srv.URL, ":")+1:])
	out, err := run(t, "attach", "clip", "videos/a.mp4")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "videos/a.mp4"); got.URL != want || !strings.Contains(out, want) {
		t.Errorf("attach of a relative path sent %q (%q), want %q", got.URL, out, want)
	}
	// A server elsewhere gets the path as given: it resolves it in its
	// own directory, where this one means nothing.
	for api, local := range map[string]bool{"http://127.0.0.1:8080": true, "http://localhost:8080": true, "http://[::1]:8080": true, "http://192.0.2.1:1": false, "https://cams.example": false,
		"http://[::]:8080": true, "http://0.0.0.0:8080": true, "http://LOCALHOST:8080": true, "http://localhost.:8080": true, "http://[::1%25lo]:8080": true, "http://[::ffff:127.0.0.1]:8080": true, "http://localhost.example:1": false} {
		if isLoopback(api) != local {
			t.Errorf("isLoopback(%s) = %v", api, !local)
		}
	}
	if _, err := run(t, "attach", "c3", "cam:554/s"); err == nil {
		t.Error("attach of a mistyped URL (cam:554/s) was sent as a file path")
	}
	for _, u := range []string{"rtsp://h/s", "synthetic://?seed=2", "/abs/b.mp4"} {
		if _, err := run(t, "attach", "c2", u); err != nil || got.URL != u {
			t.Errorf("attach %s sent %q (%v), want it as it is", u, got.URL, err)
		}
	}
	t.Setenv("PATCHLINE_NATS_URL", "nats://127.0.0.1:1")
	if _, err := run(t, "watch"); err == nil || !strings.Contains(err.Error(), "nats://127.0.0.1:1") {
		t.Errorf("watch with $PATCHLINE_NATS_URL: %v, want it to connect there", err)
	}
}

// TestLogSettings: the log section of the config (or its PATCHLINE_LOG_*
// variables) sets the stage logger's level and format; the flags override
// it; a bad value is an error naming the choices.
func TestLogSettings(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(cfgPath, []byte("cameras: []\nlog:\n  level: debug\n  format: json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logged := func(g *globals) string {
		t.Helper()
		var buf bytes.Buffer
		g.logTo = &buf
		log, _, err := g.setup(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		log.Debug("hello", "camera", "cam1", "max_wait", 20*time.Millisecond)
		return buf.String()
	}
	if got := logged(&globals{}); !strings.HasPrefix(got, `{"time":`) || !strings.Contains(got, `"level":"DEBUG","msg":"hello","camera":"cam1","max_wait":"20ms"`) {
		t.Errorf("log.level debug, log.format json: %q", got)
	}
	if got := logged(&globals{logFormat: "text"}); !strings.Contains(got, "level=DEBUG msg=hello camera=cam1 max_wait=20ms") {
		t.Errorf("--log-format text over the config's json: %q", got)
	}
	if got := logged(&globals{logLevel: "info"}); got != "" {
		t.Errorf("--log-level info over the config's debug logged a debug line: %q", got)
	}
	t.Setenv("PATCHLINE_LOG_LEVEL", "error")
	if got := logged(&globals{}); got != "" {
		t.Errorf("PATCHLINE_LOG_LEVEL=error logged a debug line: %q", got)
	}
	if _, _, err := (&globals{logLevel: "loud", logTo: io.Discard}).setup(cfgPath); err == nil || !strings.Contains(err.Error(), "debug, info, warn, error") {
		t.Errorf("--log-level loud: %v", err)
	}
}

// TestStopWhileWaitingForNATS: a stage stopped (Ctrl-C) while it still
// waits for its NATS server exits cleanly, not with "context canceled" as
// if it had failed.
func TestStopWhileWaitingForNATS(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(cfg, []byte("cameras: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, stage := range []string{"ingest", "decode", "sink"} {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		if err := execute(ctx, io.Discard, "stage", stage, "-c", cfg, "--nats", "nats://127.0.0.1:1", "--http", "off", "--log-level", "error"); err != nil {
			t.Errorf("stage %s stopped while waiting for NATS: %v", stage, err)
		}
		cancel()
	}
}

// TestUsageErrors: a command used wrongly (arguments, flags, a config file
// without -c) exits 2 and says so, apart from a command that failed (1).
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"attach", "cam1"}, {"run", "my.yaml"}, {"version", "--log-level=loud"},
		{"cameras", "--bogus"}, {"bogus"}, {"stage", "bogus"},
		// Bad values of arguments and flags.
		{"watch", "--since", "garbage"}, {"watch", "a.b"}, {"describe", "cam1", "--timeout", "-1s"},
		{"cameras", "--api", "localhost:8080"}, {"attach", "cam1", "synthetic://", "--fps", "-5"}, {"detach", "a?b"},
		{"describe", "a.>"}, {"describe", "cam1", "--timeout", "10m"}, {"cameras", "extra"},
	} {
		if code := Main(args); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if _, err := run(t, "version", "extra"); err == nil || !strings.Contains(err.Error(), `takes no arguments, got "extra"`) {
		t.Errorf("version extra: %v, want it to say version takes no arguments", err)
	}
	if _, err := run(t, "validate", "my.yaml"); err == nil || !strings.Contains(err.Error(), "patchline validate -c my.yaml") {
		t.Errorf("validate my.yaml: %v, want a hint to use -c", err)
	}
	if code := Main([]string{"cameras", "--api", "http://127.0.0.1:1"}); code != 1 {
		t.Errorf("cameras with nothing listening: exit %d, want 1", code)
	}
}

// TestHealthWhileWaitingForNATS: a stage waiting for its NATS server
// already serves /healthz (200: alive) and /readyz (503: not ready), and
// ingest's API, WHIP and console routes 503 (not 404).
func TestHealthWhileWaitingForNATS(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(cfg, []byte("cameras: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- execute(ctx, io.Discard, "stage", "ingest", "-c", cfg, "--nats", "nats://127.0.0.1:1", "--http", addr, "--log-level", "error")
	}()
	code := func(path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	testenv.WaitFor(t, "/healthz 200 while waiting for NATS", 10*time.Second, func() bool { return code("/healthz") == http.StatusOK })
	for _, path := range []string{"/readyz", "/v1/cameras", "/whip/cam1", "/"} {
		if c := code(path); c != http.StatusServiceUnavailable {
			t.Errorf("%s = %d while waiting for NATS, want 503", path, c)
		}
	}
	if _, err := run(t, "cameras", "--api", "http://"+addr); err == nil || !strings.Contains(err.Error(), "waits for NATS") {
		t.Errorf("cameras while ingest waits for NATS: %v, want it to say so", err)
	}
	// A browser opening the console gets a page saying so, which reloads.
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(page), "waits for NATS") || !strings.Contains(string(page), `http-equiv="refresh"`) {
		t.Errorf("the console in a browser while waiting for NATS: %d %q\n%s\nwant 503, an HTML page that says so and reloads", resp.StatusCode, resp.Header.Get("Content-Type"), page)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestStageStopsWhenItsStreamIsGone: a stage against an external server
// that lost its JetStream data (here: the annotation stream deleted under
// a running sink) stops with an error saying so, for its supervisor to
// restart it, instead of failing every call forever; its log's stopping
// line says why.
func TestStageStopsWhenItsStreamIsGone(t *testing.T) {
	old := app.StreamCheckEvery
	app.StreamCheckEvery = 200 * time.Millisecond
	defer func() { app.StreamCheckEvery = old }()
	url := natstest.Start(t)
	cfg := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(cfg, []byte("cameras: []\nsink:\n  stream:\n    name: GONE_ANNOTATIONS\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var logs testenv.Buffer
	go func() {
		done <- execute(context.Background(), &logs, "stage", "sink", "-c", cfg, "--nats", url)
	}()
	nc := natstest.Connect(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the stream made by the sink", 10*time.Second, func() bool {
		_, err := js.Stream(context.Background(), "GONE_ANNOTATIONS")
		return err == nil
	})
	time.Sleep(500 * time.Millisecond) // watched a while with the stream there
	select {
	case err := <-done:
		t.Fatalf("the sink stopped with its stream there: %v", err)
	default:
	}
	if err := js.DeleteStream(context.Background(), "GONE_ANNOTATIONS"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "JetStream stream GONE_ANNOTATIONS is gone") {
			t.Errorf("the sink stopped with %v, want the stream named as gone", err)
		}
		if !regexp.MustCompile(`msg=stopping .*why=".*JetStream stream GONE_ANNOTATIONS is gone`).MatchString(logs.String()) {
			t.Errorf("the stopping line does not say why:\n%s", logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sink ran on 10 s after its stream was deleted")
	}
}

// TestAPIURL: ids are one escaped segment each under the --api URL, with
// or without a path or trailing slash; a query in --api is refused (a
// token belongs in $PATCHLINE_HTTP_TOKEN).
func TestAPIURL(t *testing.T) {
	for _, c := range []struct{ api, want string }{
		{"http://h:8080", "http://h:8080/v1/cameras/a%20b"},
		{"http://h:8080/", "http://h:8080/v1/cameras/a%20b"},
		{"https://h/patchline/", "https://h/patchline/v1/cameras/a%20b"},
	} {
		if got, err := apiURL(c.api, "/v1/cameras", "a b"); err != nil || got != c.want {
			t.Errorf("apiURL(%q) = %q, %v; want %q", c.api, got, err, c.want)
		}
	}
	if _, err := apiURL("http://h/?token=S3CRET", "/v1/cameras"); err == nil || strings.Contains(err.Error(), "S3CRET") {
		t.Errorf("--api with a query: %v, want it refused without the token", err)
	}
}

// TestAPIErrorHidesTheToken: a token given as the --api URL's user name
// is not in the error of a call that cannot connect (Go's own error quotes
// the URL, hiding only a password).
func TestAPIErrorHidesTheToken(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	for _, api := range []string{"http://s3cret@" + addr, "http://user:s3cret@" + addr} {
		_, err := run(t, "cameras", "--api", api)
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("cameras --api %s: %v, want an error without the token", api, err)
		}
	}
}

// TestAPIDefaultFromAddr: --api's default from $PATCHLINE_HTTP_ADDR is a
// URL that parses, for every form http.addr takes.
func TestAPIDefaultFromAddr(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:8080":    "http://127.0.0.1:8080",
		":9000":             "http://127.0.0.1:9000",
		"[::]:9000":         "http://127.0.0.1:9000",
		"[::1]:9000":        "http://[::1]:9000",
		"[fe80::1%lo]:9000": "http://[fe80::1%25lo]:9000",
		"nonsense":          defaultAPI,
	} {
		t.Setenv("PATCHLINE_HTTP_ADDR", addr)
		got := apiDefault()
		if got != want {
			t.Errorf("apiDefault with %q = %q, want %q", addr, got, want)
		}
		if _, err := apiURL(got, "/v1/cameras"); err != nil {
			t.Errorf("apiDefault with %q = %q: %v", addr, got, err)
		}
	}
}

// TestMainLeavesNoSignalHandler: Main returning leaves no goroutine
// watching for signals behind it, which would outlive it: a later signal
// would then exit the process as if a stop were under way.
func TestMainLeavesNoSignalHandler(t *testing.T) {
	Main([]string{"version"})
	before := runtime.NumGoroutine()
	for range 5 {
		Main([]string{"version"})
	}
	time.Sleep(50 * time.Millisecond)
	if after := runtime.NumGoroutine(); after > before+1 {
		t.Errorf("goroutines went from %d to %d over 5 calls of Main", before, after)
	}
}
