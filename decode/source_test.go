package decode

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFileSourceMustBeARegularFile: a FIFO or a device as a file camera is
// refused at once, naming what it is: FFmpeg's read of it would block for
// ever, and every open waiting for its turn with it.
func TestFileSourceMustBeARegularFile(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, "file://" + fifo, "/dev/zero", t.TempDir()} {
		done := make(chan error, 1)
		go func() {
			src, err := OpenSource(p, SourceOptions{})
			if err == nil {
				_ = src.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("%s: %v, want not a regular file", p, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the open blocks", p)
		}
	}
}
