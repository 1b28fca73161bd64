package frame

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func randomRGB(w, h int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, w*h*3)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

func TestTokenizeRoundTripIsExact(t *testing.T) {
	for _, c := range []struct{ w, h, p int }{{224, 224, 16}, {320, 320, 16}, {64, 32, 8}, {4, 4, 4}} {
		rgb := randomRGB(c.w, c.h, uint64(c.w*c.h))
		tok := make([]byte, len(rgb))
		if err := Tokenize(tok, rgb, c.w, c.h, c.p); err != nil {
			t.Fatal(err)
		}
		back := make([]byte, len(rgb))
		if err := Untokenize(back, tok, c.w, c.h, c.p); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back, rgb) {
			t.Fatalf("%dx%d/%d: round trip differs", c.w, c.h, c.p)
		}
	}
}

// Patch n, pixel (y,x), channel c of the token must be image pixel
// (gy*P+y, gx*P+x) — the layout training uses.
func TestTokenizeLayout(t *testing.T) {
	const w, h, p = 48, 32, 16
	rgb := randomRGB(w, h, 3)
	tok := make([]byte, len(rgb))
	if err := Tokenize(tok, rgb, w, h, p); err != nil {
		t.Fatal(err)
	}
	gw := w / p
	for n := 0; n < (w/p)*(h/p); n++ {
		gy, gx := n/gw, n%gw
		for y := 0; y < p; y++ {
			for x := 0; x < p; x++ {
				for c := 0; c < 3; c++ {
					got := tok[n*p*p*3+(y*p+x)*3+c]
					want := rgb[((gy*p+y)*w+gx*p+x)*3+c]
					if got != want {
						t.Fatalf("patch %d (%d,%d,%d): %d, want %d", n, y, x, c, got, want)
					}
				}
			}
		}
	}
}

func TestTokenizeRejectsBadSizes(t *testing.T) {
	if err := Tokenize(make([]byte, 30*32*3), make([]byte, 30*32*3), 30, 32, 16); err == nil || !strings.Contains(err.Error(), "multiple of patch size") {
		t.Errorf("30x32/16: %v", err)
	}
	if err := Tokenize(make([]byte, 10), make([]byte, 32*32*3), 32, 32, 16); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("short dst: %v", err)
	}
}

func TestBoxMapping(t *testing.T) {
	for _, c := range []struct {
		name string
		tr   Transform
		in   [4]float64
		want [4]float64
		w, h int
	}{
		{"stretch", Stretch(1920, 1080, 224, 224), [4]float64{56, 56, 112, 168}, [4]float64{480, 270, 960, 810}, 1920, 1080},
		{"letterbox", func() Transform { t, _, _ := Letterbox(640, 320, 320, 320); return t }(), [4]float64{0, 80, 320, 240}, [4]float64{0, 0, 640, 320}, 640, 320},
		{"clamped", Stretch(100, 100, 10, 10), [4]float64{-5, -5, 20, 20}, [4]float64{0, 0, 100, 100}, 100, 100},
	} {
		got := c.tr.BoxToSource(c.in, c.w, c.h)
		for i := range got {
			if d := got[i] - c.want[i]; d > 1e-9 || d < -1e-9 {
				t.Errorf("%s: %v → %v, want %v", c.name, c.in, got, c.want)
				break
			}
		}
	}
	tr, iw, ih := Letterbox(640, 320, 320, 320)
	if iw != 320 || ih != 160 || tr.OffsetX != 0 || tr.OffsetY != 80 {
		t.Errorf("letterbox 640x320→320: %+v inner %dx%d", tr, iw, ih)
	}
}

func sampleFrame() *Frame {
	f := &Frame{
		Camera: "cam-1", Seq: 42, PTS: 1500 * time.Millisecond, CapturedAt: time.Unix(1700000000, 123456789),
		SourceW: 1280, SourceH: 720, Width: 32, Height: 16, Patch: 16, Resize: ResizeLetterbox,
		Latency:     map[string]float64{"decode": 1.5, "tokenize": 0.25},
		PublishedAt: time.Unix(1700000000, 200000000),
		TraceParent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
	}
	f.Transform, _, _ = Letterbox(1280, 720, 32, 16)
	f.Tokens = randomRGB(32, 16, 9)
	return f
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	f := sampleFrame()
	m := f.Encode("patchline.frames.cam-1")
	g, err := Decode(m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if g.Camera != f.Camera || g.Seq != f.Seq || g.PTS != f.PTS || !g.CapturedAt.Equal(f.CapturedAt) ||
		g.SourceW != f.SourceW || g.SourceH != f.SourceH || g.Width != f.Width || g.Height != f.Height ||
		g.Patch != f.Patch || g.Resize != f.Resize || g.Transform != f.Transform || !g.PublishedAt.Equal(f.PublishedAt) ||
		g.TraceParent != f.TraceParent || !bytes.Equal(g.Tokens, f.Tokens) ||
		g.Latency["decode"] != 1.5 || g.Latency["tokenize"] != 0.25 {
		t.Fatalf("round trip:\n got %+v\nwant %+v", g, f)
	}
	if f.ID() != "cam-1:42" {
		t.Errorf("ID %q", f.ID())
	}
}

// TestPanoramicSourceSize: a source side over MaxSide (a 360° camera's
// 11520x5760) travels; only the model input is bound by MaxSide.
func TestPanoramicSourceSize(t *testing.T) {
	f := sampleFrame()
	f.SourceW, f.SourceH = 11520, 5760
	f.Transform, _, _ = Letterbox(11520, 5760, 32, 16)
	g, err := Decode(f.Encode("s").Header, f.Tokens)
	if err != nil {
		t.Fatal(err)
	}
	if g.SourceW != 11520 || g.SourceH != 5760 {
		t.Errorf("source size %dx%d, want 11520x5760", g.SourceW, g.SourceH)
	}
}

func TestDecodeErrorsNameTheHeader(t *testing.T) {
	for _, c := range []struct {
		name, header, value, want string
		payload                   []byte
	}{
		{"version", HdrVersion, "9", HdrVersion, nil},
		{"camera", HdrCamera, "a.b", HdrCamera, nil},
		{"seq", HdrSeq, "-1", HdrSeq, nil},
		{"size", HdrInputSize, "32x", HdrInputSize, nil},
		{"input", HdrInputSize, "8208x16", "out of range 1..8192", nil},
		{"huge", HdrSourceSize, "99999x1", "out of range 1..65535", nil},
		{"patch", HdrPatch, "5", "does not divide", nil},
		{"resize", HdrResize, "crop", HdrResize, nil},
		{"transform", HdrTransform, "1,0,0,0", "scales must be positive", nil},
		// NaN passes a "> 0" check and Inf an offset: both must be refused
		// as numbers, or a box maps to NaN or infinity in the source.
		{"NaN scale", HdrTransform, "NaN,1,0,0", `bad number "NaN"`, nil},
		{"Inf offset", HdrTransform, "1,1,Inf,0", `bad number "Inf"`, nil},
		{"input height", HdrInputSize, "1x99999", "out of range 1..8192", nil},
		{"source height", HdrSourceSize, "1x65536", "out of range 1..65535", nil},
		{"long camera", HdrCamera, strings.Repeat("c", 65), "longer than 64 characters", nil},
		{"latency", HdrLatency, "decode=NaN", HdrLatency, nil},
		{"payload", "", "", "payload is 3 bytes", []byte{1, 2, 3}},
	} {
		m := sampleFrame().Encode("s")
		if c.header != "" {
			m.Header.Set(c.header, c.value)
		}
		if c.payload != nil {
			m.Data = c.payload
		}
		_, err := Decode(m.Header, m.Data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want it to mention %q", c.name, err, c.want)
		}
	}
	if _, err := Decode(nil, nil); err == nil {
		t.Error("nil header accepted")
	}
}

// TestDecodeAtTheBounds: the largest values the headers allow decode (a
// camera id of 64 characters, a source side of MaxSourceSide); one more
// is refused by TestDecodeErrorsNameTheHeader.
func TestDecodeAtTheBounds(t *testing.T) {
	f := sampleFrame()
	f.Camera = strings.Repeat("c", 64)
	f.SourceW, f.SourceH = MaxSourceSide, MaxSourceSide
	f.Transform = Stretch(MaxSourceSide, MaxSourceSide, f.Width, f.Height)
	g, err := Decode(f.Encode("s").Header, f.Tokens)
	if err != nil {
		t.Fatal(err)
	}
	if g.Camera != f.Camera || g.SourceW != MaxSourceSide || g.SourceH != MaxSourceSide {
		t.Errorf("decoded camera %q, source %dx%d", g.Camera, g.SourceW, g.SourceH)
	}
}

func FuzzDecode(f *testing.F) {
	good := sampleFrame().Encode("s")
	f.Add(good.Header.Get(HdrSourceSize), good.Header.Get(HdrInputSize), good.Header.Get(HdrPatch), good.Header.Get(HdrTransform), good.Header.Get(HdrLatency), good.Data)
	f.Add("0x0", "16x16", "16", "1,1,0,0", "", []byte{})
	f.Add("1x1", "8192x8192", "1", "nan,1,0,0", "a=1,b", []byte("x"))
	f.Fuzz(func(t *testing.T, src, in, patch, tr, lat string, payload []byte) {
		h := nats.Header{}
		for k, v := range good.Header {
			h[k] = v
		}
		h.Set(HdrSourceSize, src)
		h.Set(HdrInputSize, in)
		h.Set(HdrPatch, patch)
		h.Set(HdrTransform, tr)
		h.Set(HdrLatency, lat)
		fr, err := Decode(h, payload)
		if err != nil {
			return
		}
		// Whatever decodes must be self-consistent and re-encode identically.
		if len(fr.Tokens) != fr.NumPatches()*fr.TokenDim() {
			t.Fatalf("accepted payload %d for %d patches of %d", len(fr.Tokens), fr.NumPatches(), fr.TokenDim())
		}
		m := fr.Encode("s")
		if _, err := Decode(m.Header, m.Data); err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
	})
}

func BenchmarkTokenize224(b *testing.B) {
	rgb := randomRGB(224, 224, 1)
	dst := make([]byte, len(rgb))
	b.SetBytes(int64(len(rgb)))
	for b.Loop() {
		_ = Tokenize(dst, rgb, 224, 224, 16)
	}
}
