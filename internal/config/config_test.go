package config

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// env is a fake environment for load.
func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		env  []string
		want []string // substrings of the error, all required
	}{
		{
			name: "invalid yaml",
			yaml: "http:\n  addr: [1, 2\nnats: {}\n",
			want: []string{"pipeline.yaml:2: did not find expected ',' or ']'"},
		},
		{
			name: "bad indentation",
			yaml: "decode:\n  width: 224\n height: 224\n",
			want: []string{"pipeline.yaml:3: did not find expected key"},
		},
		{
			name: "tab indentation",
			yaml: "decode:\n\twidth: 224\n",
			want: []string{"pipeline.yaml:2: found character that cannot start any token (indent with spaces, not tabs)"},
		},
		{
			name: "whip and http security keys",
			yaml: "http:\n  token: a b\n  max_body: 10\n  trace_url: http://jaeger/trace\n  max_viewers: 0\nwhip:\n  allowed_origins: [https://ok.example, https://x.example/path, '*']\n  keyframe_interval: 1ms\n",
			want: []string{
				"pipeline.yaml:2: http.token: contains white space",
				"pipeline.yaml:3: http.max_body: 10 out of range 1024..67108864 bytes",
				`pipeline.yaml:4: http.trace_url: "http://jaeger/trace" has no {trace_id} placeholder`,
				"pipeline.yaml:5: http.max_viewers: 0 out of range 1..4096",
				`whip.allowed_origins[1]: "https://x.example/path" is not an origin`,
				"pipeline.yaml:8: whip.keyframe_interval: 1ms is below 100ms",
			},
		},
		{
			name: "origins as a browser sends them",
			yaml: "whip:\n  allowed_origins: [https://Studio.Example.com, 'http://[0:0::1]:3000', 'https://s2.example:443', 'http://h.example:8080', 'http://[::1]:3000', 'HTTPS://up.example']\n",
			want: []string{
				`whip.allowed_origins[0]: "https://Studio.Example.com" is not written as a browser sends it, and would match no request: write "https://studio.example.com"`,
				`whip.allowed_origins[1]: "http://[0:0::1]:3000" is not written as a browser sends it, and would match no request: write "http://[::1]:3000"`,
				`whip.allowed_origins[2]: "https://s2.example:443" is not written as a browser sends it, and would match no request: write "https://s2.example"`,
				`whip.allowed_origins[5]: "HTTPS://up.example" is not written as a browser sends it, and would match no request: write "https://up.example"`,
			},
		},
		{
			name: "ipv6 without brackets, or with them where they do not go",
			yaml: "nats:\n  url: 'nats://::1:4222'\n  embedded:\n    host: '[::1]'\ncameras:\n  - id: a\n    url: 'rtsp://u:pw@::1:8554/cam'\n",
			want: []string{
				`pipeline.yaml:2: nats.url: "nats://::1:4222": an IPv6 address in a URL goes in brackets, the port after them (rtsp://[2001:db8::10]:554/…)`,
				`pipeline.yaml:4: nats.embedded.host: "[::1]": write an IPv6 address without brackets (::1)`,
				`pipeline.yaml:7: cameras[0].url: "rtsp://u:xxxxx@::1:8554/cam": an IPv6 address in a URL goes in brackets`,
			},
		},
		{
			name: "rtsp fragment",
			yaml: "cameras:\n  - id: a\n    url: 'rtsp://cam/s#main'\n",
			want: []string{`pipeline.yaml:3: cameras[0].url: rtsp url "rtsp://cam/s#main" has a #fragment, which RTSP servers refuse; remove it (a '#' in the path or query is written %23)`},
		},
		{
			name: "log keys",
			yaml: "log:\n  level: loud\n  format: xml\n",
			want: []string{
				`pipeline.yaml:2: log.level: "loud": want one of debug, info, warn, error`,
				`pipeline.yaml:3: log.format: "xml": want one of text, json`,
			},
		},
		{
			name: "preview keys",
			yaml: "decode:\n  preview_fps: 31\n  preview_width: 8\n",
			want: []string{"pipeline.yaml:2: decode.preview_fps: 31 out of range 0..30", "pipeline.yaml:3: decode.preview_width: 8 out of range 16..1920"},
		},
		{
			name: "decode lease ttl",
			yaml: "decode:\n  lease_ttl: 11m\n",
			want: []string{"pipeline.yaml:2: decode.lease_ttl: 11m0s out of range 1s..10m"},
		},
		{
			// A wrong type or an unknown key does not hide the problems
			// validation finds elsewhere; what did not decode is not
			// reported twice.
			name: "every kind of problem at once",
			yaml: "analyze:\n  batch_size: many\ndecode:\n  widht: 1\n  width: 95\n  resize: squash\ncameras:\n  - 7\n  - id: a b\n    url: synthetic://\n",
			want: []string{
				`pipeline.yaml:2: analyze.batch_size: want an integer, got "many"`,
				`pipeline.yaml:4: decode.widht: unknown key (did you mean "width"?)`,
				`pipeline.yaml:5: decode.width: 95 is not a multiple of decode.patch_size 8`,
				`pipeline.yaml:6: decode.resize: "squash"`,
				`pipeline.yaml:8: cameras[0]: want a mapping`,
				`pipeline.yaml:9: cameras[1].id:`,
			},
		},
		{
			name: "~ in file paths",
			yaml: "sink:\n  jsonl: ~/x/ann.jsonl\ncameras:\n  - id: a\n    url: ~/videos/a.mp4\n",
			want: []string{
				`pipeline.yaml:2: sink.jsonl: "~/x/ann.jsonl": ~ is not expanded in patchline's configuration; write ${HOME}/x/ann.jsonl`,
				`pipeline.yaml:5: cameras[0].url: "~/videos/a.mp4": ~ is not expanded`,
			},
		},
		{
			name: "unknown top-level key",
			yaml: "decod:\n  width: 224\n",
			want: []string{`pipeline.yaml:1: decod: unknown key (did you mean "decode"?)`},
		},
		{
			name: "unknown nested key",
			yaml: "analyze:\n  model: m\n\n  batch_sise: 4\n",
			want: []string{`pipeline.yaml:4: analyze.batch_sise: unknown key (did you mean "batch_size"?)`},
		},
		{
			name: "unknown key in list item",
			yaml: "cameras:\n  - id: a\n    url: synthetic://\n  - id: b\n    urll: x.mp4\n",
			want: []string{`pipeline.yaml:5: cameras[1].urll: unknown key (did you mean "url"?)`},
		},
		{
			name: "unknown key far from any",
			yaml: "sink:\n  kafka: x\n",
			want: []string{`pipeline.yaml:2: sink.kafka: unknown key (known keys: jsonl, jsonl_keep, jsonl_max_mb, stream, webhooks)`},
		},
		{
			name: "duplicate key",
			yaml: "http:\n  addr: a:1\n  addr: b:2\n",
			want: []string{`pipeline.yaml:3: http.addr: duplicate key (first on line 2)`},
		},
		{
			name: "wrong type",
			yaml: "decode:\n  width: abc\n",
			want: []string{`pipeline.yaml:2: decode.width: want an integer, got "abc"`},
		},
		{
			name: "quoted integer",
			yaml: "decode:\n  width: \"224\"\n",
			want: []string{`pipeline.yaml:2: decode.width: want an integer, got "224"`},
		},
		{
			name: "mapping for scalar",
			yaml: "analyze:\n  batch_size: {a: 1}\n",
			want: []string{`pipeline.yaml:2: analyze.batch_size: want an integer, got a mapping`},
		},
		{
			name: "scalar for section",
			yaml: "decode: 224\n",
			want: []string{`pipeline.yaml:1: decode: want a mapping, got "224"`},
		},
		{
			name: "mapping for list",
			yaml: "cameras:\n  id: a\n",
			want: []string{`pipeline.yaml:2: cameras: want a list, got a mapping`},
		},
		{
			name: "bad float",
			yaml: "telemetry:\n  sample_ratio: half\n",
			want: []string{`pipeline.yaml:2: telemetry.sample_ratio: want a number, got "half"`},
		},
		{
			name: "bad bool",
			yaml: "cameras:\n  - id: a\n    url: a.mp4\n    loop: yes\n",
			want: []string{`pipeline.yaml:4: cameras[0].loop: want true or false, got "yes"`},
		},
		{
			name: "loop on a live camera",
			yaml: "cameras:\n  - id: a\n    url: rtsp://cam/s\n    loop: true\n  - id: b\n    url: file:///v/b.mp4\n    loop: true\n  - id: c\n    url: SYNTHETIC://\n    loop: true\n",
			want: []string{
				`pipeline.yaml:4: cameras[0].loop: loop applies to file cameras; a rtsp:// camera is live (it is reopened when it drops)`,
				`pipeline.yaml:10: cameras[2].loop: loop applies to file cameras; a synthetic:// camera`,
			},
		},
		{
			name: "bad duration",
			yaml: "analyze:\n  max_batch_wait: 20\n",
			want: []string{`pipeline.yaml:2: analyze.max_batch_wait: want a duration like "20ms", got "20"`},
		},
		{
			name: "all decode errors at once",
			yaml: "decode:\n  width: x\n  height: y\n",
			want: []string{"pipeline.yaml:2: decode.width:", "pipeline.yaml:3: decode.height:"},
		},
		{
			name: "unknown url scheme",
			yaml: "cameras:\n  - id: a\n    url: a.mp4\n  - id: b\n    url: htp://x\n",
			want: []string{`pipeline.yaml:5: cameras[1].url: unknown scheme "htp" in "htp://x" (want rtsp://, rtsps://, file://, synthetic://, whip:// or a file path)`},
		},
		{
			name: "rtsp without host",
			yaml: "cameras:\n  - id: a\n    url: rtsp:///stream\n",
			want: []string{`cameras[0].url: rtsp url "rtsp:///stream" has no host`},
		},
		{
			name: "url password is redacted",
			yaml: "cameras:\n  - id: a\n    url: rtp://u:hunter2@h/s\n",
			want: []string{`"rtp://u:xxxxx@h/s"`},
		},
		{
			name: "duplicate camera id",
			yaml: "cameras:\n  - id: a\n    url: a.mp4\n  - id: a\n    url: b.mp4\n",
			want: []string{`pipeline.yaml:4: cameras[1].id: duplicate camera id "a" (also cameras[0])`},
		},
		{
			name: "bad camera id",
			yaml: "cameras:\n  - id: front door\n    url: a.mp4\n",
			want: []string{`pipeline.yaml:2: cameras[0].id: camera id "front door" has ' '`},
		},
		{
			name: "camera id like a flag",
			yaml: "cameras:\n  - id: -door\n    url: a.mp4\n",
			want: []string{`pipeline.yaml:2: cameras[0].id: camera id "-door" starts with '-'`},
		},
		{
			name: "camera fps",
			yaml: "cameras:\n  - id: a\n    url: a.mp4\n    fps: 500\n",
			want: []string{`pipeline.yaml:4: cameras[0].fps: 500 out of range 0..120`},
		},
		{
			name: "width not a multiple of patch",
			yaml: "decode:\n  width: 225\n  patch_size: 16\n",
			want: []string{`pipeline.yaml:2: decode.width: 225 is not a multiple of decode.patch_size 16`},
		},
		{
			name: "validation problems all reported",
			yaml: "analyze:\n  batch_size: 0\n  queue_size: 0\ntelemetry:\n  sample_ratio: 2\n",
			want: []string{
				"pipeline.yaml:2: analyze.batch_size: 0 out of range 1..256",
				"pipeline.yaml:3: analyze.queue_size: 0 out of range 1..100000",
				"pipeline.yaml:5: telemetry.sample_ratio: 2 out of range 0..1",
			},
		},
		{
			name: "retry order",
			yaml: "decode:\n  retry_min: 1m\n  retry_max: 1s\n",
			want: []string{"pipeline.yaml:3: decode.retry_max: 1s is below decode.retry_min 1m0s"},
		},
		{
			name: "bad nats url",
			yaml: "nats:\n  url: nats://a:4222, http://b\n",
			want: []string{`pipeline.yaml:2: nats.url: unknown scheme "http" in "http://b"`},
		},
		{
			name: "embedded port",
			yaml: "nats:\n  embedded:\n    port: 70000\n",
			want: []string{"pipeline.yaml:3: nats.embedded.port: 70000 out of range -1..65535"},
		},
		{
			name: "replicas",
			yaml: "nats:\n  url: nats://a:4222\n  replicas: 7\n",
			want: []string{"pipeline.yaml:3: nats.replicas: 7 out of range 1..5"},
		},
		{
			name: "stream",
			yaml: "sink:\n  stream:\n    name: my.stream\n    max_age: 0s\n    max_bytes: 1000\n",
			want: []string{
				`pipeline.yaml:3: sink.stream.name: "my.stream": a JetStream stream name has no spaces`,
				"pipeline.yaml:4: sink.stream.max_age: 0s: want a positive duration",
				"pipeline.yaml:5: sink.stream.max_bytes: 1000: want at least 1048576 bytes (1 MiB)",
				"sink.stream.duplicate_window: 2m0s: want a positive duration up to max_age",
			},
		},
		{
			name: "webhook",
			yaml: "sink:\n  webhooks:\n    - url: ftp://x\n      kinds: [alert]\n      min_score: 2\n      attempts: 20\n",
			want: []string{
				`pipeline.yaml:3: sink.webhooks[0].url: ftp://x#fb9023120345: want an http:// or https:// URL with a host`,
				`pipeline.yaml:4: sink.webhooks[0].kinds: "alert" (want analysis, caption, anomaly)`,
				"pipeline.yaml:5: sink.webhooks[0].min_score: 2 out of range 0..1",
				"pipeline.yaml:6: sink.webhooks[0].attempts: 20 out of range 1..10",
			},
		},
		{
			name: "webhook NaN score, huge queues, one URL twice",
			yaml: "decode:\n  queue_size: 100000000000000\nsink:\n  webhooks:\n    - url: http://h/x\n      min_score: .nan\n      cameras: [door]\n    - url: http://h/x\n      cameras: [yard]\n    - url: http://h/x\n      delivery: memory\n",
			want: []string{
				"pipeline.yaml:2: decode.queue_size: 100000000000000 out of range 1..100000",
				"pipeline.yaml:6: sink.webhooks[0].min_score: NaN out of range 0..1",
				"pipeline.yaml:8: sink.webhooks[1].url: the same URL as sink.webhooks[0], and both durable",
			},
		},
		{
			name: "file roots",
			yaml: "decode:\n  file_roots: [/srv/clips, clips]\n",
			want: []string{`pipeline.yaml:2: decode.file_roots[1]: "clips": want an absolute directory`},
		},
		{
			name: "jsonl rotation",
			yaml: "sink:\n  jsonl: /tmp/a.jsonl\n  jsonl_max_mb: 0\n  jsonl_keep: -1\n",
			want: []string{
				"pipeline.yaml:3: sink.jsonl_max_mb: 0 out of range 1..1048576 (MB)",
				"pipeline.yaml:4: sink.jsonl_keep: -1 out of range 0..10000 (0: keep all)",
			},
		},
		{
			name: "webhook delivery",
			yaml: "sink:\n  stream: {name: \"\"}\n  webhooks:\n    - url: http://x/\n      delivery: sometimes\n    - url: http://y/\n      delivery: durable\n",
			want: []string{
				`pipeline.yaml:5: sink.webhooks[0].delivery: "sometimes" (want durable or memory)`,
				"pipeline.yaml:7: sink.webhooks[1].delivery: durable delivery needs the annotation stream (sink.stream.name is empty)",
			},
		},
		{
			name: "whip ice servers",
			yaml: "whip:\n  ice_servers:\n    - urls: [\"stun:stun.example.com\", \"http://x\"]\n    - urls: [\"turn:turn.example.com:3478\"]\n    - urls: []\n",
			want: []string{
				`whip.ice_servers[0].urls[1]: "http://x": want stun:host[:port]`,
				"pipeline.yaml:4: whip.ice_servers[1]: turn:turn.example.com:3478 needs a username and a credential",
				"whip.ice_servers[2].urls: empty",
			},
		},
		{
			name: "unset variable",
			yaml: "nats:\n  url: nats://x:4222\n  token: ${NATS_TOKEN}\n",
			want: []string{"pipeline.yaml:3: nats.token: ${NATS_TOKEN} is not set"},
		},
		{
			name: "unterminated variable",
			yaml: "nats:\n  token: ${NATS_TOKEN\n",
			want: []string{"pipeline.yaml:2: nats.token: unterminated"},
		},
		{
			name: "bad env override",
			env:  []string{"PATCHLINE_DECODE_WIDTH", "wide"},
			want: []string{`PATCHLINE_DECODE_WIDTH: decode.width: want an integer, got "wide"`},
		},
		{
			name: "bad env duration",
			env:  []string{"PATCHLINE_ANALYZE_MAX_BATCH_WAIT", "soon"},
			want: []string{`PATCHLINE_ANALYZE_MAX_BATCH_WAIT: analyze.max_batch_wait: want a duration`},
		},
		{
			name: "env override fails validation",
			env:  []string{"PATCHLINE_ANALYZE_BATCH_SIZE", "1000"},
			want: []string{"PATCHLINE_ANALYZE_BATCH_SIZE: analyze.batch_size: 1000 out of range 1..256"},
		},
		{
			name: "env list item fails validation",
			yaml: "http:\n  allowed_hosts: [a.lan, b.lan, c.lan]\n",
			env:  []string{"PATCHLINE_HTTP_ALLOWED_HOSTS", "nvr.lan, nvr.lan:8080"},
			want: []string{`PATCHLINE_HTTP_ALLOWED_HOSTS: http.allowed_hosts[1]: "nvr.lan:8080": want a host name`},
		},
		{
			name: "env list not a list of strings",
			env:  []string{"PATCHLINE_DECODE_FILE_ROOTS", `["/srv/a", {"b": "c"}]`},
			want: []string{`PATCHLINE_DECODE_FILE_ROOTS: decode.file_roots: want a JSON list of non-empty strings`},
		},
		{
			name: "env list with text after it",
			env:  []string{"PATCHLINE_DECODE_FILE_ROOTS", `["/srv/a"], /srv/b`},
			want: []string{`PATCHLINE_DECODE_FILE_ROOTS: decode.file_roots: want a JSON list`},
		},
		{
			name: "env list with an empty item",
			env:  []string{"PATCHLINE_DECODE_FILE_ROOTS", `["/srv/a", null]`},
			want: []string{`PATCHLINE_DECODE_FILE_ROOTS: decode.file_roots: want a JSON list of non-empty strings`},
		},
		{
			name: "env list set but blank", // a template's empty line must not lift the roots
			yaml: "decode:\n  file_roots: [/srv/media]\n",
			env:  []string{"PATCHLINE_DECODE_FILE_ROOTS", " , "},
			want: []string{`PATCHLINE_DECODE_FILE_ROOTS: decode.file_roots: set but empty (" , "): unset it to keep the file's list, or set [] for no items`},
		},
		{
			name: "two documents",
			yaml: "http: {}\n---\nnats: {}\n",
			want: []string{"pipeline.yaml:2: want one YAML document"},
		},
		{
			name: "top level list",
			yaml: "- a\n",
			want: []string{"pipeline.yaml:1: want a mapping of sections, got a list"},
		},
		{
			name: "recursive merge",
			yaml: "cameras:\n  - &c\n    <<: *c\n",
			want: []string{"pipeline.yaml:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := load("pipeline.yaml", []byte(tt.yaml), env(tt.env...))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("error %v is not a *config.Error", err)
			}
		})
	}
}

func TestSyntaxErrorLine(t *testing.T) {
	t.Parallel()
	_, err := load("p.yaml", []byte("a: b\nc: d: e\n"), env())
	if err == nil || !regexp.MustCompile(`^p\.yaml:2: mapping values are not allowed`).MatchString(err.Error()) {
		t.Fatalf("err = %v, want p.yaml:2: mapping values ...", err)
	}
}

func TestEnvOverride(t *testing.T) {
	t.Parallel()
	c, err := load("p.yaml", []byte("analyze:\n  batch_size: 4\n"), env(
		"PATCHLINE_NATS_URL", "nats://bus:4222",
		"PATCHLINE_HTTP_ADDR", ":9090",
		"PATCHLINE_ANALYZE_BATCH_SIZE", "16",
		"PATCHLINE_ANALYZE_MAX_BATCH_WAIT", "5ms",
		"PATCHLINE_DECODE_WIDTH", "0x100", // YAML integer syntax
		"PATCHLINE_DECODE_HEIGHT", "256",
		"PATCHLINE_TELEMETRY_SAMPLE_RATIO", "0.25",
		"PATCHLINE_NATS_EMBEDDED_STORE_DIR", "/tmp/js",
		"PATCHLINE_NATS_TOKEN", "${NOT_EXPANDED}",
		"PATCHLINE_SINK_JSONL", "",
		"PATCHLINE_HTTP_ALLOWED_HOSTS", " nvr.lan, ,cam.example.com ",
		"PATCHLINE_DECODE_FILE_ROOTS", ` ["/srv/a,b", "/srv/c"]`,
		"PATCHLINE_WHIP_PUBLIC_IPS", "[]",
	))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.HTTP.AllowedHosts = []string{"nvr.lan", "cam.example.com"}
	want.Decode.FileRoots = []string{"/srv/a,b", "/srv/c"}
	want.NATS.URL = "nats://bus:4222"
	want.NATS.Token = "${NOT_EXPANDED}"
	want.NATS.Embedded.StoreDir = "/tmp/js"
	want.HTTP.Addr = ":9090"
	want.Analyze.BatchSize = 16
	want.Analyze.MaxBatchWait = 5 * time.Millisecond
	want.Decode.Width, want.Decode.Height = 256, 256
	want.Telemetry.SampleRatio = 0.25
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestEnvVars(t *testing.T) {
	t.Parallel()
	vars := EnvVars()
	for name, path := range map[string]string{
		"PATCHLINE_NATS_URL":                "nats.url",
		"PATCHLINE_NATS_TLS_CA":             "nats.tls.ca",
		"PATCHLINE_NATS_EMBEDDED_PORT":      "nats.embedded.port",
		"PATCHLINE_HTTP_ADDR":               "http.addr",
		"PATCHLINE_DECODE_STALL_TIMEOUT":    "decode.stall_timeout",
		"PATCHLINE_ANALYZE_BATCH_SIZE":      "analyze.batch_size",
		"PATCHLINE_TELEMETRY_SAMPLE_RATIO":  "telemetry.sample_ratio",
		"PATCHLINE_ANALYZE_ORT_LIBRARY":     "analyze.ort_library",
		"PATCHLINE_SINK_JSONL":              "sink.jsonl",
		"PATCHLINE_SINK_STREAM_NAME":        "sink.stream.name",
		"PATCHLINE_DECODE_PATCH_SIZE":       "decode.patch_size",
		"PATCHLINE_NATS_EMBEDDED_STORE_DIR": "nats.embedded.store_dir",
		"PATCHLINE_NATS_REPLICAS":           "nats.replicas",
		"PATCHLINE_HTTP_ALLOWED_HOSTS":      "http.allowed_hosts",
		"PATCHLINE_WHIP_PUBLIC_IPS":         "whip.public_ips",
	} {
		if got := vars[name]; got != path {
			t.Errorf("EnvVars()[%s] = %q, want %q", name, got, path)
		}
	}
	for name, path := range vars {
		if strings.HasPrefix(path, "cameras") || strings.Contains(path, "webhooks") || strings.Contains(path, "ice_servers") {
			t.Errorf("%s overrides list field %s", name, path)
		}
	}
	// Names must be unique: two paths folding to one variable would be ambiguous.
	if n := len(envLeaves()); n != len(vars) {
		t.Errorf("%d overridable fields but %d distinct variables", n, len(vars))
	}
}

func TestExpand(t *testing.T) {
	t.Parallel()
	yaml := `
nats:
  url: ${NATS_URL:-nats://localhost:4222}
  token: ${NATS_TOKEN}
  creds: ${CREDS_DIR}/user.creds
cameras:
  - id: door
    url: rtsp://viewer:${CAM_PASS}@cam.local/s1
    fps: 2
sink:
  jsonl: p$a$$${HOME}$x
telemetry:
  service_name: ${SVC:-patchline}-${ENV:-dev}
`
	c, err := load("p.yaml", []byte(yaml), env(
		"NATS_TOKEN", "s3cret",
		"CREDS_DIR", "/etc/nats",
		"CAM_PASS", "pa$$",
		"ENV", "",
		"SVC", "edge",
	))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ got, want string }{
		{c.NATS.URL, "nats://localhost:4222"},
		{c.NATS.Token, "s3cret"},
		{c.NATS.Creds, "/etc/nats/user.creds"},
		{c.Cameras[0].URL, "rtsp://viewer:pa$$@cam.local/s1"},
		{c.Sink.JSONL, "p$a$${HOME}$x"},
		{c.Telemetry.ServiceName, "edge-dev"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestExpandEmptyWithoutDefault(t *testing.T) {
	t.Parallel()
	got, err := expand("a${X}b", env("X", ""))
	if err != nil || got != "ab" {
		t.Fatalf("expand = %q, %v; want \"ab\" (set but empty is not an error)", got, err)
	}
	if _, err := expand("${1X}", env()); err == nil {
		t.Fatal("expand accepted a bad variable name")
	}
}

func TestCamerasReplaceDefault(t *testing.T) {
	t.Parallel()
	c, err := load("p.yaml", []byte("cameras:\n  - id: a\n    url: clips/a.mp4\n    loop: true\n"), env())
	if err != nil {
		t.Fatal(err)
	}
	want := []Camera{{ID: "a", URL: "clips/a.mp4", Loop: true}}
	if !reflect.DeepEqual(c.Cameras, want) {
		t.Fatalf("cameras = %+v, want %+v", c.Cameras, want)
	}
	if fps := c.Cameras[0].EffectiveFPS(c.Decode.DefaultFPS); fps != 5 {
		t.Errorf("EffectiveFPS = %v, want decode.default_fps 5", fps)
	}

	c, err = load("p.yaml", []byte("cameras: []\n"), env())
	if err != nil || len(c.Cameras) != 0 {
		t.Fatalf("cameras: [] gave %+v, %v; want none", c.Cameras, err)
	}
}

func TestEmptyFileAndSectionsKeepDefaults(t *testing.T) {
	t.Parallel()
	for _, src := range []string{"", "# only a comment\n", "nats:\ntelemetry:\n", "~\n"} {
		c, err := load("p.yaml", []byte(src), env())
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		if !reflect.DeepEqual(c, Default()) {
			t.Errorf("%q: got %+v, want Default()", src, c)
		}
	}
}

func TestAnchorsAndMerge(t *testing.T) {
	t.Parallel()
	yaml := `
cameras:
  - &base
    id: a
    url: clips/a.mp4
    fps: 3
  - <<: *base
    id: b
`
	c, err := load("p.yaml", []byte(yaml), env())
	if err != nil {
		t.Fatal(err)
	}
	want := []Camera{{ID: "a", URL: "clips/a.mp4", FPS: 3}, {ID: "b", URL: "clips/a.mp4", FPS: 3}}
	if !reflect.DeepEqual(c.Cameras, want) {
		t.Fatalf("cameras = %+v, want %+v", c.Cameras, want)
	}
}

func TestDefaultValidates(t *testing.T) {
	t.Parallel()
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(c.NATS.Embedded.StoreDir, "patchline/jetstream") {
		t.Errorf("store_dir = %q", c.NATS.Embedded.StoreDir)
	}
}

func TestValidateReportsAll(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Decode.Resize = "crop"
	c.Decode.PatchSize = 0
	c.HTTP.Addr = "8080"
	c.NATS.TLS.Cert = "c.pem"
	err := c.Validate()
	for _, w := range []string{
		`decode.resize: "crop" (want stretch or letterbox)`,
		"decode.patch_size: 0 out of range",
		`http.addr: "8080" is not host:port`,
		"nats.tls: set cert and key together",
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate() = %v; want it to contain %q", err, w)
		}
	}
}

func TestCheckCameraURL(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{
		"rtsp://cam.local/s1", "RTSP://u:p@10.0.0.1:554/s", "rtsps://cam/s",
		"file:///data/a.mp4", "synthetic://", "synthetic://?seed=1", "rtsp://nvr/s?channel=1&subtype=0",
		"/data/a.mp4", "clips/b.mkv", "./weird:name.mp4", "whip://", "/videos/cam@2x.mp4",
		"rtsp://cam:1/s", "rtsp://cam:65535/s", // the ends of the port range
	} {
		if err := CheckCameraURL(ok); err != nil {
			t.Errorf("CheckCameraURL(%q) = %v, want nil", ok, err)
		}
	}
	for bad, want := range map[string]string{
		"":                  "url is empty",
		"htp://x":           `unknown scheme "htp" in "htp://x"`,
		"http://u:pw@h/x":   `"http://u:xxxxx@h/x"`,
		"rtsp://":           "has no host",
		"rtsp://u:pw@/s":    `"rtsp://u:xxxxx@/s" has no host`,
		"rtsp:/cam.local/s": "missing the // after rtsp:",
		// Typos the decoder would read as a URL, or as a path with the
		// credentials in it: refused, and the password not shown.
		"rtsp:/viewer:pw@192.0.2.10/s": `"rtsp:/viewer:xxxxx@192.0.2.10/s" is missing the //`,
		"rtsp//admin:pw@192.0.2.10/s":  `"rtsp//admin:xxxxx@192.0.2.10/s" is missing the : after rtsp`,
		"admin:pw@192.0.2.10/s":        `unknown scheme "admin" in "admin:xxxxx@192.0.2.10/s"`,
		"cam.local:554/s":              `unknown scheme "cam.local"`,
		"weird:name.mp4":               "must start with ./",
		"a b:c.mp4":                    "must start with ./",
		"synthetic://u:pw@h/?seed=1":   `"synthetic://u:xxxxx@h/?seed=1": only query parameters`,
		"rtsp://cam/pa th RTSP/1.0":    "has white space in it",
		"file://":                      "has no path",
		"rtsp://u:pw@[::1/s":           "bad url",
		// A password with reserved characters: url.Parse's own message
		// would quote the part after its first ':' (pw/xyz) as a port.
		"rtsp://admin:pw/xyz@10.0.0.1/s": "must be percent-encoded",
		"rtsp://admin:pw#x@10.0.0.1/s":   "must be percent-encoded",
		" rtsp://cam/s":                  "white space before or after",
		"rtsp://cam:99999/s":             "port 99999 is not in 1..65535",
		"rtsp://cam:65536/s":             "port 65536 is not in 1..65535",
		"rtsp://cam:0/s":                 "port 0 is not in 1..65535",
		"rtsp://cam:99x/s?password=pw":   `"rtsp://cam:99x/s?password=xxxxx"`,
		"synthetic://%zz":                "invalid URL escape",
		// What the cameras themselves would refuse is refused here too, so
		// that a camera that passes validation starts.
		"synthetic://?seed=5&anomaly_evry=40": "anomaly_evry",
		"file://clips/a.mp4":                  `names host "clips"`,
		"synthetic://?objects=99":             "objects",
		"clips/a\x00.mp4":                     "NUL",
		"whip://cam1":                         "something after whip://",
		// FFmpeg's transport options: ?http tunnels through HTTP requests
		// to wherever the URL points.
		"rtsp://169.254.169.254:80/latest/meta-data/?http": "?http is an FFmpeg transport option",
		"rtsp://cam/s?channel=1&udp":                       "?udp is an FFmpeg transport option",
	} {
		err := CheckCameraURL(bad)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckCameraURL(%q) = %v, want it to contain %q", bad, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("CheckCameraURL(%q) = %v leaks the password", bad, err)
		}
	}
}

func TestCameraValidate(t *testing.T) {
	t.Parallel()
	err := Camera{ID: "", URL: "htp://x", FPS: -1}.Validate()
	for _, w := range []string{"id: camera id is empty", "url: unknown scheme", "fps: -1 out of range"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate() = %v; want it to contain %q", err, w)
		}
	}
	if err := (Camera{ID: "a", URL: "synthetic://"}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestShippedPipelineYAML checks that ../../pipeline.yaml loads, validates
// and equals Default(), so the documented defaults cannot drift from code.
func TestShippedPipelineYAML(t *testing.T) {
	t.Parallel()
	const path = "../../pipeline.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := load(path, data, env())
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(c, want) {
		t.Errorf("pipeline.yaml differs from Default():\n got  %+v\n want %+v", c, want)
	}
	// Every key is documented, set or commented out.
	for _, p := range EnvVars() {
		key := p[strings.LastIndexByte(p, '.')+1:]
		if !strings.Contains(string(data), key+":") {
			t.Errorf("pipeline.yaml does not mention %s", p)
		}
	}
}

// TestLoadUsesProcessEnv covers the exported entry points end to end.
func TestLoadUsesProcessEnv(t *testing.T) {
	t.Setenv("PATCHLINE_HTTP_ADDR", "0.0.0.0:9000")
	t.Setenv("PATCHLINE_TEST_TOKEN", "tok")
	c, err := Load("../../pipeline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Addr != "0.0.0.0:9000" {
		t.Errorf("http.addr = %q, want the PATCHLINE_HTTP_ADDR override", c.HTTP.Addr)
	}
	c, err = LoadBytes("inline", []byte("nats:\n  token: ${PATCHLINE_TEST_TOKEN}\n"))
	if err != nil || c.NATS.Token != "tok" {
		t.Fatalf("LoadBytes = %q, %v; want token tok", c.NATS.Token, err)
	}
	if _, err := Load("does-not-exist.yaml"); err == nil || !strings.Contains(err.Error(), "does-not-exist.yaml") {
		t.Errorf("Load(missing) = %v, want an error naming the file", err)
	}
}

// TestWebhookHeadersFromYAML: webhook headers are a mapping of free names
// (as pipeline.yaml documents them) whose values expand ${VAR}; anything
// else is an error naming the key, not a crash.
func TestWebhookHeadersFromYAML(t *testing.T) {
	t.Parallel()
	yaml := `
sink:
  webhooks:
    - url: https://hooks.example/in
      headers: {Authorization: "Bearer ${HOOK_TOKEN}", X-Site: north}
`
	c, err := load("p.yaml", []byte(yaml), env("HOOK_TOKEN", "t0k"))
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Sink.Webhooks[0].Headers; len(h) != 2 || h["Authorization"] != "Bearer t0k" || h["X-Site"] != "north" {
		t.Errorf("headers = %v", h)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"headers: foo", `p.yaml:5: sink.webhooks[0].headers: want a mapping, got "foo"`},
		{"headers: {A: {b: c}}", "p.yaml:5: sink.webhooks[0].headers.A: want a string, got a mapping"},
		{"headers: {A: x, A: y}", "sink.webhooks[0].headers.A: duplicate key"},
		// A ':' in a name would end it early on the wire ("X:Y: v" sends
		// header X with value "Y: v").
		{`headers: {"X:Y": v}`, `sink.webhooks[0].headers: "X:Y" is not a header name`},
		{`headers: {"X Y": v}`, `sink.webhooks[0].headers: "X Y" is not a header name`},
		// Names and values net/http refuses to send: every attempt would
		// fail (and a durable webhook retry it for ever).
		{`headers: {"X(Y": v}`, `sink.webhooks[0].headers: "X(Y" is not a header name`},
		{`headers: {"Ä": v}`, `sink.webhooks[0].headers: "Ä" is not a header name`},
		{`headers: {A: "t0k\x01"}`, `sink.webhooks[0].headers: "A": the value has a control character`},
	} {
		_, err := load("p.yaml", []byte(strings.Replace(yaml, `headers: {Authorization: "Bearer ${HOOK_TOKEN}", X-Site: north}`, tc.yaml, 1)), env())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
	// A token that came with the line break of the file it was read from:
	// refused, and not quoted.
	_, err = load("p.yaml", []byte(yaml), env("HOOK_TOKEN", "t0k\n"))
	if err == nil || !strings.Contains(err.Error(), `sink.webhooks[0].headers: "Authorization": the value has a control character`) || strings.Contains(err.Error(), "t0k") {
		t.Errorf("a header value with a line break: err = %v, want it refused without quoting it", err)
	}
}

// TestStrayEnv: a mistyped override is named with the setting it meant;
// settings, the tools' own variables and unrelated PATCHLINE_ names a file
// may expand are left alone.
func TestStrayEnv(t *testing.T) {
	got := StrayEnv([]string{
		"PATCHLINE_ANALYZE_BATCHSIZE=4", "PATCHLINE_NATS_URLL=nats://x", "PATCHLINE_ANALYZE_BATCH_SIZE=4",
		"PATCHLINE_ORT_LIB=/x.so", "PATCHLINE_REQUIRE_SHARED=1", "PATCHLINE_CAM_PASSWORD=s3cret", "HOME=/root",
	})
	want := []string{
		"PATCHLINE_ANALYZE_BATCHSIZE is not a setting and changes nothing (did you mean PATCHLINE_ANALYZE_BATCH_SIZE, for analyze.batch_size?)",
		"PATCHLINE_NATS_URLL is not a setting and changes nothing (did you mean PATCHLINE_NATS_URL, for nats.url?)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("StrayEnv = %q, want %q", got, want)
	}
}

// TestWebhookLabelHidesTheSecret: a webhook's name (metric label, log, span)
// keeps scheme and host, not a path or query that may be its secret.
func TestWebhookLabelHidesTheSecret(t *testing.T) {
	const u = "https://hooks.slack.com/services/T0001/B0002/XXXXsecretXXXX?token=abc"
	name := WebhookLabel(u)
	if !strings.HasPrefix(name, "https://hooks.slack.com#") || strings.Contains(name, "secret") || strings.Contains(name, "abc") || strings.Contains(name, "T0001") {
		t.Errorf("WebhookLabel = %q", name)
	}
	if WebhookLabel(u) == WebhookLabel(strings.Replace(u, "B0002", "B0003", 1)) {
		t.Error("two webhooks on one host share a name")
	}
	if got := WebhookLabel("::not a url"); strings.Contains(got, "not a url") {
		t.Errorf("WebhookLabel of a bad URL = %q", got)
	}
}

// TestWebhookURLErrors: a webhook URL is checked as strictly as a camera's,
// and its errors name it by label, never by its path or query.
func TestWebhookURLErrors(t *testing.T) {
	t.Parallel()
	for bad, want := range map[string]string{
		"htps://hooks.slack.com/services/T0/B0/SLACKSECRET1": "htps://hooks.slack.com#",
		"https://hooks.example/SLACKSECRET1 ":                "white space",
		"https://hooks.example:99999/SLACKSECRET1":           "port 99999 is not in 1..65535",
		"https://hooks.example:65536/SLACKSECRET1":           "port 65536 is not in 1..65535",
		"hooks.example/SLACKSECRET1":                         "want an http:// or https:// URL",
	} {
		err := Webhook{URL: bad}.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Webhook{URL: %q}.Validate() = %v, want it to contain %q", bad, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "SLACKSECRET1") {
			t.Errorf("Webhook{URL: %q}.Validate() = %v leaks the secret", bad, err)
		}
	}
}

// TestCheckOriginCanonical: origins written as browsers send them pass.
func TestCheckOriginCanonical(t *testing.T) {
	for _, o := range []string{"*", "https://studio.example.com", "http://h.example:8080", "http://[::1]:3000", "http://[::1]", "http://127.0.0.1:3000", "https://s.example:8443", "http://[::ffff:102:304]"} {
		if err := CheckOrigin(o); err != nil {
			t.Errorf("CheckOrigin(%q): %v", o, err)
		}
	}
}

// TestBracketedIPv6 passes: an IPv6 host in brackets, with or without
// credentials, a port or a zone.
func TestBracketedIPv6(t *testing.T) {
	for _, u := range []string{"rtsp://[::1]:8554/cam", "rtsp://u:p%40ss@[::1]:8554/x", "rtsps://[2001:db8::7]/s", "rtsp://[fe80::1%25eth0]:554/s"} {
		if err := CheckCameraURL(u); err != nil {
			t.Errorf("CheckCameraURL(%q): %v", u, err)
		}
	}
	if err := checkNATSURL("nats://[::1]:4222"); err != nil {
		t.Errorf("nats://[::1]:4222: %v", err)
	}
}
