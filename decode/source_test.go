package decode

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/patchline/patchline/internal/config"
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

// TestFileRoots: with decode.file_roots a file camera must lie in one of
// them, symbolic links resolved (a link inside pointing out is refused).
func TestFileRoots(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	in := filepath.Join(root, "a.mp4")
	out := filepath.Join(outside, "b.mp4")
	for _, f := range []string{in, out} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(root, "link.mp4")
	if err := os.Symlink(out, link); err != nil {
		t.Fatal(err)
	}
	roots := []string{root}
	for p, ok := range map[string]bool{in: true, out: false, link: false, filepath.Join(root, "..", filepath.Base(outside), "b.mp4"): false} {
		if err := underRoots(p, roots); (err == nil) != ok {
			t.Errorf("underRoots(%s) = %v, want allowed %v", p, err, ok)
		}
		if err := underRoots(p, nil); err != nil {
			t.Errorf("without roots, %s: %v", p, err)
		}
	}
	_, err := OpenSource("file://"+out, SourceOptions{FileRoots: roots})
	if err == nil || !strings.Contains(err.Error(), "not under decode.file_roots") {
		t.Errorf("OpenSource outside the roots: %v", err)
	}
	// A camera whose path is outside as written fails at once (state
	// failed, not retried); a link inside is left to each open.
	for p, ok := range map[string]bool{in: true, out: false, link: true, filepath.Join(root, "..", filepath.Base(outside), "b.mp4"): false} {
		_, err := NewCamera(config.Camera{ID: "a", URL: p}, Options{Decode: config.Decode{FileRoots: roots}})
		if refused := err != nil && strings.Contains(err.Error(), "not under decode.file_roots"); refused == ok {
			t.Errorf("NewCamera(%s) = %v, want allowed %v", p, err, ok)
		}
	}
}
