package config

import (
	"strings"
	"testing"
	"time"
)

func TestGenerateConfig(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	c, err := load("p.yaml", []byte(`
generate:
  budget: 3
  triggers: {every: 5s, on_change: false}
  cameras:
    - camera: door
      triggers: {on_anomaly: true}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	g := c.Generate
	if g.Budget != 3 || g.QueueSize != 8 || !g.Auto {
		t.Errorf("generate %+v", g)
	}
	if tr := g.TriggersFor("yard"); tr.Every != 5*time.Second || tr.OnChange || !tr.OnAnomaly || tr.Cooldown != 2*time.Second {
		t.Errorf("default triggers %+v (keys left out keep their defaults)", tr)
	}
	if tr := g.TriggersFor("door"); tr != (Triggers{OnAnomaly: true}) {
		t.Errorf("door triggers %+v (an entry replaces the defaults)", tr)
	}
	env := func(k string) (string, bool) {
		v, ok := map[string]string{"PATCHLINE_GENERATE_AUTO": "false", "PATCHLINE_GENERATE_SAMPLING_TEMPERATURE": "0.7"}[k]
		return v, ok
	}
	if c, err = load("p.yaml", nil, env); err != nil || c.Generate.Auto || c.Generate.Sampling.Temperature != 0.7 {
		t.Errorf("env overrides: %v %+v", err, c.Generate)
	}
}

func TestGenerateConfigErrors(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	for _, c := range []struct{ yaml, want string }{
		{"generate:\n  budgit: 2\n", `p.yaml:2: generate.budgit: unknown key (did you mean "budget"?)`},
		{"generate:\n  budget: 0\n", "generate.budget: 0 out of range 1..64"},
		{"generate:\n  queue_size: -1\n", "generate.queue_size: -1 is negative"},
		{"generate:\n  request_timeout: 0s\n", "generate.request_timeout: 0s must be positive"},
		{"generate:\n  lease_ttl: 500ms\n", "generate.lease_ttl: 500ms out of range 1s..10m"},
		{"generate:\n  sampling: {top_p: 1.5}\n", "generate.sampling.top_p: 1.5 out of range 0..1"},
		{"generate:\n  sampling: {max_tokens: 5000}\n", "generate.sampling.max_tokens: 5000 out of range"},
		{"generate:\n  triggers: {every: 10ms}\n", "generate.triggers.every: 10ms: want 0 (off) or at least 100ms"},
		{"generate:\n  cameras: [{camera: a}, {camera: a}]\n", `generate.cameras[1].camera: duplicate camera "a"`},
		{"generate:\n  cameras: [{camera: a.b}]\n", "generate.cameras[0].camera"},
		{"generate:\n  cameras: [{camera: a, triggers: {cooldown: -1s}}]\n", "generate.cameras[0].triggers.cooldown: -1s is negative"},
		{"generate:\n  budget: two\n", `generate.budget: want an integer, got "two"`},
	} {
		_, err := load("p.yaml", []byte(c.yaml), noEnv)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.yaml, err, c.want)
		}
	}
}
