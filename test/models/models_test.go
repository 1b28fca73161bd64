package models

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/generate"
	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/app"
	"github.com/patchline/patchline/internal/apptest"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/synth"
	"github.com/patchline/patchline/internal/testenv"
	"github.com/patchline/patchline/internal/textgen"
)

// TestTokenizationMatchesTraining: the tokens the Go side computes for a
// synthetic frame (render → decode's OpenCV resize → frame.Tokenize) are,
// byte for byte, the tokens the training script computed in numpy from the
// data set `patchline synth` wrote (validation seeds 50000.., saved at
// export time).
func TestTokenizationMatchesTraining(t *testing.T) {
	for _, name := range []string{"scene-vit", "framegen", "caption"} {
		dir := modelDir(t, name)
		ref := readFile(t, filepath.Join(dir, "testdata", "tokens_u8.bin"))
		var frames []struct{ seed, frame int }
		switch name {
		case "scene-vit": // flat validation frames 3 and 200 (64 per sequence)
			frames = []struct{ seed, frame int }{{50000, 3}, {50003, 8}}
		case "framegen": // context frames of validation windows (seq 0, target 8) and (seq 1, target 42)
			frames = []struct{ seed, frame int }{{50000, 5}, {50000, 6}, {50000, 7}, {50001, 39}, {50001, 40}, {50001, 41}}
		case "caption": // windows ending at (seq 0, frame 10) and (seq 5, frame 40)
			frames = []struct{ seed, frame int }{{50000, 8}, {50000, 9}, {50000, 10}, {50005, 38}, {50005, 39}, {50005, 40}}
		}
		if len(ref) != len(frames)*per {
			t.Fatalf("%s: tokens_u8.bin is %d bytes, want %d frames of %d", name, len(ref), len(frames), per)
		}
		for k, f := range frames {
			w := newWorld(t, fmt.Sprintf("synthetic://?seed=%d", f.seed))
			tok, _, _ := w.tokens(t, f.frame)
			if !bytes.Equal(tok, ref[k*per:(k+1)*per]) {
				t.Fatalf("%s: Go tokens of seed %d frame %d differ from the training-time tokens", name, f.seed, f.frame)
			}
		}
	}
}

// TestExportsMatchTorch checks every ONNX graph against the torch outputs
// saved when it was exported.
func TestExportsMatchTorch(t *testing.T) {
	const tol = 1e-4
	sv := modelDir(t, "scene-vit")
	x := normalise(readFile(t, filepath.Join(sv, "testdata", "tokens_u8.bin")))
	out := runONNX(t, filepath.Join(sv, "model.onnx"), []string{"patch_tokens"}, [][]int64{{2, nTok, dTok}}, [][]float32{x},
		[]string{"patch_logits", "scene_logits"})
	for i, name := range []string{"patch_logits", "scene_logits"} {
		if d := maxAbsDiff(t, name, out[i], testenv.ReadF32(t, filepath.Join(sv, "testdata", name+"_f32.bin"))); d > tol {
			t.Errorf("scene-vit %s: max abs difference %g > %g", name, d, tol)
		} else {
			t.Logf("scene-vit %s: max abs difference %.2g", name, d)
		}
	}
	fg := modelDir(t, "framegen")
	x = normalise(readFile(t, filepath.Join(fg, "testdata", "tokens_u8.bin")))
	out = runONNX(t, filepath.Join(fg, "model.onnx"), []string{"patch_tokens"}, [][]int64{{2, 3, nTok, dTok}}, [][]float32{x}, []string{"next_tokens"})
	if d := maxAbsDiff(t, "next_tokens", out[0], testenv.ReadF32(t, filepath.Join(fg, "testdata", "next_f32.bin"))); d > tol {
		t.Errorf("framegen next_tokens: max abs difference %g > %g", d, tol)
	} else {
		t.Logf("framegen next_tokens: max abs difference %.2g", d)
	}
	cp := modelDir(t, "caption")
	x = normalise(readFile(t, filepath.Join(cp, "testdata", "tokens_u8.bin")))
	out = runONNX(t, filepath.Join(cp, "encoder_model.onnx"), []string{"patch_tokens"}, [][]int64{{2, 3, nTok, dTok}}, [][]float32{x}, []string{"encoder_hidden_states"})
	if d := maxAbsDiff(t, "encoder_hidden_states", out[0], testenv.ReadF32(t, filepath.Join(cp, "testdata", "encoder_hidden_states_f32.bin"))); d > tol {
		t.Errorf("caption encoder: max abs difference %g > %g", d, tol)
	}
	// The decoders: Go's greedy decoding (ORT, KV cache) gives torch's tokens.
	var ref struct {
		Tokens [][]int64 `json:"tokens"`
		Text   []string  `json:"text"`
	}
	if err := json.Unmarshal(readFile(t, filepath.Join(cp, "testdata", "greedy.json")), &ref); err != nil {
		t.Fatal(err)
	}
	c := openCaptioner(t)
	raw := readFile(t, filepath.Join(cp, "testdata", "tokens_u8.bin"))
	var in []textgen.Input
	for b := 0; b < 2; b++ {
		var fr [][]byte
		for k := 0; k < 3; k++ {
			fr = append(fr, raw[(b*3+k)*per:(b*3+k+1)*per])
		}
		in = append(in, textgen.Input{Frames: fr})
	}
	got, err := c.Caption(context.Background(), in, textgen.Sampling{})
	if err != nil {
		t.Fatal(err)
	}
	for b := range got {
		if got[b].Text != ref.Text[b] {
			t.Errorf("caption %d: Go %q, torch %q", b, got[b].Text, ref.Text[b])
		}
	}
}

func openCaptioner(t testing.TB) *textgen.Captioner {
	t.Helper()
	c, err := textgen.Open(modelDir(t, "caption"), textgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCaptionAccuracy: on held-out seeds, greedy captions name at least
// synth.CaptionGoal of the objects in view with the right colour, shape and
// motion, and decoding with the KV cache gives exactly the tokens of
// decoding without.
func TestCaptionAccuracy(t *testing.T) {
	c := openCaptioner(t)
	type window struct {
		in    textgen.Input
		truth string
	}
	var ws []window
	for seed := 101; seed <= 110; seed++ {
		w := newWorld(t, fmt.Sprintf("synthetic://?seed=%d", seed))
		var toks [][]byte
		var truths []string
		for i := 0; i < 48; i++ {
			tok, _, tr := w.tokens(t, i)
			toks, truths = append(toks, tok), append(truths, tr.Caption)
		}
		for i := 2; i < 48; i += 3 {
			ws = append(ws, window{textgen.Input{Frames: toks[i-2 : i+1]}, truths[i]})
		}
	}
	right, total, exact := 0, 0, 0
	var first []textgen.Caption
	for b := 0; b < len(ws); b += 16 {
		batch := ws[b:min(b+16, len(ws))]
		in := make([]textgen.Input, len(batch))
		for i := range batch {
			in[i] = batch[i].in
		}
		got, err := c.Caption(context.Background(), in, textgen.Sampling{})
		if err != nil {
			t.Fatal(err)
		}
		if b == 0 {
			first = got
			nc, err := c.Caption(context.Background(), in, textgen.Sampling{NoCache: true})
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if !slices.Equal(got[i].Tokens, nc[i].Tokens) {
					t.Fatalf("window %d: KV cache tokens %v, without cache %v", i, got[i].Tokens, nc[i].Tokens)
				}
			}
		}
		for i, g := range got {
			r, n := synth.CaptionHits(batch[i].truth, g.Text)
			right, total = right+r, total+n
			if g.Text == batch[i].truth {
				exact++
			}
		}
	}
	frac := float64(right) / float64(total)
	t.Logf("caption: %d/%d objects right (%.1f%%), %d/%d captions exact; e.g. %q", right, total, 100*frac, exact, len(ws), first[0].Text)
	if frac < synth.CaptionGoal {
		t.Errorf("caption names %.1f%% of objects with the right colour, shape and motion, want >= %.0f%%", 100*frac, 100*synth.CaptionGoal)
	}
}

// TestFramegenAnomalies: the frame anomaly score separates injected
// anomalies from normal frames (AUROC >= 0.95) on held-out seeds, and a
// generated frame is written as PNG for people to look at.
func TestFramegenAnomalies(t *testing.T) {
	g, err := generate.OpenFramegen(modelDir(t, "framegen"), generate.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	k := g.NumFrames()
	var pos, neg []float64
	perKind := map[string][]float64{}
	type example struct {
		score        float64
		actual, next []byte
		heat         []float64
		kind         string
	}
	var best example
	for _, kind := range synth.Anomalies {
		for seed := 201; seed <= 206; seed++ {
			w := newWorld(t, fmt.Sprintf("synthetic://?seed=%d&anomaly=%s&anomaly_at=8&anomaly_every=12", seed, kind))
			var toks [][]byte
			var labels []string
			for i := 0; i < 56; i++ {
				tok, _, tr := w.tokens(t, i)
				toks, labels = append(toks, tok), append(labels, tr.Anomaly)
			}
			var in []generate.FramegenInput
			for i := k; i < len(toks); i++ {
				in = append(in, generate.FramegenInput{Context: toks[i-k : i], Actual: toks[i]})
			}
			res, err := g.Run(in)
			if err != nil {
				t.Fatal(err)
			}
			for j, r := range res {
				i := j + k
				if labels[i] == "" {
					neg = append(neg, r.Score)
					continue
				}
				pos = append(pos, r.Score)
				perKind[labels[i]] = append(perKind[labels[i]], r.Score)
				if r.Score > best.score {
					best = example{r.Score, toks[i], r.Next, r.PatchScores, labels[i]}
				}
			}
		}
	}
	a := auroc(pos, neg)
	msg := fmt.Sprintf("framegen: AUROC %.4f over %d anomalous and %d normal frames; threshold %.3f", a, len(pos), len(neg), g.Threshold())
	for kind, s := range perKind {
		msg += fmt.Sprintf("; %s %.4f (%d)", kind, auroc(s, neg), len(s))
	}
	t.Log(msg)
	if a < 0.95 || math.IsNaN(a) {
		t.Errorf("anomaly AUROC %.4f, want >= 0.95", a)
	}
	path := filepath.Join(testenv.Artifacts(t), "framegen-anomaly.png")
	writeTriptych(t, path, best.actual, best.next, best.heat)
	t.Logf("wrote %s: actual %s frame | predicted frame | anomaly heatmap (score %.3f)", path, best.kind, best.score)
}

// writeTriptych writes actual | predicted | heatmap, each 96×96 scaled ×3.
func writeTriptych(t testing.TB, path string, actual, next []byte, heat []float64) {
	t.Helper()
	const z = 3
	img := image.NewRGBA(image.Rect(0, 0, 3*side*z, side*z))
	put := func(ox int, tokens []byte) {
		rgb := make([]byte, per)
		if err := frame.Untokenize(rgb, tokens, side, side, patch); err != nil {
			t.Fatal(err)
		}
		for y := 0; y < side*z; y++ {
			for x := 0; x < side*z; x++ {
				p := ((y/z)*side + x/z) * 3
				img.Set(ox+x, y, color.RGBA{rgb[p], rgb[p+1], rgb[p+2], 255})
			}
		}
	}
	put(0, actual)
	put(side*z, next)
	hi := slices.Max(heat)
	for y := 0; y < side*z; y++ {
		for x := 0; x < side*z; x++ {
			v := heat[(y/z/patch)*grid+x/z/patch] / hi
			img.Set(2*side*z+x, y, color.RGBA{uint8(255 * v), uint8(64 * v), uint8(255 * (1 - v)), 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSceneViTPipeline runs held-out synthetic cameras through the real
// pipeline (synthetic camera → decode → NATS → analyze with scene-vit →
// sink → annotations) and scores the annotations against the world's truth:
// patch-level macro F1 >= 0.9 (over the classes the truth has), and object
// boxes (IoU >= 0.5 with the box of the object's visible pixels, same
// label) with recall and precision >= 0.9. Objects that own fewer patches
// than the bundle's min_region_patches (3) cannot be reported and are not
// counted.
func TestSceneViTPipeline(t *testing.T) {
	const minRegion = 3
	const fps = 20
	seeds := []int{11, 12, 13, 14, 15, 16, 17, 18}
	cfg := config.Default()
	cfg.NATS.Embedded.Port = -1
	cfg.NATS.Embedded.StoreDir = t.TempDir()
	cfg.HTTP.Addr = "off"
	cfg.Decode = modelDecode()
	cfg.Analyze.Model = modelDir(t, "scene-vit")
	cfg.Cameras = nil
	for _, s := range seeds {
		cfg.Cameras = append(cfg.Cameras, config.Camera{ID: fmt.Sprintf("seed%d", s), URL: fmt.Sprintf("synthetic://?seed=%d&fps=%d", s, fps), FPS: fps})
	}
	info := apptest.Start(t, app.Options{Config: cfg, Stages: []string{app.Ingest, app.Decode, app.Analyze, app.Sink}})
	nc, err := nats.Connect(info.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	got := map[string]map[int]annotation.Annotation{}
	sub, err := nc.Subscribe("patchline.annotations.>", func(m *nats.Msg) {
		var a annotation.Annotation
		if err := json.Unmarshal(m.Data, &a); err != nil || a.Kind != annotation.KindAnalysis {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if got[a.Camera] == nil {
			got[a.Camera] = map[int]annotation.Annotation{}
		}
		got[a.Camera][int(math.Round(a.PTSMs/1000*fps))] = a
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	const want = 40 // frames per camera
	deadline := time.Now().Add(90 * time.Second)
	for {
		mu.Lock()
		done := len(got) == len(seeds)
		for _, m := range got {
			done = done && len(m) >= want
		}
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("annotations after 90s: %d cameras, want %d with %d frames each", len(got), len(seeds), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var conf [synth.NumClasses][synth.NumClasses]int // [truth][predicted]
	gtObjects, predBoxes, matched, matchedPred := 0, 0, 0, 0
	for _, s := range seeds {
		w := newWorld(t, fmt.Sprintf("synthetic://?seed=%d&fps=%d", s, fps))
		for i, a := range got[fmt.Sprintf("seed%d", s)] {
			if a.Patches == nil || len(a.Patches.Classes) != nTok {
				t.Fatalf("frame %d: annotation has no %d-patch class map: %+v", i, nTok, a.Patches)
			}
			_, cls, tr := w.tokens(t, i)
			owned := map[int]int{} // patches per class
			for j, c := range cls {
				conf[c][a.Patches.Classes[j]]++
				owned[int(c)]++
			}
			used := make([]bool, len(a.Detections))
			predBoxes += len(a.Detections)
			for _, o := range tr.Objects {
				if owned[o.Class] < minRegion {
					continue // a sliver (at an edge, or behind another object) too small to report
				}
				gtObjects++
				for j, d := range a.Detections {
					if !used[j] && d.Label == o.Label() && iou(d.Box, o.Box) >= 0.5 {
						used[j] = true
						matched++
						matchedPred++
						break
					}
				}
			}
		}
	}
	f1s := 0.0
	n := 0
	for c := 0; c < synth.NumClasses; c++ {
		tp, fp, fn := conf[c][c], 0, 0
		for o := 0; o < synth.NumClasses; o++ {
			if o != c {
				fp += conf[o][c]
				fn += conf[c][o]
			}
		}
		if tp+fn == 0 {
			continue // macro over the classes the truth has; a patch wrongly given an absent class still counts, as a miss of its true class
		}
		f1s += 2 * float64(tp) / float64(2*tp+fp+fn)
		n++
	}
	f1 := f1s / float64(n)
	recall := float64(matched) / float64(gtObjects)
	precision := float64(matchedPred) / float64(predBoxes)
	t.Logf("scene-vit through the pipeline: patch macro F1 %.4f over %d classes; boxes recall %.4f (%d/%d), precision %.4f (%d/%d)",
		f1, n, recall, matched, gtObjects, precision, matchedPred, predBoxes)
	if f1 < 0.9 {
		t.Errorf("patch macro F1 %.4f, want >= 0.9", f1)
	}
	if recall < 0.9 || precision < 0.9 {
		t.Errorf("box recall %.4f / precision %.4f at IoU 0.5, want both >= 0.9", recall, precision)
	}
}
