// Package annotation defines the JSON records patchline publishes on
// patchline.annotations.<camera>. The JSON Schema is schema/annotation.v1.json.
package annotation

import "time"

// Schema is the versioned schema id carried in every annotation.
const Schema = "patchline.annotation/v1"

// HdrAnalyzedAt is the header (unix ns) analyze sets when it publishes an
// annotation to the sink, so the sink can time its own step.
const HdrAnalyzedAt = "Patchline-Analyzed-At"

// Kinds of annotation.
const (
	KindAnalysis = "analysis"
)

// Annotation is the result of analyzing one frame.
type Annotation struct {
	Schema       string             `json:"schema"`
	Kind         string             `json:"kind"`
	Camera       string             `json:"camera"`
	Seq          uint64             `json:"seq"`
	PTSMs        float64            `json:"pts_ms"`
	CapturedAt   time.Time          `json:"captured_at"`
	SourceWidth  int                `json:"source_width"`
	SourceHeight int                `json:"source_height"`
	Model        string             `json:"model"`
	Task         string             `json:"task"`
	Labels       []Label            `json:"labels,omitempty"`
	Detections   []Detection        `json:"detections,omitempty"`
	LatencyMs    map[string]float64 `json:"latency_ms"`
	TraceID      string             `json:"trace_id"`
	// AnalyzedBy names the analyze replica (host/pid) that produced it.
	AnalyzedBy string `json:"analyzed_by,omitempty"`
}

// Label is one class with its score (classification).
type Label struct {
	Label   string  `json:"label"`
	ClassID int     `json:"class_id"`
	Score   float64 `json:"score"`
}

// Detection is one object: class, score and box [x1,y1,x2,y2] in source pixels.
type Detection struct {
	Label   string     `json:"label"`
	ClassID int        `json:"class_id"`
	Score   float64    `json:"score"`
	Box     [4]float64 `json:"box"`
}
