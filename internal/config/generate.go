package config

import (
	"fmt"
	"time"

	"github.com/patchline/patchline/internal/frame"
)

// Generate configures the generate stage: captions (caption_model) and
// generated frames with anomaly heatmaps (framegen_model), when they are
// made (triggers) and how much generation may run at once (budget).
type Generate struct {
	CaptionModel  string `yaml:"caption_model"`  // caption bundle directory; "" = no captions
	FramegenModel string `yaml:"framegen_model"` // framegen bundle directory; "" = no generated frames or anomaly scores
	// Budget is the most generations running at once; QueueSize requests may
	// wait for a slot, more are rejected with reason "overloaded".
	Budget    int `yaml:"budget"`     // default 2
	QueueSize int `yaml:"queue_size"` // default 8
	BatchSize int `yaml:"batch_size"` // queued caption requests decoded together as one batch; default 4
	// RequestTimeout is a request's deadline when it sets none.
	RequestTimeout time.Duration `yaml:"request_timeout"` // default 10s
	Threads        int           `yaml:"threads"`         // ONNX Runtime intra-op threads per session; 0 = ONNX Runtime's default, within the CPUs the process may use; default 1
	// WindowTTL forgets a camera's frames after this long without one.
	WindowTTL time.Duration `yaml:"window_ttl"` // default 30s
	ObjectTTL time.Duration `yaml:"object_ttl"` // generated PNGs expire from the Object Store after this; 0 = never; default 24h
	// Auto evaluates the automatic triggers in this process, for the
	// cameras whose lease it holds: replicas with auto share the cameras,
	// so each camera's triggers fire in one of them.
	Auto bool `yaml:"auto"`
	// LeaseTTL is how long a replica's hold on a camera's automatic
	// triggers outlives its last renewal (renewed every third of it): a
	// dead replica's cameras move to the others within it.
	LeaseTTL time.Duration    `yaml:"lease_ttl"` // default 10s
	Sampling Sampling         `yaml:"sampling"`  // caption decoding defaults; requests may override
	Triggers Triggers         `yaml:"triggers"`  // automatic triggers of every camera not in cameras
	Cameras  []CameraGenerate `yaml:"cameras"`
}

// Sampling is how captions are decoded. Temperature 0 is greedy.
type Sampling struct {
	Temperature float64 `yaml:"temperature" json:"temperature"` // 0 = greedy
	TopK        int     `yaml:"top_k" json:"top_k"`             // 0 = off
	TopP        float64 `yaml:"top_p" json:"top_p"`             // 0 or 1 = off
	Seed        int64   `yaml:"seed" json:"seed"`               // sampling seed
	MaxTokens   int     `yaml:"max_tokens" json:"max_tokens"`   // 0 = the model's max_length − 1
}

// Triggers say when a camera gets a caption by itself.
type Triggers struct {
	Every     time.Duration `yaml:"every"`      // a caption this often; 0 = off
	OnChange  bool          `yaml:"on_change"`  // a caption when the set of labels/objects changes
	OnAnomaly bool          `yaml:"on_anomaly"` // score every frame with framegen; an anomaly publishes the generated frame and a caption
	Cooldown  time.Duration `yaml:"cooldown"`   // at least this long between automatic generations of one kind per camera
}

// CameraGenerate replaces generate.triggers for one camera. Keys left out
// are off (0, false), not the defaults.
type CameraGenerate struct {
	Camera   string   `yaml:"camera"`
	Triggers Triggers `yaml:"triggers"`
}

// TriggersFor returns the triggers of camera id.
func (g Generate) TriggersFor(id string) Triggers {
	for _, c := range g.Cameras {
		if c.Camera == id {
			return c.Triggers
		}
	}
	return g.Triggers
}

// Limits checked by Validate.
const (
	MaxGenerateBudget = 64
	MaxGenerateTokens = 1024
)

func defaultGenerate() Generate {
	return Generate{
		CaptionModel:   "models/caption",
		FramegenModel:  "models/framegen",
		Budget:         2,
		QueueSize:      8,
		BatchSize:      4,
		RequestTimeout: 10 * time.Second,
		Threads:        1,
		WindowTTL:      30 * time.Second,
		ObjectTTL:      24 * time.Hour,
		Auto:           true,
		LeaseTTL:       10 * time.Second,
		Triggers:       Triggers{OnChange: true, OnAnomaly: true, Cooldown: 2 * time.Second},
		Cameras:        []CameraGenerate{},
	}
}

func (g Generate) check(ck *checker) {
	if g.Budget < 1 || g.Budget > MaxGenerateBudget {
		ck.add("generate.budget", "%d out of range 1..%d", g.Budget, MaxGenerateBudget)
	}
	if g.QueueSize < 0 {
		ck.add("generate.queue_size", "%d is negative (0 = reject whatever finds no free slot)", g.QueueSize)
	}
	if g.BatchSize < 1 || g.BatchSize > MaxBatchSize {
		ck.add("generate.batch_size", "%d out of range 1..%d", g.BatchSize, MaxBatchSize)
	}
	if g.RequestTimeout <= 0 {
		ck.add("generate.request_timeout", "%v must be positive", g.RequestTimeout)
	}
	if g.LeaseTTL < time.Second || g.LeaseTTL > 10*time.Minute {
		ck.add("generate.lease_ttl", "%s out of range 1s..10m", g.LeaseTTL)
	}
	if g.Threads < 0 {
		ck.add("generate.threads", "%d is negative (0 = ONNX Runtime's default, within the CPUs the process may use)", g.Threads)
	}
	if g.WindowTTL <= 0 {
		ck.add("generate.window_ttl", "%v must be positive", g.WindowTTL)
	}
	if g.ObjectTTL < 0 {
		ck.add("generate.object_ttl", "%v is negative (0 = keep forever)", g.ObjectTTL)
	}
	g.Sampling.check(ck, "generate.sampling")
	g.Triggers.check(ck, "generate.triggers")
	first := map[string]int{}
	for i, c := range g.Cameras {
		path := fmt.Sprintf("generate.cameras[%d]", i)
		ck.addErr(path+".camera", frame.ValidCameraID(c.Camera))
		if j, dup := first[c.Camera]; dup {
			ck.add(path+".camera", "duplicate camera %q (also generate.cameras[%d])", c.Camera, j)
		}
		first[c.Camera] = i
		c.Triggers.check(ck, path+".triggers")
	}
}

// Check validates sampling settings; problems name path.key.
func (s Sampling) Check(path string) error {
	ck := &checker{}
	s.check(ck, path)
	if len(ck.errs) == 0 {
		return nil
	}
	return ck.errs[0]
}

func (s Sampling) check(ck *checker, path string) {
	if !inRange(s.Temperature, 0, 100) {
		ck.add(joinPath(path, "temperature"), "%v out of range 0..100 (0 = greedy)", s.Temperature)
	}
	if s.TopK < 0 {
		ck.add(joinPath(path, "top_k"), "%d is negative (0 = off)", s.TopK)
	}
	if !inRange(s.TopP, 0, 1) {
		ck.add(joinPath(path, "top_p"), "%v out of range 0..1 (0 = off)", s.TopP)
	}
	if s.MaxTokens < 0 || s.MaxTokens > MaxGenerateTokens {
		ck.add(joinPath(path, "max_tokens"), "%d out of range 0..%d (0 = the model's max_length − 1)", s.MaxTokens, MaxGenerateTokens)
	}
}

func (t Triggers) check(ck *checker, path string) {
	if t.Every < 0 || (t.Every > 0 && t.Every < 100*time.Millisecond) {
		ck.add(path+".every", "%v: want 0 (off) or at least 100ms", t.Every)
	}
	if t.Cooldown < 0 {
		ck.add(path+".cooldown", "%v is negative", t.Cooldown)
	}
}
