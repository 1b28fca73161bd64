package decode

/*
#cgo !windows pkg-config: opencv4
#cgo CXXFLAGS: --std=c++11
#include <stdlib.h>
#include "capture.h"
*/
import "C"

import (
	"errors"
	"time"
	"unsafe"

	"gocv.io/x/gocv"
)

// capture is OpenCV's VideoCapture on the FFmpeg backend, with grab (read
// and decode the next frame) and retrieve (convert it to a BGR image) apart.
// gocv v0.31, the newest that builds against Debian's OpenCV 4.6, has no
// Retrieve. Apart, a camera sampled below its source rate converts only the
// frames it keeps: at 1080p H.264 a grab takes 2.6 ms and grab + retrieve
// 4.6 ms on 2 cores (decode's BenchmarkGrab), so a 30 fps camera sampled at
// 5 fps costs ~90 ms of decoding a second instead of ~140.
type capture struct{ p unsafe.Pointer }

var errCaptureOpen = errors.New("OpenCV/FFmpeg could not open it")

// openCapture opens uri with the FFmpeg backend; what FFmpeg logs in its
// calls names camera. timeout (> 0) bounds the open and each read: OpenCV
// opens one capture at a time, process-wide, so an open that hangs on a
// silent server holds up every other camera's for as long as it lasts
// (OpenCV's default, 30 s). A failure is FFmpeg's last error line of the
// open, when it logged one ("rtsp: method DESCRIBE failed: 401
// Unauthorized"), credentials hidden; else errCaptureOpen.
func openCapture(uri, camera string, timeout time.Duration) (*capture, error) {
	cs, ccam := C.CString(uri), C.CString(camera)
	defer C.free(unsafe.Pointer(cs))
	defer C.free(unsafe.Pointer(ccam))
	var why [512]C.char
	p := C.plCaptureOpen(cs, ccam, C.int(timeout.Milliseconds()), &why[0], C.int(len(why)))
	if p == nil {
		if line := cleanFFmpegLine(C.GoString(&why[0])); line != "" {
			return nil, errors.New(line)
		}
		return nil, errCaptureOpen
	}
	return &capture{p: p}, nil
}

// grab reads and decodes the next frame; false at the end or on failure.
func (c *capture) grab() bool { return C.plCaptureGrab(c.p) != 0 }

// errSizeChanged: the picture's size changed since the open, and OpenCV
// 4.6's converter, made for the first size, refused the frame.
var errSizeChanged = errors.New("the picture size changed since the open, which OpenCV 4.6 cannot convert")

// retrieve converts the frame the last grab decoded into dst (8-bit BGR).
func (c *capture) retrieve(dst *gocv.Mat) error {
	switch C.plCaptureRetrieve(c.p, unsafe.Pointer(dst.Ptr())) {
	case 2:
		return errSizeChanged
	case 1:
		if !dst.Empty() {
			return nil
		}
	}
	return errors.New("conversion to BGR failed")
}

// get returns a capture property (gocv's constants are OpenCV's).
func (c *capture) get(prop gocv.VideoCaptureProperties) float64 {
	return float64(C.plCaptureGet(c.p, C.int(prop)))
}

// close releases the capture; it is safe to call once.
func (c *capture) close() {
	C.plCaptureClose(c.p)
	c.p = nil
}
