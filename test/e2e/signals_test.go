package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/patchline/patchline/internal/rtsptest"
	"github.com/patchline/patchline/internal/testenv"
)

// TestSignals: `patchline run` stops cleanly on SIGHUP (a closing terminal
// or SSH session), saying why; and a second signal while a stop waits (here
// for cameras opening silent streams, with a long stall_timeout) exits at
// once, saying so.
func TestSignals(t *testing.T) {
	rtsptest.RequireFFmpeg(t)
	_, bin := buildBinaries(t)
	srv := rtsptest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv.PublishSilent(t, ctx, "quiet0", "quiet1")
	run := func(cameras string) (*exec.Cmd, *testenv.Buffer, func() bool, string) {
		natsPort := testenv.FreePort(t, "127.0.0.1")
		httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
		cfg := fmt.Sprintf(`nats: {embedded: {port: %d, store_dir: %q}}
http: {addr: %q}
decode: {width: 224, height: 224, patch_size: 16, stall_timeout: 30s}
analyze: {model: %q}
generate: {caption_model: "", framegen_model: ""}
cameras:
%s`, natsPort, t.TempDir(), httpAddr, filepath.Join(repoRoot(t), "models", "vit-tiny"), cameras)
		var out testenv.Buffer
		cmd, exited := runProcess(t, bin, cfg, &out)
		waitTCP(t, fmt.Sprintf("127.0.0.1:%d", natsPort))
		return cmd, &out, func() bool { return exited(10 * time.Second) }, httpAddr
	}

	cmd, out, exited, httpAddr := run("  - {id: syn, url: \"synthetic://?seed=1\"}\n")
	// Started: a signal during the start stops it too, but says nothing.
	testenv.WaitFor(t, "/readyz ready", 30*time.Second, func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !exited() {
		t.Fatalf("no exit within 10 s of SIGHUP:\n%s", out)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(out.String(), `why="hangup signal received"`) || !strings.Contains(out.String(), "msg=stopped") {
		t.Errorf("after SIGHUP: exit %d, want 0, a stop saying why:\n%s", code, out)
	}

	before := srv.Plays("quiet0", "quiet1") // PublishSilent's own checks
	cmd, out, exited, _ = run(fmt.Sprintf("  - {id: q0, url: %q}\n  - {id: q1, url: %q}\n", srv.URL("quiet0"), srv.URL("quiet1")))
	testenv.WaitFor(t, "a camera's open under way (its PLAY; it waits up to 30 s for a frame)", 30*time.Second, func() bool { return srv.Plays("quiet0", "quiet1") > before })
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the stop under way", 10*time.Second, func() bool { return strings.Contains(out.String(), "msg=stopping") })
	if err := cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	if !exited() {
		t.Fatalf("no exit within 10 s of a second SIGINT:\n%s", out)
	}
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(out.String(), "interrupt again: exiting now") {
		t.Errorf("after a second SIGINT: exit %d, want 1 saying so:\n%s", code, out)
	}
}

// TestOutputClosed: standard output and error closing under `patchline run`
// (`| tee run.log`, whose tee a Ctrl-C ends first) do not kill it as it
// logs (Go's SIGPIPE exit), which lost the stop's work. A signal after the
// close still stops it cleanly, exit 0; a line logged after the close (here
// an attach) stops it cleanly by itself, exit 1. Both leave the JSONL file
// whole.
func TestOutputClosed(t *testing.T) {
	_, bin := buildBinaries(t)
	run := func(t *testing.T) (cmd *exec.Cmd, api, jsonl string, closeOutput func(), exited func() bool) {
		api = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
		jsonl = filepath.Join(t.TempDir(), "out.jsonl")
		cfg := fmt.Sprintf(`nats: {embedded: {port: -1, store_dir: %q}}
http: {addr: %q}
decode: {width: 224, height: 224, patch_size: 16}
analyze: {model: %q}
generate: {caption_model: "", framegen_model: ""}
sink: {jsonl: %q}
cameras:
  - {id: syn, url: "synthetic://?seed=1", fps: 2} # slow: no "falls behind" line may come between the close and the signal
`, t.TempDir(), api, filepath.Join(repoRoot(t), "models", "vit-tiny"), jsonl)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		var out testenv.Buffer // what was read before the close
		copied := make(chan struct{})
		go func() { _, _ = io.Copy(&out, r); close(copied) }()
		t.Cleanup(func() { r.Close() }) // after the process is gone (cleanups run last first)
		cmd, exitedWithin := runProcess(t, bin, cfg, w)
		w.Close() // the child's copy is the only writer
		testenv.WaitFor(t, "annotations in the JSONL file", 60*time.Second, func() bool { return len(jsonLines(t, jsonl, false)) >= 3 })
		return cmd, api, jsonl, func() {
			r.Close() // no reader left: the next write fails
			<-copied
		}, func() bool { return exitedWithin(20 * time.Second) }
	}
	whole := func(t *testing.T, jsonl string) {
		t.Helper()
		if n := len(jsonLines(t, jsonl, true)); n < 3 {
			t.Errorf("%d whole lines in the JSONL file after the stop, want its annotations", n)
		}
	}

	t.Run("signal after the close", func(t *testing.T) {
		cmd, _, jsonl, closeOutput, exited := run(t)
		closeOutput()
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		if !exited() {
			t.Fatal("no exit within 20 s of SIGINT")
		}
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("exit %d (%v), want 0: a clean stop", code, cmd.ProcessState)
		}
		whole(t, jsonl)
	})
	t.Run("a log line after the close", func(t *testing.T) {
		cmd, api, jsonl, closeOutput, exited := run(t)
		closeOutput()
		// The attach logs a line; if another comes first, the stop has begun.
		resp, err := http.Post("http://"+api+"/v1/cameras", "application/json", strings.NewReader(`{"id": "cam2", "url": "synthetic://?seed=2"}`))
		if err == nil {
			resp.Body.Close()
		}
		if !exited() {
			t.Fatal("still running 20 s after logging to a closed output")
		}
		if code := cmd.ProcessState.ExitCode(); code != 1 {
			t.Errorf("exit %d (%v), want 1: a clean stop, for its lost output", code, cmd.ProcessState)
		}
		whole(t, jsonl)
	})
}

// jsonLines returns the finished lines of a JSONL file (one being written
// may end in part of the next), failing the test at one that is not a whole
// JSON object, or at a last line left unfinished where finished is set. A
// missing file has none.
func jsonLines(t *testing.T, path string, finished bool) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if rest := lines[len(lines)-1]; finished && rest != "" {
		t.Fatalf("%s ends in an unfinished line: %.120s", path, rest)
	}
	var out []map[string]any
	for i, line := range lines[:len(lines)-1] {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("%s line %d is not whole JSON (%v): %.120s", path, i+1, err, line)
		}
		out = append(out, v)
	}
	return out
}
