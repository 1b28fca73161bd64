package ingest

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// RequireToken lets a request through only with "Authorization: Bearer
// <token>"; others get 401 and reach nothing. An empty token turns auth off.
// CORS preflights (OPTIONS with an Origin) pass, as browsers send them
// without credentials.
func RequireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions && r.Header.Get("Origin") != "" {
			next.ServeHTTP(w, r)
			return
		}
		got := r.Header.Get("Authorization")
		scheme, cred, _ := strings.Cut(got, " ")
		// The scheme is case-insensitive (RFC 9110, 11.1): "bearer" too.
		if got == "" || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimLeft(cred, " ")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="patchline"`)
			msg := "missing bearer token (send Authorization: Bearer <http.token>)"
			switch {
			case got != "" && !strings.EqualFold(scheme, "Bearer"):
				msg = "the Authorization header is not a bearer token (send Authorization: Bearer <http.token>)" // not echoed: it may be the secret itself
			case strings.TrimSpace(cred) != "":
				msg = "wrong bearer token"
			}
			writeJSON(w, http.StatusUnauthorized, apiError{msg})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// LimitBody answers 413 to a request whose declared body is over max bytes
// and caps the body of the others at max: a handler reading past it gets an
// *http.MaxBytesError (see readBody).
func LimitBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			writeJSON(w, http.StatusRequestEntityTooLarge, apiError{fmt.Sprintf("request body of %d bytes is over the limit of %d (http.max_body)", r.ContentLength, max)})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}

// bodyError answers a failed body read: 413 past the limit, 408 when the
// client did not send it in time (ReadDeadline), else 400.
func bodyError(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{fmt.Sprintf("request body over the limit of %d bytes (http.max_body)", mbe.Limit)})
	case errors.As(err, &ne) && ne.Timeout():
		w.Header().Set("Connection", "close")
		writeJSON(w, http.StatusRequestTimeout, apiError{"request body not received in time"})
	default:
		writeJSON(w, http.StatusBadRequest, apiError{"reading request body: " + err.Error()})
	}
}

// cors applies the WHIP CORS policy: same-origin requests and requests
// without an Origin pass; other origins must be in allowed (or allowed
// holds "*"). A preflight is answered here; a request from an origin that
// is not allowed gets 403 and does nothing.
type cors struct {
	allowed []string
	next    http.Handler
}

// CORS wraps next with the CORS policy of the WHIP endpoint.
func CORS(allowed []string, next http.Handler) http.Handler {
	return &cors{allowed: allowed, next: next}
}

func (c *cors) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" || sameOrigin(origin, r) {
		c.next.ServeHTTP(w, r)
		return
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	if !slices.Contains(c.allowed, "*") && !slices.Contains(c.allowed, origin) {
		writeJSON(w, http.StatusForbidden, apiError{fmt.Sprintf("origin %s is not in whip.allowed_origins", origin)})
		return
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Patch")
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "POST, DELETE, PATCH, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	c.next.ServeHTTP(w, r)
}

// sameOrigin reports whether origin is the origin the request was sent to.
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// Guard protects a server without a token (token empty) from web pages in
// a browser that can reach it, since a browser will send requests to
// 127.0.0.1 on a page's behalf:
//   - a request naming the server by a host name other than localhost or
//     one of allowedHosts gets 421: a page whose name was pointed at this
//     machine (DNS rebinding) would otherwise be same-origin with it;
//   - a request from a page of another origin that may change state (not
//     GET, HEAD or OPTIONS) gets 403 (CSRF), except under /whip/, whose
//     CORS policy (whip.allowed_origins) decides.
//
// IP addresses are always accepted: a rebinding page has a name. With a
// token, requests pass: a page cannot send it.
func Guard(token string, allowedHosts []string, next http.Handler) http.Handler {
	if token != "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r) // probes by service name; they tell nothing
			return
		}
		if host := hostName(r.Host); !allowedHost(host, allowedHosts) {
			writeJSON(w, http.StatusMisdirectedRequest, apiError{fmt.Sprintf(
				"host %q is not served: without http.token only IP addresses, localhost and http.allowed_hosts may name this server", host)})
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			origin := r.Header.Get("Origin")
			if origin != "" && !sameOrigin(origin, r) && !allowedOrigin(origin, allowedHosts) && !strings.HasPrefix(r.URL.Path, "/whip/") {
				writeJSON(w, http.StatusForbidden, apiError{fmt.Sprintf("a page of origin %s may not change this server without http.token", origin)})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// allowedOrigin reports whether origin's host is one of allowed: the
// console's own page behind a reverse proxy that sends another Host.
func allowedOrigin(origin string, allowed []string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Hostname() != "" && listed(u.Hostname(), allowed)
}

// hostName is the host of a Host header, without port or brackets.
func hostName(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// allowedHost reports whether a request may name the server host: empty
// (HTTP/1.0), an IP address, localhost (or a name under it), or listed.
func allowedHost(host string, allowed []string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" || isIP(host) || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	return listed(host, allowed)
}

// isIP reports whether host is an IP address, an IPv6 one with a zone
// too (fe80::1%25eth0 in a URL, RFC 6874).
func isIP(host string) bool {
	_, err := netip.ParseAddr(strings.Replace(host, "%25", "%", 1))
	return err == nil
}

// listed reports whether host (a trailing dot and case aside) is one of
// http.allowed_hosts.
func listed(host string, allowed []string) bool {
	host = strings.TrimSuffix(host, ".")
	return slices.ContainsFunc(allowed, func(a string) bool { return strings.EqualFold(a, host) })
}

// ReadDeadline gives a request with a body d to send it (and the server to
// drain what a handler left unread): the server has no ReadTimeout (the
// live view keeps its request open), so a client dripping a body would
// otherwise hold a connection for ever. net/http clears the deadline once
// the body has been read to its end, when it starts watching the
// connection for the client leaving. A request without a body gets none:
// that watch starts before the handler, and a deadline passing there
// would cancel a request still at work (the live view).
func ReadDeadline(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		}
		next.ServeHTTP(w, r)
	})
}
