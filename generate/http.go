package generate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/strictjson"
)

// DescribePattern is the route of DescribeHandler: every method, so that
// one other than POST is a 405 here rather than whatever a wider route
// beside it (the camera API's /v1/) would answer.
const DescribePattern = "/v1/cameras/{id}/describe"

// replyGrace is how much longer than a request's own timeout a caller waits
// for the reply, so the generate stage's "deadline" answer arrives first.
const replyGrace = 2 * time.Second

// DescribeHandler serves POST /v1/cameras/{id}/describe: the body is an
// optional Request (camera comes from the path; {} or no body = a caption
// with the defaults), sent as a NATS request on patchline.generate.request,
// so whichever process serves the API reaches any generate replica. The
// reply is the stage's Reply JSON with the status of HTTPStatus(reason),
// errors included (a body over maxBody, or the request limit, is a 413
// with reason bad_request).
func DescribeHandler(nc *nats.Conn, defaultTimeout time.Duration, maxBody int64) http.Handler {
	limit := int64(maxRequest)
	if maxBody > 0 {
		limit = min(limit, maxBody)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeReplyStatus(w, http.StatusMethodNotAllowed, errorReply(nil, ReasonBadRequest, fmt.Sprintf("%s %s: method not allowed (describe is POST)", r.Method, r.URL.Path)))
			return
		}
		if r.ContentLength > limit {
			writeReplyStatus(w, http.StatusRequestEntityTooLarge, errorReply(nil, ReasonBadRequest, fmt.Sprintf("request body of %d bytes is over the limit of %d", r.ContentLength, limit)))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeReplyStatus(w, http.StatusRequestEntityTooLarge, errorReply(nil, ReasonBadRequest, fmt.Sprintf("request body over %d bytes", mbe.Limit)))
				return
			}
			writeReply(w, errorReply(nil, ReasonBadRequest, "reading request body: "+err.Error()))
			return
		}
		if err := frame.ValidCameraID(id); err != nil {
			writeReply(w, errorReply(nil, ReasonBadRequest, "camera: "+err.Error()))
			return
		}
		var req Request
		if len(bytes.TrimSpace(body)) > 0 {
			if err := strictjson.Decode(body, &req); err != nil {
				writeReply(w, errorReply(&Request{Camera: id}, ReasonBadRequest, "malformed request JSON: "+err.Error()))
				return
			}
		}
		if req.Camera != "" && req.Camera != id {
			writeReply(w, errorReply(&req, ReasonBadRequest, fmt.Sprintf("camera %q in the body differs from %q in the path", req.Camera, id)))
			return
		}
		req.Camera = id
		rep := Describe(r.Context(), nc, req, defaultTimeout)
		writeReply(w, rep)
	})
}

// Describe sends req on patchline.generate.request and waits for the reply:
// up to req's timeout (or deadline, or defaultTimeout) plus a grace period.
// Transport failures come back as a Reply with a reason too: no generate
// stage listening is "unavailable", no answer in time is "deadline".
func Describe(ctx context.Context, nc *nats.Conn, req Request, defaultTimeout time.Duration) *Reply {
	wait := defaultTimeout
	if req.Timeout != "" {
		if d, err := time.ParseDuration(req.Timeout); err == nil && d > 0 {
			wait = min(d, MaxTimeout)
		}
	}
	if req.Deadline != nil {
		wait = min(time.Until(*req.Deadline), MaxTimeout)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return errorReply(&req, ReasonBadRequest, err.Error())
	}
	ctx, cancel := context.WithTimeout(ctx, max(wait, 0)+replyGrace)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, bus.GenerateRequest, b)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return errorReply(&req, ReasonUnavailable, "no generate stage is running (nobody answers on "+bus.GenerateRequest+")")
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return errorReply(&req, ReasonDeadline, fmt.Sprintf("no reply from the generate stage within %s", max(wait, 0)+replyGrace))
	case err != nil:
		return errorReply(&req, ReasonUnavailable, "nats request: "+err.Error())
	}
	var rep Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return errorReply(&req, ReasonFailed, "malformed reply from the generate stage: "+err.Error())
	}
	return &rep
}

func writeReply(w http.ResponseWriter, rep *Reply) {
	if rep.Reason == ReasonOverloaded {
		w.Header().Set("Retry-After", "1")
	}
	writeReplyStatus(w, HTTPStatus(rep.Reason), rep)
}

// writeReplyStatus writes rep as JSON with status.
func writeReplyStatus(w http.ResponseWriter, status int, rep *Reply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(rep)
}

// FetchObject reads a generated object back from the Object Store and
// checks it against the reference: size and sha256.
func FetchObject(ctx context.Context, nc *nats.Conn, o ObjectRef) ([]byte, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	store, err := js.ObjectStore(ctx, o.Bucket)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", o.Bucket, err)
	}
	b, err := store.GetBytes(ctx, o.Name)
	if err != nil {
		return nil, fmt.Errorf("object %s/%s: %w", o.Bucket, o.Name, err)
	}
	sum := sha256.Sum256(b)
	if uint64(len(b)) != o.Size || hex.EncodeToString(sum[:]) != o.SHA256 {
		return b, fmt.Errorf("object %s/%s: %d bytes, sha256 %x; the reference says %d bytes, sha256 %s", o.Bucket, o.Name, len(b), sum, o.Size, o.SHA256)
	}
	return b, nil
}
