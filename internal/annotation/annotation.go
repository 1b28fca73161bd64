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
	KindCaption  = "caption" // a caption of the camera's last frames (generate stage)
	KindAnomaly  = "anomaly" // a frame that framegen did not expect (generate stage)
)

// Annotation is the result of analyzing one frame.
type Annotation struct {
	Schema       string      `json:"schema"`
	Kind         string      `json:"kind"`
	Camera       string      `json:"camera"`
	Seq          uint64      `json:"seq"`
	PTSMs        float64     `json:"pts_ms"`
	CapturedAt   time.Time   `json:"captured_at"`
	SourceWidth  int         `json:"source_width"`
	SourceHeight int         `json:"source_height"`
	Model        string      `json:"model"`
	Task         string      `json:"task"`
	Labels       []Label     `json:"labels,omitempty"`
	Detections   []Detection `json:"detections,omitempty"`
	Patches      *PatchMap   `json:"patches,omitempty"` // segment: class per patch
	// Caption is set on kind caption (the generate stage).
	Caption *Caption `json:"caption,omitempty"`
	// Anomaly is set on kind anomaly (the generate stage's framegen model).
	Anomaly   *Anomaly           `json:"anomaly,omitempty"`
	LatencyMs map[string]float64 `json:"latency_ms"`
	TraceID   string             `json:"trace_id"`
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

// PatchMap is a segment model's class per patch of the model input grid.
// Patch (col, row) covers model-input pixels [col·P, row·P, (col+1)·P,
// (row+1)·P]; Transform maps model-input pixels to source pixels.
type PatchMap struct {
	// Grid is [columns, rows]; Classes is row-major, len columns·rows.
	Grid      [2]int `json:"grid"`
	PatchSize int    `json:"patch_size"`
	// Transform is [sx, sy, ox, oy]: input = source·s + o.
	Transform [4]float64 `json:"transform"`
	Classes   []int      `json:"classes"`
	// Labels names each class id (index); class 0 is background.
	Labels []string `json:"labels"`
}

// Caption is a generated caption of a camera's last frames. Seq (of the
// annotation) is the newest frame it describes.
type Caption struct {
	Text   string  `json:"text"`
	Tokens []int64 `json:"tokens"`
	// TimeToFirstTokenMs is from the start of generation (encoder included)
	// to the first decoded token.
	TimeToFirstTokenMs float64 `json:"time_to_first_token_ms"`
	TokensPerSecond    float64 `json:"tokens_per_second"`
	DurationMs         float64 `json:"duration_ms"`
	// Frames are the seqs of the frames the caption model saw, oldest first.
	Frames []uint64 `json:"frames"`
	// Trigger is why it was generated: every, change, anomaly or request.
	Trigger string `json:"trigger"`
}

// Anomaly is a frame whose framegen anomaly score passed the model's
// threshold. The generated frame (what the model expected) is a PNG in the
// NATS Object Store.
type Anomaly struct {
	Score     float64 `json:"score"`
	Threshold float64 `json:"threshold"`
	// PatchScores is the per-patch heatmap, row-major over GridW×GridH
	// patches of the model input.
	GridW       int       `json:"grid_w"`
	GridH       int       `json:"grid_h"`
	PatchScores []float64 `json:"patch_scores"`
	// Bucket and Object name the generated PNG in the Object Store.
	Bucket  string `json:"bucket"`
	Object  string `json:"object"`
	Trigger string `json:"trigger"`
}
