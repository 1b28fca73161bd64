package ort

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/patchline/patchline/internal/testenv"
)

func TestResolveExplicitMissing(t *testing.T) {
	_, err := ResolveLibrary("/nonexistent/libonnxruntime.so.1")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/libonnxruntime.so.1 (explicit path)") {
		t.Fatalf("err = %v, want one naming the explicit path", err)
	}
}

func TestResolveEnv(t *testing.T) {
	t.Setenv(EnvLibrary, "/nonexistent/env-lib.so")
	_, err := ResolveLibrary("")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/env-lib.so (from $PATCHLINE_ORT_LIB)") {
		t.Fatalf("err = %v, want one naming $%s", err, EnvLibrary)
	}
	f := filepath.Join(t.TempDir(), "lib.so")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvLibrary, f)
	got, err := ResolveLibrary("")
	if err != nil || got != f {
		t.Fatalf("ResolveLibrary = %q, %v; want %q", got, err, f)
	}
}

func TestResolveSearchesUpward(t *testing.T) {
	t.Setenv(EnvLibrary, "")
	root := t.TempDir()
	lib := filepath.Join(root, CacheRelPath)
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(deep)
	got, err := ResolveLibrary("")
	if err != nil || got != lib {
		t.Fatalf("ResolveLibrary = %q, %v; want %q", got, err, lib)
	}
}

func TestResolveNotFoundNamesPaths(t *testing.T) {
	t.Setenv(EnvLibrary, "")
	dir := t.TempDir()
	t.Chdir(dir)
	_, err := ResolveLibrary("")
	if err == nil {
		t.Skip("a library exists above the temp dir; cannot test the not-found error")
	}
	if !strings.Contains(err.Error(), filepath.Join(dir, CacheRelPath)) || !strings.Contains(err.Error(), "fetch-onnxruntime.sh") {
		t.Fatalf("err = %v, want the tried paths and the fetch script", err)
	}
}

func TestInitOnce(t *testing.T) {
	requireLibrary(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = Init("") }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if Library() == "" {
		t.Fatal("Library() is empty after Init")
	}
	if v := RuntimeVersion(); v != Version {
		t.Errorf("RuntimeVersion() = %q, want %q", v, Version)
	}
	if err := Init(Library()); err != nil {
		t.Errorf("Init with the loaded path: %v", err)
	}
	other := filepath.Join(t.TempDir(), "other.so")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Init(other); err == nil || !strings.Contains(err.Error(), "already initialised") {
		t.Errorf("Init(other) = %v, want already-initialised error", err)
	}
}

func TestNewSession(t *testing.T) {
	if _, err := NewSession("model.onnx", nil, nil, -1, true); err == nil || !strings.Contains(err.Error(), "threads is -1, want >= 0") {
		t.Errorf("NewSession(threads -1) = %v, want a threads error", err)
	}
	requireLibrary(t)
	if err := Init(""); err != nil {
		t.Fatal(err)
	}
	// The analyze package's tiny ViT classifier: pixel_values → logits.
	model := filepath.Join("..", "..", "analyze", "testdata", "vit-hf-tiny", "model.onnx")
	for _, threads := range []int{0, 1} {
		for _, spin := range []bool{true, false} {
			sess, err := NewSession(model, []string{"pixel_values"}, []string{"logits"}, threads, spin)
			if err != nil {
				t.Fatalf("threads %d, spin %v: %v", threads, spin, err)
			}
			if err := sess.Destroy(); err != nil {
				t.Fatal(err)
			}
		}
	}
	missing := filepath.Join(t.TempDir(), "missing.onnx")
	if _, err := NewSession(missing, []string{"pixel_values"}, []string{"logits"}, 1, true); err == nil || !strings.Contains(err.Error(), "open session on "+missing) {
		t.Errorf("missing graph: err = %v, want one naming it", err)
	}
}

// TestCountCPUs reads Linux CPU lists (/sys/devices/system/cpu/online).
func TestCountCPUs(t *testing.T) {
	for list, want := range map[string]int{"0": 1, "0-1": 2, "0-3,8,10-11": 7, "": 0, "x": 0, "3-1": 0} {
		if got := countCPUs(list); got != want {
			t.Errorf("countCPUs(%q) = %d, want %d", list, got, want)
		}
	}
}

// TestConfinedThreads: a process allowed fewer CPUs than the machine has
// (GOMAXPROCS lowered, as taskset or a cgroup quota lowers it) runs that
// many intra-op threads, where ONNX Runtime's default would pin one to
// every core of the machine; otherwise ONNX Runtime's default stands.
func TestConfinedThreads(t *testing.T) {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		t.Skip("no /sys/devices/system/cpu/online:", err)
	}
	all := countCPUs(strings.TrimSpace(string(b)))
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(all)
	if n := confinedThreads(); n != 0 {
		t.Errorf("with every CPU: %d threads, want 0 (ONNX Runtime's default)", n)
	}
	if all > 1 {
		runtime.GOMAXPROCS(1)
		if n := confinedThreads(); n != 1 {
			t.Errorf("confined to 1 CPU of %d: %d threads, want 1", all, n)
		}
	}
}

// requireLibrary clears $PATCHLINE_ORT_LIB for the test, so the library is
// found as the binary finds it by default, and ends the test
// (testenv.Missing) when it is not installed.
func requireLibrary(t *testing.T) {
	t.Helper()
	t.Setenv(EnvLibrary, "")
	if _, err := ResolveLibrary(""); err != nil {
		testenv.Missing(t, fmt.Sprintf("ONNX Runtime library not installed (run scripts/fetch-onnxruntime.sh): %v", err))
	}
}
