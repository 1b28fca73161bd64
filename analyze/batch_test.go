package analyze

import (
	"strings"
	"testing"

	"github.com/patchline/patchline/internal/frame"
)

// openQuirk opens a bundle of testdata/batch-quirks (made by
// models/train/make_batch_quirks.py) at its 8×8, patch 4 input.
func openQuirk(t *testing.T, name string) *Model {
	t.Helper()
	requireORT(t)
	b, err := LoadBundle("testdata/batch-quirks/" + name)
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenModel(b, ModelOptions{Width: 8, Height: 8, PatchSize: 4, Resize: frame.ResizeStretch})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// quirkFrames are n 8×8 frames of different greys.
func quirkFrames(n int) []*frame.Frame {
	fs := make([]*frame.Frame, n)
	for i := range fs {
		tok := make([]byte, 8*8*3)
		for j := range tok {
			tok[j] = byte(40 * (i + 1))
		}
		fs[i] = &frame.Frame{Camera: "c", Seq: uint64(i + 1), Width: 8, Height: 8, Patch: 4, Resize: frame.ResizeStretch,
			Tokens: tok, SourceW: 16, SourceH: 16, Transform: frame.Stretch(16, 16, 8, 8)}
	}
	return fs
}

// TestBatchFixedOnAnExtraInput: a graph whose image input takes any batch
// but whose extra input (orig_target_sizes) is fixed at 1 is fed one frame
// at a time; before, every batch of more than one frame failed.
func TestBatchFixedOnAnExtraInput(t *testing.T) {
	m := openQuirk(t, "extra-fixed1")
	if m.fixedBatch != 1 || len(m.Notes()) != 0 {
		t.Errorf("fixed batch %d, notes %q; want 1 from orig_target_sizes' shape, and no note", m.fixedBatch, m.Notes())
	}
	res, err := m.Run(quirkFrames(3))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if len(r.Detections) != 1 {
			t.Errorf("frame %d: %d detections, want 1", i, len(r.Detections))
		}
	}
	if res[0].Detections[0].Score == res[2].Detections[0].Score {
		t.Error("frames 1 and 3 scored the same: not each its own")
	}
}

// TestBatchBakedIntoTheGraph: a graph that declares any batch but runs only
// batch 1 (a reshape to 1) is found out by OpenModel's trial run: it is fed
// one frame at a time, and a note says why.
func TestBatchBakedIntoTheGraph(t *testing.T) {
	m := openQuirk(t, "baked1")
	if m.fixedBatch != 1 {
		t.Errorf("fixed batch %d, want 1 (found by the trial run)", m.fixedBatch)
	}
	if n := m.Notes(); len(n) != 1 || !strings.Contains(n[0], "runs only batch 1") {
		t.Errorf("notes %q, want one saying the graph runs only batch 1", n)
	}
	res, err := m.Run(quirkFrames(3))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if len(r.Labels) != 1 {
			t.Errorf("frame %d: labels %+v, want 1", i, r.Labels)
		}
	}
}
