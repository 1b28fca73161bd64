// Package console is patchline's web console: static pages embedded in the
// binary (served at /), and the live relay behind them. A viewer of a camera
// gets, over one Server-Sent Events stream, its JPEG previews (which decode
// publishes only while someone watches) and its annotations, and draws the
// boxes over the picture in the browser.
package console

import (
	"cmp"
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/frame"
)

//go:embed static
var static embed.FS

// DefaultMaxViewers is Options.MaxViewers when it is 0 (http.max_viewers).
const DefaultMaxViewers = 32

// maxQueuedAnnotations bounds what waits for a slow viewer; the oldest go.
const maxQueuedAnnotations = 64

// Options configure the console.
type Options struct {
	// TraceURL links a trace id to the trace backend ({trace_id} replaced).
	TraceURL string
	// Auth says the API wants a bearer token, so the page asks for one.
	Auth bool
	// MaxViewers bounds the live views streamed at once (each holds two
	// subscriptions and encodes every preview for its viewer): one more is
	// refused with 503 and Retry-After. 0 means DefaultMaxViewers.
	MaxViewers int
	// Known, when set, says whether a camera is attached: the live view of
	// one that is not answers 404 instead of an empty stream.
	Known  func(ctx context.Context, camera string) (bool, error)
	Logger *slog.Logger
}

// Server serves the console. Live streams end when ctx (the server's
// lifetime) or the request ends.
type Server struct {
	ctx     context.Context
	nc      *nats.Conn
	opts    Options
	viewers chan struct{} // one token per live view streaming
}

// New returns the console of the pipeline reached through nc.
func New(ctx context.Context, nc *nats.Conn, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.MaxViewers = cmp.Or(opts.MaxViewers, DefaultMaxViewers)
	return &Server{ctx: ctx, nc: nc, opts: opts, viewers: make(chan struct{}, opts.MaxViewers)}
}

// Assets serves the pages (index.html, console.js, console.css); they hold
// no data, so they need no token. They may run only their own script, talk
// only to this server, and not be framed by another site (clickjacking);
// previews are data: JPEGs, the published camera a MediaStream.
func Assets() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	})
}

// contentSecurityPolicy is the console pages' Content-Security-Policy.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// API serves what the pages read, under the API's auth:
//
//	GET /v1/console          {"trace_url": …, "auth": bool}
//	GET /v1/live/{camera}    text/event-stream: "frame" (JPEG preview) and "annotation" events
func (s *Server) API() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/console", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"trace_url": s.opts.TraceURL, "auth": s.opts.Auth})
	})
	mux.HandleFunc("GET /v1/live/{camera}", s.live)
	return mux
}

// writeError answers {"error": msg}, as the camera API does, escaped by
// encoding/json (the messages quote what the request held).
func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// previewEvent is a JPEG preview as the page gets it.
type previewEvent struct {
	Seq        string `json:"seq"`
	PTSUs      string `json:"pts_us"`
	SourceSize string `json:"source_size"`
	JPEG       string `json:"jpeg"` // base64
}

// viewer is one live stream's mailbox: the latest preview (older ones are
// worth nothing) and a bounded queue of annotations, drop-oldest.
type viewer struct {
	mu      sync.Mutex
	preview *nats.Msg
	anns    [][]byte
	wake    chan struct{}
}

func (v *viewer) put(m *nats.Msg, isPreview bool) {
	v.mu.Lock()
	if isPreview {
		v.preview = m
	} else {
		if len(v.anns) == maxQueuedAnnotations {
			v.anns = v.anns[1:]
		}
		v.anns = append(v.anns, m.Data)
	}
	v.mu.Unlock()
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

func (v *viewer) take() (*nats.Msg, [][]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	p, a := v.preview, v.anns
	v.preview, v.anns = nil, nil
	return p, a
}

func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	cam := r.PathValue("camera")
	if err := frame.ValidCameraID(cam); err != nil {
		writeError(w, http.StatusBadRequest, "camera: "+err.Error())
		return
	}
	if s.opts.Known != nil {
		switch ok, err := s.opts.Known(r.Context(), cam); {
		case err != nil:
			writeError(w, http.StatusServiceUnavailable, "camera registry: "+err.Error())
			return
		case !ok:
			writeError(w, http.StatusNotFound, "camera not found: "+cam)
			return
		}
	}
	select {
	case s.viewers <- struct{}{}:
		defer func() { <-s.viewers }()
	default:
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many live viewers: %d streaming (http.max_viewers)", s.opts.MaxViewers))
		return
	}
	v := &viewer{wake: make(chan struct{}, 1)}
	var subs []*nats.Subscription
	defer func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}()
	for subj, isPreview := range map[string]bool{bus.PreviewSubject(cam): true, bus.AnnotationSubject(cam): false} {
		sub, err := s.nc.Subscribe(subj, func(m *nats.Msg) { v.put(m, isPreview) })
		if err != nil {
			http.Error(w, "nats: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		subs = append(subs, sub)
	}
	ping := func() { _ = s.nc.Publish(bus.WatchSubject(cam), nil) }
	ping()
	t := time.NewTicker(bus.PreviewTTL / 3)
	defer t.Stop()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// Each batch must be taken within liveWriteTimeout: a viewer that
	// stopped reading (a frozen tab, a dead peer) is cut off rather than
	// holding its connection and subscriptions for as long as TCP waits.
	rc := http.NewResponseController(w)
	send := func(b []byte) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(liveWriteTimeout)); err != nil {
			return false // no deadlines, no streaming
		}
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send([]byte(": patchline live " + cam + "\n\n")) {
		return
	}
	for {
		var batch []byte
		select {
		case <-s.ctx.Done():
			return
		case <-r.Context().Done():
			return
		case <-t.C:
			if s.detached(r.Context(), cam) {
				b, _ := json.Marshal(map[string]string{"camera": cam})
				send(appendEvent(nil, "detached", b))
				return // frees the viewer's place
			}
			ping()
			batch = []byte(": keepalive\n\n")
		case <-v.wake:
			p, anns := v.take()
			for _, a := range anns {
				batch = appendEvent(batch, "annotation", a)
			}
			if p != nil {
				b, _ := json.Marshal(previewEvent{
					Seq: p.Header.Get(frame.HdrSeq), PTSUs: p.Header.Get(frame.HdrPTS),
					SourceSize: p.Header.Get(frame.HdrSourceSize), JPEG: base64.StdEncoding.EncodeToString(p.Data),
				})
				batch = appendEvent(batch, "frame", b)
			}
		}
		if !send(batch) {
			return
		}
	}
}

// detached says whether camera was detached while its live view streams
// (not when the registry cannot say).
func (s *Server) detached(ctx context.Context, camera string) bool {
	if s.opts.Known == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ok, err := s.opts.Known(ctx, camera)
	return err == nil && !ok
}

// liveWriteTimeout is how long a live viewer may take to receive one batch.
var liveWriteTimeout = 10 * time.Second

// appendEvent appends one Server-Sent Event to b; data may span lines.
func appendEvent(b []byte, name string, data []byte) []byte {
	b = append(b, "event: "+name+"\n"...)
	for line := range strings.SplitSeq(string(data), "\n") {
		b = append(b, "data: "+line+"\n"...)
	}
	return append(b, '\n')
}
