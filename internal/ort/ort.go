// Package ort loads the ONNX Runtime shared library and initialises its
// process-wide environment exactly once (github.com/yalue/onnxruntime_go keeps
// one global environment per process).
//
// The library is found, in order, at:
//
//  1. the explicit path given to Init (config analyze.ort_library);
//  2. $PATCHLINE_ORT_LIB;
//  3. .cache/onnxruntime/<Version>/libonnxruntime.so.1 in the working
//     directory or any directory above it (where scripts/fetch-onnxruntime.sh
//     installs it, so tests running in a package directory find the
//     repository root's copy).
//
// An explicit path or $PATCHLINE_ORT_LIB that names a missing file is an
// error rather than a silent fall-through, so a misconfiguration is noticed.
package ort

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	onnxruntime "github.com/yalue/onnxruntime_go"
)

// Version is the ONNX Runtime release patchline is built and tested against.
const Version = "1.24.3"

// EnvLibrary names the environment variable that overrides the library path.
const EnvLibrary = "PATCHLINE_ORT_LIB"

// CacheRelPath is where scripts/fetch-onnxruntime.sh installs the library,
// relative to the repository root.
var CacheRelPath = filepath.Join(".cache", "onnxruntime", Version, "libonnxruntime.so.1")

var (
	mu     sync.Mutex
	loaded string // library path of the initialised environment; "" = not yet
)

// ResolveLibrary returns the ONNX Runtime library path Init would load for
// explicit (see the package comment for the search order). The error names
// every path tried.
func ResolveLibrary(explicit string) (string, error) {
	if explicit != "" {
		if err := isFile(explicit); err != nil {
			return "", fmt.Errorf("ort: library %s (explicit path): %w", explicit, err)
		}
		return abs(explicit), nil
	}
	if env := os.Getenv(EnvLibrary); env != "" {
		if err := isFile(env); err != nil {
			return "", fmt.Errorf("ort: library %s (from $%s): %w", env, EnvLibrary, err)
		}
		return abs(env), nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("ort: find library: working directory: %w", err)
	}
	var tried []string
	for dir := wd; ; {
		p := filepath.Join(dir, CacheRelPath)
		if isFile(p) == nil {
			return p, nil
		}
		tried = append(tried, p)
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", fmt.Errorf("ort: ONNX Runtime %s library not found: no explicit path, $%s unset, and none of %s exists; run scripts/fetch-onnxruntime.sh or set %s",
		Version, EnvLibrary, strings.Join(tried, ", "), EnvLibrary)
}

// Init loads the ONNX Runtime library (resolved from libPath as described in
// the package comment) and creates the global environment. It is safe to call
// from many goroutines and many times: after the first success it returns
// nil, unless libPath explicitly names a different library than the one
// already loaded, which is an error. A failed Init may be retried.
func Init(libPath string) error {
	mu.Lock()
	defer mu.Unlock()
	if loaded != "" {
		if libPath != "" && abs(libPath) != loaded {
			return fmt.Errorf("ort: environment already initialised with %s; cannot switch to %s", loaded, libPath)
		}
		return nil
	}
	path, err := ResolveLibrary(libPath)
	if err != nil {
		return err
	}
	if onnxruntime.IsInitialized() {
		// Someone initialised onnxruntime_go directly; adopt it.
		loaded = path
		return nil
	}
	onnxruntime.SetSharedLibraryPath(path)
	// ONNX Runtime's own log goes to stderr as coloured text, outside
	// patchline's log (and its json format); its errors come back as Go
	// errors, which the callers log. Only a fatal one is left to it.
	if err := onnxruntime.InitializeEnvironment(onnxruntime.WithLogLevelFatal()); err != nil {
		return fmt.Errorf("ort: initialise ONNX Runtime from %s: %w", path, err)
	}
	loaded = path
	return nil
}

// NewSession opens an ONNX Runtime session on the graph at path with the
// named inputs and outputs, running threads intra-op threads (0 = ONNX
// Runtime's default, one per physical core, or, in a process confined to
// fewer CPUs than the machine has, one per CPU it may use). With spin false the intra-op threads sleep between
// parallel sections instead of spin-waiting (session.intra_op.allow_spinning
// = 0): a bare loop runs a little slower, but a process that also decodes
// and moves frames keeps its CPU. Init must have succeeded. Errors name what
// failed: "session options: ...", "set N intra-op threads: ..." or "open
// session on <path>: ...".
func NewSession(path string, inputs, outputs []string, threads int, spin bool) (*onnxruntime.DynamicAdvancedSession, error) {
	if threads < 0 {
		return nil, fmt.Errorf("threads is %d, want >= 0", threads)
	}
	so, err := onnxruntime.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer func() { _ = so.Destroy() }()
	if !spin {
		if err := so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
			return nil, fmt.Errorf("session options: disable spinning: %w", err)
		}
	}
	if threads == 0 {
		threads = confinedThreads()
	}
	if threads > 0 {
		if err := so.SetIntraOpNumThreads(threads); err != nil {
			return nil, fmt.Errorf("set %d intra-op threads: %w", threads, err)
		}
	}
	sess, err := onnxruntime.NewDynamicAdvancedSession(path, inputs, outputs, so)
	if err != nil {
		return nil, fmt.Errorf("open session on %s: %w", path, err)
	}
	return sess, nil
}

// confinedThreads is the intra-op thread count for threads 0 when the
// process may use fewer CPUs than the machine has (taskset, a cpuset, a
// cgroup quota: GOMAXPROCS follows them; so does a GOMAXPROCS variable
// set lower): as many as it may use. ONNX
// Runtime's own default, one per physical core, pins each thread to a core
// of the whole machine, out of the process's set. Else 0: that default.
func confinedThreads() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return 0
	}
	if n := runtime.GOMAXPROCS(0); n < countCPUs(strings.TrimSpace(string(b))) {
		return n
	}
	return 0
}

// countCPUs counts the CPUs of a Linux CPU list such as "0-3,8,10-11"; 0
// when it cannot read it.
func countCPUs(list string) int {
	n := 0
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return 0
			}
		}
		n += b - a + 1
	}
	return n
}

// Library returns the path of the loaded library, or "" before a successful Init.
func Library() string {
	mu.Lock()
	defer mu.Unlock()
	return loaded
}

// RuntimeVersion reports the loaded library's version string (e.g. "1.24.3"),
// or "" before a successful Init.
func RuntimeVersion() string {
	if Library() == "" {
		return ""
	}
	return onnxruntime.GetVersion()
}

func isFile(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("no such file")
		}
		return err
	}
	if st.IsDir() {
		return errors.New("is a directory, not the library file")
	}
	return nil
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
