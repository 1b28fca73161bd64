package generate

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/strictjson"
)

// Request kinds.
const (
	KindCaption = "caption" // a caption of the camera's last frames
	KindFrame   = "frame"   // a generated frame with its anomaly heatmap
)

// Reasons of a failed request (Reply.Reason), each with an HTTP status.
const (
	ReasonBadRequest      = "bad_request"       // malformed JSON or a bad value
	ReasonUnknownCamera   = "unknown_camera"    // no frames of that camera seen (recently)
	ReasonNotEnoughFrames = "not_enough_frames" // the camera has fewer frames than the model needs yet
	ReasonInputMismatch   = "input_mismatch"    // the camera's frames do not have the model's input size
	ReasonUnavailable     = "unavailable"       // that model is not configured, or the stage is stopping
	ReasonOverloaded      = "overloaded"        // every slot busy and the queue full
	ReasonDeadline        = "deadline"          // the deadline passed before or while generating
	ReasonFailed          = "failed"            // the model failed
)

// HTTPStatus maps a reason to the HTTP status of POST /v1/cameras/{id}/describe.
func HTTPStatus(reason string) int {
	switch reason {
	case "":
		return http.StatusOK
	case ReasonBadRequest:
		return http.StatusBadRequest
	case ReasonUnknownCamera:
		return http.StatusNotFound
	case ReasonNotEnoughFrames:
		return http.StatusConflict
	case ReasonInputMismatch:
		return http.StatusUnprocessableEntity
	case ReasonOverloaded:
		return http.StatusTooManyRequests
	case ReasonDeadline:
		return http.StatusGatewayTimeout
	case ReasonUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// MaxTimeout bounds a request's timeout.
const MaxTimeout = 5 * time.Minute

// maxRequest bounds a request message.
const maxRequest = 64 << 10

// Request asks for a caption or a generated frame of a camera's latest
// frames, on patchline.generate.request (NATS request-reply) or as the body
// of POST /v1/cameras/{id}/describe:
//
//	{"camera": "cam1", "kind": "caption", "timeout": "5s",
//	 "sampling": {"temperature": 0.8, "top_k": 5, "top_p": 0.9, "seed": 7, "max_tokens": 32}}
//
// kind defaults to caption; timeout (a Go duration) or deadline (RFC 3339)
// bounds the wait, default generate.request_timeout; sampling keys left out
// take generate.sampling. Unknown keys are errors.
type Request struct {
	ID       string           `json:"id,omitempty"` // echoed in the reply
	Camera   string           `json:"camera"`
	Kind     string           `json:"kind,omitempty"`
	Timeout  string           `json:"timeout,omitempty"`
	Deadline *time.Time       `json:"deadline,omitempty"`
	Sampling *SamplingRequest `json:"sampling,omitempty"`
}

// SamplingRequest overrides some generate.sampling settings.
type SamplingRequest struct {
	Temperature *float64 `json:"temperature,omitempty"`
	TopK        *int     `json:"top_k,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	Seed        *int64   `json:"seed,omitempty"`
	MaxTokens   *int     `json:"max_tokens,omitempty"`
	NoCache     bool     `json:"no_cache,omitempty"` // decode without the KV cache (for comparison)
}

// Reply answers a Request: Caption (kind caption) or Generated (kind frame)
// on success; Error and Reason otherwise.
type Reply struct {
	ID        string                 `json:"id,omitempty"`
	Camera    string                 `json:"camera,omitempty"`
	Kind      string                 `json:"kind,omitempty"`
	Caption   *annotation.Annotation `json:"caption,omitempty"`
	Generated *Generated             `json:"generated,omitempty"`
	// QueueMs is how long the request waited for a generation slot.
	QueueMs float64 `json:"queue_ms,omitempty"`
	Error   string  `json:"error,omitempty"`
	Reason  string  `json:"reason,omitempty"`
}

// errorReply builds a failed reply.
func errorReply(req *Request, reason, msg string) *Reply {
	r := &Reply{Error: msg, Reason: reason}
	if req != nil {
		r.ID, r.Camera, r.Kind = req.ID, req.Camera, req.Kind
	}
	return r
}

// parsedRequest is a checked Request with its defaults applied.
type parsedRequest struct {
	Request
	deadline time.Time
	sampling config.Sampling
	noCache  bool
}

// parseRequest decodes and checks a request message. An error reply (reason
// bad_request) says what is wrong; the returned Request carries whatever id
// and camera could be read, for the reply.
func parseRequest(data []byte, defaults config.Generate, now time.Time) (*parsedRequest, *Reply) {
	var req Request
	if len(data) > maxRequest {
		return nil, errorReply(nil, ReasonBadRequest, fmt.Sprintf("request is %d bytes, the limit is %d", len(data), maxRequest))
	}
	if err := strictjson.Decode(data, &req); err != nil {
		return nil, errorReply(&req, ReasonBadRequest, "malformed request JSON: "+err.Error()+
			` (want {"camera":"cam1","kind":"caption|frame","timeout":"5s","sampling":{...}})`)
	}
	if req.Kind == "" {
		req.Kind = KindCaption
	}
	p := &parsedRequest{Request: req, sampling: defaults.Sampling}
	var errs []error
	if req.Camera == "" {
		errs = append(errs, errors.New("camera: missing"))
	} else if err := frame.ValidCameraID(req.Camera); err != nil {
		errs = append(errs, fmt.Errorf("camera: %w", err))
	}
	if req.Kind != KindCaption && req.Kind != KindFrame {
		errs = append(errs, fmt.Errorf("kind: %q, want %q or %q", req.Kind, KindCaption, KindFrame))
	}
	timeout := defaults.RequestTimeout
	switch {
	case req.Timeout != "" && req.Deadline != nil:
		errs = append(errs, errors.New("timeout and deadline: set one, not both"))
	case req.Timeout != "":
		d, err := time.ParseDuration(req.Timeout)
		if err != nil || d <= 0 || d > MaxTimeout {
			errs = append(errs, fmt.Errorf("timeout: %q, want a Go duration in (0, %s], such as \"5s\"", req.Timeout, MaxTimeout))
		}
		timeout = d
	}
	p.deadline = now.Add(timeout)
	if req.Deadline != nil {
		if req.Deadline.Sub(now) > MaxTimeout {
			errs = append(errs, fmt.Errorf("deadline: %s is more than %s away", req.Deadline.Format(time.RFC3339), MaxTimeout))
		}
		p.deadline = *req.Deadline
	}
	if s := req.Sampling; s != nil {
		if s.Temperature != nil {
			p.sampling.Temperature = *s.Temperature
		}
		if s.TopK != nil {
			p.sampling.TopK = *s.TopK
		}
		if s.TopP != nil {
			p.sampling.TopP = *s.TopP
		}
		if s.Seed != nil {
			p.sampling.Seed = *s.Seed
		}
		if s.MaxTokens != nil {
			p.sampling.MaxTokens = *s.MaxTokens
		}
		p.noCache = s.NoCache
		if err := p.sampling.Check("sampling"); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errorReply(&req, ReasonBadRequest, "bad request: "+errors.Join(errs...).Error())
	}
	return p, nil
}
