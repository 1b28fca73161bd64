// A thin C interface to cv::VideoCapture with grab and retrieve apart
// (decode/capture.go says why).
#ifndef PATCHLINE_CAPTURE_H
#define PATCHLINE_CAPTURE_H

#ifdef __cplusplus
extern "C" {
#endif

void* plCaptureOpen(const char* uri);
int plCaptureGrab(void* cap);
int plCaptureRetrieve(void* cap, void* mat);
double plCaptureGet(void* cap, int prop);
void plCaptureClose(void* cap);

#ifdef __cplusplus
}
#endif

#endif
