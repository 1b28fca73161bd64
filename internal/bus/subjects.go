// Package bus holds patchline's NATS plumbing: subjects, connections, the
// embedded server, and trace-context propagation in message headers.
package bus

import (
	"strings"
	"time"
)

// Public and internal subjects. <camera> is one subject token.
const (
	FramesPrefix      = "patchline.frames."          // tokenized frames (frame format), core NATS
	AnalyzedPrefix    = "patchline.analyzed."        // analyze → sink (annotation JSON, internal)
	AnnotationsPrefix = "patchline.annotations."     // public annotations (JSON)
	StoredPrefix      = "patchline.stored."          // annotations on their way into the annotation stream (stored as patchline.annotations.<camera>)
	StatusPrefix      = "patchline.status."          // per-camera decode status (JSON), ~1/s
	PreviewPrefix     = "patchline.preview."         // JPEG previews (live view), only while watched
	WatchPrefix       = "patchline.watch."           // "I am watching <camera>": asks decode for previews for PreviewTTL
	RTPPrefix         = "patchline.rtp."             // WHIP: the publisher's video RTP packets, ingest → decode
	KeyframePrefix    = "patchline.keyframe."        // WHIP: decode asks ingest for a keyframe (PLI to the publisher)
	GeneratedPrefix   = "patchline.generated."       // generate: a generated frame (PNG in GeneratedBucket) with its anomaly heatmap (JSON)
	GenerateRequest   = "patchline.generate.request" // generate: request-reply for a caption or a generated frame (JSON)

	CamerasBucket   = "patchline_cameras"   // JetStream KV: camera id → camera spec JSON
	GeneratedBucket = "patchline_generated" // JetStream Object Store: generated frames, <camera>/<seq>.png
	DecodeBucket    = "patchline_decode"    // JetStream KV: seq.<camera> → the end of the camera's last reserved seq block
	LeasesBucket    = "patchline_leases"    // JetStream KV, entries expire: cam.<camera> → decode replica, replica.<id> → alive

	GenerateLeasesBucket = "patchline_generate_leases" // JetStream KV, entries expire: cam.<camera> → generate replica running its automatic triggers, replica.<id> → alive

	QueueAnalyze  = "patchline-analyze"
	QueueSink     = "patchline-sink"
	QueueGenerate = "patchline-generate"
)

// FrameSubject is the subject of a camera's tokenized frames.
func FrameSubject(camera string) string { return FramesPrefix + camera }

// AnalyzedSubject is the internal subject between analyze and sink.
func AnalyzedSubject(camera string) string { return AnalyzedPrefix + camera }

// AnnotationSubject is the public annotations subject of a camera.
func AnnotationSubject(camera string) string { return AnnotationsPrefix + camera }

// GeneratedSubject carries a camera's generated-frame messages.
func GeneratedSubject(camera string) string { return GeneratedPrefix + camera }

// StatusSubject is where decode reports a camera's state.
func StatusSubject(camera string) string { return StatusPrefix + camera }

// PreviewSubject carries a camera's JPEG previews.
func PreviewSubject(camera string) string { return PreviewPrefix + camera }

// WatchSubject is where a viewer says it watches a camera. Decode publishes
// previews until PreviewTTL after the last such message, so a viewer repeats
// it every PreviewTTL/2 or so.
func WatchSubject(camera string) string { return WatchPrefix + camera }

// PreviewTTL is how long one watch message keeps previews flowing.
const PreviewTTL = 5 * time.Second

// RTPSubject carries a WHIP camera's RTP packets (one packet per message,
// codec in the RTPCodecHeader header).
func RTPSubject(camera string) string { return RTPPrefix + camera }

// KeyframeSubject is where decode asks for a keyframe of a WHIP camera.
func KeyframeSubject(camera string) string { return KeyframePrefix + camera }

// Headers of RTP messages.
const (
	RTPCodecHeader = "Patchline-Rtp-Codec" // h264 | vp8
	RTPByeHeader   = "Patchline-Rtp-Bye"   // set (empty payload) when the publisher left
)

// SubjectFamily is the pattern subj belongs to among patchline's subjects
// ("patchline.frames.*", "patchline.generate.request"), or "other": a
// bounded, valid label for metrics about messages on any subject, whatever
// a publisher put in it (a label that is not UTF-8 makes the Prometheus
// client panic, and one per subject would grow without bound).
func SubjectFamily(subj string) string {
	for _, p := range []string{FramesPrefix, AnalyzedPrefix, AnnotationsPrefix, StoredPrefix, StatusPrefix,
		PreviewPrefix, WatchPrefix, RTPPrefix, KeyframePrefix, GeneratedPrefix} {
		if strings.HasPrefix(subj, p) {
			return p + "*"
		}
	}
	if subj == GenerateRequest {
		return subj
	}
	return "other"
}
