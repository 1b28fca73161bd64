package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClosedOutputStops: a write to a standard output whose reader is gone
// (`patchline … | head`) stops patchline cleanly and Main exits 1, where
// Go's runtime would kill it at once with SIGPIPE (exit 141). Run in a
// child process, whose standard output is such a pipe.
func TestClosedOutputStops(t *testing.T) {
	if args := os.Getenv("PATCHLINE_TEST_MAIN"); args != "" {
		os.Exit(Main(strings.Fields(args)))
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer w.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestClosedOutputStops$")
	cmd.Env = append(os.Environ(), "PATCHLINE_TEST_MAIN=version")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	_ = cmd.Run()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Errorf("`patchline version` printing to a closed pipe: %v, want exit status 1\n%s", cmd.ProcessState, stderr.String())
	}
}

// TestSIGPIPEIsDropped: SIGPIPE, which Main asks for so that a write to a
// closed pipe fails instead of killing the process, comes for a write to
// any closed pipe or socket (an HTTP client that went away): by itself it
// stops nothing.
func TestSIGPIPEIsDropped(t *testing.T) {
	ctx, stop := context.WithCancelCause(context.Background())
	defer stop(nil)
	defer watchSignals(stop)()
	if err := syscall.Kill(os.Getpid(), syscall.SIGPIPE); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
		t.Fatalf("stopped by a SIGPIPE: %v", context.Cause(ctx))
	case <-time.After(500 * time.Millisecond):
	}
}
