package telemetry

import (
	"log/slog"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
)

// errorLog is the OpenTelemetry error handler (export failures, mostly):
// it logs through the process's slog logger, where the SDK's default
// writes with Go's standard log, and it logs the first error at once, then
// at most one an interval, saying how many went unlogged in between.
type errorLog struct {
	every time.Duration
	now   func() time.Time

	mu       sync.Mutex
	log      *slog.Logger
	last     time.Time // when a line was last logged
	unlogged int       // errors since then
}

// otelErrors is the process's handler, installed once (OpenTelemetry keeps
// the first handler set as the delegate of what it created before) and
// pointed at the newest SetupTracing's logger.
var (
	otelErrors = &errorLog{every: time.Minute, now: time.Now}
	installed  sync.Once
)

// use installs the handler, and OpenTelemetry's own logger, writing to log.
func (e *errorLog) use(log *slog.Logger) {
	e.mu.Lock()
	e.log = log
	e.mu.Unlock()
	installed.Do(func() { otel.SetErrorHandler(e) })
	otel.SetLogger(logr.FromSlogHandler(log.Handler()))
}

// Handle logs err, or counts it when a line was logged less than an
// interval ago.
func (e *errorLog) Handle(err error) {
	e.mu.Lock()
	now := e.now()
	if !e.last.IsZero() && now.Sub(e.last) < e.every {
		e.unlogged++
		e.mu.Unlock()
		return
	}
	log, n := e.log, e.unlogged
	e.last, e.unlogged = now, 0
	e.mu.Unlock()
	args := []any{"err", err}
	if n > 0 {
		args = append(args, "unlogged", n)
	}
	logger(log).Warn("telemetry: OpenTelemetry error (at most one line a minute)", args...)
}

// flush logs how many errors went unlogged since the last line, if any
// (at shutdown).
func (e *errorLog) flush() {
	e.mu.Lock()
	log, n := e.log, e.unlogged
	e.unlogged = 0
	e.mu.Unlock()
	if n > 0 {
		logger(log).Warn("telemetry: OpenTelemetry errors since the last line", "unlogged", n)
	}
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}
