#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>

#include "capture.h"

// OpenCV reports some failures by exception: each is a plain failure here.

void* plCaptureOpen(const char* uri, char* why, int whylen) {
    cv::VideoCapture* cap = new cv::VideoCapture();
    // OpenCV sets up FFmpeg (and its log level) at its first open; the
    // callback goes in each time, after any that OpenCV may have set.
    plLogInstall();
    plLogCaptureBegin(why, whylen);
    bool ok = false;
    try {
        ok = cap->open(uri, cv::CAP_FFMPEG) && cap->isOpened();
    } catch (...) {
    }
    plLogCaptureEnd();
    plLogInstall();
    if (ok) {
        return cap;
    }
    delete cap;
    return nullptr;
}

int plCaptureGrab(void* cap) {
    try {
        return static_cast<cv::VideoCapture*>(cap)->grab() ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

int plCaptureRetrieve(void* cap, void* mat) {
    try {
        return static_cast<cv::VideoCapture*>(cap)->retrieve(*static_cast<cv::Mat*>(mat)) ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

double plCaptureGet(void* cap, int prop) {
    try {
        return static_cast<cv::VideoCapture*>(cap)->get(prop);
    } catch (...) {
        return 0;
    }
}

void plCaptureClose(void* cap) {
    delete static_cast<cv::VideoCapture*>(cap);
}
