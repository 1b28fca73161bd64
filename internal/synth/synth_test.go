package synth

import (
	"bytes"
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
	p, err = ParseURL("synthetic://?seed=7&width=320&height=240&objects=5&fps=10&background=plain")
	if err != nil {
		t.Fatal(err)
	}
	want := Params{Seed: 7, Width: 320, Height: 240, Objects: 5, FPS: 10, Background: BackgroundPlain}
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
		{"synthetic://?objects=-1", "objects"},
		{"synthetic://?fps=0", "fps"},
		{"synthetic://?background=stripes", "background"},
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

func TestDeterministic(t *testing.T) {
	p := DefaultParams()
	p.Seed, p.Objects = 7, 6
	a, _ := New(p)
	b, _ := New(p)
	fa, fb := make([]byte, a.FrameSize()), make([]byte, b.FrameSize())
	for _, i := range []int{0, 1, 17, 1000, 123456} {
		ga, err := a.Render(fa, i)
		if err != nil {
			t.Fatal(err)
		}
		gb, _ := b.Render(fb, i)
		if !bytes.Equal(fa, fb) {
			t.Fatalf("frame %d differs between two scenes of the same seed", i)
		}
		for n := range ga {
			if ga[n] != gb[n] {
				t.Fatalf("frame %d object %d: %+v vs %+v", i, n, ga[n], gb[n])
			}
		}
	}
	// Rendering out of order gives the same bytes.
	a.Render(fa, 5)
	c := bytes.Clone(fa)
	a.Render(fa, 99)
	a.Render(fa, 5)
	if !bytes.Equal(fa, c) {
		t.Fatal("frame 5 differs when rendered again")
	}
	// Another seed gives another scene; consecutive frames move.
	p.Seed = 8
	d, _ := New(p)
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

func TestObjectsInBoundsAndDrawn(t *testing.T) {
	for _, bg := range []string{BackgroundPlain, BackgroundGradient} {
		p := Params{Seed: 3, Width: 200, Height: 120, Objects: 12, FPS: 30, Background: bg}
		s, err := New(p)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, s.FrameSize())
		for i := 0; i < 2000; i += 7 {
			objs, err := s.Render(buf, i)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) != p.Objects {
				t.Fatalf("%d objects, want %d", len(objs), p.Objects)
			}
			for _, o := range objs {
				b := o.Box
				if b[0] < 0 || b[1] < 0 || b[2] > float64(p.Width) || b[3] > float64(p.Height) || b[0] >= b[2] || b[1] >= b[3] {
					t.Fatalf("frame %d: %s box %v outside %dx%d", i, o.Label(), b, p.Width, p.Height)
				}
			}
			// The topmost object's box centre has its colour (every shape
			// covers the centre of its box).
			top := objs[len(objs)-1]
			cx, cy := int((top.Box[0]+top.Box[2])/2), int((top.Box[1]+top.Box[3])/2)
			px := buf[(cy*p.Width+cx)*3:][:3]
			if c := RGB(top.Color); px[0] != c[0] || px[1] != c[1] || px[2] != c[2] {
				t.Fatalf("frame %d: pixel at centre of %s is %v, want %v", i, top.Label(), px, c)
			}
		}
	}
}

func TestRenderBufferSize(t *testing.T) {
	s, _ := New(DefaultParams())
	if _, err := s.Render(make([]byte, 10), 0); err == nil {
		t.Fatal("want error for short buffer")
	}
}

func BenchmarkRender640x360(b *testing.B) {
	s, _ := New(DefaultParams())
	buf := make([]byte, s.FrameSize())
	b.SetBytes(int64(len(buf)))
	for i := 0; b.Loop(); i++ {
		s.Render(buf, i)
	}
}
