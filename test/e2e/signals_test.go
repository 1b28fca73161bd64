package e2e

import (
	"context"
	"errors"
	"fmt"
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
	run := func(cameras string) (*exec.Cmd, *testenv.Buffer, func() bool) {
		natsPort := testenv.FreePort(t, "127.0.0.1")
		cfg := fmt.Sprintf(`nats: {embedded: {port: %d, store_dir: %q}}
http: {addr: "127.0.0.1:%d"}
decode: {width: 224, height: 224, patch_size: 16, stall_timeout: 30s}
analyze: {model: %q}
generate: {caption_model: "", framegen_model: ""}
cameras:
%s`, natsPort, t.TempDir(), testenv.FreePort(t, "127.0.0.1"), filepath.Join(repoRoot(t), "models", "vit-tiny"), cameras)
		cfgPath := filepath.Join(t.TempDir(), "pipeline.yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		var out testenv.Buffer
		cmd := exec.Command(bin, "run", "-c", cfgPath)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		waitTCP(t, fmt.Sprintf("127.0.0.1:%d", natsPort))
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		return cmd, &out, func() bool {
			select {
			case <-exited:
				return true
			case <-time.After(10 * time.Second):
				return false
			}
		}
	}

	cmd, out, exited := run("  - {id: syn, url: \"synthetic://?seed=1\"}\n")
	time.Sleep(time.Second)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !exited() {
		t.Fatalf("no exit within 10 s of SIGHUP:\n%s", out)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(out.String(), `why="hangup signal received"`) || !strings.Contains(out.String(), "msg=stopped") {
		t.Errorf("after SIGHUP: exit %d, want 0, a stop saying why:\n%s", code, out)
	}

	cmd, out, exited = run(fmt.Sprintf("  - {id: q0, url: %q}\n  - {id: q1, url: %q}\n", srv.URL("quiet0"), srv.URL("quiet1")))
	time.Sleep(2 * time.Second) // an open under way, for up to 30 s
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
