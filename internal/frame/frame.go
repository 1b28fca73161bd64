// Package frame defines patchline's one wire format for live video: a frame,
// resized to the model input and tokenized into P×P patches, as a NATS message.
//
// Metadata travels in headers, the patch tokens in the payload. The layout of
// the payload is patch-major uint8 RGB: patch n (row-major over the patch grid)
// occupies bytes [n·P·P·3, (n+1)·P·P·3), and inside a patch pixel (y, x) channel
// c sits at (y·P+x)·3+c — the ViT "b (h p1) (w p2) c -> b (h w) (p1 p2 c)" order.
package frame

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Version is the frame format version carried in every message.
const Version = "1"

// Header names. Everything except the payload travels in headers.
const (
	HdrVersion     = "Patchline-Frame"
	HdrCamera      = "Patchline-Camera"
	HdrSeq         = "Patchline-Seq"
	HdrPTS         = "Patchline-Pts-Us"
	HdrCapturedAt  = "Patchline-Captured-At" // unix nanoseconds, camera wall time at decode
	HdrSourceSize  = "Patchline-Source-Size" // WxH of the decoded source frame
	HdrInputSize   = "Patchline-Input-Size"  // WxH of the model input
	HdrPatch       = "Patchline-Patch"       // patch side P in pixels
	HdrResize      = "Patchline-Resize"      // stretch | letterbox
	HdrTransform   = "Patchline-Transform"   // sx,sy,ox,oy: input = source*s + o
	HdrLatency     = "Patchline-Latency"     // stage=ms,stage=ms (stages done so far)
	HdrPublishedAt = "Patchline-Published-At"
	HdrTraceParent = "traceparent"
)

// Resize modes.
const (
	ResizeStretch   = "stretch"
	ResizeLetterbox = "letterbox"
)

// MaxSide bounds every model-input side the decoder accepts, so a hostile
// header cannot make a consumer allocate without limit.
const MaxSide = 8192

// MaxSourceSide bounds a source frame's sides (Patchline-Source-Size). Only
// box mapping uses them, never an allocation, so the bound is JPEG's and
// leaves room for panoramic and 360° cameras (11520x5760, say).
const MaxSourceSide = 65535

// Frame is one tokenized video frame.
type Frame struct {
	Camera     string
	Seq        uint64
	PTS        time.Duration // presentation time from the source
	CapturedAt time.Time     // wall time when the frame was decoded
	SourceW    int           // decoded source frame size
	SourceH    int
	Width      int // model input size
	Height     int
	Patch      int
	Resize     string
	Transform  Transform
	// Latency holds the milliseconds spent in each stage so far (decode, tokenize, ...).
	Latency     map[string]float64
	PublishedAt time.Time
	TraceParent string
	// Tokens is the patch-major payload; len == GridW()*GridH()*Patch*Patch*3.
	Tokens []byte
}

// GridW is the number of patch columns.
func (f *Frame) GridW() int { return f.Width / f.Patch }

// GridH is the number of patch rows.
func (f *Frame) GridH() int { return f.Height / f.Patch }

// NumPatches is the number of patch tokens.
func (f *Frame) NumPatches() int { return f.GridW() * f.GridH() }

// TokenDim is the length of one patch token (P·P·3).
func (f *Frame) TokenDim() int { return f.Patch * f.Patch * 3 }

// ID is the frame's unique id within a camera's stream, used as the
// annotation message id (JetStream dedupe by camera+seq).
func (f *Frame) ID() string { return MsgID(f.Camera, f.Seq) }

// MsgID builds the dedupe id of a camera's sequence number.
func MsgID(camera string, seq uint64) string { return camera + ":" + strconv.FormatUint(seq, 10) }

// Encode builds the NATS message for subject.
func (f *Frame) Encode(subject string) *nats.Msg {
	m := nats.NewMsg(subject)
	h := m.Header
	h.Set(HdrVersion, Version)
	h.Set(HdrCamera, f.Camera)
	h.Set(HdrSeq, strconv.FormatUint(f.Seq, 10))
	h.Set(HdrPTS, strconv.FormatInt(f.PTS.Microseconds(), 10))
	h.Set(HdrCapturedAt, strconv.FormatInt(f.CapturedAt.UnixNano(), 10))
	h.Set(HdrSourceSize, fmt.Sprintf("%dx%d", f.SourceW, f.SourceH))
	h.Set(HdrInputSize, fmt.Sprintf("%dx%d", f.Width, f.Height))
	h.Set(HdrPatch, strconv.Itoa(f.Patch))
	h.Set(HdrResize, f.Resize)
	h.Set(HdrTransform, f.Transform.String())
	if len(f.Latency) > 0 {
		h.Set(HdrLatency, EncodeLatency(f.Latency))
	}
	if !f.PublishedAt.IsZero() {
		h.Set(HdrPublishedAt, strconv.FormatInt(f.PublishedAt.UnixNano(), 10))
	}
	if f.TraceParent != "" {
		h.Set(HdrTraceParent, f.TraceParent)
	}
	m.Data = f.Tokens
	return m
}

// Decode parses a frame message. The returned frame's Tokens alias data.
// Every malformed field is an error naming the header.
func Decode(h nats.Header, data []byte) (*Frame, error) {
	if h == nil {
		return nil, errors.New("frame: message has no headers")
	}
	if v := h.Get(HdrVersion); v != Version {
		return nil, fmt.Errorf("frame: %s is %q, want %q", HdrVersion, v, Version)
	}
	f := &Frame{Camera: h.Get(HdrCamera), Resize: h.Get(HdrResize), TraceParent: h.Get(HdrTraceParent)}
	if err := ValidCameraID(f.Camera); err != nil {
		return nil, fmt.Errorf("frame: %s: %w", HdrCamera, err)
	}
	var err error
	if f.Seq, err = strconv.ParseUint(h.Get(HdrSeq), 10, 64); err != nil {
		return nil, fmt.Errorf("frame: %s: %w", HdrSeq, err)
	}
	pts, err := strconv.ParseInt(h.Get(HdrPTS), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("frame: %s: %w", HdrPTS, err)
	}
	f.PTS = time.Duration(pts) * time.Microsecond
	if f.CapturedAt, err = parseUnixNano(h.Get(HdrCapturedAt)); err != nil {
		return nil, fmt.Errorf("frame: %s: %w", HdrCapturedAt, err)
	}
	if f.SourceW, f.SourceH, err = ParseSize(h.Get(HdrSourceSize), MaxSourceSide); err != nil {
		return nil, fmt.Errorf("frame: %s: %w", HdrSourceSize, err)
	}
	if f.Width, f.Height, err = ParseSize(h.Get(HdrInputSize), MaxSide); err != nil {
		return nil, fmt.Errorf("frame: %s: %w", HdrInputSize, err)
	}
	if f.Patch, err = strconv.Atoi(h.Get(HdrPatch)); err != nil {
		return nil, fmt.Errorf("frame: %s: %w", HdrPatch, err)
	}
	if f.Patch <= 0 || f.Width%f.Patch != 0 || f.Height%f.Patch != 0 {
		return nil, fmt.Errorf("frame: %s %d does not divide input size %dx%d", HdrPatch, f.Patch, f.Width, f.Height)
	}
	if f.Resize != ResizeStretch && f.Resize != ResizeLetterbox {
		return nil, fmt.Errorf("frame: %s is %q, want %q or %q", HdrResize, f.Resize, ResizeStretch, ResizeLetterbox)
	}
	if f.Transform, err = ParseTransform(h.Get(HdrTransform)); err != nil {
		return nil, fmt.Errorf("frame: %s: %w", HdrTransform, err)
	}
	if s := h.Get(HdrLatency); s != "" {
		if f.Latency, err = ParseLatency(s); err != nil {
			return nil, fmt.Errorf("frame: %s: %w", HdrLatency, err)
		}
	}
	if s := h.Get(HdrPublishedAt); s != "" {
		if f.PublishedAt, err = parseUnixNano(s); err != nil {
			return nil, fmt.Errorf("frame: %s: %w", HdrPublishedAt, err)
		}
	}
	if want := f.NumPatches() * f.TokenDim(); len(data) != want {
		return nil, fmt.Errorf("frame: payload is %d bytes, want %d (%dx%d patches of %d)", len(data), want, f.GridW(), f.GridH(), f.TokenDim())
	}
	f.Tokens = data
	return f, nil
}

// ValidCameraID reports whether id can name a camera: it becomes one NATS
// subject token, so 1–64 characters of letters, digits, '-' and '_'.
func ValidCameraID(id string) error {
	if id == "" {
		return errors.New("camera id is empty")
	}
	if len(id) > 64 {
		return fmt.Errorf("camera id %q is longer than 64 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("camera id %q has %q: use letters, digits, '-' and '_'", id, r)
		}
	}
	return nil
}

func parseUnixNano(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, n), nil
}

// ParseSize parses "WxH" with both sides in 1..limit.
func ParseSize(s string, limit int) (w, h int, err error) {
	a, b, ok := strings.Cut(s, "x")
	if !ok {
		return 0, 0, fmt.Errorf("size %q is not WxH", s)
	}
	if w, err = strconv.Atoi(a); err != nil {
		return 0, 0, fmt.Errorf("size %q: %w", s, err)
	}
	if h, err = strconv.Atoi(b); err != nil {
		return 0, 0, fmt.Errorf("size %q: %w", s, err)
	}
	if w < 1 || h < 1 || w > limit || h > limit {
		return 0, 0, fmt.Errorf("size %q out of range 1..%d", s, limit)
	}
	return w, h, nil
}

// Millis expresses d in the milliseconds that Latency and annotations carry.
func Millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// EncodeLatency formats stage timings as "stage=ms,..." in stage order.
func EncodeLatency(l map[string]float64) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.FormatFloat(l[k], 'f', 3, 64))
	}
	return b.String()
}

// ParseLatency parses the output of EncodeLatency.
func ParseLatency(s string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("entry %q is not stage=ms", kv)
		}
		ms, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(ms) || math.IsInf(ms, 0) {
			return nil, fmt.Errorf("entry %q: bad milliseconds", kv)
		}
		out[k] = ms
	}
	return out, nil
}
