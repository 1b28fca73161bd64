package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/pion/stun/v4"
	"golang.org/x/net/http/httpguts"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/media"
	"github.com/patchline/patchline/internal/synth"
)

// Limits checked by Validate.
const (
	MaxFPS       = 120
	MaxQueue     = 100000 // frames a queue may hold: each slot is allocated at start
	MaxBatchSize = 256
)

// checker collects problems, each under a key path.
type checker struct{ errs []error }

func (ck *checker) add(path string, format string, args ...any) {
	ck.errs = append(ck.errs, &Error{Path: path, Err: fmt.Errorf(format, args...)})
}

func (ck *checker) addErr(path string, err error) {
	if err != nil {
		ck.errs = append(ck.errs, &Error{Path: path, Err: err})
	}
}

// Validate reports every problem in c, joined with errors.Join; each is an
// *Error naming its key path. It returns nil for a usable configuration.
func (c *Config) Validate() error { return errors.Join(c.problems()...) }

func (c *Config) problems() []error {
	ck := &checker{}
	c.NATS.check(ck)
	c.HTTP.check(ck)
	c.WHIP.check(ck)
	checkCameras(ck, c.Cameras)
	c.Decode.check(ck)
	c.Analyze.check(ck)
	c.Sink.Stream.check(ck)
	if c.Sink.JSONLMaxMB < 1 || c.Sink.JSONLMaxMB > 1<<20 {
		ck.add("sink.jsonl_max_mb", "%d out of range 1..1048576 (MB)", c.Sink.JSONLMaxMB)
	}
	if c.Sink.JSONLKeep < 0 || c.Sink.JSONLKeep > 10000 {
		ck.add("sink.jsonl_keep", "%d out of range 0..10000 (0: keep all)", c.Sink.JSONLKeep)
	}
	durable := map[string]int{} // URL → the first durable webhook with it
	for i, w := range c.Sink.Webhooks {
		path := fmt.Sprintf("sink.webhooks[%d]", i)
		w.WithDefaults().check(ck, path)
		d, err := w.DeliveryFor(c.Sink.Stream)
		if err != nil {
			ck.addErr(path+".delivery", err)
		}
		if d != DeliveryDurable {
			continue
		}
		// A durable webhook's consumer is named by its URL: two would share
		// one, each acknowledging what its own filters skip.
		if first, dup := durable[w.URL]; dup {
			ck.add(path+".url", "the same URL as sink.webhooks[%d], and both durable: merge them into one webhook, or make the URLs differ (a query string will do)", first)
			continue
		}
		durable[w.URL] = i
	}
	c.Generate.check(ck)
	c.Telemetry.check(ck)
	c.Log.check(ck)
	c.checkTildes(ck)
	return ck.errs
}

// checkTildes refuses file paths that start with ~: no shell expands it
// here, and the file would be made under a directory named "~" in the
// working directory. ${HOME} expands.
func (c *Config) checkTildes(ck *checker) {
	paths := map[string]string{
		"nats.creds": c.NATS.Creds, "nats.tls.ca": c.NATS.TLS.CA, "nats.tls.cert": c.NATS.TLS.Cert, "nats.tls.key": c.NATS.TLS.Key,
		"nats.embedded.store_dir": c.NATS.Embedded.StoreDir, "analyze.model": c.Analyze.Model, "analyze.ort_library": c.Analyze.ORTLibrary,
		"sink.jsonl": c.Sink.JSONL, "generate.caption_model": c.Generate.CaptionModel, "generate.framegen_model": c.Generate.FramegenModel,
	}
	for i, r := range c.Decode.FileRoots {
		paths[fmt.Sprintf("decode.file_roots[%d]", i)] = r
	}
	for i, w := range c.Sink.Webhooks {
		paths[fmt.Sprintf("sink.webhooks[%d].ca", i)] = w.CA
	}
	for _, path := range slices.Sorted(maps.Keys(paths)) {
		if err := checkTilde(paths[path]); err != nil {
			ck.addErr(path, err)
		}
	}
}

func checkTilde(p string) error {
	if strings.HasPrefix(p, "~") {
		return fmt.Errorf("%q: ~ is not expanded in patchline's configuration; write ${HOME}%s", p, strings.TrimPrefix(p, "~"))
	}
	return nil
}

// Validate checks one camera as pipeline.yaml's cameras entries are checked;
// problems name the field ("id", "url", "fps").
func (c Camera) Validate() error {
	ck := &checker{}
	c.check(ck, "")
	return errors.Join(ck.errs...)
}

func (c Camera) check(ck *checker, path string) {
	ck.addErr(joinPath(path, "id"), frame.ValidCameraID(c.ID))
	if strings.HasPrefix(c.ID, "-") {
		ck.add(joinPath(path, "id"), "camera id %q starts with '-', which the command line would read as a flag", c.ID)
	}
	ck.addErr(joinPath(path, "url"), CheckCameraURL(c.URL))
	if c.Loop {
		if scheme, _, ok := strings.Cut(c.URL, "://"); ok && isScheme(scheme) && !strings.EqualFold(scheme, "file") {
			ck.add(joinPath(path, "loop"), "loop applies to file cameras; a %s:// camera is live (it is reopened when it drops)", strings.ToLower(scheme))
		}
	}
	if !inRange(c.FPS, 0, MaxFPS) {
		ck.add(joinPath(path, "fps"), "%v out of range 0..%d (0 = decode.default_fps)", c.FPS, MaxFPS)
	}
}

func checkCameras(ck *checker, cams []Camera) {
	first := map[string]int{}
	for i, c := range cams {
		path := fmt.Sprintf("cameras[%d]", i)
		c.check(ck, path)
		if j, dup := first[c.ID]; dup {
			ck.add(path+".id", "duplicate camera id %q (also cameras[%d])", c.ID, j)
			continue
		}
		first[c.ID] = i
	}
}

// cameraSchemes are the URL schemes a camera source may use.
var cameraSchemes = map[string]bool{"rtsp": true, "rtsps": true, "file": true, "synthetic": true, "whip": true}

// CheckCameraURL checks a camera source: rtsp:// or rtsps:// with a host,
// file:// with a path, synthetic://, or a plain file path. Messages never
// show a password from the URL.
func CheckCameraURL(raw string) error {
	if raw == "" {
		return errors.New("url is empty")
	}
	if strings.TrimSpace(raw) != raw {
		return fmt.Errorf("url %q has white space before or after it", redact(strings.TrimSpace(raw)))
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || !isScheme(scheme) {
		return checkPlainPath(raw)
	}
	switch scheme = strings.ToLower(scheme); scheme {
	case "rtsp", "rtsps":
		// FFmpeg sends the URL as it is in its requests' first line
		// ("DESCRIBE rtsp://cam/a b RTSP/1.0"): a space must be %20.
		if strings.IndexFunc(raw, unicode.IsSpace) >= 0 {
			return fmt.Errorf("%s url %q has white space in it (write a space as %%20)", scheme, redact(raw))
		}
		u, err := parseURL(raw)
		if err != nil {
			return err
		}
		if u.Hostname() == "" {
			return fmt.Errorf("%s url %q has no host", scheme, redact(raw))
		}
		if err := checkBracketed(u, raw); err != nil {
			return err
		}
		if err := checkPort(u); err != nil {
			return fmt.Errorf("%s url %q: %w", scheme, redact(raw), err)
		}
		if opt := ffmpegTransportOption(raw); opt != "" {
			return fmt.Errorf("%s url %q: ?%s is an FFmpeg transport option, and patchline chooses the transport (RTSP over TCP); remove it", scheme, redact(raw), opt)
		}
		if strings.Contains(raw, "#") {
			return fmt.Errorf("%s url %q has a #fragment, which RTSP servers refuse; remove it (a '#' in the path or query is written %%23)", scheme, redact(raw))
		}
	case "file":
		if rest == "" || rest == "/" {
			return fmt.Errorf("file url %q has no path", redact(raw))
		}
		u, err := parseURL(raw)
		if err != nil {
			return err
		}
		if u.Host != "" && u.Host != "localhost" {
			return fmt.Errorf("file url %q names host %q; use file:///absolute/path", redact(raw), u.Host)
		}
		if !path.IsAbs(u.Path) {
			return fmt.Errorf("file url %q needs an absolute path (file:///abs/path)", redact(raw))
		}
	case "synthetic":
		// The same parse the synthetic camera makes, so that what passes here
		// starts (unknown or out-of-range parameters are errors).
		if _, err := synth.ParseURL(raw); err != nil {
			return err
		}
	case "whip":
		if rest != "" {
			return fmt.Errorf("whip url %q has something after whip:// (a WHIP camera is just whip://; publish to POST /whip/<camera>)", redact(raw))
		}
	default:
		return fmt.Errorf("unknown scheme %q in %q (want rtsp://, rtsps://, file://, synthetic://, whip:// or a file path)", scheme, redact(raw))
	}
	return nil
}

// checkPlainPath catches URL typos that would otherwise pass as a file
// path ("rtsp:/host", "rtsp//host", "host:554/s", "user:pw@host/s"): a path
// whose first part holds a ':' is what the decoder reads as a URL scheme.
func checkPlainPath(raw string) error {
	if strings.ContainsRune(raw, 0) {
		return errors.New("file path contains a NUL byte")
	}
	if err := checkTilde(raw); err != nil {
		return err
	}
	first, _, _ := strings.Cut(raw, "/")
	if scheme, _, ok := strings.Cut(first, ":"); ok {
		if cameraSchemes[strings.ToLower(scheme)] {
			return fmt.Errorf("%q is missing the // after %s: (want %s://...)", redact(raw), scheme, strings.ToLower(scheme))
		}
		if isScheme(scheme) {
			return fmt.Errorf("unknown scheme %q in %q (want rtsp://, rtsps://, file://, synthetic://, whip:// or a file path; a path whose first part has a ':' must start with ./)", scheme, redact(raw))
		}
		return fmt.Errorf("%q is neither a URL nor a file path the decoder reads: a path whose first part has a ':' must start with ./", redact(raw))
	}
	if s := strings.ToLower(first); cameraSchemes[s] && strings.HasPrefix(raw[len(first):], "//") {
		return fmt.Errorf("%q is missing the : after %s (want %s://...)", redact(raw), first, s)
	}
	return nil
}

// isScheme reports whether s is a URL scheme: a letter, then letters, digits, '+', '-' or '.'.
func isScheme(s string) bool {
	for i, r := range s {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !letter && (i == 0 || !(r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	return s != ""
}

// parseURL parses raw without echoing it in the error, which could leak a
// password: url.Parse's own message quotes the part it stumbled on, which
// in a URL with credentials is often the password (rtsp://admin:pa/ss@…
// reads as host "admin", port ":pa").
func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		if strings.Contains(raw, "@") {
			return nil, fmt.Errorf("bad url %q: it does not parse; characters such as @ : / ? # %% in a user name or password must be percent-encoded (%%40 %%3A %%2F %%3F %%23 %%25)", redact(raw))
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("bad url %q: %v", redact(raw), err)
	}
	return u, nil
}

// ffmpegTransportOption returns the first option of an RTSP URL's query
// that FFmpeg reads as a transport (after the last '?', '&'-separated, as
// FFmpeg parses them): ?http or ?https would make it tunnel through HTTP
// requests to the host and path given (a GET and a POST anywhere the
// server reaches), ?udp or ?multicast would leave TCP. "" if none.
func ffmpegTransportOption(raw string) string {
	i := strings.LastIndexByte(raw, '?')
	if i < 0 {
		return ""
	}
	for _, opt := range strings.Split(raw[i+1:], "&") {
		switch opt {
		case "http", "https", "udp", "multicast", "tcp":
			return opt
		}
	}
	return ""
}

// redact hides the credentials in a URL (media.RedactURL: userinfo and
// secret-looking query values); an unparseable one without userinfo is
// quoted as it is, to show the typo, bar secret-looking parameters.
func redact(raw string) string {
	if _, err := url.Parse(raw); err != nil && !strings.Contains(raw, "@") {
		return media.RedactParams(raw)
	}
	return media.RedactURL(raw)
}

func (n NATS) check(ck *checker) {
	if n.URL != "" {
		for s := range strings.SplitSeq(n.URL, ",") {
			ck.addErr("nats.url", checkNATSURL(strings.TrimSpace(s)))
		}
	}
	if (n.TLS.Cert == "") != (n.TLS.Key == "") {
		ck.add("nats.tls", "set cert and key together")
	}
	if n.Embedded.Port < -1 || n.Embedded.Port > 65535 {
		ck.add("nats.embedded.port", "%d out of range -1..65535 (-1 = any free port)", n.Embedded.Port)
	}
	if n.URL == "" && n.Embedded.Host == "" {
		ck.add("nats.embedded.host", "is empty (want an address such as 127.0.0.1)")
	}
	if h := n.Embedded.Host; strings.HasPrefix(h, "[") || strings.HasSuffix(h, "]") {
		ck.add("nats.embedded.host", "%q: write an IPv6 address without brackets (::1)", h)
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		ck.add("nats.replicas", "%d out of range 1..5 (JetStream's limit)", n.Replicas)
	}
}

// checkBracketed refuses an IPv6 address written without its brackets in
// a URL's authority ("rtsp://::1:554/s"), which no dialler reads as meant.
func checkBracketed(u *url.URL, raw string) error {
	if strings.Contains(u.Hostname(), ":") && !strings.HasPrefix(u.Host, "[") {
		// Which part is the port cannot be told: the message names none.
		return fmt.Errorf("%q: an IPv6 address in a URL goes in brackets, the port after them (rtsp://[2001:db8::10]:554/…)", redact(raw))
	}
	return nil
}

// checkNATSURL checks one server URL of nats.url.
func checkNATSURL(s string) error {
	u, err := parseURL(s)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	case "":
		return fmt.Errorf("%q has no scheme (want nats://host:4222)", redact(s))
	default:
		return fmt.Errorf("unknown scheme %q in %q (want nats://, tls://, ws:// or wss://)", u.Scheme, redact(s))
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%q has no host", redact(s))
	}
	return checkBracketed(u, s)
}

func (h HTTP) check(ck *checker) {
	_, port, err := net.SplitHostPort(h.Addr)
	if err != nil {
		ck.add("http.addr", "%q is not host:port", h.Addr)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		ck.add("http.addr", "%q: port %q is not a number in 0..65535", h.Addr, port)
	}
	if strings.ContainsAny(h.Token, " \t\r\n") {
		ck.add("http.token", "contains white space (a bearer token is one word)")
	}
	if h.MaxBody < 1<<10 || h.MaxBody > MaxBodyLimit {
		ck.add("http.max_body", "%d out of range %d..%d bytes", h.MaxBody, 1<<10, MaxBodyLimit)
	}
	if h.MaxViewers < 1 || h.MaxViewers > 4096 {
		ck.add("http.max_viewers", "%d out of range 1..4096", h.MaxViewers)
	}
	for i, host := range h.AllowedHosts {
		if host == "" || strings.ContainsAny(host, ":/ \t*") {
			ck.add(fmt.Sprintf("http.allowed_hosts[%d]", i), "%q: want a host name, no scheme, port or wildcard", host)
		}
	}
	if h.TraceURL != "" {
		u, err := url.Parse(h.TraceURL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			ck.add("http.trace_url", "%q is not an http(s) URL", h.TraceURL)
		case !strings.Contains(h.TraceURL, "{trace_id}"):
			ck.add("http.trace_url", "%q has no {trace_id} placeholder", h.TraceURL)
		}
	}
}

// MaxBodyLimit is the largest http.max_body.
const MaxBodyLimit = 64 << 20

func (w WHIP) check(ck *checker) {
	for i, o := range w.AllowedOrigins {
		ck.addErr(fmt.Sprintf("whip.allowed_origins[%d]", i), CheckOrigin(o))
	}
	if w.KeyframeInterval != 0 && w.KeyframeInterval < 100*time.Millisecond {
		ck.add("whip.keyframe_interval", "%v is below 100ms (0 = only when decode asks)", w.KeyframeInterval)
	}
	if w.UDPPort < 0 || w.UDPPort > 65535 {
		ck.add("whip.udp_port", "%d out of range 0..65535 (0 = a port per session)", w.UDPPort)
	}
	for i, ip := range w.PublicIPs {
		if net.ParseIP(ip) == nil {
			ck.add(fmt.Sprintf("whip.public_ips[%d]", i), "%q is not an IP address", ip)
		}
	}
	for i, s := range w.ICEServers {
		path := fmt.Sprintf("whip.ice_servers[%d]", i)
		if len(s.URLs) == 0 {
			ck.add(path+".urls", "empty: want stun:, turn: or turns: URLs")
		}
		for j, raw := range s.URLs {
			u, err := stun.ParseURI(raw)
			if err != nil {
				ck.add(fmt.Sprintf("%s.urls[%d]", path, j), "%q: want stun:host[:port], turn:host[:port][?transport=udp|tcp] or turns:host[:port] (%v)", raw, err)
				continue
			}
			if (u.Scheme == stun.SchemeTypeTURN || u.Scheme == stun.SchemeTypeTURNS) && (s.Username == "" || s.Credential == "") {
				ck.add(path, "%s needs a username and a credential", raw)
			}
		}
	}
}

// CheckOrigin checks a CORS origin: "*" or scheme://host[:port], nothing after.
func CheckOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an origin (want \"*\" or scheme://host[:port], e.g. https://example.com)", o)
	}
	// A browser's Origin header is lower case, without the scheme's
	// default port, an IPv6 address in its short form: it is compared as
	// it is, so another spelling would never match.
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if ip, err := netip.ParseAddr(host); err == nil && !ip.Is4In6() { // browsers write ::ffff:a.b.c.d in hex, netip dotted
		host = ip.String()
	}
	if u.Scheme == "http" && port == "80" || u.Scheme == "https" && port == "443" {
		port = ""
	}
	want := u.Scheme + "://" + host
	switch {
	case port != "":
		want = u.Scheme + "://" + net.JoinHostPort(host, port)
	case strings.Contains(host, ":"):
		want = u.Scheme + "://[" + host + "]"
	}
	if want != o {
		return fmt.Errorf("%q is not written as a browser sends it, and would match no request: write %q", o, want)
	}
	return nil
}

func (d Decode) check(ck *checker) {
	for i, root := range d.FileRoots {
		if !path.IsAbs(root) {
			ck.add(fmt.Sprintf("decode.file_roots[%d]", i), "%q: want an absolute directory", root)
		}
	}
	if d.PatchSize <= 0 || d.PatchSize > frame.MaxSide {
		ck.add("decode.patch_size", "%d out of range 1..%d", d.PatchSize, frame.MaxSide)
	}
	checkSide(ck, "decode.width", d.Width, d.PatchSize)
	checkSide(ck, "decode.height", d.Height, d.PatchSize)
	if d.Resize != frame.ResizeStretch && d.Resize != frame.ResizeLetterbox {
		ck.add("decode.resize", "%q (want %s or %s)", d.Resize, frame.ResizeStretch, frame.ResizeLetterbox)
	}
	if d.DefaultFPS == 0 || !inRange(d.DefaultFPS, 0, MaxFPS) {
		ck.add("decode.default_fps", "%v out of range (0, %d]", d.DefaultFPS, MaxFPS)
	}
	if d.QueueSize < 1 || d.QueueSize > MaxQueue {
		ck.add("decode.queue_size", "%d out of range 1..%d", d.QueueSize, MaxQueue)
	}
	if d.StallTimeout <= 0 {
		ck.add("decode.stall_timeout", "%v must be positive", d.StallTimeout)
	}
	if d.RetryMin <= 0 {
		ck.add("decode.retry_min", "%v must be positive", d.RetryMin)
	}
	if d.RetryMax < d.RetryMin {
		ck.add("decode.retry_max", "%v is below decode.retry_min %v", d.RetryMax, d.RetryMin)
	}
	if !inRange(d.PreviewFPS, 0, 30) {
		ck.add("decode.preview_fps", "%v out of range 0..30 (0 = no previews)", d.PreviewFPS)
	}
	if d.PreviewWidth < 16 || d.PreviewWidth > 1920 {
		ck.add("decode.preview_width", "%d out of range 16..1920", d.PreviewWidth)
	}
	if d.LeaseTTL < time.Second || d.LeaseTTL > 10*time.Minute {
		ck.add("decode.lease_ttl", "%s out of range 1s..10m", d.LeaseTTL)
	}
	if d.MaxCameras < 0 {
		ck.add("decode.max_cameras", "%d is negative (0 = no limit)", d.MaxCameras)
	}
}

// checkSide checks a model input side against the patch size.
func checkSide(ck *checker, path string, side, patch int) {
	switch {
	case side < 1 || side > frame.MaxSide:
		ck.add(path, "%d out of range 1..%d", side, frame.MaxSide)
	case patch > 0 && side%patch != 0:
		ck.add(path, "%d is not a multiple of decode.patch_size %d", side, patch)
	}
}

// Annotation kinds a webhook may filter on.
var annotationKinds = []string{annotation.KindAnalysis, annotation.KindCaption, annotation.KindAnomaly}

// Validate checks one webhook (defaults filled in) as pipeline.yaml's
// sink.webhooks entries are checked; problems name the field.
func (w Webhook) Validate() error {
	ck := &checker{}
	w.WithDefaults().check(ck, "")
	return errors.Join(ck.errs...)
}

func (w Webhook) check(ck *checker, path string) {
	if err := checkWebhookURL(w.URL); err != nil {
		ck.add(joinPath(path, "url"), "%s: %v", WebhookLabel(w.URL), err)
	}
	for _, k := range w.Kinds {
		if !slices.Contains(annotationKinds, k) {
			ck.add(joinPath(path, "kinds"), "%q (want %s)", k, strings.Join(annotationKinds, ", "))
		}
	}
	for _, id := range w.Cameras {
		if frame.ValidCameraID(id) != nil {
			ck.add(joinPath(path, "cameras"), "%q is not a camera id", id)
		}
	}
	if !inRange(w.MinScore, 0, 1) {
		ck.add(joinPath(path, "min_score"), "%v out of range 0..1", w.MinScore)
	}
	for k, v := range w.Headers {
		if !httpguts.ValidHeaderFieldName(k) { // as net/http checks every request's
			ck.add(joinPath(path, "headers"), "%q is not a header name", k)
		}
		if !httpguts.ValidHeaderFieldValue(v) {
			// Not quoted: the value may be a token.
			ck.add(joinPath(path, "headers"), "%q: the value has a control character (a line break?)", k)
		}
	}
	if w.CA != "" && !strings.HasPrefix(strings.ToLower(w.URL), "https://") {
		ck.add(joinPath(path, "ca"), "is for https:// URLs")
	}
	if w.Timeout < 0 || w.Timeout > time.Minute {
		ck.add(joinPath(path, "timeout"), "%s out of range 0..1m", w.Timeout)
	}
	if w.Delivery != "" && w.Delivery != DeliveryDurable && w.Delivery != DeliveryMemory {
		ck.add(joinPath(path, "delivery"), "%q (want %s or %s)", w.Delivery, DeliveryDurable, DeliveryMemory)
	}
	if w.Attempts < 1 || w.Attempts > 10 {
		ck.add(joinPath(path, "attempts"), "%d out of range 1..10", w.Attempts)
	}
	if w.QueueSize < 1 || w.QueueSize > 100000 {
		ck.add(joinPath(path, "queue_size"), "%d out of range 1..100000", w.QueueSize)
	}
}

// checkWebhookURL checks a webhook's URL. Its errors never quote it: the
// path or query of many webhook services' URLs is their secret.
func checkWebhookURL(raw string) error {
	if strings.IndexFunc(raw, unicode.IsSpace) >= 0 {
		return errors.New("the url has white space in it (write a space as %20)")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want an http:// or https:// URL with a host")
	}
	return checkPort(u)
}

// checkPort checks u's port, if it names one.
func checkPort(u *url.URL) error {
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %s is not in 1..65535", p)
		}
	}
	return nil
}

// WebhookLabel names a webhook in errors, logs, metrics and spans: its
// scheme and host and a hash of the whole URL (the one its durable
// consumer is named by), never the path or query, which hold the secret
// of many webhook services (Slack, Discord): /metrics is open.
func WebhookLabel(raw string) string {
	name := "webhook"
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		name = u.Scheme + "://" + u.Host
	}
	return name + "#" + WebhookHash(raw)
}

// WebhookHash is the first 12 hex digits of the SHA-256 of a webhook's URL.
func WebhookHash(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:6])
}

func (s Stream) check(ck *checker) {
	if s.Name == "" {
		return // no stream
	}
	if strings.ContainsAny(s.Name, " \t.*>/\\") {
		ck.add("sink.stream.name", "%q: a JetStream stream name has no spaces, '.', '*', '>', '/' or '\\'", s.Name)
	}
	if s.MaxAge <= 0 {
		ck.add("sink.stream.max_age", "%s: want a positive duration (annotations are kept this long)", s.MaxAge)
	}
	if s.MaxBytes < 1<<20 {
		// Smaller, a stream keeps no annotation at all (each is dropped as
		// it comes), and nothing would say so.
		ck.add("sink.stream.max_bytes", "%d: want at least 1048576 bytes (1 MiB)", s.MaxBytes)
	}
	if s.DuplicateWindow <= 0 || s.DuplicateWindow > s.MaxAge {
		ck.add("sink.stream.duplicate_window", "%s: want a positive duration up to max_age", s.DuplicateWindow)
	}
}

func (a Analyze) check(ck *checker) {
	if a.Model == "" {
		ck.add("analyze.model", "is empty (want a model bundle directory)")
	}
	if a.BatchSize < 1 || a.BatchSize > MaxBatchSize {
		ck.add("analyze.batch_size", "%d out of range 1..%d", a.BatchSize, MaxBatchSize)
	}
	if a.MaxBatchWait < 0 {
		ck.add("analyze.max_batch_wait", "%v is negative", a.MaxBatchWait)
	}
	if a.QueueSize < 1 || a.QueueSize > MaxQueue {
		ck.add("analyze.queue_size", "%d out of range 1..%d", a.QueueSize, MaxQueue)
	}
	if a.Threads < 0 {
		ck.add("analyze.threads", "%d is negative (0 = ONNX Runtime's default, within the CPUs the process may use)", a.Threads)
	}
}

func (t Telemetry) check(ck *checker) {
	if t.ServiceName == "" {
		ck.add("telemetry.service_name", "is empty")
	}
	if !inRange(t.SampleRatio, 0, 1) {
		ck.add("telemetry.sample_ratio", "%v out of range 0..1", t.SampleRatio)
	}
}

// LogLevels and LogFormats are the values of log.level and log.format.
var (
	LogLevels  = []string{"debug", "info", "warn", "error"}
	LogFormats = []string{"text", "json"}
)

func (l Log) check(ck *checker) {
	if !slices.Contains(LogLevels, l.Level) {
		ck.add("log.level", "%q: want one of %s", l.Level, strings.Join(LogLevels, ", "))
	}
	if !slices.Contains(LogFormats, l.Format) {
		ck.add("log.format", "%q: want one of %s", l.Format, strings.Join(LogFormats, ", "))
	}
}

// inRange reports lo ≤ x ≤ hi; NaN is never in range.
func inRange(x, lo, hi float64) bool {
	return !math.IsNaN(x) && x >= lo && x <= hi
}
