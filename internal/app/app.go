// Package app wires stages to NATS. `patchline run` runs every stage in one
// process around an embedded NATS server; `patchline stage X` runs one stage
// against a given server. Both go through Run: there is no second code path.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/patchline/patchline/analyze"
	"github.com/patchline/patchline/console"
	"github.com/patchline/patchline/decode"
	"github.com/patchline/patchline/generate"
	"github.com/patchline/patchline/ingest"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/sink"
)

// stage is what Run starts on a goroutine of its own.
type stage interface {
	Run(ctx context.Context) error
	Ready() <-chan struct{} // closed once the stage is subscribed
}

// Stage names.
const (
	Ingest   = "ingest"
	Decode   = "decode"
	Analyze  = "analyze"
	Sink     = "sink"
	Generate = "generate"
)

// AllStages is every stage, in start order.
var AllStages = []string{Ingest, Decode, Analyze, Sink, Generate}

// Options says what to run.
type Options struct {
	Config config.Config
	Stages []string
	// NATSURL overrides nats.url; with both empty the embedded server starts.
	NATSURL string
	// HTTPAddr overrides http.addr; "off" serves nothing.
	HTTPAddr string
	Logger   *slog.Logger
	// Version is the build's, reported as the traces' service.version.
	Version string
	// Ready, if set, is called once every stage has started: its NATS
	// subscriptions are confirmed by the server (bus.Readiness) and HTTP
	// serves, so whatever is published from then on reaches every stage.
	Ready func(Info)
}

// Info describes a running pipeline.
type Info struct {
	NATSURL  string
	HTTPAddr string // "" when HTTP is off
	Embedded bool
	Stages   []string
	// NATSConnected: every NATS connection was up when the stages started
	// (a stage started against an unreachable server subscribes on connect).
	NATSConnected bool
}

// Run starts the stages and blocks until ctx is done or a stage fails.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	cfg := o.Config
	for _, s := range o.Stages {
		if !slices.Contains(AllStages, s) {
			return fmt.Errorf("unknown stage %q (want one of %v)", s, AllStages)
		}
	}
	log.Info("starting", append([]any{"stages", strings.Join(o.Stages, ",")}, bus.RuntimeSettings()...)...)
	for _, w := range bus.LimitWarnings() {
		log.Warn(w)
	}
	if o.NATSURL == "" && cfg.NATS.URL == "" && cfg.NATS.Replicas > 1 {
		return fmt.Errorf("nats.replicas is %d, but the embedded server is a single node: set nats.url (or --nats) to a JetStream cluster, or replicas to 1", cfg.NATS.Replicas)
	}
	shutdownTracing, err := telemetry.SetupTracing(ctx, telemetry.Settings{
		ServiceName: cfg.Telemetry.ServiceName, SampleRatio: cfg.Telemetry.SampleRatio,
		Version: o.Version, Stages: o.Stages, Logger: log,
	})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(sctx)
	}()

	// Load the model first: a bundle that does not fit the config is an
	// error at start, before any camera is opened.
	var model *analyze.Model
	if slices.Contains(o.Stages, Analyze) {
		if model, err = openModel(cfg); err != nil {
			return err
		}
		defer model.Close()
	}
	var genModels *generate.Models
	if slices.Contains(o.Stages, Generate) {
		if genModels, err = generate.OpenModels(cfg); err != nil {
			return err
		}
		defer genModels.Close()
	}

	info := Info{NATSURL: o.NATSURL, Stages: o.Stages}
	if info.NATSURL == "" {
		info.NATSURL = cfg.NATS.URL
	}
	var (
		inProcess []nats.Option // stages reach an embedded server through memory
		emb       *bus.Embedded
	)
	if info.NATSURL == "" {
		var err error
		if emb, err = bus.StartEmbedded(cfg.NATS.Embedded, cfg.NATS.Token, log); err != nil {
			return err
		}
		defer emb.Shutdown()
		info.NATSURL, info.Embedded = emb.URL(), true
		inProcess = append(inProcess, emb.InProcess())
	}

	var (
		connsMu sync.Mutex // conns grows while HTTP serves /readyz
		conns   []*nats.Conn
		stages  []stage
		mux     = http.NewServeMux()

		describe   bool           // the describe route is mounted
		forgetters []func(string) // told of each camera detached
	)
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	connect := func(name string) (*nats.Conn, error) {
		opts := slices.Clone(inProcess)
		if name == Ingest || strings.HasSuffix(name, "-control") {
			// Requests (the camera registry, leases) fail at once while
			// NATS is away, and are retried by their callers: buffered,
			// they would be sent on reconnect, after their caller gave up
			// (an attach answered 503 that then happens; a lease nobody
			// holds any more).
			opts = append(opts, nats.ReconnectBufSize(-1))
		}
		nc, err := bus.Connect(cfg.NATS, info.NATSURL, name, log, opts...)
		if err == nil {
			connsMu.Lock()
			conns = append(conns, nc)
			connsMu.Unlock()
		}
		return nc, err
	}
	// HTTP serves from the start, so that /healthz answers while the
	// stages still wait for NATS or JetStream; /readyz says no until every
	// stage is subscribed, while any NATS connection is down, and while the
	// embedded server's own health check fails (a stream that cannot write).
	var started, stopping atomic.Bool
	stopHTTP := func() {}
	ready := func() error {
		if stopping.Load() {
			return errors.New("stopping")
		}
		if !started.Load() {
			return errors.New("starting: the stages are not subscribed yet")
		}
		connsMu.Lock()
		defer connsMu.Unlock()
		for _, nc := range conns {
			if !nc.IsConnected() {
				return fmt.Errorf("nats: %s not connected", nc.Opts.Name)
			}
		}
		if emb != nil {
			return emb.Healthy()
		}
		return nil
	}
	// Ingest's routes answer 503 until its registry is open (it waits
	// for NATS and JetStream), not 404.
	apiRoute, whipRoute, consoleRoute := &late{}, &late{}, &late{page: true}
	if slices.Contains(o.Stages, Ingest) {
		mux.Handle("/v1/", apiRoute)
		mux.Handle("/whip/", whipRoute)
		mux.Handle("/", consoleRoute)
	}
	addr := o.HTTPAddr
	if addr == "" {
		addr = cfg.HTTP.Addr
	}
	if addr != "off" {
		srv, bound, err := serveHTTP(addr, mux, func(h http.Handler) http.Handler {
			return ingest.Guard(cfg.HTTP.Token, cfg.HTTP.AllowedHosts, ingest.ReadDeadline(30*time.Second, h))
		}, ready, log)
		if err != nil {
			return err
		}
		info.HTTPAddr = bound
		stopHTTP = sync.OnceFunc(func() {
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			if srv.Shutdown(sctx) != nil {
				_ = srv.Close() // streams (live view) that outlived the grace period
			}
		})
		defer stopHTTP() // on a return during set-up
	}
	// A stop while set-up still waits (for NATS, for JetStream) is a stop.
	stoppedEarly := func(err error) error {
		if err = stoppedOr(ctx, err); err == nil {
			log.Info("stopped", "stages", strings.Join(o.Stages, ","), "errors", 0)
		}
		return err
	}
	for _, name := range o.Stages {
		nc, err := connect(name)
		if err != nil {
			return err
		}
		stageLog := log.With("stage", name)
		switch name {
		case Ingest:
			reg, err := ingest.OpenRegistry(ctx, nc, cfg.NATS.Replicas, stageLog)
			if err != nil {
				return stoppedEarly(err)
			}
			defer reg.Close()
			if err := reg.SyncConfig(ctx, cfg.Cameras); err != nil {
				return stoppedEarly(err)
			}
			apiRoute.set(ingest.RequireToken(cfg.HTTP.Token, reg.Handler(cfg.HTTP.MaxBody)))
			whip, err := ingest.NewWHIP(reg, nc, cfg.WHIP, stageLog)
			if err != nil {
				return err
			}
			defer whip.Close()
			whipRoute.set(whip.Handler(cfg.HTTP.Token, cfg.HTTP.MaxBody))
			con := console.New(ctx, nc, console.Options{TraceURL: cfg.HTTP.TraceURL, Auth: cfg.HTTP.Token != "", MaxViewers: cfg.HTTP.MaxViewers, Known: reg.Known, Logger: stageLog})
			conAPI := ingest.RequireToken(cfg.HTTP.Token, con.API())
			mux.Handle("GET /v1/console", conAPI)
			mux.Handle("GET /v1/live/{camera}", conAPI)
			consoleRoute.set(console.Assets())
		case Decode:
			// Leases, registry and statuses on a connection of their own:
			// frames must not hold them up (decode.Options.Control).
			ctl, err := connect(name + "-control")
			if err != nil {
				return err
			}
			stages = append(stages, decode.NewStage(decode.Options{NC: nc, Control: ctl, Decode: cfg.Decode, Replicas: cfg.NATS.Replicas, Logger: stageLog}))
		case Analyze:
			stages = append(stages, analyze.NewStage(nc, model, cfg.Analyze, stageLog))
		case Sink:
			st, err := sink.NewStage(nc, cfg.Sink, cfg.NATS.Replicas, stageLog)
			if err != nil {
				return err
			}
			stages = append(stages, st)
		case Generate:
			ctl, err := connect(name + "-control")
			if err != nil {
				return err
			}
			gen := generate.NewStage(generate.Options{NC: nc, Control: ctl, Config: cfg.Generate, Replicas: cfg.NATS.Replicas, Stream: cfg.Sink.Stream, Captions: genModels.Captions, Framegen: genModels.Framegen, Logger: stageLog})
			stages = append(stages, gen)
			forgetters = append(forgetters, gen.ForgetCamera)
		}
		if (name == Ingest || name == Generate) && !describe {
			// POST /v1/cameras/{id}/describe asks any generate replica over NATS.
			mux.Handle(generate.DescribePattern, ingest.RequireToken(cfg.HTTP.Token, generate.DescribeHandler(nc, cfg.Generate.RequestTimeout, cfg.HTTP.MaxBody)))
			describe = true
		}
	}

	// Done when the caller stops the pipeline (Ctrl-C), or with the first
	// failure (a stage's, the JetStream watch's) as its cause.
	stopped := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	if len(conns) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			forgetDetached(ctx, conns[0], cfg.NATS.Replicas, log, forgetters...)
		}()
	}
	errc := make(chan error, len(stages)+1) // the stages, and the JetStream watch
	for _, st := range stages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := stoppedOr(stopped, st.Run(ctx)); err != nil {
				errc <- err
				cancel(err)
			}
		}()
	}

	// Started means subscribed (bus.Readiness). HTTP serves meanwhile:
	// /healthz answers and /readyz says no while NATS is still unreachable.
	for _, st := range stages {
		select {
		case <-st.Ready():
		case <-ctx.Done():
		}
	}
	started.Store(ctx.Err() == nil) // not while stopping (a stage failed, or Ctrl-C)
	if streams := jetStreamsOf(cfg, o.Stages); len(streams) > 0 && len(conns) > 0 && !info.Embedded {
		// An external server can come back without its JetStream data;
		// the embedded one's store is this process's.
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := bus.WatchStreams(ctx, conns[0], streams, StreamCheckEvery); err != nil {
				errc <- err
				cancel(err)
			}
		}()
	}
	if o.Ready != nil && ctx.Err() == nil {
		info.NATSConnected = !slices.ContainsFunc(conns, func(nc *nats.Conn) bool { return !nc.IsConnected() })
		o.Ready(info)
	}
	<-ctx.Done()
	stopping.Store(true) // /readyz says so: traffic goes elsewhere while the stages stop
	// The signal ("terminated signal received"), or what failed first.
	log.Info("stopping", "stages", strings.Join(o.Stages, ","), "why", context.Cause(ctx).Error())
	wg.Wait()
	// HTTP stops before the stages' own teardown (the registry, WHIP)
	// that deferred calls do: no request reaches a closed registry.
	stopHTTP()
	close(errc)
	errs := collect(errc, cfg)
	log.Info("stopped", "stages", strings.Join(o.Stages, ","), "errors", len(errs))
	return errors.Join(errs...)
}

// late serves 503 (with Retry-After) until set, then the handler set.
type late struct {
	h    atomic.Pointer[http.Handler]
	page bool // a browser's request is answered with a page that reloads itself
}

func (l *late) set(h http.Handler) { l.h.Store(&h) }

// waitingPage is the console's answer to a browser while the camera
// registry waits for NATS: it says so and reloads until the console is up.
const waitingPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>patchline: starting</title></head>
<body style="font-family:sans-serif;margin:2em">
<h1>patchline is starting</h1>
<p>The camera registry waits for NATS and JetStream (see <a href="/readyz">/readyz</a> and the process's log).
This page reloads every 5 seconds until the console is up.</p>
</body></html>
`

func (l *late) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := l.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	w.Header().Set("Retry-After", "5")
	if l.page && r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(waitingPage))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(`{"error":"starting: the camera registry waits for NATS and JetStream"}` + "\n"))
}

// StreamCheckEvery is how often a process checks that its stages'
// JetStream streams and buckets are still there (bus.WatchStreams); tests
// shorten it.
var StreamCheckEvery = 10 * time.Second

// jetStreamsOf names the JetStream streams that stages make at start and
// need from then on.
func jetStreamsOf(cfg config.Config, stages []string) []string {
	var names []string
	add := func(ns ...string) {
		for _, n := range ns {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	for _, s := range stages {
		switch s {
		case Ingest:
			add("KV_" + bus.CamerasBucket)
		case Decode:
			add("KV_"+bus.CamerasBucket, "KV_"+bus.LeasesBucket, "KV_"+bus.DecodeBucket)
		case Sink:
			if cfg.Sink.Stream.Name != "" {
				add(cfg.Sink.Stream.Name)
			}
		case Generate:
			add("OBJ_" + bus.GeneratedBucket)
			if cfg.Generate.Auto {
				add("KV_" + bus.GenerateLeasesBucket)
			}
		}
	}
	return names
}

// stoppedOr is err, unless the pipeline was stopped (Ctrl-C) while it
// waited, for NATS or JetStream: that is no failure.
func stoppedOr(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	return err
}

// collect gathers the stages' errors. When one stage fails the others are
// stopped, and those that were still waiting (for a bucket, say) fail with
// context.Canceled: those are left out, unless nothing else failed.
// JetStream's refusal for want of storage is explained (bus.ExplainStorage).
func collect(c <-chan error, cfg config.Config) []error {
	store := cfg.NATS.Embedded.StoreDir
	if cfg.NATS.URL != "" {
		store = "" // another server's
	}
	var errs, canceled []error
	for err := range c {
		err = bus.ExplainStorage(err, store, cfg.Sink.Stream.MaxBytes)
		if errors.Is(err, context.Canceled) {
			canceled = append(canceled, err)
			continue
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return canceled
	}
	return errs
}

// CheckModels opens the models cfg names (analyze.model, and generate's
// when set) as the stages would, with ONNX Runtime, and closes them: a
// missing bundle, a model whose shapes disagree with its descriptor or a
// bundle that does not take the frames decode makes fails here as it
// would at start. `patchline validate` runs it. notes are the analyze
// model's (analyze.Model.Notes): it works, but not as well as it could.
func CheckModels(cfg config.Config) (notes []string, err error) {
	model, err := openModel(cfg)
	if err != nil {
		return nil, err
	}
	notes = model.Notes()
	_ = model.Close()
	gen, err := generate.OpenModels(cfg)
	if err != nil {
		return notes, err
	}
	return notes, gen.Close()
}

func openModel(cfg config.Config) (*analyze.Model, error) {
	b, err := analyze.LoadBundle(cfg.Analyze.Model)
	if err != nil {
		return nil, err
	}
	return analyze.OpenModel(b, analyze.OptionsFromConfig(cfg.Decode, cfg.Analyze))
}

// serveHTTP serves the API (if mounted), /metrics, /healthz and /readyz,
// which is 200 only while ready says nil. Routes may be added to mux while
// it serves.
func serveHTTP(addr string, mux *http.ServeMux, guard func(http.Handler) http.Handler, ready func() error, log *slog.Logger) (*http.Server, string, error) {
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("http: listen %s (set http.addr or --http): %w", addr, err)
	}
	// Idle keep-alive connections close after two minutes rather than
	// when the client goes (a scraper or browser that vanished without a
	// FIN). No ReadTimeout: the console's live view keeps its request open.
	srv := &http.Server{Handler: guard(mux), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn)} // accept errors (out of descriptors), panics
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	return srv, ln.Addr().String(), nil
}
