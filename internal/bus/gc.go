package bus

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"syscall"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// GCPercent is the garbage collector's target that TuneGC sets: the heap
// may grow to 5× what is live before a collection (Go's default is 2×).
//
// Frames make garbage fast: every message larger than nats-server's 64 KB
// read buffer is assembled in a fresh buffer, and every frame a subscriber
// receives is a fresh copy (300 KB at 320×320, hundreds a second). At
// GOGC=100 the collections that follow cost more than the copies; 400
// cuts the cost of publishing a 320×320 frame by ~40% (decode's
// BenchmarkPublish: ~310 → ~170 µs on 2 cores). The live Go heap is small
// (models live in ONNX Runtime's memory): `patchline run` with the shipped
// pipeline.yaml measured a 12 MB heap and 188 MB RSS, against 6 MB and
// 173 MB at GOGC=100.
const GCPercent = 400

// MemoryLimitRatio is the share of the process's cgroup memory limit (a
// container's, or systemd's MemoryMax) that TuneGC gives the Go runtime as
// its soft limit (GOMEMLIMIT). The rest is for what Go does not manage and
// a cgroup counts all the same: ONNX Runtime's models and arenas, FFmpeg's
// decoders, OpenCV's images (~165 MiB with the shipped models, and ~20 MiB
// more per 720p camera). Near the limit Go collects sooner instead of
// letting GOGC=400's headroom run the process into the OOM killer.
const MemoryLimitRatio = 0.75

// TuneGC sets GCPercent unless the GOGC environment variable says
// otherwise (Go reads GOGC itself), and a soft memory limit of
// MemoryLimitRatio of the cgroup's, if it has one, unless GOMEMLIMIT is set
// or AUTOMEMLIMIT says otherwise (a ratio, or "off"). patchline's binary
// and bench call it first thing; MemoryLimit reports the outcome.
func TuneGC() {
	tuneGC(memlimit.FromCgroup)
}

func tuneGC(provider memlimit.Provider) {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(GCPercent)
	}
	// An error (no cgroup filesystem, an unreadable limit, a bad
	// AUTOMEMLIMIT) leaves Go's own default, no limit; MemoryLimit says so.
	_, _ = memlimit.Set(memlimit.WithRatio(MemoryLimitRatio), memlimit.WithProvider(provider))
}

// MemoryLimit is the Go runtime's soft memory limit in bytes, 0 when it
// has none.
func MemoryLimit() int64 {
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 { // a negative limit only reads it
		return l
	}
	return 0
}

// gcPercent is the garbage collector's current target (GOGC), read without
// changing it (debug.SetGCPercent(-1) would turn the collector off).
func gcPercent() int64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// RuntimeSettings are the runtime's settings TuneGC and the environment
// chose, as slog key-value pairs for the first log line.
func RuntimeSettings() []any {
	limit := "none"
	if l := MemoryLimit(); l > 0 {
		limit = fmt.Sprintf("%d MiB", l>>20)
	}
	open := "unlimited"
	if n, ok := OpenFilesLimit(); ok {
		open = strconv.FormatUint(n, 10)
	}
	return []any{"gomaxprocs", runtime.GOMAXPROCS(0), "gogc", gcPercent(), "memory_limit", limit, "open_files", open}
}

// Limits under which patchline fails in ways that do not name them.
const (
	// MinOpenFiles: each camera holds a few descriptors (a socket or
	// file, FFmpeg's), and nats-server several per stream and bucket.
	// Run out, and opens fail as "not found", JetStream streams stop
	// storing until a restart, and HTTP and NATS stop accepting.
	MinOpenFiles = 1024
	// MinAddressSpace: Go, ONNX Runtime, OpenCV and nats-server reserve
	// about 3 GiB of address space (ulimit -v), however little they use.
	MinAddressSpace = 4 << 30
)

// LimitWarnings are warnings for the first log lines about process limits
// too low for patchline.
func LimitWarnings() []string {
	files, filesOK := OpenFilesLimit()
	as, asOK := rlimit(syscall.RLIMIT_AS)
	return warnLimits(files, filesOK, as, asOK)
}

// warnLimits warns of an open-files limit of files and an address-space
// limit of as, each ok when there is one.
func warnLimits(files uint64, filesOK bool, as uint64, asOK bool) []string {
	var out []string
	if filesOK && files < MinOpenFiles {
		out = append(out, fmt.Sprintf("the open-files limit is %d (under %d): cameras, streams and connections need descriptors, and running out fails opens as \"not found\" and leaves JetStream streams failing until a restart; raise it (ulimit -n 65536, systemd LimitNOFILE=65536)", files, MinOpenFiles))
	}
	if asOK && as < MinAddressSpace {
		out = append(out, fmt.Sprintf("the address-space limit (ulimit -v) is %d MiB: Go, ONNX Runtime, OpenCV and nats-server reserve about 3 GiB of it however little memory they use, and fail with \"out of memory\" below that; remove it (ulimit -v unlimited) and bound memory with GOMEMLIMIT or a cgroup", as>>20))
	}
	return out
}

// OpenFilesLimit is the process's open-files limit (RLIMIT_NOFILE), false
// when unlimited or unknown.
func OpenFilesLimit() (uint64, bool) { return rlimit(syscall.RLIMIT_NOFILE) }

// rlimit is the soft limit of resource, false when unlimited or unknown.
func rlimit(resource int) (uint64, bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(resource, &l); err != nil || l.Cur == ^uint64(0) {
		return 0, false
	}
	return l.Cur, true
}
