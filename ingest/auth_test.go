package ingest

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestGuard: without a token, a page in a browser cannot drive the server:
// requests naming it by a host name it does not know get 421 (DNS
// rebinding), and state changes from another origin get 403 (CSRF), but
// for WHIP, whose CORS policy decides. With a token, all pass.
func TestGuard(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, c := range []struct {
		token, method, host, path, origin string
		want                              int
	}{
		{"", "GET", "127.0.0.1:8080", "/v1/cameras", "", http.StatusTeapot},
		{"", "GET", "localhost:8080", "/", "", http.StatusTeapot},
		{"", "GET", "[::1]:8080", "/metrics", "", http.StatusTeapot},
		{"", "GET", "192.168.1.20", "/", "", http.StatusTeapot},
		{"", "GET", "nvr.lan:8080", "/", "", http.StatusTeapot}, // in allowed_hosts
		{"", "GET", "NVR.LAN.", "/", "", http.StatusTeapot},
		{"", "GET", "evil.example:8080", "/v1/cameras", "", http.StatusMisdirectedRequest},
		{"", "GET", "evil.example:8080", "/v1/live/cam1", "http://evil.example:8080", http.StatusMisdirectedRequest},
		{"", "POST", "127.0.0.1:8080", "/v1/cameras", "http://evil.example", http.StatusForbidden},
		{"", "DELETE", "127.0.0.1:8080", "/v1/cameras/door", "null", http.StatusForbidden},
		{"", "POST", "127.0.0.1:8080", "/v1/cameras", "http://127.0.0.1:8080", http.StatusTeapot}, // the console
		{"", "POST", "127.0.0.1:8080", "/v1/cameras", "", http.StatusTeapot},                      // curl, the CLI
		{"", "POST", "127.0.0.1:8080", "/whip/cam1", "https://studio.example", http.StatusTeapot}, // CORS decides
		{"s3cret", "GET", "evil.example:8080", "/v1/cameras", "", http.StatusTeapot},
		{"s3cret", "POST", "127.0.0.1:8080", "/v1/cameras", "http://evil.example", http.StatusTeapot},
	} {
		r := httptest.NewRequest(c.method, "http://"+c.host+c.path, nil)
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		w := httptest.NewRecorder()
		Guard(c.token, []string{"nvr.lan"}, ok).ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("token %q: %s %s%s from %q: %d %s, want %d", c.token, c.method, c.host, c.path, c.origin, w.Code, w.Body, c.want)
		}
	}
}
