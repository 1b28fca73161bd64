package bus

import (
	"fmt"
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// restoreGC puts back the runtime's collector settings after a test.
func restoreGC(t *testing.T) {
	pct, lim := debug.SetGCPercent(-1), debug.SetMemoryLimit(-1)
	debug.SetGCPercent(pct)
	t.Cleanup(func() { debug.SetGCPercent(pct); debug.SetMemoryLimit(lim) })
}

func TestTuneGCMemoryLimit(t *testing.T) {
	const cgroup = 4 << 30
	for _, tc := range []struct {
		name     string
		env      map[string]string
		provider memlimit.Provider
		want     int64
	}{
		{"cgroup limit", nil, memlimit.Limit(cgroup), cgroup * MemoryLimitRatio},
		{"no cgroup limit", nil, func() (uint64, error) { return 0, memlimit.ErrNoLimit }, 0},
		{"GOMEMLIMIT wins", map[string]string{"GOMEMLIMIT": "1GiB"}, memlimit.Limit(cgroup), 0},
		{"AUTOMEMLIMIT ratio", map[string]string{"AUTOMEMLIMIT": "0.5"}, memlimit.Limit(cgroup), cgroup / 2},
		{"AUTOMEMLIMIT off", map[string]string{"AUTOMEMLIMIT": "off"}, memlimit.Limit(cgroup), 0},
		{"bad AUTOMEMLIMIT", map[string]string{"AUTOMEMLIMIT": "lots"}, memlimit.Limit(cgroup), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restoreGC(t)
			debug.SetMemoryLimit(math.MaxInt64) // as a process starts without GOMEMLIMIT
			t.Setenv("GOMEMLIMIT", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			tuneGC(tc.provider)
			if got := MemoryLimit(); got != tc.want {
				t.Errorf("memory limit %d, want %d", got, tc.want)
			}
		})
	}
}

func TestTuneGCPercent(t *testing.T) {
	restoreGC(t)
	t.Setenv("AUTOMEMLIMIT", "off")
	debug.SetGCPercent(100)
	tuneGC(memlimit.Limit(1 << 30))
	if got := gcPercent(); got != GCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, GCPercent)
	}
	t.Setenv("GOGC", "100")
	debug.SetGCPercent(100)
	tuneGC(memlimit.Limit(1 << 30))
	if got := gcPercent(); got != 100 {
		t.Errorf("GOGC=100: GC percent %d, want 100 (left to Go)", got)
	}
}

// RuntimeSettings reports the settings and changes none: reading GOGC
// through debug.SetGCPercent(-1) would turn the collector off.
func TestRuntimeSettingsReadsOnly(t *testing.T) {
	restoreGC(t)
	debug.SetGCPercent(250)
	debug.SetMemoryLimit(3 << 30)
	for range 2 {
		got := fmt.Sprint(RuntimeSettings())
		if !strings.Contains(got, "gogc 250") || !strings.Contains(got, "memory_limit 3072 MiB") {
			t.Errorf("RuntimeSettings() = %s, want gogc 250 and memory_limit 3072 MiB", got)
		}
	}
	if pct := debug.SetGCPercent(100); pct != 250 {
		t.Errorf("GC percent %d after RuntimeSettings, want 250 untouched", pct)
	}
}

// TestLimitWarnings: an open-files or address-space limit too low for
// patchline is warned of at start, naming it and the way out; generous or
// no limits say nothing.
func TestLimitWarnings(t *testing.T) {
	got := warnLimits(64, true, 2<<30, true)
	if len(got) != 2 || !strings.Contains(got[0], "open-files limit is 64") || !strings.Contains(got[0], "LimitNOFILE") ||
		!strings.Contains(got[1], "address-space limit (ulimit -v) is 2048 MiB") || !strings.Contains(got[1], "ulimit -v unlimited") {
		t.Errorf("warnings for 64 files and 2 GiB: %q", got)
	}
	for _, w := range [][]string{warnLimits(65536, true, 0, false), warnLimits(0, false, 16<<30, true)} {
		if len(w) != 0 {
			t.Errorf("warnings for ample limits: %q", w)
		}
	}
	if !strings.Contains(fmt.Sprint(RuntimeSettings()), "open_files") {
		t.Errorf("RuntimeSettings() = %v, want open_files", RuntimeSettings())
	}
}
