package e2e

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/patchline/patchline/generate"
	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/synth"
)

// truthAt is the synthetic world's ground truth of the frame an annotation
// describes (frame index = pts · fps).
func truthAt(t testing.TB, url string, ptsMs float64) synth.Truth {
	t.Helper()
	s, err := synth.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	return s.Truth(int(math.Round(ptsMs / 1000 * s.Params().FPS)))
}

// TestGenerateCaptionsWithModels: three held-out synthetic cameras through
// the whole pipeline with patchline's trained models. Captions arrive on a
// scene change and on request, and name at least synth.CaptionGoal of the
// ground-truth objects in view with the right colour, shape and motion.
func TestGenerateCaptionsWithModels(t *testing.T) {
	cfg := generateConfig(t, modelBundles)
	cfg.Generate.Auto = true
	cfg.Generate.Triggers = config.Triggers{OnChange: true, Cooldown: 500 * time.Millisecond}
	urls := map[string]string{"cam1": "synthetic://?seed=21", "cam2": "synthetic://?seed=23", "cam3": "synthetic://?seed=25"}
	p, _ := startGenerate(t, cfg, "cam1", urls["cam1"])
	captions := kinds(t, p.nc, "cam1", annotation.KindCaption)
	for _, id := range []string{"cam2", "cam3"} {
		attach(t, p.info.HTTPAddr, config.Camera{ID: id, URL: urls[id], FPS: 5})
		waitUntil(t, id+"'s first frames in the generate stage", func() bool {
			return p.describeNATS(t, generate.Request{Camera: id, Kind: generate.KindCaption, Timeout: "5s"}).Error == ""
		})
	}

	right, total := 0, 0
	score := func(a *annotation.Annotation) {
		r, n := synth.CaptionHits(truthAt(t, urls[a.Camera], a.PTSMs).Caption, a.Caption.Text)
		right, total = right+r, total+n
	}
	for i := 0; i < 36; i++ {
		for _, id := range []string{"cam1", "cam2", "cam3"} {
			r := p.describeNATS(t, generate.Request{Camera: id, Kind: generate.KindCaption, Timeout: "5s"})
			if r.Error != "" || r.Caption == nil || r.Caption.Caption == nil {
				t.Fatalf("request %d for %s: %+v", i, id, r)
			}
			score(r.Caption)
		}
		time.Sleep(250 * time.Millisecond) // 5 fps: a new frame or so per round
	}
	waitUntil(t, "a caption triggered by a scene change", func() bool {
		for _, c := range captions() {
			if c.Caption.Trigger == generate.TriggerChange {
				return true
			}
		}
		return false
	})
	for _, c := range captions() {
		if c.Caption.Trigger == generate.TriggerChange {
			score(&c)
		}
	}
	frac := float64(right) / float64(total)
	t.Logf("captions through the pipeline: %d/%d ground-truth objects named with the right colour, shape and motion (%.1f%%)", right, total, 100*frac)
	if total < 200 {
		t.Fatalf("only %d ground-truth objects scored, want >= 200 for a meaningful figure", total)
	}
	if frac < synth.CaptionGoal {
		t.Errorf("%.1f%% of objects named right, want >= %.0f%%", 100*frac, 100*synth.CaptionGoal)
	}
}

// TestGenerateAnomalyWithModels: an anomaly injected into a held-out
// synthetic camera (an object teleports) is caught by models/framegen: an
// anomaly annotation at that frame, and its generated PNG in the Object
// Store, read back and decoded.
func TestGenerateAnomalyWithModels(t *testing.T) {
	cfg := generateConfig(t, modelBundles)
	cfg.Generate.Auto = true
	cfg.Generate.Triggers = config.Triggers{OnAnomaly: true, Cooldown: time.Second}
	const url = "synthetic://?seed=22&anomaly=teleport&anomaly_at=20&anomaly_every=15"
	p, _ := startGenerate(t, cfg, "cam1", url)
	anomalies := kinds(t, p.nc, "cam1", annotation.KindAnomaly)
	generated := p.generatedMsgs(t, "cam1")
	// An anomaly every 15 frames: wait for one annotated at its frame (a
	// false alarm may come first; each is logged).
	seen, hit := 0, false
	waitUntil(t, "an anomaly annotation at an injected anomaly", func() bool {
		for _, a := range anomalies()[seen:] {
			tr := truthAt(t, url, a.PTSMs)
			hit = hit || tr.Anomaly != ""
			seen++
			t.Logf("anomaly annotation at frame %d (truth: %q), score %.3f > %.3f", tr.Frame, tr.Anomaly, a.Anomaly.Score, a.Anomaly.Threshold)
		}
		return hit
	})
	for {
		select {
		case m := <-generated:
			var g generate.Generated
			if err := json.Unmarshal(m.Data, &g); err != nil {
				t.Fatal(err)
			}
			if g.Anomaly {
				p.readObject(t, g.Object)
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no generated frame for the anomaly on patchline.generated.cam1")
		}
	}
}
