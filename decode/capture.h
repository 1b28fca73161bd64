// A thin C interface to cv::VideoCapture with grab and retrieve apart
// (decode/capture.go says why).
#ifndef PATCHLINE_CAPTURE_H
#define PATCHLINE_CAPTURE_H

#ifdef __cplusplus
extern "C" {
#endif

// plCaptureOpen opens uri; on failure it returns NULL with FFmpeg's last
// error line of the open, if any, in why. FFmpeg's log lines of the open,
// grabs, retrieves and close name camera. timeoutMs > 0 bounds the open and
// each read (OpenCV's own default is 30 s).
void* plCaptureOpen(const char* uri, const char* camera, int timeoutMs, char* why, int whylen);
int plCaptureGrab(void* cap);
// plCaptureRetrieve: 1 done, 0 failed, 2 the picture changed size (the
// converter refused it; the output is stale).
int plCaptureRetrieve(void* cap, void* mat);
double plCaptureGet(void* cap, int prop);
void plCaptureClose(void* cap);

// FFmpeg's log (decode/ffmpeglog.c).
void plLogInstall(void);
void plLogCaptureBegin(char* why, int len);
void plLogCaptureEnd(void);
void plLogCamera(const char* camera);
// plScaleBegin and plScaleFailedSince say whether FFmpeg's swscaler logged
// an error on this thread in between (its output is then not the frame).
void plScaleBegin(void);
int plScaleFailedSince(void);

#ifdef __cplusplus
}
#endif

#endif
