// Package bus holds patchline's NATS plumbing: subjects, connections, the
// embedded server, and trace-context propagation in message headers.
package bus

// Public and internal subjects. <camera> is one subject token.
const (
	FramesPrefix      = "patchline.frames."      // tokenized frames (frame format), core NATS
	AnalyzedPrefix    = "patchline.analyzed."    // analyze → sink (annotation JSON, internal)
	AnnotationsPrefix = "patchline.annotations." // public annotations (JSON)
	StatusPrefix      = "patchline.status."      // per-camera decode status (JSON), ~1/s

	CamerasBucket = "patchline_cameras" // JetStream KV: camera id → camera spec JSON

	QueueAnalyze = "patchline-analyze"
	QueueSink    = "patchline-sink"
)

// FrameSubject is the subject of a camera's tokenized frames.
func FrameSubject(camera string) string { return FramesPrefix + camera }

// AnalyzedSubject is the internal subject between analyze and sink.
func AnalyzedSubject(camera string) string { return AnalyzedPrefix + camera }

// AnnotationSubject is the public annotations subject of a camera.
func AnnotationSubject(camera string) string { return AnnotationsPrefix + camera }

// StatusSubject is where decode reports a camera's state.
func StatusSubject(camera string) string { return StatusPrefix + camera }
