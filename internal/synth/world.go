package synth

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// How the world behaves. Sizes and speeds scale with the frame's shorter
// side so that a scene looks the same at any resolution.
const (
	minSizeFrac  = 1 / 4.5   // object side, fraction of the shorter side
	maxSizeFrac  = 1 / 3.2   //
	minSpeedFrac = 0.018     // dominant-axis speed per frame, fraction of the shorter side
	maxSpeedFrac = 0.036     //
	maxCrossFrac = 0.3       // the other axis moves at most this fraction of the dominant one
	stopChance   = 0.008     // per moving object per frame
	leaveChance  = 0.3       // per wall hit, when another object stays in view
	checkpointN  = 256       // frames between saved world states
	easeFrames   = 3         // frames to brake to a stop, or to get back to speed
	stopMin      = 6         // frames an object stays stopped
	stopMax      = 20        //
	awayMin      = 5         // frames an object stays out of view after leaving
	awayMax      = 25        //
	lightMin     = 0.10      // amplitude of the light's slow change
	lightMax     = 0.28      //
	periodMin    = 30        // frames per light cycle
	periodMax    = 150       //
	stillBelow   = 1e-9      // speed under which an object counts as still
	hashStop     = 1         // purposes of the per-frame hash
	hashStopLen  = 2         //
	hashLeave    = 3         //
	hashAway     = 4         //
	hashEdge     = 5         //
	hashEdgePos  = 6         //
	hashSpeed    = 7         //
	hashCross    = 8         //
	hashResume   = 9         //
	hashPick     = 10        //
	hashDir      = 13        //
	hashPlace    = 100       // + 2·try (x) and + 2·try + 1 (y)
	sceneStream  = 1<<31 - 1 // object index used for scene-wide draws
)

const (
	modeMoving = iota
	modeStopped
	modeAway   // left through an edge; comes back through one
	modeHidden // the spawn object before it spawns or after it vanishes
)

// body is one object's state at some frame.
type body struct {
	x, y     float64 // top-left of the bounding square, pixels
	vx, vy   float64 // pixels per frame
	sx, sy   float64 // velocity to resume after a stop
	mode     int
	scale    float64 // fraction of the velocity applied: objects brake and speed up over easeFrames
	braking  bool
	timer    int  // frames left stopped or away
	leaving  bool // exits at the next wall instead of bouncing
	entering bool // coming in through an edge: no bounce until inside
}

// kind is an object's fixed look.
type kind struct {
	shape, color string
	class        int
	rgb          [3]byte
	size         int
}

// state is the world at one frame.
type state struct {
	frame   int
	bodies  []body
	anomaly string
}

func (s *state) clone() state {
	return state{frame: s.frame, bodies: append([]body(nil), s.bodies...), anomaly: s.anomaly}
}

// Scene simulates and renders one parameter set. It is safe for concurrent
// use; rendering frames in order is cheapest (each step is O(objects)).
type Scene struct {
	p          Params
	kinds      []kind // p.Objects objects, then the spawn object if any
	bg         []byte // background at full light, Width*Height*3
	background string
	light      struct{ amp, period, phase float64 }

	mu     sync.Mutex
	checks []state // world state at frames 0, checkpointN, 2·checkpointN, ...
	cur    state
}

// New builds the scene of p.
func New(p Params) (*Scene, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	s := &Scene{p: p, bg: make([]byte, p.Width*p.Height*3)}
	r := newRNG(p.Seed, sceneStream, -1)
	// Distinct classes: shuffle all twelve and take the first ones.
	classes := r.perm(len(Colors) * len(Shapes))
	n := p.Objects
	if p.Anomaly == AnomalySpawn {
		n++
	}
	minSide := float64(min(p.Width, p.Height))
	lo, hi := int(minSide*minSizeFrac), int(minSide*maxSizeFrac)
	for i := 0; i < n; i++ {
		c := classes[i]
		k := kind{color: Colors[c/len(Shapes)], shape: Shapes[c%len(Shapes)], size: lo + r.intn(hi-lo+1)}
		k.class, k.rgb = Class(k.color, k.shape), RGB(k.color)
		s.kinds = append(s.kinds, k)
	}
	s.background = p.Background
	if s.background == BackgroundAuto {
		s.background = Backgrounds[r.intn(len(Backgrounds))]
	}
	s.light.amp = lightMin + r.float()*(lightMax-lightMin)
	s.light.period = periodMin + r.float()*(periodMax-periodMin)
	s.light.phase = r.float() * 2 * math.Pi
	renderBackground(s.bg, p.Width, p.Height, s.background, r)

	st := state{bodies: make([]body, n)}
	for i := range st.bodies {
		b := &st.bodies[i]
		if i >= p.Objects { // the spawn object waits for its anomaly
			b.mode = modeHidden
			continue
		}
		sz := float64(s.kinds[i].size)
		b.x = r.float() * (float64(p.Width) - sz)
		b.y = r.float() * (float64(p.Height) - sz)
		b.vx, b.vy = s.velocity(r.intn(4), r.float(), r.float()*2-1)
		b.scale = 1
	}
	s.cur = st
	s.checks = []state{st.clone()}
	return s, nil
}

// Params returns the scene's parameters.
func (s *Scene) Params() Params { return s.p }

// Background is the concrete background the scene uses.
func (s *Scene) Background() string { return s.background }

// FrameSize is the length of one rendered RGB frame in bytes.
func (s *Scene) FrameSize() int { return s.p.Width * s.p.Height * 3 }

// velocity is a velocity along direction dir (0 left, 1 right, 2 up, 3
// down) with speed fraction u ∈ [0,1) and cross-axis fraction c ∈ [-1,1].
func (s *Scene) velocity(dir int, u, c float64) (vx, vy float64) {
	minSide := float64(min(s.p.Width, s.p.Height))
	speed := minSide * (minSpeedFrac + u*(maxSpeedFrac-minSpeedFrac))
	cross := speed * maxCrossFrac * c
	switch dir {
	case 0:
		return -speed, cross
	case 1:
		return speed, cross
	case 2:
		return cross, -speed
	default:
		return cross, speed
	}
}

// stateAt returns the world at frame i (a copy owned by the caller).
func (s *Scene) stateAt(i int) state {
	if i < 0 {
		i = 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < s.cur.frame || i-s.cur.frame > checkpointN {
		c := min(i/checkpointN, len(s.checks)-1)
		s.cur = s.checks[c].clone()
	}
	for s.cur.frame < i {
		s.step(&s.cur)
		if s.cur.frame%checkpointN == 0 && s.cur.frame/checkpointN == len(s.checks) {
			s.checks = append(s.checks, s.cur.clone())
		}
	}
	return s.cur.clone()
}

// inside reports whether a body lies fully inside the frame.
func (s *Scene) inside(b *body, size int) bool {
	return b.x >= 0 && b.y >= 0 && b.x <= float64(s.p.Width-size) && b.y <= float64(s.p.Height-size)
}

// visible reports whether any part of a body is in the frame.
func (s *Scene) visible(b *body, size int) bool {
	if b.mode == modeAway || b.mode == modeHidden {
		return false
	}
	sz := float64(size)
	return b.x+sz > 0 && b.y+sz > 0 && b.x < float64(s.p.Width) && b.y < float64(s.p.Height)
}

// step advances st by one frame.
func (s *Scene) step(st *state) {
	st.frame++
	st.anomaly = AnomalyNone
	i := st.frame
	seed := s.p.Seed
	for n := range st.bodies {
		b := &st.bodies[n]
		size := s.kinds[n].size
		r := newRNG(seed, n, i)
		switch b.mode {
		case modeHidden:
			continue
		case modeAway:
			if b.timer--; b.timer > 0 {
				continue
			}
			s.enter(b, size, r)
			continue
		case modeStopped:
			if b.timer--; b.timer > 0 {
				continue
			}
			b.mode, b.scale = modeMoving, 0
			if r.at(hashResume) < 0.5 {
				b.vx, b.vy = b.sx, b.sy
			} else {
				b.vx, b.vy = s.velocity(int(r.at(hashDir)*4), r.at(hashSpeed), r.at(hashCross)*2-1)
			}
		case modeMoving:
			if !b.braking && b.scale == 1 && s.inside(b, size) && !b.entering && r.at(hashStop) < stopChance {
				b.braking = true
			}
		}
		// Objects brake to a stop and speed up again over easeFrames, as
		// real ones do: only the moment an object starts to brake or to
		// move is unpredictable, and then only by a fraction of its speed.
		if b.braking {
			if b.scale = math.Max(0, b.scale-1.0/easeFrames); b.scale < 1e-9 {
				b.mode, b.braking, b.scale = modeStopped, false, 0
				b.timer = stopMin + int(r.at(hashStopLen)*(stopMax-stopMin+1))
				b.sx, b.sy = b.vx, b.vy
				continue
			}
		} else if b.scale < 1 {
			b.scale = math.Min(1, b.scale+1.0/easeFrames)
		}
		b.x += b.vx * b.scale
		b.y += b.vy * b.scale
		s.walls(st, n, r)
	}
	s.inject(st)
}

// walls bounces body n off the frame edges, or lets it leave.
func (s *Scene) walls(st *state, n int, r rng) {
	b := &st.bodies[n]
	size := s.kinds[n].size
	spanX, spanY := float64(s.p.Width-size), float64(s.p.Height-size)
	if b.entering {
		if s.inside(b, size) {
			b.entering = false
		}
		return
	}
	if b.leaving {
		sz := float64(size)
		if b.x+sz <= 0 || b.y+sz <= 0 || b.x >= float64(s.p.Width) || b.y >= float64(s.p.Height) {
			b.mode, b.leaving = modeAway, false
			b.timer = awayMin + int(r.at(hashAway)*(awayMax-awayMin+1))
		}
		return
	}
	hit := b.x < 0 || b.x > spanX || b.y < 0 || b.y > spanY
	if hit && r.at(hashLeave) < leaveChance && s.othersInView(st, n) {
		b.leaving = true
		return
	}
	if b.x < 0 {
		b.x, b.vx = -b.x, -b.vx
	} else if b.x > spanX {
		b.x, b.vx = 2*spanX-b.x, -b.vx
	}
	if b.y < 0 {
		b.y, b.vy = -b.y, -b.vy
	} else if b.y > spanY {
		b.y, b.vy = 2*spanY-b.y, -b.vy
	}
}

// othersInView reports whether some other object is in view and none is
// away, so that a scene never empties and at most one object is out at once.
func (s *Scene) othersInView(st *state, n int) bool {
	seen := false
	for m := range st.bodies {
		b := &st.bodies[m]
		if m == n || b.mode == modeHidden {
			continue
		}
		if b.mode == modeAway || b.leaving || b.entering {
			return false
		}
		seen = true
	}
	return seen
}

// enter brings a body back in through a random edge, moving inward.
func (s *Scene) enter(b *body, size int, r rng) {
	sz := float64(size)
	edge := int(r.at(hashEdge) * 4)
	u := r.at(hashEdgePos)
	b.vx, b.vy = s.velocity([4]int{1, 0, 3, 2}[edge], r.at(hashSpeed), r.at(hashCross)*2-1)
	switch edge {
	case 0: // left edge, moving right
		b.x, b.y = -sz, u*(float64(s.p.Height)-sz)
	case 1: // right edge, moving left
		b.x, b.y = float64(s.p.Width), u*(float64(s.p.Height)-sz)
	case 2: // top edge, moving down
		b.x, b.y = u*(float64(s.p.Width)-sz), -sz
	default: // bottom edge, moving up
		b.x, b.y = u*(float64(s.p.Width)-sz), float64(s.p.Height)
	}
	// Cross-axis motion must not carry it out through a side on the way in.
	b.mode, b.entering, b.leaving, b.scale, b.braking = modeMoving, true, false, 1, false
	if edge < 2 {
		b.vy = 0
	} else {
		b.vx = 0
	}
}

// inject applies the anomaly scheduled at st.frame, if any.
func (s *Scene) inject(st *state) {
	p := s.p
	if p.Anomaly == AnomalyNone || st.frame < p.AnomalyAt {
		return
	}
	k := st.frame - p.AnomalyAt
	if p.Anomaly == AnomalySpawn && p.AnomalyEvery > 0 && k%p.AnomalyEvery == p.AnomalyEvery/2 {
		b := &st.bodies[len(st.bodies)-1]
		if b.mode != modeHidden && s.inside(b, s.kinds[len(st.bodies)-1].size) {
			b.mode = modeHidden
			st.anomaly = AnomalyVanish
		}
		return
	}
	if k != 0 && (p.AnomalyEvery == 0 || k%p.AnomalyEvery != 0) {
		return
	}
	r := newRNG(p.Seed, sceneStream, st.frame)
	if p.Anomaly == AnomalySpawn {
		n := len(st.bodies) - 1
		b, size := &st.bodies[n], s.kinds[n].size
		if b.mode != modeHidden {
			return
		}
		*b = body{}
		s.place(b, size, r, -1, -1)
		b.vx, b.vy = s.velocity(int(r.at(hashDir)*4), r.at(hashSpeed), r.at(hashCross)*2-1)
		b.scale = 1
		st.anomaly = AnomalySpawn
		return
	}
	// Teleport and reverse pick a moving object fully in view.
	var cand []int
	for n := range st.bodies {
		b, size := &st.bodies[n], s.kinds[n].size
		if b.mode != modeMoving || b.entering || b.leaving || b.braking || b.scale != 1 || !s.inside(b, size) {
			continue
		}
		if p.Anomaly == AnomalyReverse {
			// Far enough from the walls that turning back is not a bounce.
			m := 3 * math.Max(math.Abs(b.vx), math.Abs(b.vy))
			if b.x < m || b.y < m || b.x > float64(p.Width-size)-m || b.y > float64(p.Height-size)-m {
				continue
			}
		}
		cand = append(cand, n)
	}
	if len(cand) == 0 {
		return
	}
	n := cand[int(r.at(hashPick)*float64(len(cand)))]
	b, size := &st.bodies[n], s.kinds[n].size
	switch p.Anomaly {
	case AnomalyTeleport:
		s.place(b, size, r, b.x, b.y)
	case AnomalyReverse:
		// Undo this frame's step and go back the other way instead.
		b.x -= 2 * b.vx
		b.y -= 2 * b.vy
		b.vx, b.vy = -b.vx, -b.vy
	}
	st.anomaly = p.Anomaly
}

// place puts a body fully inside the frame; when fromX >= 0, as far from
// (fromX, fromY) as a few seeded tries find, stopping at 1.5 sides away.
func (s *Scene) place(b *body, size int, r rng, fromX, fromY float64) {
	sz := float64(size)
	spanX, spanY := float64(s.p.Width)-sz, float64(s.p.Height)-sz
	best := -1.0
	for try := 0; try < 16; try++ {
		x, y := r.at(hashPlace+2*try)*spanX, r.at(hashPlace+2*try+1)*spanY
		d := math.Hypot(x-fromX, y-fromY)
		if d > best {
			b.x, b.y, best = x, y, d
		}
		if fromX < 0 || d >= 1.5*sz {
			return
		}
	}
}

// Object is one visible object of a frame's ground truth.
type Object struct {
	ID    int    `json:"id"`
	Shape string `json:"shape"`
	Color string `json:"color"`
	Class int    `json:"class"`
	// Box is [x1,y1,x2,y2] in frame pixels around the pixels of the object
	// that show (not those off the frame or behind another object); x2 and
	// y2 are exclusive, so they all lie in [x1,x2)×[y1,y2).
	Box [4]float64 `json:"box"`
	// Motion is left, right, up, down (the dominant axis of its velocity)
	// or still.
	Motion string `json:"motion"`
	// InView: the centre of its full box is inside the frame. Captions name
	// exactly the objects in view.
	InView bool `json:"in_view"`
}

// Label is the object's class name, e.g. "red circle".
func (o Object) Label() string { return o.Color + " " + o.Shape }

// Truth is a frame's ground truth.
type Truth struct {
	Frame   int      `json:"frame"`
	Objects []Object `json:"objects"`
	// Caption names every object in view, in class order, in the grammar
	// "a red circle moves left; a blue square is still".
	Caption string `json:"caption"`
	// Anomaly injected at this frame: "" or teleport, reverse, spawn, vanish.
	Anomaly string `json:"anomaly,omitempty"`
}

func motion(b *body) string {
	if b.mode == modeStopped || math.Hypot(b.vx, b.vy) < stillBelow {
		return MotionStill
	}
	if math.Abs(b.vx) >= math.Abs(b.vy) {
		if b.vx < 0 {
			return MotionLeft
		}
		return MotionRight
	}
	if b.vy < 0 {
		return MotionUp
	}
	return MotionDown
}

// Truth returns frame i's ground truth (it draws the class map, not the
// pixels).
func (s *Scene) Truth(i int) Truth {
	st := s.stateAt(i)
	classes := make([]byte, s.p.Width*s.p.Height)
	s.draw(&st, nil, classes, nil)
	return s.truth(&st, classes)
}

// Objects returns frame i's visible objects.
func (s *Scene) Objects(i int) []Object { return s.Truth(i).Objects }

// truth is the ground truth of st drawn as classes: an object is listed if
// any of its pixels shows, with the box of the pixels that show (clipped by
// the frame and by objects in front of it).
func (s *Scene) truth(st *state, classes []byte) Truth {
	w, h := s.p.Width, s.p.Height
	var boxes [NumClasses][4]int
	for c := range boxes {
		boxes[c] = [4]int{w, h, -1, -1}
	}
	for y := 0; y < h; y++ {
		row := classes[y*w : (y+1)*w]
		for x, c := range row {
			if c == 0 {
				continue
			}
			b := &boxes[c]
			b[0], b[1], b[2], b[3] = min(b[0], x), min(b[1], y), max(b[2], x), max(b[3], y)
		}
	}
	t := Truth{Frame: st.frame, Anomaly: st.anomaly, Objects: []Object{}}
	for n := range st.bodies {
		b, k := &st.bodies[n], &s.kinds[n]
		vb := boxes[k.class]
		if !s.visible(b, k.size) || vb[2] < 0 {
			continue
		}
		x, y := math.Round(b.x), math.Round(b.y)
		cx, cy := x+float64(k.size)/2, y+float64(k.size)/2
		t.Objects = append(t.Objects, Object{
			ID: n, Shape: k.shape, Color: k.color, Class: k.class,
			Box:    [4]float64{float64(vb[0]), float64(vb[1]), float64(vb[2] + 1), float64(vb[3] + 1)},
			Motion: motion(b),
			InView: cx >= 0 && cy >= 0 && cx < float64(w) && cy < float64(h),
		})
	}
	t.Caption = Caption(t.Objects)
	return t
}

// Caption writes the caption of a frame's objects: one clause for each
// object in view, in class order (colours red, green, blue, yellow; shapes
// circle, square, triangle), so a caption reads as a fixed checklist.
func Caption(objs []Object) string {
	var in []Object
	for _, o := range objs {
		if o.InView {
			in = append(in, o)
		}
	}
	sort.SliceStable(in, func(a, b int) bool {
		return Class(in[a].Color, in[a].Shape) < Class(in[b].Color, in[b].Shape)
	})
	parts := make([]string, len(in))
	for n, o := range in {
		verb := "moves " + o.Motion
		if o.Motion == MotionStill {
			verb = "is still"
		}
		parts[n] = "a " + o.Color + " " + o.Shape + " " + verb
	}
	return strings.Join(parts, "; ")
}

// Render draws frame i into dst (packed RGB, Width·Height·3 bytes, rows top
// to bottom) and returns its ground truth. Objects with a higher id are
// drawn over lower ones. It allocates the class map the truth is read from;
// a loop over many frames should call RenderClasses with a buffer it reuses.
func (s *Scene) Render(dst []byte, i int) (Truth, error) {
	return s.RenderClasses(dst, nil, i)
}

// RenderClasses is Render that also writes the per-pixel class map into
// classes (Width·Height bytes, class ids as in Class) unless it is nil.
func (s *Scene) RenderClasses(dst, classes []byte, i int) (Truth, error) {
	if len(dst) != len(s.bg) {
		return Truth{}, fmt.Errorf("synth: render buffer is %d bytes, want %d", len(dst), len(s.bg))
	}
	w, h := s.p.Width, s.p.Height
	if classes == nil {
		classes = make([]byte, w*h)
	} else if len(classes) != w*h {
		return Truth{}, fmt.Errorf("synth: class buffer is %d bytes, want %d", len(classes), w*h)
	}
	st := s.stateAt(i)
	// Light: one gain for the whole frame, changing slowly.
	gain := 1 + s.light.amp*math.Sin(2*math.Pi*float64(st.frame)/s.light.period+s.light.phase)
	var lut [256]byte
	for v := range lut {
		lut[v] = byte(min(255, math.Round(float64(v)*gain)))
	}
	for j, v := range s.bg {
		dst[j] = lut[v]
	}
	s.draw(&st, dst, classes, &lut)
	return s.truth(&st, classes), nil
}

// draw paints st's objects, later ids over earlier ones: their colours
// (through the light's lut) into dst unless it is nil, their class ids into
// classes (cleared first).
func (s *Scene) draw(st *state, dst, classes []byte, lut *[256]byte) {
	w, h := s.p.Width, s.p.Height
	clear(classes)
	for n := range st.bodies {
		b, k := &st.bodies[n], &s.kinds[n]
		if !s.visible(b, k.size) {
			continue
		}
		var c [3]byte
		if dst != nil {
			c = [3]byte{lut[k.rgb[0]], lut[k.rgb[1]], lut[k.rgb[2]]}
		}
		x0, y0 := int(math.Round(b.x)), int(math.Round(b.y))
		for r := 0; r < k.size; r++ {
			y := y0 + r
			if y < 0 || y >= h {
				continue
			}
			a, e := span(k.shape, k.size, r)
			a, e = max(a+x0, 0), min(e+x0, w)
			if a >= e {
				continue
			}
			if dst != nil {
				for x := a; x < e; x++ {
					p := (y*w + x) * 3
					dst[p], dst[p+1], dst[p+2] = c[0], c[1], c[2]
				}
			}
			row := classes[y*w:]
			for x := a; x < e; x++ {
				row[x] = byte(k.class)
			}
		}
	}
}

// PatchCover is the fraction of a patch an object must cover for the patch
// to take its class.
const PatchCover = 0.25

// PatchClasses reduces a per-pixel class map of a w×h frame to a gw×gh
// patch grid: each patch takes the class of the object covering most of its
// pixels if that object covers at least PatchCover of them, else background.
// (A quarter, not a half: a triangle's apex or a circle's rim would
// otherwise never own a patch, and boxes made from patches would fall
// short of the object.) Patch (px, py) covers source columns
// [px·w/gw, (px+1)·w/gw) and rows [py·h/gh, (py+1)·h/gh), which is the
// region a stretch resize to gw·P × gh·P maps onto it.
func PatchClasses(dst, classes []byte, w, h, gw, gh int) error {
	if len(classes) != w*h || len(dst) != gw*gh || gw <= 0 || gh <= 0 || gw > w || gh > h {
		return fmt.Errorf("synth: patch classes: map %d bytes for %dx%d, grid %dx%d into %d bytes", len(classes), w, h, gw, gh, len(dst))
	}
	var count [NumClasses]int
	for py := 0; py < gh; py++ {
		y1, y2 := py*h/gh, (py+1)*h/gh
		for px := 0; px < gw; px++ {
			x1, x2 := px*w/gw, (px+1)*w/gw
			clear(count[:])
			for y := y1; y < y2; y++ {
				for _, c := range classes[y*w+x1 : y*w+x2] {
					count[c]++
				}
			}
			best := 1
			for c := 2; c < NumClasses; c++ {
				if count[c] > count[best] {
					best = c
				}
			}
			if float64(count[best]) < PatchCover*float64((x2-x1)*(y2-y1)) {
				best = 0
			}
			dst[py*gw+px] = byte(best)
		}
	}
	return nil
}

// span returns the half-open column range [a, b) a shape of the given size
// covers in row r of its bounding square.
func span(shape string, size, r int) (a, b int) {
	switch shape {
	case ShapeSquare:
		return 0, size
	case ShapeCircle:
		rad := float64(size) / 2
		dy := float64(r) + 0.5 - rad
		half := math.Sqrt(math.Max(0, rad*rad-dy*dy))
		a = int(math.Round(rad - half))
		b = int(math.Round(rad + half))
		if r == 0 || r == size-1 { // keep the box tight: the extreme rows are never empty
			a, b = min(a, size/2), max(b, size/2+1)
		}
		return max(0, a), min(size, b)
	case ShapeTriangle:
		// Apex at the top centre, base along the bottom row.
		half := float64(size) / 2 * float64(r+1) / float64(size)
		c := float64(size) / 2
		a = int(math.Floor(c - half))
		b = int(math.Ceil(c + half))
		return max(0, a), min(size, b)
	}
	return 0, 0
}

// clauseRE matches one clause of the caption grammar.
var clauseRE = regexp.MustCompile(`a (\w+) (\w+) (?:moves (\w+)|is (still))`)

// ParseCaption reads a caption in the world's grammar back into what it
// says: "colour shape" → motion (left, right, up, down or still). Text
// outside the grammar is ignored, so a model's wrong words just say less.
func ParseCaption(text string) map[string]string {
	out := map[string]string{}
	for _, m := range clauseRE.FindAllStringSubmatch(text, -1) {
		out[m[1]+" "+m[2]] = m[3] + m[4]
	}
	return out
}

// CaptionGoal is the fraction of the objects in view that captions of
// patchline's caption model must name right by CaptionHits (issue 3): the
// model's own test and the pipeline's end-to-end test hold it to this.
const CaptionGoal = 0.9

// CaptionHits scores a caption against the truth's: total is how many
// objects truth names, right how many of them text names with the same
// motion (the colour, shape and motion all right).
func CaptionHits(truth, text string) (right, total int) {
	have := ParseCaption(text)
	for obj, motion := range ParseCaption(truth) {
		total++
		if have[obj] == motion {
			right++
		}
	}
	return right, total
}
