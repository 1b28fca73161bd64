#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>

#include "capture.h"

// OpenCV reports some failures by exception: each is a plain failure here.

// A capture and the camera its FFmpeg log lines are attributed to.
struct plCapture {
    cv::VideoCapture vc;
    std::string camera;
};

// plCameraScope names the camera whose capture this thread is in, for the
// lines FFmpeg logs meanwhile (decode/ffmpeglog.c).
struct plCameraScope {
    explicit plCameraScope(const plCapture* c) { plLogCamera(c->camera.c_str()); }
    ~plCameraScope() { plLogCamera(nullptr); }
};

void* plCaptureOpen(const char* uri, const char* camera, int timeoutMs, char* why, int whylen) {
    plCapture* cap = new plCapture();
    cap->camera = camera;
    // OpenCV sets up FFmpeg (and its log level) at its first open; the
    // callback goes in each time, after any that OpenCV may have set.
    plLogInstall();
    plLogCaptureBegin(why, whylen);
    bool ok = false;
    {
        plCameraScope scope(cap);
        try {
            std::vector<int> params;
            if (timeoutMs > 0) {
                params = {cv::CAP_PROP_OPEN_TIMEOUT_MSEC, timeoutMs, cv::CAP_PROP_READ_TIMEOUT_MSEC, timeoutMs};
            }
            ok = cap->vc.open(uri, cv::CAP_FFMPEG, params) && cap->vc.isOpened();
        } catch (...) {
        }
    }
    plLogCaptureEnd();
    plLogInstall();
    if (ok) {
        return cap;
    }
    delete cap;
    return nullptr;
}

int plCaptureGrab(void* p) {
    plCapture* cap = static_cast<plCapture*>(p);
    plCameraScope scope(cap);
    try {
        return cap->vc.grab() ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

int plCaptureRetrieve(void* p, void* mat) {
    plCapture* cap = static_cast<plCapture*>(p);
    plCameraScope scope(cap);
    plScaleBegin();
    try {
        bool ok = cap->vc.retrieve(*static_cast<cv::Mat*>(mat));
        // OpenCV 4.6 keeps the converter it made for the stream's first
        // picture size: when the size changes in band, swscaler refuses the
        // frame and the output keeps the previous picture, with success.
        if (ok && plScaleFailedSince()) {
            return 2;
        }
        return ok ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

double plCaptureGet(void* p, int prop) {
    try {
        return static_cast<plCapture*>(p)->vc.get(prop);
    } catch (...) {
        return 0;
    }
}

void plCaptureClose(void* p) {
    plCapture* cap = static_cast<plCapture*>(p);
    {
        plCameraScope scope(cap);
        cap->vc.release();
    }
    delete cap;
}
