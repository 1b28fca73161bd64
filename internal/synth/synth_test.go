package synth

import (
	"bytes"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestParseURLDefaults(t *testing.T) {
	p, err := ParseURL("synthetic://")
	if err != nil {
		t.Fatal(err)
	}
	if p != DefaultParams() {
		t.Fatalf("got %+v, want defaults %+v", p, DefaultParams())
	}
	p, err = ParseURL("synthetic://?seed=7&width=320&height=240&objects=5&fps=10&background=plain&anomaly=spawn&anomaly_at=3&anomaly_every=9")
	if err != nil {
		t.Fatal(err)
	}
	want := Params{Seed: 7, Width: 320, Height: 240, Objects: 5, FPS: 10, Background: BackgroundPlain, Anomaly: AnomalySpawn, AnomalyAt: 3, AnomalyEvery: 9}
	if p != want {
		t.Fatalf("got %+v, want %+v", p, want)
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"synthetic://?colour=red", `unknown parameter "colour"`},
		{"synthetic://?seed=x", "parameter seed"},
		{"synthetic://?width=8", "out of range"},
		{"synthetic://?height=99999", "out of range"},
		{"synthetic://?objects=0", "objects"},
		{"synthetic://?objects=9", "objects"},
		{"synthetic://?fps=0", "fps"},
		{"synthetic://?background=stripes", "background"},
		{"synthetic://?anomaly=explode", `anomaly "explode"`},
		{"synthetic://?anomaly_at=5", "need anomaly="},
		{"synthetic://?anomaly=teleport&anomaly_at=-1", "negative"},
		{"synthetic://?anomaly=spawn&anomaly_every=2", "too short"},
		{"synthetic://?seed=1&seed=2", "given 2 times"},
		{"synthetic://host/path", "only query parameters"},
		{"rtsp://?seed=1", "scheme"},
	} {
		_, err := ParseURL(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseURL(%q) = %v, want error containing %q", tc.url, err, tc.want)
		}
	}
}

func mustScene(t testing.TB, url string) *Scene {
	t.Helper()
	p, err := ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestClasses(t *testing.T) {
	if Class(ColorRed, ShapeCircle) != 1 || Class(ColorYellow, ShapeTriangle) != 12 || Class("pink", ShapeCircle) != -1 {
		t.Fatal("class ids")
	}
	names := ClassNames()
	if len(names) != NumClasses || names[0] != "background" || names[2] != "red square" || names[4] != "green circle" {
		t.Fatalf("class names %v", names)
	}
	for id := 1; id < NumClasses; id++ {
		f := strings.Fields(ClassName(id))
		if Class(f[0], f[1]) != id {
			t.Fatalf("class %d round trip", id)
		}
	}
}

func TestDeterministic(t *testing.T) {
	url := "synthetic://?seed=7&objects=6&width=200&height=160"
	a, b := mustScene(t, url), mustScene(t, url)
	fa, fb := make([]byte, a.FrameSize()), make([]byte, b.FrameSize())
	for _, i := range []int{0, 1, 17, 1000, 3001, 5} { // 5 after 3001: backwards
		ga, err := a.Render(fa, i)
		if err != nil {
			t.Fatal(err)
		}
		gb, _ := b.Render(fb, i)
		if !bytes.Equal(fa, fb) {
			t.Fatalf("frame %d differs between two scenes of the same seed", i)
		}
		if ga.Caption != gb.Caption || len(ga.Objects) != len(gb.Objects) {
			t.Fatalf("frame %d truth differs: %+v vs %+v", i, ga, gb)
		}
		for n := range ga.Objects {
			if ga.Objects[n] != gb.Objects[n] {
				t.Fatalf("frame %d object %d: %+v vs %+v", i, n, ga.Objects[n], gb.Objects[n])
			}
		}
	}
	// Rendering out of order gives the same bytes.
	a.Render(fa, 5)
	c := bytes.Clone(fa)
	a.Render(fa, 99)
	a.Render(fa, 700)
	a.Render(fa, 5)
	if !bytes.Equal(fa, c) {
		t.Fatal("frame 5 differs when rendered again")
	}
	d := mustScene(t, "synthetic://?seed=8&objects=6&width=200&height=160")
	fd := make([]byte, d.FrameSize())
	d.Render(fd, 5)
	if bytes.Equal(fd, c) {
		t.Fatal("seeds 7 and 8 render the same frame")
	}
	a.Render(fa, 6)
	if bytes.Equal(fa, c) {
		t.Fatal("frames 5 and 6 are identical: nothing moves")
	}
}

var captionRE = regexp.MustCompile(`^a (red|green|blue|yellow) (circle|square|triangle) (moves (left|right|up|down)|is still)(; a (red|green|blue|yellow) (circle|square|triangle) (moves (left|right|up|down)|is still))*$`)

// TestWorld runs many scenes for a while and checks the ground truth
// against the pixels, and that the world's events all happen.
func TestWorld(t *testing.T) {
	seen := map[string]int{}
	for seed := 1; seed <= 16; seed++ {
		s := mustScene(t, "synthetic://?width=96&height=80&objects=3&background="+Backgrounds[seed%4]+"&seed="+itoa(seed))
		p := s.Params()
		seen["background "+s.Background()]++
		rgb, cls := make([]byte, s.FrameSize()), make([]byte, p.Width*p.Height)
		prevIDs := map[int]bool{}
		prevMotion := map[int]string{}
		for i := 0; i < 400; i++ {
			tr, err := s.RenderClasses(rgb, cls, i)
			if err != nil {
				t.Fatal(err)
			}
			if tr.Anomaly != "" {
				t.Fatalf("seed %d frame %d: anomaly %q without injection", seed, i, tr.Anomaly)
			}
			if !captionRE.MatchString(tr.Caption) {
				t.Fatalf("seed %d frame %d: caption %q breaks the grammar", seed, i, tr.Caption)
			}
			ids := map[int]bool{}
			for _, o := range tr.Objects {
				ids[o.ID] = true
				b := o.Box
				if b[0] < 0 || b[1] < 0 || b[2] > float64(p.Width) || b[3] > float64(p.Height) || b[0] >= b[2] || b[1] >= b[3] {
					t.Fatalf("frame %d: %s box %v outside %dx%d", i, o.Label(), b, p.Width, p.Height)
				}
				// Every pixel of its class lies inside its box.
				for y := 0; y < p.Height; y++ {
					for x := 0; x < p.Width; x++ {
						if int(cls[y*p.Width+x]) == o.Class && (float64(x) < b[0] || float64(x) >= b[2] || float64(y) < b[1] || float64(y) >= b[3]) {
							t.Fatalf("seed %d frame %d: %s pixel (%d,%d) outside box %v", seed, i, o.Label(), x, y, b)
						}
					}
				}
				if prevMotion[o.ID] != "" && prevMotion[o.ID] != o.Motion {
					seen["change "+prevMotion[o.ID]+">"+o.Motion]++
				}
				prevMotion[o.ID] = o.Motion
				seen["motion "+o.Motion]++
			}
			for id := range prevIDs {
				if !ids[id] {
					seen["leave"]++
				}
			}
			for id := range ids {
				if !prevIDs[id] && i > 0 {
					seen["enter"]++
				}
			}
			prevIDs = ids
			if len(ids) == 0 {
				t.Fatalf("seed %d frame %d: empty scene", seed, i)
			}
			// The class map marks object pixels with their colour (under
			// the frame's light) and background pixels with a grey.
			for j, c := range cls {
				px := rgb[j*3 : j*3+3]
				spread := max(px[0], px[1], px[2]) - min(px[0], px[1], px[2])
				if c == 0 && spread > 40 {
					t.Fatalf("seed %d frame %d: background pixel %v is not grey", seed, i, px)
				}
				if c != 0 && spread < 100 {
					t.Fatalf("seed %d frame %d: object pixel %v of %s is greyish", seed, i, px, ClassName(int(c)))
				}
			}
		}
	}
	for _, k := range []string{"motion left", "motion right", "motion up", "motion down", "motion still", "leave", "enter",
		"background plain", "background gradient", "background noise", "background texture"} {
		if seen[k] == 0 {
			t.Errorf("no %q in 16 scenes × 400 frames (seen %v)", k, seen)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func center(o Object) (float64, float64) { return (o.Box[0] + o.Box[2]) / 2, (o.Box[1] + o.Box[3]) / 2 }

func find(tr Truth, id int) (Object, bool) {
	for _, o := range tr.Objects {
		if o.ID == id {
			return o, true
		}
	}
	return Object{}, false
}

// TestAnomalies checks that each injected anomaly happens at its frames and
// looks like what it is named.
func TestAnomalies(t *testing.T) {
	for _, kind := range Anomalies {
		for seed := 1; seed <= 5; seed++ {
			s := mustScene(t, "synthetic://?objects=3&anomaly="+kind+"&anomaly_at=20&anomaly_every=15&seed="+itoa(seed))
			hits := 0
			for i := 0; i < 200; i++ {
				tr, prev := s.Truth(i), s.Truth(i-1)
				if tr.Anomaly == "" {
					continue
				}
				scheduled := i >= 20 && (i-20)%15 == 0
				if kind == AnomalySpawn && tr.Anomaly == AnomalyVanish {
					scheduled = i >= 20 && (i-20)%15 == 7
				}
				if !scheduled {
					t.Fatalf("%s seed %d: anomaly %q at unscheduled frame %d", kind, seed, tr.Anomaly, i)
				}
				hits++
				switch tr.Anomaly {
				case AnomalySpawn:
					o, ok := find(tr, 3)
					_, before := find(prev, 3)
					if !ok || before || !o.InView {
						t.Fatalf("spawn seed %d frame %d: object 3 %+v (there before: %v)", seed, i, o, before)
					}
				case AnomalyVanish:
					_, ok := find(tr, 3)
					_, before := find(prev, 3)
					if ok || !before {
						t.Fatalf("vanish seed %d frame %d", seed, i)
					}
				case AnomalyTeleport, AnomalyReverse:
					moved := false
					for _, o := range tr.Objects {
						q, ok := find(prev, o.ID)
						if !ok {
							continue
						}
						x, y := center(o)
						px, py := center(q)
						d := math.Hypot(x-px, y-py)
						size := o.Box[2] - o.Box[0]
						if tr.Anomaly == AnomalyTeleport && d >= size {
							moved = true
						}
						if tr.Anomaly == AnomalyReverse && q.Motion != o.Motion && q.Motion != MotionStill && o.Motion != MotionStill {
							moved = true
						}
					}
					if !moved {
						t.Fatalf("%s seed %d frame %d: no object jumped or turned", tr.Anomaly, seed, i)
					}
				}
			}
			if hits < 6 {
				t.Errorf("%s seed %d: %d anomalies in 200 frames, want most of the 12 scheduled", kind, seed, hits)
			}
		}
	}
}

func TestPatchClasses(t *testing.T) {
	// 8×4 pixels into 2×1 patches of 16 pixels: the left one is 3/16 class
	// 1 and 2/16 class 2 (under a quarter: background); the right one
	// 4/16 class 3 and 3/16 class 2 (class 3 covers a quarter).
	cls := []byte{
		1, 1, 0, 0, 3, 3, 0, 0,
		1, 0, 0, 2, 3, 3, 0, 2,
		0, 0, 0, 2, 0, 0, 2, 2,
		0, 0, 0, 0, 0, 0, 0, 0,
	}
	got := make([]byte, 2)
	if err := PatchClasses(got, cls, 8, 4, 2, 1); err != nil {
		t.Fatal(err)
	}
	if want := []byte{0, 3}; !bytes.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if err := PatchClasses(got, cls, 8, 4, 3, 3); err == nil {
		t.Fatal("want error for a wrong grid")
	}
}

func TestCaption(t *testing.T) {
	objs := []Object{
		{Color: "blue", Shape: "square", Box: [4]float64{0, 0, 10, 10}, Motion: "still", InView: true},
		{Color: "red", Shape: "circle", Box: [4]float64{50, 0, 60, 10}, Motion: "left", InView: true},
		{Color: "green", Shape: "triangle", Box: [4]float64{0, 0, 2, 10}, Motion: "up", InView: false},
	}
	if got, want := Caption(objs), "a red circle moves left; a blue square is still"; got != want {
		t.Fatalf("caption %q, want %q", got, want)
	}
}

func TestRenderBufferSize(t *testing.T) {
	s, _ := New(DefaultParams())
	if _, err := s.Render(make([]byte, 10), 0); err == nil {
		t.Fatal("want error for short buffer")
	}
	if _, err := s.RenderClasses(make([]byte, s.FrameSize()), make([]byte, 3), 0); err == nil {
		t.Fatal("want error for short class buffer")
	}
}

func BenchmarkRender384(b *testing.B) {
	s, _ := New(DefaultParams())
	buf := make([]byte, s.FrameSize())
	b.SetBytes(int64(len(buf)))
	for i := 0; b.Loop(); i++ {
		s.Render(buf, i)
	}
}

// TestCaptionHits scores captions in the world's grammar: an object counts
// as right only with its colour, shape and motion, and words outside the
// grammar count for nothing.
func TestCaptionHits(t *testing.T) {
	truth := "a red circle moves left; a blue square is still"
	for _, c := range []struct {
		text         string
		right, total int
	}{
		{truth, 2, 2},
		{"a blue square is still; a red circle moves left", 2, 2},
		{"a red circle moves right; a blue square is still", 1, 2},
		{"a green circle moves left", 0, 2},
		{"nonsense", 0, 2},
	} {
		if r, n := CaptionHits(truth, c.text); r != c.right || n != c.total {
			t.Errorf("CaptionHits(%q) = %d/%d, want %d/%d", c.text, r, n, c.right, c.total)
		}
	}
	if r, n := CaptionHits("", "a red circle moves left"); r != 0 || n != 0 {
		t.Errorf("empty truth: %d/%d, want 0/0", r, n)
	}
}
