// Package apptest runs the pipeline in-process for tests: every stage (or
// some) wired by internal/app, exactly as `patchline run` wires them.
package apptest

import (
	"context"
	"testing"
	"time"

	"github.com/patchline/patchline/internal/app"
	"github.com/patchline/patchline/internal/natstest"
)

// Start runs the given stages (nil: all) with cfg and returns once the
// pipeline is ready. The pipeline stops when the test ends; an error it
// returns then fails the test.
func Start(t testing.TB, cfg app.Options) app.Info {
	t.Helper()
	if cfg.Stages == nil {
		cfg.Stages = app.AllStages
	}
	if cfg.Logger == nil {
		cfg.Logger = natstest.Discard()
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Info, 1)
	done := make(chan error, 1)
	cfg.Ready = func(i app.Info) { ready <- i }
	go func() { done <- app.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pipeline: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("pipeline did not stop within 30s")
		}
	})
	select {
	case i := <-ready:
		return i
	case err := <-done:
		t.Fatalf("pipeline failed to start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("pipeline not ready within 60s")
	}
	return app.Info{}
}
