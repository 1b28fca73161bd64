// FFmpeg's log, routed: error lines of an open under way on this thread
// become the open's error; the others go to Go (decode/ffmpeglog.go)
// instead of straight to stderr, with the camera whose capture call is
// under way on this thread. Lines of FFmpeg's own decoder threads (frame
// threading) come from no camera's call and name none.

#include <string.h>
#include <libavutil/log.h>

#include "capture.h"
#include "_cgo_export.h"

static __thread char* plWhy;
static __thread int plWhyLen;
static __thread const char* plCamera;
static __thread int plScaleFailed;

static void plAvLog(void* avcl, int level, const char* fmt, va_list vl) {
    if (level > av_log_get_level()) {
        return;
    }
    if (level <= AV_LOG_ERROR && avcl != NULL) {
        const AVClass* c = *(const AVClass**)avcl;
        if (c != NULL && c->class_name != NULL && strcmp(c->class_name, "SWScaler") == 0) {
            plScaleFailed = 1; // the conversion this thread asked for did not happen
        }
    }
    char line[1024];
    int prefix = 1;
    av_log_format_line2(avcl, level, fmt, vl, line, sizeof line, &prefix);
    if (plWhy != NULL && level <= AV_LOG_ERROR) {
        // The open's error; the last says most: "... 401 Unauthorized".
        strncpy(plWhy, line, plWhyLen - 1);
        plWhy[plWhyLen - 1] = 0;
        return;
    }
    plFFmpegLog(level, line, (char*)plCamera);
}

void plLogInstall(void) { av_log_set_callback(plAvLog); }

void plLogCaptureBegin(char* why, int len) {
    plWhy = why;
    plWhyLen = len;
    if (len > 0) {
        why[0] = 0;
    }
}

void plLogCaptureEnd(void) { plWhy = NULL; }

void plLogCamera(const char* camera) { plCamera = camera; }

void plScaleBegin(void) { plScaleFailed = 0; }

int plScaleFailedSince(void) { return plScaleFailed; }
