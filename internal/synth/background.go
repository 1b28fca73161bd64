package synth

import "math"

// renderBackground fills bg (w·h·3) with a background of the given kind.
// Every background is nearly grey (channels within ~30 of each other) so
// that no background pixel looks like an object's colour.
func renderBackground(bg []byte, w, h int, kind string, r rng) {
	base := 70 + r.float()*70 // mean grey level
	tint := [3]float64{r.float()*24 - 12, r.float()*24 - 12, r.float()*24 - 12}
	set := func(x, y int, v float64) {
		p := (y*w + x) * 3
		for c := 0; c < 3; c++ {
			bg[p+c] = byte(math.Max(0, math.Min(255, math.Round(v+tint[c]))))
		}
	}
	switch kind {
	case BackgroundPlain:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				set(x, y, base)
			}
		}
	case BackgroundGradient:
		a := r.float() * 2 * math.Pi
		dx, dy := math.Cos(a), math.Sin(a)
		amp := 30 + r.float()*40
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				t := (float64(x)/float64(w)-0.5)*dx + (float64(y)/float64(h)-0.5)*dy
				set(x, y, base+amp*t*1.4)
			}
		}
	case BackgroundNoise:
		// Smooth value noise on a coarse lattice plus a little fine grain.
		cell := max(4, min(w, h)/(6+r.intn(10)))
		gw, gh := w/cell+2, h/cell+2
		lattice := make([]float64, gw*gh)
		for i := range lattice {
			lattice[i] = r.float()*60 - 30
		}
		grain := newRNG(int64(r.float()*(1<<52)), sceneStream, -2)
		for y := 0; y < h; y++ {
			fy := float64(y) / float64(cell)
			iy, ty := int(fy), fy-math.Floor(fy)
			for x := 0; x < w; x++ {
				fx := float64(x) / float64(cell)
				ix, tx := int(fx), fx-math.Floor(fx)
				l := func(i, j int) float64 { return lattice[j*gw+i] }
				v := (l(ix, iy)*(1-tx)+l(ix+1, iy)*tx)*(1-ty) + (l(ix, iy+1)*(1-tx)+l(ix+1, iy+1)*tx)*ty
				set(x, y, base+v+grain.at(y*w+x)*12-6)
			}
		}
	case BackgroundTexture:
		// Stripes or a checkerboard of two greys.
		period := max(4, min(w, h)/(4+r.intn(8)))
		contrast := 15 + r.float()*25
		checker := r.float() < 0.5
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				on := ((x+y)/period)%2 == 0 // diagonal stripes
				if checker {
					on = (x/period+y/period)%2 == 0
				}
				v := base - contrast/2
				if on {
					v += contrast
				}
				set(x, y, v)
			}
		}
	}
}
