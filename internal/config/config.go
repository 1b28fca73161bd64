// Package config loads pipeline.yaml: defaults, then the file, then
// PATCHLINE_* environment variables, then validation. Unknown keys and wrong
// types are errors that quote the key path and line.
package config

import (
	"errors"
	"os"
	"path/filepath"
	"time"
)

// Config is the whole pipeline configuration.
type Config struct {
	NATS      NATS      `yaml:"nats"`
	HTTP      HTTP      `yaml:"http"`
	WHIP      WHIP      `yaml:"whip"`
	Cameras   []Camera  `yaml:"cameras"`
	Decode    Decode    `yaml:"decode"`
	Analyze   Analyze   `yaml:"analyze"`
	Sink      Sink      `yaml:"sink"`
	Generate  Generate  `yaml:"generate"`
	Telemetry Telemetry `yaml:"telemetry"`
	Log       Log       `yaml:"log"`
}

// NATS says which server to use. With URL empty, `patchline run` embeds one.
type NATS struct {
	URL      string   `yaml:"url"`      // nats://host:4222; empty = embedded
	Creds    string   `yaml:"creds"`    // path to a .creds file
	Token    string   `yaml:"token"`    // auth token (use ${VAR})
	TLS      TLS      `yaml:"tls"`      // client TLS for an external server
	Embedded Embedded `yaml:"embedded"` // the embedded server
	// Replicas is how many servers of a JetStream cluster keep each of
	// patchline's buckets (cameras, seq blocks, leases, generated frames) and the annotation
	// stream: 3 survives the loss of one. 1 (the default) on a single
	// server, embedded or not.
	Replicas int `yaml:"replicas"`
}

// TLS is client-side TLS for an external NATS server.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Embedded configures the in-process NATS server.
type Embedded struct {
	Host     string `yaml:"host"`      // default 127.0.0.1
	Port     int    `yaml:"port"`      // default 4222; -1 picks a free port
	StoreDir string `yaml:"store_dir"` // JetStream data; default under the user cache dir
}

// HTTP is the address of the API, the web console, WHIP, metrics and health
// checks, and how the API and WHIP are protected.
type HTTP struct {
	Addr     string `yaml:"addr"`      // default 127.0.0.1:8080
	Token    string `yaml:"token"`     // bearer token required on /v1/ and /whip/; empty = no auth (use ${VAR})
	MaxBody  int64  `yaml:"max_body"`  // request body limit of /v1/ and /whip/ in bytes; default 65536
	TraceURL string `yaml:"trace_url"` // console link for a trace id: {trace_id} is replaced; empty = no link
	// MaxViewers is how many live views (GET /v1/live/<camera>) the server
	// streams at once; one more is refused with 503.
	MaxViewers int `yaml:"max_viewers"`
	// AllowedHosts are the host names (beside IP addresses and localhost)
	// that requests may name this server by while Token is empty: a web
	// page cannot reach it through a name it points at this machine (DNS
	// rebinding). With a token, any host name is served.
	AllowedHosts []string `yaml:"allowed_hosts"`
}

// WHIP configures WebRTC ingest: POST /whip/<camera> with an SDP offer.
type WHIP struct {
	// AllowedOrigins are the browser origins (scheme://host[:port]) that may
	// publish from another site (CORS); "*" allows any. Same-origin pages,
	// such as the console, need no entry.
	AllowedOrigins   []string      `yaml:"allowed_origins"`
	KeyframeInterval time.Duration `yaml:"keyframe_interval"` // ask publishers for a keyframe (PLI) this often; default 2s
	// UDPPort, if set, carries every WebRTC session's media on this one
	// UDP port (ICE UDP mux), the one port a firewall or `docker -p` must
	// open; 0 = an ephemeral port per session.
	UDPPort int `yaml:"udp_port"`
	// PublicIPs are announced to publishers as extra host candidates,
	// beside the machine's own addresses: the address a NAT (a cloud VM's
	// public IP, a Docker host) forwards to this one.
	PublicIPs []string `yaml:"public_ips"`
	// ICEServers are STUN and TURN servers. The endpoint gathers its own
	// candidates through them (its public address from STUN, a relay from
	// TURN) and names them to publishers in its answers' Link headers
	// (RFC 9725), for publishers behind NATs that need a relay.
	ICEServers []ICEServer `yaml:"ice_servers"`
}

// ICEServer is one STUN or TURN server.
type ICEServer struct {
	URLs       []string `yaml:"urls"`       // stun:host[:port], turn:host[:port][?transport=udp|tcp], turns:host[:port]
	Username   string   `yaml:"username"`   // TURN
	Credential string   `yaml:"credential"` // TURN password (use ${VAR})
}

// Camera is one video source.
type Camera struct {
	ID  string  `yaml:"id" json:"id"`
	URL string  `yaml:"url" json:"url"`           // rtsp://, file path or file://, synthetic://
	FPS float64 `yaml:"fps" json:"fps,omitempty"` // target sampling rate; 0 = decode.default_fps
	// Loop restarts a file source at its end.
	Loop bool `yaml:"loop" json:"loop,omitempty"`
	// FromConfig marks, in the camera registry, a camera that the
	// configuration's cameras list put there (ingest.Registry.SyncConfig):
	// one that list no longer holds is detached at the next start. Set by
	// patchline only, never in a file or the API.
	FromConfig bool `yaml:"-" json:"from_config,omitempty"`
}

// EffectiveFPS is the camera's sampling rate: FPS, or defaultFPS (normally
// Decode.DefaultFPS) when FPS is 0.
func (c Camera) EffectiveFPS(defaultFPS float64) float64 {
	if c.FPS > 0 {
		return c.FPS
	}
	return defaultFPS
}

// Decode configures OpenCV decode and tokenization. Width, Height, PatchSize
// and Resize must match the analyze model bundle.
type Decode struct {
	Width        int           `yaml:"width"`         // model input width; default 96
	Height       int           `yaml:"height"`        // model input height; default 96
	PatchSize    int           `yaml:"patch_size"`    // ViT patch side; default 16
	Resize       string        `yaml:"resize"`        // stretch | letterbox; default stretch
	DefaultFPS   float64       `yaml:"default_fps"`   // default 5
	QueueSize    int           `yaml:"queue_size"`    // frames buffered per camera before drop-oldest; default 2
	StallTimeout time.Duration `yaml:"stall_timeout"` // reopen a stream with no frame for this long; default 10s
	RetryMin     time.Duration `yaml:"retry_min"`     // first reconnect delay; default 500ms
	RetryMax     time.Duration `yaml:"retry_max"`     // longest reconnect delay; default 30s
	PreviewFPS   float64       `yaml:"preview_fps"`   // JPEG previews per second while someone watches; 0 = off; default 8
	PreviewWidth int           `yaml:"preview_width"` // preview JPEG width in pixels (height keeps the aspect); default 640
	// LeaseTTL is how long a decode replica's hold on a camera outlives its
	// last renewal (every third of it): when a replica dies, the others
	// take its cameras within this. Default 10s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// MaxCameras is the most cameras one decode replica (one `patchline
	// run`) decodes; the rest wait for a replica with room. 0 = no limit.
	MaxCameras int `yaml:"max_cameras"`
	// FileRoots, if set, are the only directories file cameras may read
	// from (symbolic links resolved): an API user cannot then show any
	// video the service can read. Empty = any path.
	FileRoots []string `yaml:"file_roots"`
}

// Analyze configures model inference.
type Analyze struct {
	Model        string        `yaml:"model"`          // bundle directory
	BatchSize    int           `yaml:"batch_size"`     // default 8
	MaxBatchWait time.Duration `yaml:"max_batch_wait"` // default 20ms
	QueueSize    int           `yaml:"queue_size"`     // frames waiting for a batch before drop-oldest; default 32
	Threads      int           `yaml:"threads"`        // ONNX Runtime intra-op threads; 0 = ONNX Runtime's default, within the CPUs the process may use
	// Spin lets ONNX Runtime's intra-op threads spin-wait between parallel
	// sections (its own default). Off by default: spinning threads take the
	// CPU that decode and NATS need in the same machine, and on 2 cores the
	// analyze stage ran 13% faster without (BENCHMARKS.md).
	Spin       bool   `yaml:"spin"`
	ORTLibrary string `yaml:"ort_library"` // path to libonnxruntime.so; default from PATCHLINE_ORT_LIB or .cache
}

// Sink configures annotation outputs.
type Sink struct {
	JSONL string `yaml:"jsonl"` // append annotations to this file; empty = off
	// The file is rotated past JSONLMaxMB (renamed with a timestamp,
	// name-2026-11-29T22-50-00.000.jsonl) and JSONLKeep rotated files are
	// kept (0: all).
	JSONLMaxMB int       `yaml:"jsonl_max_mb"` // default 100
	JSONLKeep  int       `yaml:"jsonl_keep"`   // default 5
	Stream     Stream    `yaml:"stream"`
	Webhooks   []Webhook `yaml:"webhooks"`
}

// Webhook POSTs each matching annotation (its JSON, as published) to URL,
// in order (Delivery says from where); failures (network, 429, 5xx) are
// retried with backoff.
type Webhook struct {
	URL string `yaml:"url"` // http:// or https://
	// Filters; all that are set must match.
	Cameras  []string `yaml:"cameras"`   // only these cameras; empty = all
	Kinds    []string `yaml:"kinds"`     // analysis, caption, anomaly; empty = all
	Labels   []string `yaml:"labels"`    // only annotations naming one of these (labels or detections); empty = any
	MinScore float64  `yaml:"min_score"` // ...with at least this score; 0 = any
	// Secret signs each body: X-Patchline-Signature: sha256=<hex HMAC-SHA256(secret, body)>.
	Secret  string            `yaml:"secret"`
	Headers map[string]string `yaml:"headers"` // extra request headers (use ${VAR} for tokens)
	Timeout time.Duration     `yaml:"timeout"` // per attempt; default 5s
	// CA is a PEM file of certificates trusted for an https endpoint,
	// beside the system's (an endpoint with a private or self-signed one).
	CA string `yaml:"ca"`
	// Delivery is durable (from the annotation stream through a durable
	// consumer shared by the sink replicas: survives restarts, retries until
	// delivered) or memory (a bounded in-memory queue per sink replica, up
	// to Attempts tries); "" = durable while sink.stream is on, else memory.
	Delivery  string `yaml:"delivery"`
	Attempts  int    `yaml:"attempts"`   // memory: tries per annotation (1 = no retry); default 4
	QueueSize int    `yaml:"queue_size"` // memory: pending deliveries; default 256
}

// Webhook deliveries.
const (
	DeliveryDurable = "durable"
	DeliveryMemory  = "memory"
)

// DeliveryFor resolves w's delivery for a sink whose stream is st; durable
// delivery without a stream is an error.
func (w Webhook) DeliveryFor(st Stream) (string, error) {
	switch {
	case w.Delivery == DeliveryDurable && st.Name == "":
		return "", errors.New("durable delivery needs the annotation stream (sink.stream.name is empty)")
	case w.Delivery != "":
		return w.Delivery, nil
	case st.Name == "":
		return DeliveryMemory, nil
	default:
		return DeliveryDurable, nil
	}
}

// WithDefaults fills w's unset timeout, attempts and queue size.
func (w Webhook) WithDefaults() Webhook {
	if w.Timeout == 0 {
		w.Timeout = 5 * time.Second
	}
	if w.Attempts == 0 {
		w.Attempts = 4
	}
	if w.QueueSize == 0 {
		w.QueueSize = 256
	}
	return w
}

// Stream is the JetStream stream that keeps every message on
// patchline.annotations.* (analysis, captions, anomalies) for replay
// (`patchline watch --since`), deduplicated by Nats-Msg-Id (camera:seq...)
// within DuplicateWindow. The sink creates or updates it at start, with
// nats.replicas replicas.
type Stream struct {
	Name            string        `yaml:"name"`             // default PATCHLINE_ANNOTATIONS; "" = no stream
	MaxAge          time.Duration `yaml:"max_age"`          // drop messages older than this; default 24h
	MaxBytes        int64         `yaml:"max_bytes"`        // drop the oldest above this size; default 1 GiB
	DuplicateWindow time.Duration `yaml:"duplicate_window"` // default 2m
}

// DefaultStream is the annotation stream's default name.
const DefaultStream = "PATCHLINE_ANNOTATIONS"

// Telemetry configures tracing. OTLP export follows the standard OTEL_* variables.
type Telemetry struct {
	ServiceName string  `yaml:"service_name"` // default patchline
	SampleRatio float64 `yaml:"sample_ratio"` // 0..1, default 1
}

// Log is how stage processes log, to stderr; --log-level and --log-format
// override it.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error; default info
	Format string `yaml:"format"` // text (logfmt) or json; default text
}

// Default is the configuration used where pipeline.yaml says nothing: an
// embedded NATS server, the HTTP API on loopback, one synthetic camera,
// 96×96 input in 8-pixel patches and the models/scene-vit bundle. A file
// that sets cameras replaces the default camera list.
func Default() Config {
	return Config{
		NATS: NATS{Embedded: Embedded{
			Host:     "127.0.0.1",
			Port:     4222,
			StoreDir: DefaultStoreDir(),
		}, Replicas: 1},
		HTTP:    HTTP{Addr: "127.0.0.1:8080", MaxBody: 64 << 10, MaxViewers: 32, AllowedHosts: []string{}},
		WHIP:    WHIP{AllowedOrigins: []string{}, KeyframeInterval: 2 * time.Second, PublicIPs: []string{}, ICEServers: []ICEServer{}},
		Cameras: []Camera{{ID: "synthetic", URL: "synthetic://?seed=1", FPS: 5}},
		Decode: Decode{
			FileRoots:    []string{},
			Width:        96,
			Height:       96,
			PatchSize:    8,
			Resize:       "stretch",
			DefaultFPS:   5,
			QueueSize:    2,
			StallTimeout: 10 * time.Second,
			RetryMin:     500 * time.Millisecond,
			RetryMax:     30 * time.Second,
			PreviewFPS:   8,
			PreviewWidth: 640,
			LeaseTTL:     10 * time.Second,
		},
		Analyze: Analyze{
			Model:        "models/scene-vit",
			BatchSize:    8,
			MaxBatchWait: 20 * time.Millisecond,
			QueueSize:    32,
		},
		Sink: Sink{JSONLMaxMB: 100, JSONLKeep: 5, Stream: Stream{
			Name: DefaultStream, MaxAge: 24 * time.Hour, MaxBytes: 1 << 30, DuplicateWindow: 2 * time.Minute,
		}, Webhooks: []Webhook{}},
		Generate:  defaultGenerate(),
		Telemetry: Telemetry{ServiceName: "patchline", SampleRatio: 1},
		Log:       Log{Level: "info", Format: "text"},
	}
}

// DefaultStoreDir is the default JetStream directory of the embedded server:
// patchline/jetstream under the user cache directory (~/.cache on Linux), or
// under the temporary directory when there is no user cache directory.
func DefaultStoreDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "patchline", "jetstream")
}
