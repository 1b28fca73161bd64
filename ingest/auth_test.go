package ingest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
		{"", "GET", "[fe80::1%25eth0]:8080", "/metrics", "", http.StatusTeapot}, // RFC 6874 zone
		{"", "GET", "[fe80::1%eth0]", "/metrics", "", http.StatusTeapot},
		{"", "GET", "192.168.1.20", "/", "", http.StatusTeapot},
		{"", "GET", "nvr.lan:8080", "/", "", http.StatusTeapot}, // in allowed_hosts
		{"", "GET", "NVR.LAN.", "/", "", http.StatusTeapot},
		{"", "GET", "evil.example:8080", "/v1/cameras", "", http.StatusMisdirectedRequest},
		{"", "GET", "ingest:8080", "/healthz", "", http.StatusTeapot}, // probes by service name
		{"", "GET", "ingest:8080", "/readyz", "", http.StatusTeapot},
		{"", "GET", "ingest:8080", "/metrics", "", http.StatusMisdirectedRequest},
		{"", "POST", "127.0.0.1:8080", "/v1/cameras", "https://nvr.lan", http.StatusTeapot}, // behind a proxy that sends its own Host
		{"", "GET", "evil.example:8080", "/v1/live/cam1", "http://evil.example:8080", http.StatusMisdirectedRequest},
		{"", "POST", "127.0.0.1:8080", "/v1/cameras", "http://evil.example", http.StatusForbidden},
		{"", "DELETE", "127.0.0.1:8080", "/v1/cameras/door", "null", http.StatusForbidden},
		{"", "POST", "127.0.0.1:8080", "/v1/cameras", "http://127.0.0.1:8080", http.StatusTeapot}, // the console
		{"", "POST", "127.0.0.1:8080", "/v1/cameras", "", http.StatusTeapot},                      // curl, the CLI
		{"", "POST", "127.0.0.1:8080", "/whip/cam1", "https://studio.example", http.StatusTeapot}, // CORS decides
		{"s3cret", "GET", "evil.example:8080", "/v1/cameras", "", http.StatusTeapot},
		{"s3cret", "POST", "127.0.0.1:8080", "/v1/cameras", "http://evil.example", http.StatusTeapot},
	} {
		r := httptest.NewRequest(c.method, c.path, nil)
		r.Host = c.host
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

// TestReadDeadline: a client dripping a body is cut off at the deadline,
// even where the handler never reads it (a 401).
func TestReadDeadline(t *testing.T) {
	srv := httptest.NewServer(ReadDeadline(300*time.Millisecond, RequireToken("s3cret", http.NotFoundHandler())))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("POST /v1/cameras HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, conn) // the 401, then EOF when the server closes
		close(closed)
	}()
	for {
		select {
		case <-closed:
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("connection closed after %s", d)
			}
			return
		case <-time.After(100 * time.Millisecond):
			if time.Since(start) > 10*time.Second {
				t.Fatal("a client dripping its body kept the connection 10 s")
			}
			_, _ = conn.Write([]byte(" ")) // one byte at a time
		}
	}
}

// TestSlowBodyIs408: a body not sent by the deadline is answered 408 (the
// client's fault, said plainly), not 400 with the socket's error.
func TestSlowBodyIs408(t *testing.T) {
	srv := httptest.NewServer(ReadDeadline(300*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16)); err != nil {
			bodyError(w, err)
		}
	})))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("POST /v1/cameras HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"id\"")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "not received in time") || strings.Contains(string(body), "tcp") {
		t.Errorf("a body not sent in time: %s %s, want 408 saying so", resp.Status, body)
	}
}

// TestReadDeadlineEndsWithTheBody: a request whose body was read may wait
// past the deadline for its answer (a describe), and so may one without a
// body (the live view): a deadline on the connection's watch for the
// client leaving would cancel it.
func TestReadDeadlineEndsWithTheBody(t *testing.T) {
	srv := httptest.NewServer(ReadDeadline(300*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(time.Second): // the answer takes longer than the deadline
			_, _ = w.Write([]byte("answered"))
		case <-r.Context().Done():
			// the server's watch for the client leaving timed out
		}
	})))
	defer srv.Close()
	for _, body := range []string{`{"camera":"cam1"}`, ""} {
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "answered" {
			t.Errorf("body %q: answer %q (%s), want answered", body, b, resp.Status)
		}
	}
}

// TestRequireTokenScheme: the token must match exactly; the scheme "Bearer"
// in any case (RFC 9110 makes auth schemes case-insensitive).
func TestRequireTokenScheme(t *testing.T) {
	h := RequireToken("s3cret", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for auth, want := range map[string]int{
		"Bearer s3cret":  http.StatusNoContent,
		"bearer s3cret":  http.StatusNoContent,
		"BEARER  s3cret": http.StatusNoContent,
		"Bearer S3CRET":  http.StatusUnauthorized,
		"Bearer s3cre":   http.StatusUnauthorized,
		"Basic s3cret":   http.StatusUnauthorized,
		"s3cret":         http.StatusUnauthorized,
		"Bearer":         http.StatusUnauthorized,
		"":               http.StatusUnauthorized,
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/v1/cameras", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Authorization %q: %d, want %d", auth, rec.Code, want)
		}
		// A refusal says what was wrong, and never echoes what was sent.
		wantMsg := map[string]string{"Basic s3cret": "not a bearer token", "s3cret": "not a bearer token", "Bearer": "missing bearer token", "": "missing bearer token"}[auth]
		if wantMsg == "" {
			wantMsg = "wrong bearer token"
		}
		if want == http.StatusUnauthorized && (!strings.Contains(rec.Body.String(), wantMsg) || strings.Contains(rec.Body.String(), "s3cre")) {
			t.Errorf("Authorization %q: %s, want it to say %q without the credential", auth, rec.Body, wantMsg)
		}
	}
}
