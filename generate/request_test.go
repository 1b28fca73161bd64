package generate

import (
	"testing"
	"time"

	"github.com/patchline/patchline/internal/config"
)

func TestParseRequestDefaults(t *testing.T) {
	now := time.Now()
	g := config.Default().Generate
	g.Sampling.TopK = 5
	p, bad := parseRequest([]byte(`{"camera":"cam1","sampling":{"temperature":0.5,"seed":9}}`), g, now)
	if bad != nil {
		t.Fatal(bad.Error)
	}
	if p.Kind != KindCaption || !p.deadline.Equal(now.Add(g.RequestTimeout)) {
		t.Errorf("kind %q, deadline %v", p.Kind, p.deadline.Sub(now))
	}
	if p.sampling != (config.Sampling{Temperature: 0.5, TopK: 5, Seed: 9}) {
		t.Errorf("sampling %+v: request keys override, others keep generate.sampling", p.sampling)
	}
	dl := now.Add(3 * time.Second).UTC()
	p, bad = parseRequest([]byte(`{"camera":"cam1","kind":"frame","deadline":"`+dl.Format(time.RFC3339Nano)+`"}`), g, now)
	if bad != nil || !p.deadline.Equal(dl) {
		t.Errorf("deadline: %+v %v", bad, p)
	}
	if _, bad = parseRequest([]byte(`{"camera":"cam1","timeout":"1s","deadline":"`+dl.Format(time.RFC3339)+`"}`), g, now); bad == nil || bad.Reason != ReasonBadRequest {
		t.Errorf("timeout and deadline together: %+v", bad)
	}
	if _, bad = parseRequest([]byte(`{"camera":"cam1"} {"camera":"cam2"}`), g, now); bad == nil {
		t.Error("two JSON values accepted")
	}
}

// FuzzParseRequest: any bytes give a checked request or a bad_request reply
// that says what is wrong; nothing panics.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"camera":"cam1"}`, `{"camera":"cam1","kind":"frame","timeout":"5s"}`,
		`{"camera":"cam1","sampling":{"temperature":0.8,"top_k":5,"top_p":0.9,"seed":7,"max_tokens":32,"no_cache":true}}`,
		`{"camera":`, `[]`, `null`, `{"camera":"x","deadline":"2030-01-01T00:00:00Z"}`,
	} {
		f.Add([]byte(s))
	}
	g := config.Default().Generate
	f.Fuzz(func(t *testing.T, data []byte) {
		p, bad := parseRequest(data, g, time.Now())
		if (p == nil) == (bad == nil) {
			t.Fatalf("want exactly one of request and error: %v %v", p, bad)
		}
		if bad != nil && (bad.Reason != ReasonBadRequest || bad.Error == "") {
			t.Fatalf("error reply %+v", bad)
		}
		if p != nil && (p.Camera == "" || (p.Kind != KindCaption && p.Kind != KindFrame)) {
			t.Fatalf("accepted %+v", p.Request)
		}
	})
}
