package ingest

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/strictjson"
)

// Handler serves the camera API, with request bodies limited to maxBody
// bytes (413 above):
//
//	GET    /v1/cameras        list
//	POST   /v1/cameras        attach {"id","url","fps","loop"}
//	GET    /v1/cameras/{id}   one camera
//	DELETE /v1/cameras/{id}   detach
func (r *Registry) Handler(maxBody int64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cameras", r.handleList)
	mux.HandleFunc("POST /v1/cameras", r.handleAttach)
	mux.HandleFunc("GET /v1/cameras/{id}", r.handleGet)
	mux.HandleFunc("DELETE /v1/cameras/{id}", r.handleDetach)
	return LimitBody(maxBody, jsonMisses(mux))
}

// jsonMisses answers a request that no route of mux takes as the API
// answers every other error, {"error": …}, with the mux's status: 404, or
// 405 with its Allow header.
func jsonMisses(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		miss := &headersOnly{h: http.Header{}}
		h.ServeHTTP(miss, r)
		if miss.code >= 300 && miss.code < 400 { // a redirect to the path cleaned: as the mux answers it
			mux.ServeHTTP(w, r)
			return
		}
		if allow := miss.h.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		code := cmp.Or(miss.code, http.StatusNotFound)
		writeJSON(w, code, apiError{fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, strings.ToLower(http.StatusText(code)))})
	})
}

// headersOnly keeps what a handler answers but its body.
type headersOnly struct {
	h    http.Header
	code int
}

func (o *headersOnly) Header() http.Header         { return o.h }
func (o *headersOnly) Write(b []byte) (int, error) { return len(b), nil }
func (o *headersOnly) WriteHeader(code int)        { o.code = code }

func (r *Registry) handleList(w http.ResponseWriter, req *http.Request) {
	cams, err := r.List(req.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, cams)
}

func (r *Registry) handleGet(w http.ResponseWriter, req *http.Request) {
	v, err := r.Get(req.Context(), req.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (r *Registry) handleAttach(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		bodyError(w, err)
		return
	}
	var c config.Camera
	if err := strictjson.Decode(body, &c); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{"malformed camera JSON: " + err.Error()})
		return
	}
	if err := r.Attach(req.Context(), c); err != nil {
		writeErr(w, err)
		return
	}
	spec, _ := json.Marshal(c)
	v, err := r.view(spec)
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Location", "/v1/cameras/"+c.ID)
	writeJSON(w, http.StatusCreated, v)
}

func (r *Registry) handleDetach(w http.ResponseWriter, req *http.Request) {
	if err := r.Detach(req.Context(), req.PathValue("id")); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type apiError struct {
	Error string `json:"error"`
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, ErrExists):
		code = http.StatusConflict
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrUnavailable):
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "5")
	}
	writeJSON(w, code, apiError{err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
