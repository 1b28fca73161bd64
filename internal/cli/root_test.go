package cli

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestOtherPipesDoNotStop: asked for, SIGPIPE comes for a write to any
// closed pipe or socket (an HTTP client that went away), not only standard
// output or error; those, still open here, must not stop patchline. (That a
// closed standard error does is test/e2e's TestOutputClosed.)
func TestOtherPipesDoNotStop(t *testing.T) {
	ctx, unwatch := watchOutput()
	defer unwatch()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer w.Close()
	if _, err := w.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write to a pipe without a reader: %v, want EPIPE", err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGPIPE); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
		t.Fatalf("stopped by a SIGPIPE of another pipe: %v", context.Cause(ctx))
	case <-time.After(500 * time.Millisecond):
	}
	if outputClosed() {
		t.Error("outputClosed() with the test's output open")
	}
}
