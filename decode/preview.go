package decode

import (
	"bytes"
	"image"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"gocv.io/x/gocv"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/tick"
)

// previewJPEGQuality trades preview size for looks: ~30-50 KB at 640x360.
const previewJPEGQuality = 70

// previewer publishes a camera's frames as small JPEGs on
// patchline.preview.<camera>, at up to fps by source pts, and only while
// someone watches (bus.WatchSubject within bus.PreviewTTL): what a person
// looks at costs nothing when nobody does.
type previewer struct {
	nc      *nats.Conn
	camera  string
	subject string
	fps     float64
	width   int

	until atomic.Int64 // unix ns until which someone watches

	// The reader goroutine's own.
	sampler *Sampler
	active  bool
}

func newPreviewer(nc *nats.Conn, camera string, fps float64, width int) *previewer {
	return &previewer{nc: nc, camera: camera, subject: bus.PreviewSubject(camera), fps: fps, width: width, sampler: NewSampler(fps)}
}

// watch keeps previews flowing for d from now.
func (p *previewer) watch(d time.Duration) {
	t := tick.Mono() + int64(d)
	for {
		cur := p.until.Load()
		if t <= cur || p.until.CompareAndSwap(cur, t) {
			return
		}
	}
}

// due reports whether the frame at pts gets a preview.
func (p *previewer) due(pts time.Duration) bool {
	if p.fps <= 0 || tick.Mono() > p.until.Load() {
		p.active = false
		return false
	}
	if !p.active {
		p.active = true
		p.sampler.Reset()
	}
	return p.sampler.Keep(pts)
}

// publish encodes img (BGR), scaled down to the preview width, and publishes
// it with the camera, the seq of the latest analyzed frame, pts, capture
// time and the source size in headers. Failures only cost the preview.
func (p *previewer) publish(img gocv.Mat, pts time.Duration, seq uint64) {
	w, h := img.Cols(), img.Rows()
	if w <= 0 || h <= 0 {
		return
	}
	src := img
	if w > p.width {
		small := gocv.NewMat()
		defer small.Close()
		gocv.Resize(img, &small, image.Pt(p.width, max(1, h*p.width/w)), 0, 0, gocv.InterpolationArea)
		src = small
	}
	buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, src, []int{gocv.IMWriteJpegQuality, previewJPEGQuality})
	if err != nil {
		return
	}
	defer buf.Close()
	msg := nats.NewMsg(p.subject)
	msg.Data = bytes.Clone(buf.GetBytes()) // GetBytes aliases C memory freed by Close
	msg.Header.Set(frame.HdrCamera, p.camera)
	msg.Header.Set(frame.HdrSeq, strconv.FormatUint(seq, 10))
	msg.Header.Set(frame.HdrPTS, strconv.FormatInt(pts.Microseconds(), 10))
	msg.Header.Set(frame.HdrCapturedAt, strconv.FormatInt(time.Now().UnixNano(), 10))
	msg.Header.Set(frame.HdrSourceSize, strconv.Itoa(w)+"x"+strconv.Itoa(h))
	_ = p.nc.PublishMsg(msg)
}
