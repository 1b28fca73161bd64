package decode

/*
#cgo pkg-config: libavutil
*/
import "C"

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"sync/atomic"

	"github.com/patchline/patchline/internal/telemetry"
)

// FFmpeg log levels (libavutil/log.h).
const (
	avLogError   = 16
	avLogWarning = 24
)

var (
	ffmpegLogger atomic.Pointer[slog.Logger]

	ffmpegSeen telemetry.Counts // lines by camera and text with the numbers left out

	// "[h264 @ 0x55d0c1a0] " → "h264: "
	ffmpegPrefix = regexp.MustCompile(`^\[([^\]@ ]+) @ 0x[0-9a-f]+\] `)
	// "rtsp://user:pass@" → "rtsp://xxxxx@", anywhere in a line
	ffmpegUserinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@`)
	ffmpegNumbers  = regexp.MustCompile(`[0-9]+`)
)

// SetFFmpegLogger sends what FFmpeg logs (lines not explained by an open's
// error) to log, as component=ffmpeg; until then they go to slog's default.
func SetFFmpegLogger(log *slog.Logger) { ffmpegLogger.Store(log.With("component", "ffmpeg")) }

//export plFFmpegLog
func plFFmpegLog(level C.int, line, camera *C.char) {
	var cam string
	if camera != nil {
		cam = C.GoString(camera)
	}
	ffmpegLine(int(level), C.GoString(line), cam)
}

// ffmpegLine logs one line of FFmpeg's, from camera ("" when unknown):
// errors as warnings (a camera's trouble, which its status also shows),
// warnings as info, the rest as debug. A line repeated with other numbers
// (a corrupt stream's "error while decoding MB 31 7") is logged the 1st,
// 2nd, 4th, 8th... time for each camera, with the count.
func ffmpegLine(level int, line, camera string) {
	line = cleanFFmpegLine(line)
	if line == "" {
		return
	}
	n := ffmpegSeen.Add(camera + "\x00" + ffmpegNumbers.ReplaceAllString(line, "#"))
	if !telemetry.Thinned(n) {
		return
	}
	lvl := slog.LevelDebug
	switch {
	case level <= avLogError:
		lvl = slog.LevelWarn
	case level <= avLogWarning:
		lvl = slog.LevelInfo
	}
	log := ffmpegLogger.Load()
	if log == nil {
		log = slog.Default().With("component", "ffmpeg")
	}
	if camera != "" {
		log = log.With("camera", camera)
	}
	log.Log(context.Background(), lvl, line, "seen", n)
}

// cleanFFmpegLine trims a log line, names its FFmpeg component without the
// object's address, and hides any credentials in URLs.
func cleanFFmpegLine(line string) string {
	line = strings.TrimSpace(line)
	line = ffmpegPrefix.ReplaceAllString(line, "$1: ")
	return ffmpegUserinfo.ReplaceAllString(line, "${1}xxxxx@")
}
