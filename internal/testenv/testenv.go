// Package testenv finds what tests need around the repository: its root and
// the real shared assets beside it.
package testenv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RepoRoot is the folder holding go.mod, found upward from the test's package.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test")
		}
		dir = parent
	}
}

// Missing ends a test that lacks something it needs (what says what, and
// how to get it): it is skipped with that message, unless
// PATCHLINE_REQUIRE_SHARED is set, as CI sets it, when that is a failure: a
// test that silently skips proves nothing.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("PATCHLINE_REQUIRE_SHARED") != "" {
		t.Fatalf("%s (required: PATCHLINE_REQUIRE_SHARED is set)", what)
	}
	t.Skipf("skipping: %s", what)
}

// SharedAssets returns ../shared/assets beside the repository. When it is
// absent (a user's clone) the test is Missing it.
func SharedAssets(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(RepoRoot(t), "..", "shared", "assets")
	if _, err := os.Stat(dir); err != nil {
		Missing(t, fmt.Sprintf("real test assets not found at %s (../shared/assets beside the repository root): %v", dir, err))
	}
	return dir
}

// Artifacts returns the folder where tests leave files for people to look
// at (generated frames, screenshots): $PATCHLINE_ARTIFACTS, else
// test-artifacts/ at the repository root (ignored by git). It is created.
func Artifacts(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("PATCHLINE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Chromium returns the path of Debian's chromium for browser tests (`make
// deps` installs it). When it is absent the test is Missing it.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Missing(t, "chromium not on PATH (`make deps` installs it)")
	return ""
}

// ReadF32 reads a file of little-endian float32s, as the model export
// scripts write their reference outputs (numpy "<f4" tofile).
func ReadF32(t testing.TB, path string) []float32 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw)%4 != 0 {
		t.Fatalf("%s: %d bytes is not a whole number of float32s", path, len(raw))
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// Buffer is a bytes.Buffer that a command or logger may write while the
// test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Poll calls cond (every 10 ms at first, backing off to 100 ms) until it
// holds or within has passed, and reports whether it held: the caller
// then asserts with the detail it has.
func Poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for pause := 10 * time.Millisecond; !cond(); pause = min(2*pause, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
	}
	return true
}

// WaitFor polls cond until it holds, failing the test with what when it
// does not within.
func WaitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	if !Poll(within, cond) {
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
}

// OSThreads is the number of this process's operating-system threads (the
// entries of /proc/self/task): tests count what a native library starts.
func OSThreads(t testing.TB) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatalf("count threads: %v", err)
	}
	return len(tasks)
}

// FreePort is a TCP port, free on host (an IP address) and every other
// address a moment ago, that no other test on this machine gets until this
// test ends: for a server the test starts on it, maybe more than once (a
// restart on the same port).
//
// A port the kernel picks (listening on port 0) can be handed out again,
// between this call and the test's own bind, to any socket of any process:
// Go runs test packages as parallel processes. So the port is drawn from
// below the kernel's ephemeral range (net.ipv4.ip_local_port_range), which
// it never hands out by itself, and reserved across processes by an flock
// on a file named after it in the temporary folder, held until the test's
// cleanup; it is reserved for every address, so a test may also check
// that another loopback address does not answer on it.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	lo, hi := reservedPorts()
	if hi <= lo {
		return kernelPort(t, host)
	}
	dir := filepath.Join(os.TempDir(), "patchline-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatalf("free port: %v", err)
	}
	_ = os.Chmod(dir, 0o777|os.ModeSticky) // every user's tests share it, as /tmp
	for range 200 {
		port := lo + rand.IntN(hi-lo)
		// Read-only: an flock needs no more, and a file another user made
		// (0644) opens so.
		lock, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDONLY, 0o666)
		if errors.Is(err, fs.ErrPermission) {
			continue
		}
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			lock.Close() // another test holds it
			continue
		}
		if err := probe(host, port); err != nil {
			lock.Close()
			if errors.Is(err, syscall.EADDRINUSE) {
				continue // by something that is not a test
			}
			t.Fatalf("free port on %s: %v", host, err)
		}
		t.Cleanup(func() { lock.Close() })
		return port
	}
	t.Fatalf("free port on %s: none of 200 tries in %d-%d was free", host, lo, hi-1)
	return 0
}

// probe checks that port is free on host and on every address.
func probe(host string, port int) error {
	for _, h := range []string{host, ""} {
		ln, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		ln.Close()
	}
	return nil
}

// reservedPorts is the range FreePort draws from: from 10000 up to the
// kernel's ephemeral range. It is empty where that range starts lower.
func reservedPorts() (lo, hi int) {
	lo, hi = 10000, 32768 // Linux's default ephemeral range starts at 32768
	if raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(raw)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				hi = n
			}
		}
	}
	return lo, hi
}

// kernelPort is a port the kernel picks, free a moment ago.
func kernelPort(t testing.TB, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("free port on %s: %v", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Series returns the label sets of metric's series on the default
// Prometheus registry, to check which series exist (WithLabelValues would
// make the one it is asked for).
func Series(t testing.TB, metric string) []map[string]string {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for _, mf := range families {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out = append(out, labels)
		}
	}
	return out
}
