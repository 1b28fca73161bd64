package dataset

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/decode"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/synth"
)

func small() Options {
	d := config.Default().Decode
	d.Width, d.Height, d.PatchSize, d.Resize = 96, 96, 8, frame.ResizeStretch
	return Options{Seed: 7, Sequences: 2, Frames: 6, Scene: synth.DefaultParams(), Decode: d}
}

// npy reads a uint8 .npy file: its shape and data.
func npy(t *testing.T, path string) ([]int, []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x93NUMPY\x01\x00")) {
		t.Fatalf("%s: not an npy 1.0 file", path)
	}
	n := int(b[8]) | int(b[9])<<8
	if (10+n)%64 != 0 {
		t.Fatalf("%s: header not aligned to 64 bytes", path)
	}
	hdr := string(b[10 : 10+n])
	if !strings.Contains(hdr, "'descr': '|u1'") || !strings.Contains(hdr, "'fortran_order': False") {
		t.Fatalf("%s: header %q", path, hdr)
	}
	dims := strings.Trim(hdr[strings.Index(hdr, "(")+1:strings.Index(hdr, ")")], " ,")
	var shape []int
	total := 1
	for _, f := range strings.Split(dims, ",") {
		var v int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &v); err != nil {
			t.Fatalf("%s: shape %q: %v", path, dims, err)
		}
		shape = append(shape, v)
		total *= v
	}
	data := b[10+n:]
	if len(data) != total {
		t.Fatalf("%s: %d data bytes for shape %v", path, len(data), shape)
	}
	return shape, data
}

// TestWrite checks the files and that every frame and class map is what
// rendering the scene and preprocessing it gives.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	o := small()
	o.PNG = true
	m, err := Write(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Seeds) != 2 || m.Seeds[1] != 8 || m.Grid != [2]int{12, 12} || len(m.Classes) != synth.NumClasses {
		t.Fatalf("meta %+v", m)
	}
	shape, frames := npy(t, filepath.Join(dir, "frames.npy"))
	if want := []int{12, 96, 96, 3}; !equalInts(shape, want) {
		t.Fatalf("frames.npy shape %v, want %v", shape, want)
	}
	shape, classes := npy(t, filepath.Join(dir, "classes.npy"))
	if want := []int{12, 12, 12}; !equalInts(shape, want) {
		t.Fatalf("classes.npy shape %v, want %v", shape, want)
	}
	f, err := os.Open(filepath.Join(dir, "truth.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 12 {
		t.Fatalf("%d truth records, want 12", len(recs))
	}
	pre, err := decode.NewPreprocessor(o.Decode)
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close()
	for n, r := range recs {
		p := o.Scene
		p.Seed = r.Seed
		s, _ := synth.New(p)
		rgb, pix := make([]byte, s.FrameSize()), make([]byte, p.Width*p.Height)
		tr, _ := s.RenderClasses(rgb, pix, r.Frame)
		if tr.Caption != r.Caption || len(tr.Objects) != len(r.Objects) {
			t.Fatalf("record %d: %+v, truth %+v", n, r, tr)
		}
		model, _, _ := pre.FromRGB(rgb, p.Width, p.Height)
		if !bytes.Equal(model, frames[n*96*96*3:(n+1)*96*96*3]) {
			t.Fatalf("frame %d differs from the preprocessed render", n)
		}
		want := make([]byte, 144)
		synth.PatchClasses(want, pix, p.Width, p.Height, 12, 12)
		if !bytes.Equal(want, classes[n*144:(n+1)*144]) {
			t.Fatalf("class map %d differs", n)
		}
		for _, ob := range r.Objects {
			for k := 0; k < 4; k++ {
				if math.Abs(ob.ModelBox[k]-ob.Box[k]/4) > 1e-9 { // 384 → 96
					t.Fatalf("model box %v for source box %v", ob.ModelBox, ob.Box)
				}
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "png", pngName(r.Seed, r.Frame))); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOptionErrors(t *testing.T) {
	o := small()
	o.Frames = 0
	if _, err := Write(t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "at least one") {
		t.Fatalf("got %v", err)
	}
	o = small()
	o.Decode.Resize = frame.ResizeLetterbox
	if _, err := Write(t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "letterbox") {
		t.Fatalf("got %v", err)
	}
	o = small()
	o.Scene.Anomaly = "melt"
	if _, err := Write(t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "melt") {
		t.Fatalf("got %v", err)
	}
}

// TestLiveFramesMatchDataset: the decode stage's published tokens for a
// synthetic camera are, byte for byte, frame.Tokenize of the data set's
// frames — what a model trains on is what it sees live.
func TestLiveFramesMatchDataset(t *testing.T) {
	dir := t.TempDir()
	o := small()
	o.Sequences = 1
	if _, err := Write(dir, o); err != nil {
		t.Fatal(err)
	}
	_, frames := npy(t, filepath.Join(dir, "frames.npy"))
	nc := natstest.Connect(t, natstest.Start(t))
	msgs := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(bus.FrameSubject("live"), msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// A queue the frames never overflow: a frame dropped on a loaded
	// machine would never be seen.
	d := o.Decode
	d.QueueSize = 256
	cam, err := decode.NewCamera(config.Camera{ID: "live", URL: "synthetic://?seed=7&fps=50", FPS: 50},
		decode.Options{NC: nc, Decode: d, Logger: natstest.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cam.Run(ctx)
	seen := 0
	timeout := time.After(30 * time.Second)
	for seen < o.Frames {
		select {
		case m := <-msgs:
			f, err := frame.Decode(m.Header, m.Data)
			if err != nil {
				t.Fatal(err)
			}
			i := int(math.Round(f.PTS.Seconds() * 50))
			if i >= o.Frames {
				continue
			}
			want := make([]byte, 96*96*3)
			frame.Tokenize(want, frames[i*96*96*3:(i+1)*96*96*3], 96, 96, 8)
			if !bytes.Equal(f.Tokens, want) {
				t.Fatalf("live frame %d differs from the data set's", i)
			}
			seen++
		case <-timeout:
			t.Fatalf("only %d of the data set's %d frames came live in 30s", seen, o.Frames)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
