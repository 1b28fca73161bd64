package ingest

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// RequireToken lets a request through only with "Authorization: Bearer
// <token>"; others get 401 and reach nothing. An empty token turns auth off.
// CORS preflights (OPTIONS with an Origin) pass, as browsers send them
// without credentials.
func RequireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions && r.Header.Get("Origin") != "" {
			next.ServeHTTP(w, r)
			return
		}
		got := r.Header.Get("Authorization")
		if got == "" || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="patchline"`)
			msg := "missing bearer token (send Authorization: Bearer <http.token>)"
			if got != "" {
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

// bodyError answers a failed body read: 413 past the limit, else 400.
func bodyError(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{fmt.Sprintf("request body over the limit of %d bytes (http.max_body)", mbe.Limit)})
		return
	}
	writeJSON(w, http.StatusBadRequest, apiError{"reading request body: " + err.Error()})
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
